"""Schema changes in the shop database (an added nullable column, a widened numeric) keep the daemon
running: later changes are decoded with the new schema and folded as before."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg
import pytest

from daemon.source.fold_runner import FoldRunner
from tests.test_fold_stack import read_canonical
from tests.test_pipeline_stack import new_invoice, seed

pytestmark = pytest.mark.stack


def test_added_column_and_widened_numeric(shop):
    config = shop.app_config()
    stop = threading.Event()
    fold = FoldRunner(config, stop, transactional_id=f"{shop.name}-fold")
    thread = threading.Thread(target=fold.run, daemon=True)
    thread.start()
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        seed(conn)
        first = new_invoice(conn, 1, "100.00")
        conn.execute("ALTER TABLE invoices ADD COLUMN po_number text")
        conn.execute("ALTER TABLE invoice_lines ALTER COLUMN quantity TYPE numeric(14,4)")
        second = new_invoice(conn, 2, "80.00")
        with conn.transaction():
            conn.execute("UPDATE invoices SET po_number='PO-778' WHERE id=%s", (second,))
            conn.execute("UPDATE invoice_lines SET quantity=2.5 WHERE invoice_id=%s", (second,))
            conn.execute("UPDATE line_taxes SET amount=12.50 WHERE invoice_id=%s", (second,))
            conn.execute("UPDATE invoices SET subtotal=200.00, tax_total=12.50, total=212.50 WHERE id=%s", (second,))
    deadline = time.monotonic() + 60
    latest = {}
    while time.monotonic() < deadline:
        latest = {e.invoice_id: e for e in read_canonical(shop.bootstrap, config.kafka.canonical_topic)}
        if second in latest and latest[second].computed.total == Decimal("212.50"):
            break
        time.sleep(1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the fold stopped cleanly after the schema changes"
    assert latest[first].computed.total == Decimal("106.25")
    assert latest[second].lines[0].quantity == Decimal("2.500") and latest[second].computed.total == Decimal("212.50")
    assert not latest[second].totals_mismatch
