"""`run --preview` and `resync --preview` on the real stack: they print exactly what would be sent for the
waiting invoices and send nothing, write no document and commit no offset — the sink that starts afterwards
still posts every invoice, once."""

from __future__ import annotations

import json
import random
import time

import psycopg
import pytest
import yaml

from connectors.quickbooks_online import Sandbox
from daemon import cli
from daemon.localstack import generator
from daemon.app import Daemon
from daemon.localstack.verify import compare, expected_from_db

pytestmark = pytest.mark.stack


def _ledger_counts(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        offsets = conn.execute("SELECT count(*) FROM sink_offsets").fetchone()[0]
    return documents, offsets


def test_preview_sends_nothing_and_commits_nothing(shop, tmp_path, capsys, report):
    sandbox = Sandbox()
    server = sandbox.serve()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    target = sandbox.target_config("qbo", server.url) | {"credentials_file": str(credentials)}
    config = shop.app_config(targets=[target], run_sinks=False)  # the fold only: invoices wait for the sink
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    fold = Daemon(config, serve_http=False)
    fold.start()
    sink = None
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(11))
            generator.Workload(conn, seed=11).run(12, mix={"new": 1})
            issued = [r[0] for r in conn.execute("SELECT number FROM invoices WHERE status='issued'")]
            assert len(issued) == 12

            # The fold publishes the canonical events; run --preview shows each waiting invoice.
            deadline = time.monotonic() + 60
            shown: set[str] = set()
            while time.monotonic() < deadline and shown != set(issued):
                capsys.readouterr()
                assert cli.main(["run", "--config", str(config_file), "--preview"]) == 0
                out = capsys.readouterr().out
                shown = {line.split()[1] for line in out.splitlines() if line.startswith("== ")}
                time.sleep(1)
            assert shown == set(issued), out
            assert f"preview qbo: {len(issued)} invoice(s) waiting; nothing sent" in out
            bodies = [json.loads(line) for line in out.splitlines() if line.startswith("   {")]
            invoice_bodies = [b for b in bodies if "DocNumber" in b]
            assert sorted(b["DocNumber"] for b in invoice_bodies) == sorted(issued)
            capsys.readouterr()
            assert cli.main(["run", "--config", str(config_file), "--preview", "--limit", "3"]) == 0
            limited = capsys.readouterr().out
            assert sum(1 for line in limited.splitlines() if line.startswith("== ")) == 3, limited

            period = ["--since", "2026-01-01", "--until", "2027-12-31"]
            assert cli.main(["resync", "--config", str(config_file), "--target", "qbo", "--preview", *period]) == 0
            resync_out = capsys.readouterr().out
            assert sum(1 for line in resync_out.splitlines() if line.startswith("== ")) == len(issued), resync_out

            # Nothing reached the platform, the ledger holds no document and no offset.
            assert sandbox.requests == [] and sandbox.booked_invoices() == []
            assert _ledger_counts(shop.ledger_dsn) == (0, 0)

            # The sink starting now posts every invoice exactly once: the preview consumed nothing.
            fold.shutdown()
            fold = None
            sink = Daemon(shop.app_config(targets=[target]), serve_http=False)
            sink.start()
            deadline = time.monotonic() + 90
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            while time.monotonic() < deadline and not comparison.ok:
                time.sleep(1)
                comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            assert comparison.ok, comparison.problems()
            assert len(sandbox.booked_invoices()) == len(issued)
            report(f"preview: {len(issued)} invoices shown by run --preview and resync --preview with 0 requests "
                   f"sent, 0 documents, 0 offsets; then posted once each by the sink")
    finally:
        for daemon in (fold, sink):
            if daemon is not None:
                daemon.shutdown()
        server.stop()
