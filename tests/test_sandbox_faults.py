"""The sandboxes' lost-answer fault (``Faults.drop_answer``): the write is applied, the client is left not knowing,
and that happens at once — no sleep racing the client's timeout, which made the conformance sweeps flaky on a
loaded CI machine (a 0.75 s timeout also fired on ordinary writes)."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import UncertainOutcomeError
from connectors.http import PlatformHttp
from connectors.ratelimit import Limiter
from connectors.sandbox_kit import Faults, RunningServer


class TinyBooks:
    def __init__(self, faults: Faults) -> None:
        self.faults, self.created = faults, []

        async def create(request):
            self.created.append(await request.json())
            if self.faults.draw() == "timeout":
                await self.faults.hang()  # applied, but the answer is lost
            return JSONResponse({"id": len(self.created)})

        self.app = Starlette(routes=[Route("/invoices", create, methods=["POST"])])


@pytest.mark.parametrize("drop_answer", [True, False])
def test_a_lost_answer_is_an_uncertain_write_that_was_applied(drop_answer):
    faults = Faults(drop_answer=drop_answer, hang_s=1.5)
    books = TinyBooks(faults)
    with RunningServer(books.app) as server:
        http = PlatformHttp(target="t", platform="tiny", base_url=server.url, limiter=Limiter([], 1),
                            timeout_s=30.0 if drop_answer else 0.5)
        assert http.request("POST", "/invoices", json={"n": 1}).json() == {"id": 1}
        faults.fault_at(1)
        started = time.monotonic()
        with pytest.raises(UncertainOutcomeError):
            http.request("POST", "/invoices", json={"n": 2})
        waited = time.monotonic() - started
        assert [c["n"] for c in books.created] == [1, 2]  # applied although the client never heard
        if drop_answer:  # without waiting for the 30 s timeout
            assert waited < 10
        http.client.close()
