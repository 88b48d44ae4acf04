"""Resync and reconciliation on the real stack with the QuickBooks Online sandbox: a document deleted by
hand and one edited by hand at the platform are found by `reconcile`, shown by `resync --dry-run`
without sending anything, and repaired by `resync` without duplicating anything."""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal

import psycopg
import pytest
import yaml

from connectors.quickbooks_online import Sandbox
from connectors.sandbox_kit import free_port
from daemon import cli
from daemon.localstack import generator
from daemon.app import Daemon
from daemon.localstack.verify import compare, expected_from_db

pytestmark = pytest.mark.stack


def test_reconcile_finds_and_resync_repairs_hand_edits(shop, tmp_path, capsys):
    sandbox = Sandbox()
    server = sandbox.serve()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    config = shop.app_config(targets=[sandbox.target_config("qbo", server.url) | {"credentials_file": str(credentials)}],
                             http={"port": free_port()})
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    daemon = Daemon(config, serve_http=False)
    daemon.start()
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(4))
            generator.Workload(conn, seed=4).run(40, mix={"new": 6, "partial": 2, "pay": 1})
            deadline = time.monotonic() + 90
            while not compare(expected_from_db(conn), sandbox.booked_invoices()).ok and time.monotonic() < deadline:
                time.sleep(1)
            assert compare(expected_from_db(conn), sandbox.booked_invoices()).ok
            # The bookkeeper deletes one invoice by hand and edits another's total.
            realm = next(iter(sandbox.realms.values()))
            invoices = sorted(realm.entities["Invoice"].values(), key=lambda i: int(i["Id"]))
            unpaid = [i for i in invoices if i["Balance"] == i["TotalAmt"]]
            deleted, edited = unpaid[0], unpaid[1]
            del realm.entities["Invoice"][deleted["Id"]]
            edited["TotalAmt"] = edited["TotalAmt"] + Decimal("10.00")
            edited["Balance"] = edited["TotalAmt"]

            period = ["--since", "2026-11-01", "--until", "2026-11-30"]
            capsys.readouterr()
            assert cli.main(["reconcile", "--config", str(config_file), "--target", "qbo", "--format", "json", *period]) == 1
            found = {r["invoice"]: r["kind"] for r in json.loads(capsys.readouterr().out)}
            assert found == {deleted["DocNumber"]: "missing", edited["DocNumber"]: "amount"}

            before = len(realm.entities["Invoice"])
            assert cli.main(["resync", "--config", str(config_file), "--target", "qbo", "--dry-run", *period]) == 0
            out = capsys.readouterr().out
            assert "dry run: nothing sent" in out and "'create': 1" in out and "'update': 1" in out
            assert len(realm.entities["Invoice"]) == before

            assert cli.main(["resync", "--config", str(config_file), "--target", "qbo", *period]) == 0
            resync_out = capsys.readouterr().out
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            assert comparison.ok, (comparison.problems(), resync_out)
            assert cli.main(["reconcile", "--config", str(config_file), "--target", "qbo", *period]) == 0
            assert cli.main(["trace", "--config", str(config_file), deleted["DocNumber"]]) == 0
            assert "resync-create" in capsys.readouterr().out
    finally:
        daemon.shutdown()
        server.stop()


def test_reconcile_of_refunds_and_never_posted_voids_is_zero_and_resync_goes_on_past_errors(shop, tmp_path, capsys,
                                                                                             report):
    """Issue #19, scenario 9: after a generated workload with payments, refunds and voids — and one invoice
    voided in the shop before it was ever posted — reconcile reports 0 differences; resync calls that void
    "nothing to do"; and a resync meeting a document voided by hand at the platform reports the error for
    that invoice and still repairs the others."""
    sandbox = Sandbox()
    server = sandbox.serve()
    config, config_file = shop.sandbox_config(sandbox, server.url, tmp_path, "qbo", http_port=free_port())
    daemon = Daemon(config, serve_http=False)
    daemon.start()
    period = ["--since", "2026-11-01", "--until", "2026-11-30"]
    base = ["--config", str(config_file), "--target", "qbo", *period]
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(9))
            workload = generator.Workload(conn, seed=9)
            counts = workload.run(70, mix={"new": 6, "partial": 2, "pay": 2, "refund": 2, "void": 1, "edit": 1})
            with conn.transaction():  # voided in the same transaction it was issued in: never posted
                never_posted = workload.new_job_invoice()
                conn.execute("UPDATE invoices SET status='void' WHERE id=%s", (never_posted,))
            never_posted_number = conn.execute("SELECT number FROM invoices WHERE id=%s", (never_posted,)).fetchone()[0]
            deadline = time.monotonic() + 120
            while not compare(expected_from_db(conn), sandbox.booked_invoices()).ok and time.monotonic() < deadline:
                time.sleep(1)
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            assert comparison.ok, comparison.problems()
            refunded = conn.execute("SELECT count(DISTINCT invoice_id) FROM refunds").fetchone()[0]
            voids = conn.execute("SELECT count(*) FROM invoices WHERE status='void'").fetchone()[0]
            assert refunded > 0 and voids > 1

            capsys.readouterr()
            assert cli.main(["reconcile", *base, "--format", "json"]) == 0, capsys.readouterr().out
            assert json.loads(capsys.readouterr().out) == []

            assert cli.main(["resync", *base, "--dry-run"]) == 0
            out = capsys.readouterr().out
            line = next(ln for ln in out.splitlines() if ln.startswith(never_posted_number))
            assert "no change" in line and "nothing to do" in line, line
            assert "'create': 0" in out, out

            # By hand at the platform: one unpaid invoice voided, another deleted.
            realm = next(iter(sandbox.realms.values()))
            unpaid = [i for i in sorted(realm.entities["Invoice"].values(), key=lambda i: int(i["Id"]))
                      if i["Balance"] == i["TotalAmt"] and not i.get("_voided")]
            voided_by_hand, deleted = unpaid[0], unpaid[1]
            voided_by_hand.update({"_voided": True, "_total_before_void": voided_by_hand["TotalAmt"],
                                   "TotalAmt": Decimal("0"), "Balance": Decimal("0")})
            del realm.entities["Invoice"][deleted["Id"]]
            assert cli.main(["resync", *base]) == 1
            out = capsys.readouterr().out
            failed = [ln for ln in out.splitlines() if "FAILED" in ln]
            assert len(failed) == 1 and failed[0].startswith(voided_by_hand["DocNumber"]), out
            assert "'create': 1" in out, out
            live = {b.number for b in sandbox.booked_invoices() if not b.voided}
            assert deleted["DocNumber"] in live
    finally:
        daemon.shutdown()
        server.stop()
    report(f"reconcile 0 differences after {counts} ({refunded} refunded invoices, {voids} voids, one never "
           f"posted); resync reported the hand-voided document and recreated the hand-deleted one")
