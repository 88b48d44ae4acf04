"""The conformance suite's fixture: every registered connector, run on the engine against its sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.base import DocumentState, UncertainOutcomeError
from connectors.registry import connector_class, known_platforms
from connectors.testing import MemoryContext, MemoryEntities, connectors_on
from tests.conformance.drivers import ON_ENGINE

# A write the sandbox applies and then answers with a dropped connection (``Faults.drop_answer``): the client
# cannot know whether it was applied, exactly as after a timeout, but nothing races a sleep against the
# client's timeout, so the timeout can be generous: an ordinary request on a loaded CI machine never hits it.
REQUEST_TIMEOUT_S = 10.0


class Crash(Exception):
    """The process died: raised by a checkpoint, so that checkpoint and everything after it are lost."""


class Harness:
    """One connector on its sandbox, with the ledger (checkpoints, entities) in memory."""

    def __init__(self, driver: Any, connector: Any) -> None:
        self.driver, self.connector = driver, connector
        self.sandbox = driver.sandbox
        self.entities = MemoryEntities()

    def deliver(self, event, doc: DocumentState | None = None, attempt: int = 1, crash_after_write: int | None = None
                ) -> tuple[DocumentState | None, DocumentState]:
        """(the delivered state or None when it failed, the last state checkpointed or returned)."""
        doc = doc or DocumentState()
        ctx = MemoryContext(self.connector.target.name, event, self.entities, attempt=attempt)
        if self.connector.capabilities.pull:  # deliver only queues: the driver plays the platform's sessions
            return self.driver.deliver(self.connector, event, ctx, crash_after_write)
        if crash_after_write is not None:
            limit = self.sandbox.faults.writes + crash_after_write
            keep = ctx.checkpoint

            def checkpoint(state: DocumentState) -> None:
                if self.sandbox.faults.writes >= limit:
                    raise Crash()
                keep(state)

            ctx.checkpoint = checkpoint  # type: ignore[method-assign]
        try:
            result = self.connector.deliver(event, doc, ctx)
        except (UncertainOutcomeError, Crash):
            return None, ctx.checkpoints[-1] if ctx.checkpoints else doc
        return result, result

    def booked(self, number: str):
        return [b for b in self.sandbox.booked_invoices() if b.number == number]


def _platforms() -> list[Any]:
    out = []
    for platform in known_platforms():
        if platform in ON_ENGINE:
            out.append(pytest.param(platform, id=platform))
        else:
            # A connector with nothing to push to (Patriot's file export) says why in ``conformance_skip``.
            reason = getattr(connector_class(platform), "conformance_skip", None) or (
                f"{platform} still implements deliver itself: not on the delivery engine yet (issue #12)")
            out.append(pytest.param(platform, id=platform, marks=pytest.mark.skip(reason=reason)))
    return out


@pytest.fixture(params=_platforms())
def harness(request):
    driver = ON_ENGINE[request.param]()
    driver.sandbox.faults.drop_answer = True
    paced = not getattr(driver, "limits_lifted", False)  # a sandbox without limits needs no client pacing
    with connectors_on(driver.sandbox, "conformance", request_timeout_s=REQUEST_TIMEOUT_S, paced=paced) as build:
        connector = build()
        if hasattr(driver, "attach"):  # a pull platform's client is pointed at the connector's service
            driver.attach(connector)
        yield Harness(driver, connector)
