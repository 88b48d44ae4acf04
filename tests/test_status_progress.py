"""`ledgerwire status` shows each target's progress — invoices done, versions remaining, the recent rate and
the time left — so a person can watch a history import (issue #21 item 3). Against a throwaway PostgreSQL
(the ledger's own tables), no Kafka: ``remaining`` is the lag the caller measured."""

from __future__ import annotations

import psycopg

from daemon.operations import offsets as ops
from daemon.sink.ledger import Ledger
from tests.pg_only import ledger_dsn, pg_cluster  # noqa: F401  (fixtures)


def _deliver(conn, target: str, invoice_id: int, minutes_ago: float) -> None:
    conn.execute("INSERT INTO documents (target, invoice_id, invoice_number, delivered_version, status, state) "
                 "VALUES (%s, %s, %s, 1, 'posted', '{}')", (target, invoice_id, f"INV-{invoice_id}"))
    conn.execute("INSERT INTO audit_log (target, invoice_id, invoice_number, version, action, at, prev_hash, "
                 "record_hash) VALUES (%s, %s, %s, 1, 'create', now() - make_interval(secs => %s), '', '')",
                 (target, invoice_id, f"INV-{invoice_id}", minutes_ago * 60))


def test_progress_counts_done_remaining_and_the_eta_from_the_last_ten_minutes(ledger_dsn):
    ledger = Ledger(ledger_dsn, min_size=1, max_size=1)
    ledger.ensure_schema()
    ledger.close()
    with psycopg.connect(ledger_dsn, autocommit=True) as conn:
        for n in range(30):  # 30 deliveries in the last ten minutes: 3 a minute
            _deliver(conn, "xero", n, minutes_ago=n / 3 % 9.5)
        for n in range(30, 130):  # 100 an hour ago: done, but not in the rate
            _deliver(conn, "xero", n, minutes_ago=60)
        conn.execute("INSERT INTO documents (target, invoice_id, invoice_number, delivered_version, status, state) "
                     "VALUES ('xero', 999, 'INV-999', 0, 'none', '{}')")  # seen, never delivered
        _deliver(conn, "odoo", 1, minutes_ago=1)

        xero = ops.progress(conn, "xero", remaining=90)
        assert xero == {"done": 130, "remaining": 90, "per_minute": 3.0, "eta_s": 1800}
        assert ops.format_duration(xero["eta_s"]) == "00:30:00"
        # Nothing delivered lately: no ETA rather than a made-up one; nothing left: done.
        idle = ops.progress(conn, "zoho", remaining=5)
        assert idle["done"] == 0 and idle["per_minute"] == 0 and idle["eta_s"] is None
        assert ops.format_duration(idle["eta_s"]) == "unknown"
        assert ops.progress(conn, "odoo", remaining=0)["eta_s"] == 0
    assert ops.format_duration(3 * 86400 + 3725) == "3d 01:02:05"
