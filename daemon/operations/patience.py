"""Operator commands (resync, reconcile) wait out a platform's transient refusals, as the sink does.

They run beside the daemon and share the platform's limits with it — BILL allows 200 logins an hour per
developer key, QuickBooks Online 500 requests a minute per company — so a refusal that says "later" (429, a
login limit, a 5xx, a dropped connection) is waited out with the platform's Retry-After or a jittered
back-off, up to a deadline, instead of ending the command half done with a traceback. Anything else (a
validation error, expired authorisation) is the caller's to report at once.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO, TypeVar

from connectors.base import RetryableError, UncertainOutcomeError

T = TypeVar("T")

MAX_BACKOFF_S = 30.0


@dataclass
class Patience:
    """How long one platform call may keep being retried (``deadline_s``) and how to wait: ``wait`` returns
    True when the wait was cut short (the daemon passes its stop event's ``wait``), which ends the retries."""

    deadline_s: float = 600.0
    uncertain_wait_s: float = 30.0  # a request that may still land gets this long before it is looked up again
    wait: Callable[[float], object] = time.sleep
    clock: Callable[[], float] = time.monotonic
    say: TextIO | None = field(default_factory=lambda: sys.stderr)
    rng: random.Random = field(default_factory=random.Random)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on a transient refusal until it succeeds or ``deadline_s`` has passed (then the
        last refusal is raised)."""
        give_up_at = self.clock() + self.deadline_s
        attempt = 0
        while True:
            try:
                return fn()
            except RetryableError as exc:
                attempt += 1
                delay = max(exc.retry_after or 0.0, self.rng.uniform(0.5, min(MAX_BACKOFF_S, 2.0 ** attempt)))
                if isinstance(exc, UncertainOutcomeError):
                    delay = max(delay, self.uncertain_wait_s)
                if self.clock() + delay > give_up_at:
                    raise
                if self.say is not None:
                    print(f"waiting {delay:.0f} s before {what} again: {exc.reason}", file=self.say, flush=True)
                if self.wait(delay) is True:
                    raise
