"""Several targets in ONE daemon under a burst (issue #19, scenario 4): QuickBooks Online, Xero and Zoho Books
sandboxes behind one daemon process, a burst of new invoices, edits, payments and refunds written as fast as
the generator can. Every invoice must be on every target exactly once with its payments, nothing dead-lettered
(a ledger connection pool that runs dry is a reason to wait, never a reason to give up on an invoice), and a
SIGTERM afterwards must exit cleanly and say so truthfully."""

from __future__ import annotations

import json
import signal
import time

import psycopg
import pytest
import yaml

from connectors import quickbooks_online, xero, zoho_books
from connectors.sandbox_kit import Faults, free_port
from daemon.localstack.verify import compare, expected_from_db
from tests.conftest import background_workload
from tests.test_end_to_end import start_daemon

pytestmark = pytest.mark.stack

PLATFORMS = {"qbo": quickbooks_online, "xero": xero, "zoho": zoho_books}


def patient_source(shop) -> dict:
    """Several targets on a small, busy machine: Debezium can take longer than the tests' usual 10 s to deliver
    a whole source transaction. These tests are about the sinks, not about releasing incomplete transactions
    (which posts an invoice without its lines and dead-letters it everywhere)."""
    return {"topic_prefix": shop.name, "incomplete_transaction_timeout_s": 120}


def multi_target_config(shop, tmp_path, sandboxes: dict, servers: dict, http_port: int, **overrides):
    targets = []
    for name, sandbox in sandboxes.items():
        credentials = tmp_path / f"{name}-credentials.json"
        credentials.write_text(json.dumps(sandbox.seed_credentials()))
        targets.append(sandbox.target_config(name, servers[name].url) | {"credentials_file": str(credentials)})
    config = shop.app_config(targets=targets, http={"port": http_port}, **overrides)
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config, config_file


def books_until_they_match(conn, sandboxes: dict, timeout_s: float) -> dict:
    """Compare every sandbox's books with the shop database until all match or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        expected = expected_from_db(conn)
        comparisons = {name: compare(expected, sandbox.booked_invoices()) for name, sandbox in sandboxes.items()}
        if all(c.ok for c in comparisons.values()) or time.monotonic() > deadline:
            return comparisons
        time.sleep(1)


def test_three_targets_one_daemon_burst_nothing_lost_nothing_dead_lettered(shop, tmp_path, report):
    # Slow platform answers keep each delivery (and whatever it holds) open for a while, as real ones do.
    sandboxes = {name: module.Sandbox(**getattr(module, "LOCAL_SANDBOX_OPTIONS", {}),
                                      faults=Faults(slow_s=0.15, seed=3 + i))
                 for i, (name, module) in enumerate(PLATFORMS.items())}
    servers = {name: sandbox.serve() for name, sandbox in sandboxes.items()}
    http_port = free_port()
    _, config_file = multi_target_config(shop, tmp_path, sandboxes, servers, http_port, source=patient_source(shop))
    log_path = tmp_path / "daemon.log"
    comparisons: dict = {}
    try:
        with open(log_path, "ab") as log_file, psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            daemon = start_daemon(config_file, log_file)
            writer, counts = background_workload(conn, seed=19, count=220, rate_per_s=None,
                                                 mix={"new": 8, "edit": 3, "partial": 3, "pay": 3, "refund": 2,
                                                      "void": 1})
            writer.join(180)
            comparisons = books_until_they_match(conn, sandboxes, 240)
            daemon.send_signal(signal.SIGTERM)
            exit_code = daemon.wait(90)
        with psycopg.connect(shop.ledger_dsn, autocommit=True) as ledger:
            dead = ledger.execute("SELECT target, error_class, reason FROM dead_letters ORDER BY id").fetchall()
    finally:
        for server in servers.values():
            server.stop()
    log_text = log_path.read_text(errors="replace")
    problems = {name: c.problems() for name, c in comparisons.items() if not c.ok}
    assert not problems, f"books differ: {problems}\ndead letters: {dead[:10]}\nlog tail: {log_text[-3000:]}"
    assert dead == [], f"dead-lettered: {dead[:10]}"
    assert exit_code == 0 and '"clean": true' in log_text, log_text[-2000:]
    first = next(iter(comparisons.values()))
    assert first.issued > 60 and first.payments_checked > 20
    report(f"{len(sandboxes)} targets in one daemon ({', '.join(PLATFORMS)}), burst {counts}: on every target "
           f"{first.issued} issued invoices exactly once, {first.voided} voids, {first.payments_checked} payments; "
           f"0 dead letters; clean SIGTERM")


def test_missing_credentials_and_a_revoked_grant_pause_the_target_until_credentials_set(shop, tmp_path, capsys,
                                                                                       report):
    """Issue #19, scenario 6: a target with no stored credentials (QuickBooks Online) and one whose refresh token
    the platform no longer honours (Xero: invalid_grant) dead-letter nothing — they pause, offsets wait, the reason
    shows in `ledgerwire status` and the ledgerwire_target_paused metric — and both resume by themselves after
    `ledgerwire credentials set`, delivering every invoice exactly once."""
    import random

    from daemon import cli, metrics

    from daemon.localstack import generator
    from daemon.app import Daemon
    from daemon.sink.ledger import Ledger

    qbo = quickbooks_online.Sandbox()
    xero_books = xero.Sandbox(**xero.LOCAL_SANDBOX_OPTIONS)
    servers = {"qbo": qbo.serve(), "xero": xero_books.serve()}
    dead_grant = xero_books.seed_credentials() | {"refresh_token": "revoked-by-the-user", "access_token": "",
                                                  "access_token_expires_at": 0}
    (tmp_path / "xero-seed.json").write_text(json.dumps(dead_grant))
    targets = [qbo.target_config("qbo", servers["qbo"].url),  # no credentials_file: nothing stored
               xero_books.target_config("xero", servers["xero"].url) | {"credentials_file": str(tmp_path / "xero-seed.json")}]
    config = shop.app_config(targets=targets, http={"port": free_port()}, source=patient_source(shop))
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    daemon = Daemon(config, serve_http=False)
    daemon.start()
    ledger = Ledger(shop.ledger_dsn, min_size=1, max_size=2)
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(6))
            counts = generator.Workload(conn, seed=6).run(30, mix={"new": 5, "pay": 2, "edit": 1})
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not all(ledger.pause_state(t)[1] for t in ("qbo", "xero")):
                time.sleep(0.5)
            reasons = {t: ledger.pause_state(t)[1] for t in ("qbo", "xero")}
            dead = ledger.dead_letters()
            assert dead == [], f"dead-lettered instead of pausing: {dead[:5]}"
            assert all(reasons.values()), reasons
            assert "credentials set" in reasons["qbo"] and "invalid_grant" in reasons["xero"], reasons
            # Offsets wait for the invoices (they may pass only versions with nothing to post, e.g. a draft).
            with psycopg.connect(shop.ledger_dsn, autocommit=True) as lconn:
                posted_while_paused = lconn.execute("SELECT count(*) FROM documents WHERE delivered_version > 0"
                                                    ).fetchone()[0]
            assert posted_while_paused == 0 and not qbo.booked_invoices() and not xero_books.booked_invoices()
            # The gauge follows the ledger's pause state (re-read every 2 s by each sink's loop).
            paused_gauges = [metrics.TARGET_PAUSED.labels(name, "reauthorization_required") for name in ("qbo", "xero")]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(g._value.get() == 1 for g in paused_gauges):
                time.sleep(0.2)
            assert [g._value.get() for g in paused_gauges] == [1, 1]
            capsys.readouterr()
            assert cli.main(["status", "--config", str(config_file)]) == 0
            status = capsys.readouterr().out
            assert status.count("PAUSED: re-authorisation required") == 2, status

            for name, sandbox in (("qbo", qbo), ("xero", xero_books)):
                fresh = tmp_path / f"{name}-fresh.json"
                fresh.write_text(json.dumps(sandbox.seed_credentials()))
                assert cli.main(["credentials", "set", "--config", str(config_file), "--target", name,
                                 "--from-file", str(fresh)]) == 0
            comparisons = books_until_they_match(conn, {"qbo": qbo, "xero": xero_books}, 120)
            assert all(c.ok for c in comparisons.values()), {n: c.problems() for n, c in comparisons.items()}
            assert ledger.dead_letters() == []
            assert all(ledger.pause_state(t) == (False, None) for t in ("qbo", "xero"))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(g._value.get() != 0 for g in paused_gauges):
                time.sleep(0.2)
            assert [g._value.get() for g in paused_gauges] == [0, 0]
    finally:
        daemon.shutdown()
        ledger.close()
        for server in servers.values():
            server.stop()
    report(f"missing credentials (qbo) and invalid_grant (xero): both paused with 0 dead letters and nothing "
           f"posted, shown by status and ledgerwire_target_paused; after `credentials set` "
           f"{comparisons['qbo'].issued} issued invoices exactly once on each; workload {counts}")
