"""A pull platform's late refusal on the real stack: QuickBooks Desktop refuses a queued invoice (a mapped
account it does not have) when the Web Connector fetches it. The refusal becomes a dead letter with
QuickBooks' reason — `ledgerwire dlq list` shows it, the metric counts it — and after the bookkeeper fixes
the mapping, `ledgerwire dlq retry` queues it again and the next Web Connector session posts it, once."""

from __future__ import annotations

import json
import random
import time

import psycopg
import pytest
import yaml

from connectors.quickbooks_desktop import Sandbox
from connectors.sandbox_kit import free_port
from daemon import cli, metrics
from daemon.localstack import generator
from daemon.app import Daemon
from daemon.localstack.verify import compare, expected_from_db

pytestmark = pytest.mark.stack


def test_refused_queued_invoice_is_dead_lettered_and_retried(shop, tmp_path, capsys, report):
    sandbox = Sandbox()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    good = sandbox.target_config("qbd", "http://127.0.0.1") | {"credentials_file": str(credentials)}
    bad = json.loads(json.dumps(good))
    bad["mapping"]["income_accounts"]["labour"] = "Labour Income (closed)"  # not in the company file
    port = free_port()
    config_file = tmp_path / "ledgerwire.yml"

    def write_config(target: dict):
        config = shop.app_config(targets=[target], web_connector={"port": port})
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        return config

    daemon = Daemon(write_config(bad))
    daemon.start()
    sandbox.attach(f"http://127.0.0.1:{port}/connectors/qbd/qbwc")
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(21))
            generator.Workload(conn, seed=21).run(6, mix={"new": 1})
            issued = {r[0] for r in conn.execute("SELECT number FROM invoices WHERE status='issued'")}
            # Every generated job has labour, so QuickBooks refuses each invoice's labour item.
            deadline = time.monotonic() + 60
            rows: list = []
            while time.monotonic() < deadline and len(rows) < len(issued):
                sandbox.run_session()
                with daemon.ledger.pool.connection() as c:
                    rows = c.execute("SELECT invoice_number, reason, topic, error_class FROM dead_letters "
                                     "WHERE target='qbd' AND status='open'").fetchall()
                time.sleep(0.5)
            assert {r[0] for r in rows} == issued, rows
            assert all("3140" in r[1] and "Labour Income (closed)" in r[1] and r[2] == "pull:qbd"
                       and r[3] == "permanent" for r in rows)
            assert metrics.DELIVERIES.labels("qbd", "quickbooks-desktop", "dead_lettered")._value.get() >= len(issued)
            assert sandbox.booked_invoices() == []

            capsys.readouterr()
            assert cli.main(["dlq", "list", "--config", str(config_file), "--target", "qbd"]) == 0
            listed = capsys.readouterr().out
            assert f"{len(issued)} open" in listed and all(n in listed for n in issued)

            # The bookkeeper fixes the mapping; the daemon restarts with it; each dead letter is retried.
            daemon.shutdown()
            daemon = Daemon(write_config(good))
            daemon.start()
            with daemon.ledger.pool.connection() as c:
                ids = [r[0] for r in c.execute("SELECT id FROM dead_letters WHERE target='qbd' AND status='open'")]
            for dl_id in ids:
                assert cli.main(["dlq", "retry", str(dl_id), "--config", str(config_file)]) == 0
            capsys.readouterr()
            deadline = time.monotonic() + 60
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            while time.monotonic() < deadline and not comparison.ok:
                sandbox.run_session()
                time.sleep(0.5)
                comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            assert comparison.ok, comparison.problems()
            assert cli.main(["dlq", "list", "--config", str(config_file), "--target", "qbd"]) == 0
            assert "0 open" in capsys.readouterr().out
            report(f"pull dead letters: {len(issued)} invoices refused by QuickBooks Desktop dead-lettered with its "
                   f"reason, retried after the fix, each posted once")
    finally:
        daemon.shutdown()
