"""Short statements on a pooled ledger connection that survive a database restart.

After a restart (or ``pg_terminate_backend``) the pool still holds connections to dead backends; each one
fails once and is discarded by the pool when returned. Trying once more per pooled connection reaches a
fresh one; a database that stays away is a ``RetryableError`` (the sink backs off), never a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from connectors.base import RetryableError

T = TypeVar("T")


def on_pooled_connection(pool: Any, work: Callable[[Any], T], what: str) -> T:
    attempts = int(getattr(pool, "max_size", 1)) + 1
    for attempt in range(1, attempts + 1):
        try:
            with pool.connection() as conn:
                return work(conn)
        except psycopg.OperationalError as exc:
            if attempt == attempts:
                raise RetryableError(f"ledger database unavailable for {what}: {type(exc).__name__}") from exc
        except PoolTimeout as exc:
            raise RetryableError(f"no ledger connection free for {what}: {type(exc).__name__}") from exc
    raise AssertionError("unreachable")
