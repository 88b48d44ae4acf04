"""Issue #13 item 3 for the sink's partition workers: a worker hung inside a platform call (a lock, a socket
without a timeout) stalls its sink — /healthz, component_up and the watchdog follow the sink's liveness — while a
worker waiting out a back-off or a rate-limit window is not stalled. On a real PostgreSQL ledger, no Kafka."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.base import RateLimitedError
from connectors.testing import invoice_event
from tests.test_sink_holes import ledger, lease, make_worker, record_of  # noqa: F401 - fixture

pytestmark = pytest.mark.stack

BOUND_S = 0.5


def _start_worker_with(worker, event) -> None:
    fence = lease(worker).fence
    worker._start_worker(0, fence)  # noqa: SLF001 - the partition worker alone, as _on_assign starts it
    worker._queues[0].put(record_of(event, 10))  # noqa: SLF001


def _first(condition, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_worker_hung_inside_a_platform_call_stalls_its_sink(ledger):  # noqa: F811
    worker, books = make_worker(ledger)
    inside, release = threading.Event(), threading.Event()
    books.during_deliver = lambda event, doc, ctx: (inside.set(), release.wait(30))
    try:
        _start_worker_with(worker, invoice_event(41))
        assert inside.wait(10)
        worker.progress.beat()  # the consumer loop keeps polling happily meanwhile
        assert _first(lambda: worker.liveness.stalled_for(BOUND_S) is not None, 10), "the hung worker went unnoticed"
        assert "during_deliver" in worker.liveness.stack() or "release.wait" in worker.liveness.stack()
    finally:
        release.set()
        worker.stop.set()
    assert _first(lambda: not worker._threads[0].is_alive(), 10)  # noqa: SLF001


def test_a_worker_waiting_out_a_back_off_or_a_rate_limit_window_is_not_stalled(ledger):  # noqa: F811
    worker, books = make_worker(ledger)

    limiter = worker.runtime.limiter(worker.target, per_second=1)  # the target's own: a second call waits ~2 s

    def platform_call(event, doc, ctx):
        for _ in range(2):  # two requests through the target's limiter: the second waits for the window
            with limiter.slot():
                pass
        raise RateLimitedError("429 Too Many Requests", retry_after=1.5)  # then a Retry-After back-off

    books.during_deliver = platform_call
    try:
        _start_worker_with(worker, invoice_event(42))
        waited = time.monotonic()
        # Over 3 s (a ~2 s rate-limit wait, then a 1.5 s Retry-After back-off), with a 0.5 s bound: never stalled.
        while time.monotonic() - waited < 3.0:
            worker.progress.beat()  # the consumer loop polls happily meanwhile
            assert worker.liveness.stalled_for(BOUND_S) is None
            time.sleep(0.05)
    finally:
        worker.stop.set()
