"""Issue #19 item 7: a target's rate limits and daily quota are shared by every daemon process delivering
for it, and survive a restart. Real PostgreSQL (a throwaway cluster, tests/pg_only.py)."""

from __future__ import annotations

import bisect
import threading
import time

import pytest
from cryptography.fernet import Fernet

from connectors.ratelimit import limiter_from, minute_limit
from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime
from daemon.sink.ledger import Ledger
from daemon.sink.shared_ratelimit import PgBuckets
from tests.pg_only import ledger_dsn, pg_cluster  # noqa: F401  (fixtures)


@pytest.fixture
def ledgers(ledger_dsn):
    """Ledger connections as separate daemon processes would have them (each its own pool)."""
    opened: list[Ledger] = []

    def open_ledger() -> Ledger:
        ledger = Ledger(ledger_dsn, min_size=1, max_size=4)
        ledger.ensure_schema()
        opened.append(ledger)
        return ledger

    yield open_ledger
    for ledger in opened:
        ledger.close()


def _target(**rate_limit) -> TargetConfig:
    data = {"name": "xero-main", "platform": "xero", "base_url": "http://127.0.0.1:9"}
    if rate_limit:
        data["rate_limit"] = rate_limit
    return TargetConfig.model_validate(data)


def _most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


def test_two_daemon_processes_together_never_exceed_the_limit(ledgers):
    """Two runtimes (two processes) send as fast as their limiters let them: together they stay within the
    platform's 20 requests per second, where per-process limiters would send about twice that."""
    key = Fernet.generate_key()
    limiters = [DaemonRuntime(ledgers(), key).limiter(_target(), per_second=20, concurrency=4) for _ in range(2)]
    sent: list[float] = []
    lock = threading.Lock()

    def process(limiter) -> None:
        for _ in range(40):
            with limiter.slot():
                with lock:
                    sent.append(time.monotonic())

    threads = [threading.Thread(target=process, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(sent) == 80
    assert _most_in_any_window(sent, 1.0) <= 20


def test_the_minute_window_is_shared_under_a_simulated_clock(ledgers):
    """Two processes on one database, the database's clock replaced by a simulated one: each sends when its
    limiter says, for three simulated minutes; no 60-second window holds more than 60 sends, and together
    they get the whole allowance (the shared bucket starves neither)."""
    now = [1_800_000_000.0]
    pool_a, pool_b = ledgers().pool, ledgers().pool
    limiters = [limiter_from(None, 60, None, 4, store=PgBuckets(pool, "xero-main", "requests", clock=lambda: now[0]),
                             sleep=lambda s: None) for pool in (pool_a, pool_b)]
    ready = [now[0], now[0]]
    sends: list[list[float]] = [[], []]
    while min(ready) < now[0] + 180 or not sends[1]:
        who = ready.index(min(ready))
        now[0] = ready[who]
        wait = limiters[who].buckets[0].reserve()
        sends[who].append(now[0] + wait)
        ready[who] = now[0] + wait + 0.01
        if now[0] > 1_800_000_000.0 + 180:
            break
    everything = sends[0] + sends[1]
    assert _most_in_any_window(everything, 60.0) <= 60
    assert len(sends[0]) > 50 and len(sends[1]) > 50, "both processes got a share"
    assert len([t for t in everything if t < 1_800_000_000.0 + 180]) >= 160  # 6 burst + 54/min × 3


def test_a_daily_quota_survives_a_restart_and_a_429_pause_is_shared(ledgers):
    key = Fernet.generate_key()
    first = DaemonRuntime(ledgers(), key).limiter(_target(), per_minute=120, per_day=5, concurrency=5)
    for _ in range(5):
        with first.slot_if_free() as free:
            assert free
    with first.slot_if_free() as free:
        assert not free, "the day's allowance is used"
    # A restart (a new process): the day's count is still there.
    restarted = DaemonRuntime(ledgers(), key).limiter(_target(), per_minute=120, per_day=5, concurrency=5)
    with restarted.slot_if_free() as free:
        assert not free, "a restart must not hand out a fresh daily quota"
    waits: list[float] = []
    patient = DaemonRuntime(ledgers(), key).limiter(_target(), per_minute=120, per_day=5, concurrency=5)
    patient._sleep = waits.append  # noqa: SLF001 - record the wait instead of sleeping a day
    with patient.slot():
        pass
    assert waits and waits[0] > 86000, "the sixth call waits until the first leaves the 24 h window"


def test_retry_after_pauses_every_process_of_the_target(ledgers):
    key = Fernet.generate_key()
    one = DaemonRuntime(ledgers(), key).limiter(_target(), per_minute=600, per_day=5000, concurrency=5)
    other = DaemonRuntime(ledgers(), key).limiter(_target(), per_minute=600, per_day=5000, concurrency=5)
    one.back_off(30.0)  # one process got a 429 with Retry-After: 30
    waits: list[float] = []
    other._sleep = waits.append  # noqa: SLF001
    with other.slot():
        pass
    assert waits and 29.0 <= waits[0] <= 31.0


def test_slot_if_free_takes_nothing_when_any_shared_window_is_empty(ledgers):
    pool = ledgers().pool
    store = PgBuckets(pool, "qbo", "requests")
    limiter = limiter_from(None, 40, 10, 1, store=store, sleep=lambda s: (_ for _ in ()).throw(AssertionError("slept")))
    day, minute = limiter.buckets[1], limiter.buckets[0]
    assert minute.capacity == 2
    for _ in range(2):
        with limiter.slot_if_free() as free:
            assert free
    with limiter.slot_if_free() as free:
        assert not free  # the minute bucket is empty: the day quota's send was given back
    assert day.sends_in_window() == 2


def test_the_qbo_batch_limiter_keeps_its_own_rows_and_the_override_only_changes_requests(ledgers):
    runtime = DaemonRuntime(ledgers(), Fernet.generate_key())
    target = _target(per_minute=6000, concurrency=16)
    requests = runtime.limiter(target, per_minute=500, concurrency=10)
    batches = runtime.limiter(target, per_minute=40, concurrency=10, overridable=False)
    [request_bucket], [batch_bucket] = requests.buckets, batches.buckets
    assert minute_limit(request_bucket) == pytest.approx(6000)
    assert minute_limit(batch_bucket) == pytest.approx(40)
    assert request_bucket.key["limiter"] != batch_bucket.key["limiter"]
