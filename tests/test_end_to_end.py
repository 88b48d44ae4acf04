"""The spine, end to end on the real stack: shop PostgreSQL → Debezium → Kafka → `ledgerwire run` (a real
subprocess) → a platform sandbox. A generated workload with edits after posting, partial and full
payments, reversals, deposits, refunds and voids runs while the daemon is SIGKILLed and restarted twice;
at the end every issued invoice exists exactly once with its total and tax to the cent, its received
payments applied to it, voids propagated, and nothing is posted twice."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from connectors.registry import PLATFORM_PACKAGES
from connectors.sandbox_kit import free_port
from daemon.localstack.verify import compare, expected_from_db
from tests.conftest import background_workload

pytestmark = pytest.mark.stack


def _sandbox_module(platform: str):
    try:
        return importlib.import_module(PLATFORM_PACKAGES[platform])
    except ImportError as exc:
        pytest.skip(f"{platform} connector not available: {exc}")


def start_daemon(config_file, log_file) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config_file)],
                            stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)


# A platform whose spine run shows a defect not fixed yet: the run still happens (and is reported), named here.
KNOWN_DEFECTS: dict[str, str] = {}


@pytest.mark.parametrize("platform", [
    pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN_DEFECTS[p], strict=False)) if p in KNOWN_DEFECTS else p
    for p in sorted(PLATFORM_PACKAGES)])
def test_spine_end_to_end_with_daemon_kills(shop, tmp_path, platform, report):
    module = _sandbox_module(platform)
    # A package may raise its sandbox's documented rate limit for this run (LOCAL_SANDBOX_OPTIONS): at Xero's
    # 60 calls/minute the workload would take ten minutes; its target_config follows the sandbox's limits.
    sandbox = module.Sandbox(**getattr(module, "LOCAL_SANDBOX_OPTIONS", {}))
    server = sandbox.serve()
    http_port, web_connector_port = free_port(), free_port()
    _, config_file = shop.sandbox_config(sandbox, server.url, tmp_path, "e2e", http_port=http_port,
                                         web_connector_port=web_connector_port)
    if hasattr(sandbox, "attach"):  # pull platforms: the simulated Web Connector polls the daemon's endpoint
        sandbox.attach(f"http://127.0.0.1:{web_connector_port}/connectors/e2e/qbwc")
        sandbox.start_polling(0.5)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "ab") as log_file, psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        daemon = start_daemon(config_file, log_file)
        writer, counts = background_workload(conn, seed=3, count=160, rate_per_s=25)
        kills = 0
        for pause in (3.0, 3.5):
            time.sleep(pause)
            daemon.send_signal(signal.SIGKILL)  # no drain, no commit: the worst case
            daemon.wait(10)
            kills += 1
            daemon = start_daemon(config_file, log_file)
        writer.join(120)
        deadline = time.monotonic() + 150
        comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
        while time.monotonic() < deadline and not comparison.ok:
            time.sleep(2)
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
        # A clean stop drains and exits 0 within the grace period.
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(60)
    if hasattr(sandbox, "stop_polling"):
        sandbox.stop_polling()
    server.stop()
    booked = sandbox.booked_invoices()
    assert comparison.ok, f"books differ: {comparison.problems()}\n(daemon log: {log_path})"
    assert exit_code == 0
    assert comparison.issued > 40 and comparison.voided > 0 and comparison.payments_checked > 20
    assert counts.get("edit", 0) > 5 and counts.get("reverse", 0) > 0 and counts.get("partial", 0) > 5
    report(f"{platform}: {comparison.issued} issued invoices exactly once, {comparison.voided} voids, "
          f"{comparison.payments_checked} payments checked, {len(booked)} documents, {kills} SIGKILLs; "
          f"operations {counts}")
