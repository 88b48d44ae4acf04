"""Operator commands wait out a platform's transient refusals (daemon/operations/patience.py): found by the chaos
run with every connector, where a `resync` beside two daemons met BILL's five-logins-a-minute limit and ended
with a traceback, the period half resynced."""

from __future__ import annotations

import io

import pytest

from connectors.base import PermanentError, RateLimitedError, RetryableError, UncertainOutcomeError
from daemon.operations.patience import Patience


class Clock:
    def __init__(self) -> None:
        self.now, self.waits = 0.0, []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def refusing(*errors: Exception):
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return "answer"
    return call


def patience(clock: Clock, **kw) -> Patience:
    return Patience(wait=clock.wait, clock=lambda: clock.now, say=io.StringIO(), **kw)


def test_a_rate_limit_is_waited_out_for_as_long_as_the_platform_says():
    clock = Clock()
    p = patience(clock)
    assert p.call("reading INV-1", refusing(RateLimitedError("too many logins", retry_after=42.0))) == "answer"
    assert clock.waits == [42.0]
    assert "waiting 42 s before reading INV-1 again: too many logins" in p.say.getvalue()


def test_an_outage_backs_off_and_an_uncertain_write_waits_for_the_request_timeout():
    clock = Clock()
    call = refusing(RetryableError("503"), RetryableError("503"), UncertainOutcomeError("timed out after send"))
    assert patience(clock, uncertain_wait_s=20.0).call("resyncing INV-1", call) == "answer"
    assert len(clock.waits) == 3 and all(0.5 <= w <= 30.0 for w in clock.waits) and clock.waits[2] >= 20.0


def test_a_refusal_that_is_not_transient_is_raised_at_once():
    clock = Clock()
    with pytest.raises(PermanentError):
        patience(clock).call("resyncing INV-1", refusing(PermanentError("voided at the platform")))
    assert clock.waits == []


def test_past_the_deadline_the_last_refusal_is_raised():
    clock = Clock()
    call = refusing(*[RateLimitedError("slow down", retry_after=50.0) for _ in range(10)])
    with pytest.raises(RateLimitedError):
        patience(clock, deadline_s=120.0).call("reading INV-1", call)
    assert clock.waits == [50.0, 50.0]


def test_a_wait_cut_short_by_a_shutdown_ends_the_retries():
    p = Patience(wait=lambda seconds: True, say=None)
    with pytest.raises(RateLimitedError):
        p.call("reading INV-1", refusing(RateLimitedError("slow down", retry_after=5.0)))
