"""Rate limits and daily quotas shared by every daemon process of a target, kept in the ledger database.

Two daemon processes in one consumer group deliver for the same target; with limits held in each process
they would send twice the documented rate, and a restart would hand out a fresh daily quota. Here a
target's windows live in PostgreSQL and survive restarts:

* a token bucket is one row per (target, limiter, window) — tokens and the time they were counted — taken
  by ONE atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (the row lock serialises processes; the
  database's clock is the only clock, so hosts need not agree on time);
* a window quota (a daily allowance) keeps one row per planned send in ``rate_limit_sends`` and a
  row-locked state row (``blocked_until`` after a 429): reserving is a lock, then one statement that finds
  the ``limit``-th newest send, inserts the new one and drops those that left the window — exact, like the
  in-memory ``WindowQuota``.

Why not a library: the Python limiters with shared backends (limits, pyrate-limiter) keep their state in
Redis/Memcached/MongoDB or, for PostgreSQL, through SQLAlchemy — a second database client and, for a daily
quota, fixed windows that allow twice the allowance across a window edge. Ledgerwire already has
PostgreSQL and psycopg; two small statements keep the sliding-window guarantee.

Cost: one round trip per bucket per request (two to four for a quota, inside one transaction) on the
ledger pool — well under a millisecond locally, and negligible at the platforms' documented limits
(≤ 10 requests/s per target). The concurrency cap stays per process (``connectors.ratelimit.Limiter``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from daemon.sink.pgretry import on_pooled_connection

RATE_LIMIT_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    target        text NOT NULL,
    limiter       text NOT NULL,
    bucket        text NOT NULL,
    tokens        double precision NOT NULL DEFAULT 0,  -- token bucket: tokens now (negative = reserved ahead)
    counted_at    timestamptz NOT NULL DEFAULT now(),
    blocked_until timestamptz NOT NULL DEFAULT 'epoch',  -- window quota: paused until (a 429's Retry-After)
    PRIMARY KEY (target, limiter, bucket)
);
CREATE TABLE IF NOT EXISTS rate_limit_sends (
    id      bigserial PRIMARY KEY,
    target  text NOT NULL,
    limiter text NOT NULL,
    bucket  text NOT NULL,
    at      timestamptz NOT NULL  -- the planned send time (in the future while a caller waits for it)
);
CREATE INDEX IF NOT EXISTS rate_limit_sends_window ON rate_limit_sends (target, limiter, bucket, at);
"""

# The bucket's tokens refilled up to the statement's time; a row another process counted later is never
# refilled backwards.
_REFILLED = ("least(%(capacity)s, b.tokens + greatest(0, extract(epoch FROM {now} - b.counted_at)) * %(fill)s)")


class _PgState:
    def __init__(self, pool: Any, target: str, limiter: str, bucket: str,
                 clock: Callable[[], float] | None) -> None:
        self.pool = pool
        self.key = {"target": target, "limiter": limiter, "bucket": bucket}
        # Tests drive a simulated clock; the daemon uses the database's.
        self._clock = clock

    def _now_sql(self) -> str:
        return "%(now)s" if self._clock else "now()"

    def _args(self, **extra: Any) -> dict[str, Any]:
        args = dict(self.key, **extra)
        if self._clock:
            args["now"] = datetime.fromtimestamp(self._clock(), timezone.utc)
        return args

    def _run(self, work: Callable[[Any], Any]) -> Any:
        return on_pooled_connection(self.pool, work, "shared rate limits")


class PgTokenBucket(_PgState):
    """``connectors.ratelimit.TokenBucket`` with its state in ``rate_limit_buckets``."""

    def __init__(self, pool: Any, target: str, limiter: str, bucket: str, rate: float, per: float,
                 capacity: float, clock: Callable[[], float] | None = None) -> None:
        super().__init__(pool, target, limiter, bucket, clock)
        self.fill_per_s = rate / per
        self.capacity = capacity

    def _take(self, only_if_free: bool) -> float | None:
        now = self._now_sql()
        refilled = _REFILLED.format(now=now)
        sql = (f"INSERT INTO rate_limit_buckets AS b (target, limiter, bucket, tokens, counted_at) "
               f"VALUES (%(target)s, %(limiter)s, %(bucket)s, %(capacity)s - 1, {now}) "
               f"ON CONFLICT (target, limiter, bucket) DO UPDATE SET tokens = {refilled} - 1, "
               f"counted_at = greatest(b.counted_at, {now}) "
               + (f"WHERE {refilled} >= 1 " if only_if_free else "") + "RETURNING tokens")
        args = self._args(capacity=self.capacity, fill=self.fill_per_s)
        row = self._run(lambda conn: conn.execute(sql, args).fetchone())
        return None if row is None else float(row[0])

    def reserve(self) -> float:
        tokens = self._take(only_if_free=False)
        return 0.0 if tokens >= 0 else -tokens / self.fill_per_s

    def take_if_free(self) -> bool:
        return self._take(only_if_free=True) is not None

    def give_back(self) -> None:
        args = self._args(capacity=self.capacity)
        self._run(lambda conn: conn.execute(
            "UPDATE rate_limit_buckets SET tokens = least(%(capacity)s, tokens + 1) WHERE target=%(target)s "
            "AND limiter=%(limiter)s AND bucket=%(bucket)s", args))

    def drain_for(self, seconds: float) -> None:
        now = self._now_sql()
        args = self._args(capacity=self.capacity, fill=self.fill_per_s, owed=seconds * self.fill_per_s)
        self._run(lambda conn: conn.execute(
            f"INSERT INTO rate_limit_buckets AS b (target, limiter, bucket, tokens, counted_at) "
            f"VALUES (%(target)s, %(limiter)s, %(bucket)s, -%(owed)s, {now}) "
            f"ON CONFLICT (target, limiter, bucket) DO UPDATE SET "
            f"tokens = least({_REFILLED.format(now=now)}, 0) - %(owed)s, counted_at = greatest(b.counted_at, {now})",
            args))


class PgWindowQuota(_PgState):
    """``connectors.ratelimit.WindowQuota`` with its sends in ``rate_limit_sends``."""

    def __init__(self, pool: Any, target: str, limiter: str, bucket: str, limit: float, window_s: float,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(pool, target, limiter, bucket, clock)
        self.limit = max(1, int(limit))
        self.window = timedelta(seconds=window_s)

    def _locked(self, conn: Any) -> tuple[datetime, datetime]:
        """Lock the quota's state row for this transaction; return (now, blocked_until)."""
        row = conn.execute(
            f"INSERT INTO rate_limit_buckets AS b (target, limiter, bucket) VALUES (%(target)s, %(limiter)s, "
            f"%(bucket)s) ON CONFLICT (target, limiter, bucket) DO UPDATE SET blocked_until = b.blocked_until "
            f"RETURNING {self._now_sql()}, blocked_until", self._args()).fetchone()
        return row[0], row[1]

    def reserve(self) -> float:
        def work(conn: Any) -> float:
            with conn.transaction():
                now, blocked_until = self._locked(conn)
                args = self._args(window=self.window, skip=self.limit - 1, earliest=max(now, blocked_until))
                args["now"] = now
                at = conn.execute(
                    "WITH gone AS (DELETE FROM rate_limit_sends WHERE target=%(target)s AND limiter=%(limiter)s AND "
                    "bucket=%(bucket)s AND at <= %(now)s - %(window)s), "
                    "oldest_counted AS (SELECT at FROM rate_limit_sends WHERE target=%(target)s AND "
                    "limiter=%(limiter)s AND bucket=%(bucket)s AND at > %(now)s - %(window)s "
                    "ORDER BY at DESC OFFSET %(skip)s LIMIT 1) "
                    "INSERT INTO rate_limit_sends (target, limiter, bucket, at) SELECT %(target)s, %(limiter)s, "
                    "%(bucket)s, greatest(%(earliest)s, (SELECT at + %(window)s FROM oldest_counted)) RETURNING at",
                    args).fetchone()[0]
                return max(0.0, (at - now).total_seconds())

        return self._run(work)

    def take_if_free(self) -> bool:
        def work(conn: Any) -> bool:
            with conn.transaction():
                now, blocked_until = self._locked(conn)
                args = self._args(window=self.window)
                args["now"] = now
                count, last = conn.execute(
                    "SELECT count(*), max(at) FROM rate_limit_sends WHERE target=%(target)s AND limiter=%(limiter)s "
                    "AND bucket=%(bucket)s AND at > %(now)s - %(window)s", args).fetchone()
                if now < blocked_until or count >= self.limit or (last is not None and last > now):
                    return False
                conn.execute("INSERT INTO rate_limit_sends (target, limiter, bucket, at) VALUES (%(target)s, "
                             "%(limiter)s, %(bucket)s, %(now)s)", args)
                return True

        return self._run(work)

    def give_back(self) -> None:
        args = self._args()
        self._run(lambda conn: conn.execute(
            "DELETE FROM rate_limit_sends WHERE id = (SELECT id FROM rate_limit_sends WHERE target=%(target)s AND "
            "limiter=%(limiter)s AND bucket=%(bucket)s ORDER BY at DESC, id DESC LIMIT 1)", args))

    def drain_for(self, seconds: float) -> None:
        now = self._now_sql()
        args = self._args(pause=timedelta(seconds=seconds))
        self._run(lambda conn: conn.execute(
            f"INSERT INTO rate_limit_buckets AS b (target, limiter, bucket, blocked_until) VALUES (%(target)s, "
            f"%(limiter)s, %(bucket)s, {now} + %(pause)s) ON CONFLICT (target, limiter, bucket) DO UPDATE SET "
            f"blocked_until = greatest(b.blocked_until, {now} + %(pause)s)", args))

    def sends_in_window(self) -> int:
        """How much of the allowance the window holds now (status, tests)."""
        args = self._args(window=self.window)
        now = self._now_sql()
        return int(self._run(lambda conn: conn.execute(
            f"SELECT count(*) FROM rate_limit_sends WHERE target=%(target)s AND limiter=%(limiter)s AND "
            f"bucket=%(bucket)s AND at > {now} - %(window)s AND at <= {now}", args).fetchone()[0]))


class PgBuckets:
    """``connectors.ratelimit.BucketStore`` on the ledger database: one target's named limiter."""

    def __init__(self, pool: Any, target: str, limiter: str, clock: Callable[[], float] | None = None) -> None:
        self.pool = pool
        self.target = target
        self.limiter = limiter
        self.clock = clock

    def token_bucket(self, name: str, rate: float, per: float, capacity: float) -> PgTokenBucket:
        return PgTokenBucket(self.pool, self.target, self.limiter, name, rate, per, capacity, clock=self.clock)

    def window_quota(self, name: str, limit: float, window_s: float) -> PgWindowQuota:
        return PgWindowQuota(self.pool, self.target, self.limiter, name, limit, window_s, clock=self.clock)


def limiter_name(overridable: bool, per_second: float | None, per_minute: float | None,
                 per_day: float | None) -> str:
    """The request limiter is "requests"; a platform's second limiter (QuickBooks Online's batch limit) is
    named by its documented limits, so each keeps its own rows."""
    if overridable:
        return "requests"
    return "extra:" + "/".join(f"{v:g}" if v else "-" for v in (per_second, per_minute, per_day))


__all__ = ["PgBuckets", "PgTokenBucket", "PgWindowQuota", "RATE_LIMIT_SCHEMA_SQL", "limiter_name"]
