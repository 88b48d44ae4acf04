"""The local stack's own start and stop (daemon/localstack/stack.py), each found by a full run.

PostgreSQL's stop: a fast shutdown held by Debezium's walsender (its Connect task waiting on a stopped broker)
outlasted pg_ctl's wait; `stop_postgres` returned with the server still shutting down, the next `start_postgres`
took it for running and was refused ("the database system is shutting down"), and every later stack test found no
server at all. Kafka's cluster id: one starting with "-" was read as an option by kafka-storage."""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon.localstack import stack


class FakePgCtl:
    """pg_ctl for a server whose fast shutdown does not finish in time: only an immediate stop ends it."""

    def __init__(self) -> None:
        self.running = True
        self.calls: list[list[str]] = []

    def run(self, cmd, **_kw) -> subprocess.CompletedProcess:
        args = cmd[cmd.index("--") + 1:] if "--" in cmd else cmd
        self.calls.append(args)
        if args[-1] == "status":
            return subprocess.CompletedProcess(args, 0 if self.running else 3)
        if args[-1] == "stop":
            mode = args[args.index("-m") + 1]
            if mode == "immediate":
                self.running = False
                return subprocess.CompletedProcess(args, 0)
            return subprocess.CompletedProcess(args, 1)  # "server does not shut down" after -t seconds
        raise AssertionError(f"unexpected pg_ctl call {args}")


def test_a_fast_stop_that_does_not_finish_becomes_an_immediate_one(tmp_path, monkeypatch):
    (tmp_path / "pg" / "data").mkdir(parents=True)
    (tmp_path / "pg" / "data" / "PG_VERSION").write_text("15\n")
    pg_ctl = FakePgCtl()
    monkeypatch.setattr(stack.subprocess, "run", pg_ctl.run)
    monkeypatch.setattr(stack, "_pg_bin", lambda: Path("/pg/bin"))
    stack.stop_postgres(stack.StackConfig(home=tmp_path))
    modes = [c[c.index("-m") + 1] for c in pg_ctl.calls if c[-1] == "stop"]
    assert modes == ["fast", "immediate"] and not pg_ctl.running, pg_ctl.calls


def test_a_fast_stop_that_finishes_is_all(tmp_path, monkeypatch):
    (tmp_path / "pg" / "data").mkdir(parents=True)
    (tmp_path / "pg" / "data" / "PG_VERSION").write_text("15\n")
    pg_ctl = FakePgCtl()

    def fast_works(cmd, **kw):
        done = pg_ctl.run(cmd, **kw)
        if done.args[-1] == "stop":
            pg_ctl.running = False
            return subprocess.CompletedProcess(done.args, 0)
        return done

    monkeypatch.setattr(stack.subprocess, "run", fast_works)
    monkeypatch.setattr(stack, "_pg_bin", lambda: Path("/pg/bin"))
    stack.stop_postgres(stack.StackConfig(home=tmp_path))
    assert [c[c.index("-m") + 1] for c in pg_ctl.calls if c[-1] == "stop"] == ["fast"]


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """Found by a full run: the stack's random cluster id was "-q_mR1eQSsq5N-h42ncaUg", kafka-storage read it as an
    option ("argument --cluster-id/-t: expected one argument"), the stack did not start and 75 tests errored."""
    import uuid

    draws = iter([uuid.UUID(bytes=bytes([0xFA]) + bytes(15)), uuid.UUID(bytes=bytes([0x12]) + bytes(15))])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(draws))
    cluster_id = stack._cluster_id()  # noqa: SLF001
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
