"""Client-side rate limiting shared by every connector: token buckets from documented limits.

A target gets one ``Limiter`` (per platform tenant); it holds one bucket per window the platform
documents (per second, per minute, per day) plus a concurrency cap, and slows down adaptively when the
platform still answers 429. Where the windows keep their state is a ``BucketStore``: this process
(``MemoryBuckets``: tests, offline tools) or, in the daemon, the ledger database
(``daemon.sink.shared_ratelimit.PgBuckets``), so every daemon process of a target draws from the same windows
and a restart keeps the day's count.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class TokenBucket:
    """``rate`` tokens per ``per`` seconds, bursting up to ``capacity``. Thread-safe."""

    def __init__(self, rate: float, per: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fill_per_s = rate / per
        self.capacity = capacity if capacity is not None else rate
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.fill_per_s)
        self._last = now

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it (0 = now)."""
        with self._lock:
            self._refill()
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.fill_per_s

    def take_if_free(self) -> bool:
        """Take one token only if one is there now."""
        with self._lock:
            self._refill()
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def give_back(self) -> None:
        """Return a token ``take_if_free`` took (another bucket had none)."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + 1)

    def drain_for(self, seconds: float) -> None:
        """The platform said 'slow down': owe ``seconds`` worth of tokens."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, 0.0) - seconds * self.fill_per_s


class WindowQuota:
    """At most ``limit`` requests in any ``window_s`` seconds — a daily allowance (Xero's 5,000/day, Zoho's
    plan cap). Unlike a bucket it does not pace: requests pass freely until the window's allowance is used,
    then each waits for the oldest to leave the window. Same ``reserve``/``drain_for`` as ``TokenBucket``."""

    def __init__(self, limit: float, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, int(limit))
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()  # planned send times, non-decreasing
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def _prune(self) -> float:
        """Drop the send times that left the window; return now."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return now

    def reserve(self) -> float:
        with self._lock:
            now = self._prune()
            at = max(now, self._blocked_until)
            if len(self._times) >= self.limit:
                at = max(at, self._times[-self.limit] + self.window_s)
            self._times.append(at)
            return at - now

    def take_if_free(self) -> bool:
        with self._lock:
            now = self._prune()
            if now < self._blocked_until or len(self._times) >= self.limit or (self._times and self._times[-1] > now):
                return False
            self._times.append(now)
            return True

    def give_back(self) -> None:
        with self._lock:
            if self._times:
                self._times.pop()

    def drain_for(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


class Limiter:
    """Windows (buckets, quotas) whose state may be shared between processes, and a concurrency cap that
    is per process (a semaphore): N daemon processes of a target may hold N × ``concurrency`` requests in
    flight — set a target's ``rate_limit.concurrency`` to the platform's cap divided by the process count."""

    def __init__(self, buckets: list, concurrency: int,
                 sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[float], None] | None = None,
                 on_slot: Callable[[float], None] | None = None) -> None:
        self.buckets = buckets
        self._slots = threading.BoundedSemaphore(concurrency)
        self._sleep = sleep
        self._on_wait = on_wait
        self._on_slot = on_slot  # told before every request how long it waits first (the sink's liveness)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a concurrency slot and a token in every bucket, then run the request."""
        with self._slots:
            wait = max((b.reserve() for b in self.buckets), default=0.0)
            if self._on_slot:
                self._on_slot(max(0.0, wait))
            if wait > 0:
                if self._on_wait:
                    self._on_wait(wait)
                self._sleep(wait)
            yield

    @contextmanager
    def slot_if_free(self) -> Iterator[bool]:
        """Like ``slot`` but never waits: yields False (and takes nothing) when a token or a concurrency
        slot is not free right now — for optional requests such as a batch the single path can replace."""
        if not self._slots.acquire(blocking=False):
            yield False
            return
        try:
            yield self._take_from_every_bucket_now()
        finally:
            self._slots.release()

    def _take_from_every_bucket_now(self) -> bool:
        """One token from each bucket, or — when any has none now — none at all."""
        taken = []
        for bucket in self.buckets:
            if not bucket.take_if_free():
                for other in taken:
                    other.give_back()
                return False
            taken.append(bucket)
        return True

    def back_off(self, retry_after: float | None) -> None:
        """Adaptive slow-down after a 429: honour Retry-After, else pause one second's worth."""
        for b in self.buckets:
            b.drain_for(retry_after if retry_after is not None else 1.0)


class BucketStore(Protocol):
    """Where a limiter's windows keep their state: this process (``MemoryBuckets``) or the ledger database,
    shared by every daemon process of a target (``daemon.sink.shared_ratelimit.PgBuckets``)."""

    def token_bucket(self, name: str, rate: float, per: float, capacity: float) -> Bucket: ...

    def window_quota(self, name: str, limit: float, window_s: float) -> Bucket: ...


class Bucket(Protocol):
    def reserve(self) -> float: ...

    def take_if_free(self) -> bool: ...

    def give_back(self) -> None: ...

    def drain_for(self, seconds: float) -> None: ...


class MemoryBuckets:
    """State in this process: unit tests, the CLI's offline checks, a daemon without a database."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def token_bucket(self, name: str, rate: float, per: float, capacity: float) -> TokenBucket:
        return TokenBucket(rate, per, capacity=capacity, clock=self.clock)

    def window_quota(self, name: str, limit: float, window_s: float) -> WindowQuota:
        return WindowQuota(limit, window_s, clock=self.clock)


# A per-second limit is paced at this share of it. A bucket holding one token spaces sends at least 1/rate
# apart: at rate = limit L a sliding second holds L sends by the sender's clock and the path's jitter (one
# request reaching the platform late, the next ones not) makes it L + 1 at the platform's. At 0.92 L, L + 1
# consecutive sends span L/(0.92 L) = 1.087 s — 87 ms of jitter before a breach — and even a closed second
# holds at most L. (The former ``limit - 1`` left 143 ms but used only 87.5 % of MYOB's 8/s.)
PER_SECOND_PACE = 0.92
# The first request of a minute window's L + 1 may reach the platform this late and the last on time.
MINUTE_JITTER_S = 1.0


def minute_limit(bucket: Any) -> float:
    """The requests per minute a minute bucket of ``limiter_from`` was built for: its burst and what it refills in
    a minute and its margin (what any L + 1 consecutive sends must span)."""
    return bucket.capacity + bucket.fill_per_s * (60.0 + MINUTE_JITTER_S)


def limiter_from(per_second: float | None, per_minute: float | None, per_day: float | None,
                 concurrency: int, clock: Callable[[], float] = time.monotonic,
                 store: BucketStore | None = None, **kwargs) -> Limiter:
    # Platforms count requests in sliding windows. A bucket that bursts B tokens and refills at R per
    # window can put B + R requests into one window, so B + R stays within the limit, with a margin for
    # requests that reach the platform late (PER_SECOND_PACE, MINUTE_JITTER_S).
    store = store or MemoryBuckets(clock)
    buckets = []
    if per_second:
        # One token: no burst, only no wait for the first request after an idle spell.
        buckets.append(store.token_bucket("second", per_second * PER_SECOND_PACE, 1.0, 1.0))
    if per_minute:
        # A burst of a twentieth of the minute, so a backlog does not trip a per-second fair-use check (a tenth
        # cost a tenth of the pace: 90 % of the limit over a long drain). B + R = limit would put exactly the limit
        # into a minute by the sender's clock and one more at the platform's when a request arrives late; the
        # refill leaves MINUTE_JITTER_S of each minute's sends as margin for that.
        burst = max(1.0, per_minute / 20)
        buckets.append(store.token_bucket("minute", (per_minute - burst) * 60.0 / (60.0 + MINUTE_JITTER_S), 60.0,
                                          burst))
    if per_day:
        # A daily allowance is a quota, not a pace: a bucket refilling 5,000/day would let a backlog through
        # at one call every 17 s once its burst was spent.
        buckets.append(store.window_quota("day", per_day, 86400.0))
    return Limiter(buckets, concurrency, **kwargs)
