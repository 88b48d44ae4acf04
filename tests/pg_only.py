"""A throwaway PostgreSQL cluster (no Kafka) for tests of the ledger's own tables: credentials, shared
rate limits. Its port is derived from LEDGERWIRE_TEST_PORT_SHIFT (25439 + shift), never the stack's."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


_CLUSTER: dict[str, object] = {}  # one cluster per test process, shared by every module importing the fixture


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    # Each module that imports this fixture gets its own session-scoped copy: they share one cluster,
    # stopped when the last of them is torn down.
    from daemon.localstack import stack  # noqa: PLC0415

    if not _CLUSTER:
        home = Path(tempfile.mkdtemp(prefix="ledgerwire-test-pg-"))
        shift = int(os.environ.get("LEDGERWIRE_TEST_PORT_SHIFT", "0"))
        cfg = stack.StackConfig(home=home, pg_port=25439 + shift)
        _CLUSTER.update(cfg=cfg, users=0)
        try:
            stack.start_postgres(cfg)
        except Exception:
            stack.stop_postgres(cfg)
            _CLUSTER.clear()
            raise
    _CLUSTER["users"] += 1
    cfg = _CLUSTER["cfg"]
    try:
        yield cfg
    finally:
        _CLUSTER["users"] -= 1
        if _CLUSTER["users"] == 0:
            stack.stop_postgres(cfg)
            shutil.rmtree(cfg.home, ignore_errors=True)
            _CLUSTER.clear()


@pytest.fixture
def ledger_dsn(pg_cluster) -> str:
    """A fresh database for one test (its own credentials and limiter rows)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_cluster.dsn(name)


def terminate_backends(dsn: str) -> int:
    """Kill every other session on ``dsn``'s database, as a database restart or a network cut would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchall()
    return len(rows)
