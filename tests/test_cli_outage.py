"""The CLI during an outage (issue #13 item 6): ``status`` and ``offsets show`` say which dependency is
unreachable in one line, still show what the ledger knows, print no traceback and exit 4 within a short timeout.
librdkafka's own log lines go through structlog as JSON, rate-limited."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from connectors.sandbox_kit import free_port
from daemon.liveness import KafkaLogRelay
from tests.pg_only import ledger_dsn, pg_cluster  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
EXIT_UNREACHABLE = 4
SECRET_KEY = "q4cMC1ZtIj3K2hQnWqvR0wZ8gqhF2sP3lY0m5Jt9uXw="  # a Fernet key for the test only


def run_cli(tmp_path: Path, config: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "daemon.cli", *args, "--config", str(config_file)],
                          env={**os.environ, "PYTHONPATH": str(REPO), "LEDGERWIRE_SECRET_KEY": SECRET_KEY},
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def outage_config(ledger: str, kafka_port: int) -> dict:
    return {"kafka": {"bootstrap_servers": f"127.0.0.1:{kafka_port}"}, "postgres": {"dsn": ledger},
            "targets": [{"name": "books", "platform": "quickbooks-online", "base_url": "http://127.0.0.1:1",
                         "settings": {"realm_id": "1"}}]}


def test_status_and_offsets_show_with_kafka_unreachable_say_so_in_one_line_and_show_the_ledger(tmp_path, ledger_dsn):
    from daemon.sink.ledger import Ledger

    ledger = Ledger(ledger_dsn, min_size=1, max_size=2)
    ledger.ensure_schema()
    ledger.set_offset("books", "ledgerwire.invoices", 3, 41)  # what the ledger knows about the sink
    ledger.close()
    config = outage_config(ledger_dsn, free_port())  # nothing listens there: Kafka is down
    config["source"] = {"connect_url": f"http://127.0.0.1:{free_port()}"}  # and so is Kafka Connect

    status, seconds = run_cli(tmp_path, config, "status")
    assert status.returncode == EXIT_UNREACHABLE, status.stderr
    assert "Traceback" not in status.stdout + status.stderr
    unreachable = [line for line in status.stdout.splitlines() if "unreachable" in line]
    assert len(unreachable) == 2 and unreachable[0].startswith("Kafka unreachable at 127.0.0.1:")
    assert unreachable[1].startswith("Kafka Connect unreachable at http://127.0.0.1:")
    assert "target books (quickbooks-online): lag unknown" in status.stdout  # the ledger's part still shown
    assert "dead letters open 0" in status.stdout
    assert seconds < 30
    assert not [line for line in status.stderr.splitlines() if line.strip() and not line.startswith("{")], \
        "librdkafka printed raw lines: " + status.stderr[:500]

    shown, seconds = run_cli(tmp_path, config, "offsets", "show")
    assert shown.returncode == EXIT_UNREACHABLE, shown.stderr
    assert "Traceback" not in shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("Kafka unreachable at 127.0.0.1:") and "stored offsets only" in lines[0]
    assert any(line.split()[:4] == ["ledgerwire-sink-books", "ledgerwire.invoices", "3", "41"] for line in lines)
    assert seconds < 30


def test_status_with_postgresql_unreachable_says_so_in_one_line(tmp_path):
    config = outage_config(f"postgresql://postgres@127.0.0.1:{free_port()}/ledgerwire", free_port())
    for command in (["status"], ["offsets", "show"]):
        done, seconds = run_cli(tmp_path, config, *command)
        assert done.returncode == EXIT_UNREACHABLE
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("PostgreSQL unreachable"), done.stderr
        assert seconds < 30


def test_librdkafka_lines_are_json_through_structlog_and_the_same_message_is_rate_limited(capsys):
    from daemon.logs import configure_logging

    configure_logging("INFO")
    now = [0.0]
    relay = KafkaLogRelay(interval_s=30, clock=lambda: now[0])
    refused = "FAIL [rdkafka#producer-{n}] 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: " \
              "Connection refused (after {ms}ms in state CONNECT)"
    for n in range(50):  # two clients, ~20 a second for 2.5 s: one message
        now[0] = n * 0.05
        relay.log(logging.ERROR, "%s", refused.format(n=n % 2, ms=n))
    relay.log(logging.WARNING, "%s", "REQTMOUT [rdkafka#consumer-1] Timed out 1 in-flight request")
    now[0] = 31.0
    relay.log(logging.ERROR, "%s", refused.format(n=1, ms=7))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(line["event"], line["level"], line["suppressed"]) for line in lines] == [
        ("librdkafka", "error", 0), ("librdkafka", "warning", 0), ("librdkafka", "error", 49)]


@pytest.mark.stack
def test_status_and_offsets_show_with_the_stack_s_kafka_and_then_postgresql_stopped(shop, tmp_path, report):
    """The same on a private stack, as an operator meets it: the broker stopped (then started again), then the
    ledger's PostgreSQL stopped (then started again)."""
    from daemon.localstack import stack
    from daemon.sink.ledger import Ledger

    config = shop.app_config(targets=[outage_config("", 0)["targets"][0]]).model_dump(mode="json")
    config["source"]["connect_url"] = shop.stack.connect_url
    ledger = Ledger(shop.ledger_dsn, min_size=1, max_size=2)
    ledger.ensure_schema()
    ledger.set_offset("books", config["kafka"]["canonical_topic"], 0, 7)
    ledger.close()
    stack._stop_pid(shop.stack, "kafka")  # noqa: SLF001 - the broker process only; its data is kept
    try:
        status, status_s = run_cli(tmp_path, config, "status")
        shown, shown_s = run_cli(tmp_path, config, "offsets", "show")
    finally:
        stack.start_kafka(shop.stack)
    for done in (status, shown):
        assert done.returncode == EXIT_UNREACHABLE and "Traceback" not in done.stdout + done.stderr, done.stderr
        assert done.stdout.splitlines()[0].startswith(f"Kafka unreachable at {shop.bootstrap}")
    assert "target books (quickbooks-online): lag unknown" in status.stdout
    assert any(line.split()[2:4] == ["0", "7"] for line in shown.stdout.splitlines()[2:])
    stack.stop_postgres(shop.stack)
    try:
        down, down_s = run_cli(tmp_path, config, "status")
    finally:
        stack.start_postgres(shop.stack)
    assert down.returncode == EXIT_UNREACHABLE and down.stdout == ""
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("PostgreSQL unreachable"), down.stderr
    report(f"Kafka stopped: status {status_s:.1f} s, offsets show {shown_s:.1f} s, one line each + the ledger's view, "
           f"exit 4; PostgreSQL stopped: status {down_s:.1f} s, one line, exit 4")
