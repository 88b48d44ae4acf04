"""Shared fixtures. The official platform specs are read from $LEDGERWIRE_SPECS_DIR (default
../shared/specs beside the repository); spec tests skip with a clear reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def specs_dir() -> Path:
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", REPO.parent / "shared" / "specs")).resolve()


_CHECKED: list[str] = []


@pytest.fixture
def report(request):
    """``report(line)``: what a proof on the real stack checked (counts), printed at the end of the run —
    ``pytest -q`` captures a test's own output, and CI's log should show what was proved."""
    return lambda line: _CHECKED.append(f"{request.node.name}: {line}")


def pytest_configure(config):
    """A SIGTERM (a CI runner's or `timeout`'s) ends the session like Ctrl-C, so the session's fixtures still tear
    down: the private stack's Kafka Connect, Kafka and PostgreSQL are stopped instead of left holding their ports."""
    import signal

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_terminal_summary(terminalreporter):
    if _CHECKED:
        terminalreporter.section("what the real-stack proofs checked")
        for line in _CHECKED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def specs() -> Path:
    path = specs_dir()
    if not path.is_dir():
        pytest.skip(f"official specs not found at {path} (set LEDGERWIRE_SPECS_DIR)")
    return path


# --- the real local stack (PostgreSQL + Kafka + Kafka Connect/Debezium) ---------------------------------

import shutil
import tempfile
import uuid
from dataclasses import dataclass

import psycopg


@pytest.fixture(scope="session")
def local_stack():
    """One stack for the session on its own ports and directory, started and stopped by the tests.

    LEDGERWIRE_TEST_STACK_DIR reuses an already running stack (``ledgerwire stack up``) for fast local
    iterations; it is then left running. LEDGERWIRE_TEST_PORT_SHIFT moves the private stack's four ports
    by that much, so two test runs on one machine never share a port pair.
    """
    from daemon.localstack import stack

    if os.environ.get("LEDGERWIRE_TEST_STACK_DIR"):
        cfg = stack.StackConfig(home=Path(os.environ["LEDGERWIRE_TEST_STACK_DIR"]))
        stack.up(cfg)
        yield cfg
        return
    home = Path(tempfile.mkdtemp(prefix="ledgerwire-test-stack-"))
    shift = int(os.environ.get("LEDGERWIRE_TEST_PORT_SHIFT", "0"))
    cfg = stack.StackConfig(home=home, pg_port=25432 + shift, kafka_port=29092 + shift,
                            controller_port=29093 + shift, connect_port=28083 + shift)
    try:
        stack.up(cfg)
    except Exception:
        stack.down(cfg)
        raise
    yield cfg
    stack.down(cfg, wipe=True)
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class ShopEnv:
    """An isolated shop database with its own Debezium connector and topic prefix, and its own ledger DB."""

    stack: object
    name: str
    shop_dsn: str
    ledger_dsn: str
    bootstrap: str

    def app_config(self, targets: list[dict] | None = None, **overrides):
        from daemon.config import AppConfig

        data = {
            "kafka": {"bootstrap_servers": self.bootstrap, "canonical_topic": f"{self.name}.invoices",
                      "fold_state_topic": f"{self.name}.fold-state", "dead_letter_topic": f"{self.name}.dead-letter",
                      "fold_group": f"{self.name}-fold", "sink_group_prefix": f"{self.name}-sink-"},
            "source": {"topic_prefix": self.name, "incomplete_transaction_timeout_s": 10},
            "postgres": {"dsn": self.ledger_dsn},
            "http": {"port": 0},
            "targets": targets or [],
            "shutdown_grace_s": 10,
        }
        data.update(overrides)
        return AppConfig.model_validate(data)

    def sandbox_config(self, sandbox, server_url: str, workdir: Path, name: str, http_port: int = 0,
                       web_connector_port: int = 0, **target_extra):
        """A config with one target on ``sandbox`` (credentials seeded from a file), written to YAML too."""
        import json

        import yaml

        credentials = workdir / f"{name}-credentials.json"
        credentials.write_text(json.dumps(sandbox.seed_credentials()))
        target = sandbox.target_config(name, server_url) | {"credentials_file": str(credentials)} | target_extra
        config = self.app_config(targets=[target], http={"port": http_port},
                                 web_connector={"port": web_connector_port})
        config_file = workdir / "ledgerwire.yml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        return config, config_file


def background_workload(conn, seed: int, count: int, rate_per_s: float | None = None, mix=None):
    """Seed reference data, then run the generator in a thread; returns (thread, counts dict)."""
    import random
    import threading

    from daemon.localstack import generator

    generator.seed_reference_data(conn, random.Random(seed))
    workload = generator.Workload(conn, seed=seed)
    counts: dict[str, int] = {}
    thread = threading.Thread(target=lambda: counts.update(workload.run(count, rate_per_s=rate_per_s, mix=mix)))
    thread.start()
    return thread, counts


@pytest.fixture
def shop(local_stack, monkeypatch):
    from cryptography.fernet import Fernet

    from daemon.localstack import stack

    name = f"t{uuid.uuid4().hex[:8]}"
    shop_dsn = stack.create_shop_database(local_stack, name)
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    stack.register_connector(local_stack, name=f"{name}-source", db=name, prefix=name, slot=name)
    monkeypatch.setenv("LEDGERWIRE_SECRET_KEY", Fernet.generate_key().decode())
    env = ShopEnv(local_stack, name, shop_dsn, local_stack.dsn(f"{name}_ledger"), local_stack.bootstrap)
    yield env
    stack.remove_connector(local_stack, f"{name}-source", slot=name)
