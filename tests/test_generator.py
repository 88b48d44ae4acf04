"""The workload generator writes realistic, internally consistent shop data (real PostgreSQL)."""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest

from daemon.localstack import generator

pytestmark = pytest.mark.stack


@pytest.fixture
def shop_db(local_stack):
    name = f"gen_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(local_stack.dsn(name), autocommit=True) as conn:
        generator.apply_schema(conn)
        generator.apply_schema(conn)  # idempotent
        yield conn
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_workload_is_consistent_and_realistic(shop_db):
    conn = shop_db
    generator.seed_reference_data(conn, random.Random(5))
    generator.seed_reference_data(conn, random.Random(5))  # idempotent
    assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 40
    counts = generator.Workload(conn, seed=5).run(250)
    assert counts["new"] > 50 and counts.get("deposit", 0) > 0 and counts.get("void", 0) > 0
    # Stored totals always equal the lines and line taxes, to the cent.
    bad = conn.execute("""
        SELECT count(*) FROM invoices i WHERE i.subtotal <> COALESCE((SELECT SUM(ROUND(quantity*unit_price, 2))
               FROM invoice_lines WHERE invoice_id=i.id), 0)
           OR i.tax_total <> COALESCE((SELECT SUM(amount) FROM line_taxes WHERE invoice_id=i.id), 0)
           OR i.total <> i.subtotal + i.tax_total""").fetchone()[0]
    assert bad == 0
    # No invoice is overpaid; voided invoices have no live payments; deposits end up linked.
    books = generator.expected_books(conn)
    assert all(b.paid <= b.total for b in books.values())
    assert all(b.paid == 0 for b in books.values() if b.status == "void")
    assert conn.execute("SELECT count(*) FROM payments WHERE invoice_id IS NULL").fetchone()[0] == 0
    # Two-component taxes (GST + PST at the second location) and core charges without tax.
    assert conn.execute("SELECT count(*) FROM (SELECT line_id FROM line_taxes GROUP BY line_id HAVING count(*) = 2) x"
                        ).fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM invoice_lines l JOIN line_taxes t ON t.line_id=l.id WHERE "
                        "l.kind='core_charge'").fetchone()[0] == 0


def test_expected_books_for_a_scripted_invoice(shop_db):
    conn = shop_db
    generator.seed_reference_data(conn, random.Random(1), customers=1)
    work = generator.Workload(conn, seed=1)
    invoice_id = work.new_job_invoice()
    lines = conn.execute("SELECT quantity, unit_price FROM invoice_lines WHERE invoice_id=%s", (invoice_id,)).fetchall()
    subtotal = sum(generator.money(q * p) for q, p in lines)
    expected = generator.expected_books(conn, [invoice_id])
    (book,) = expected.values()
    assert book.subtotal == subtotal and book.total == book.subtotal + book.tax_total
    with conn.transaction():
        work._pay(invoice_id, generator.Decimal("50.00"))
    assert generator.expected_books(conn, [invoice_id])[book.number].paid == generator.Decimal("50.00")


def test_history_is_consistent_and_the_live_workload_continues_after_it(shop_db):
    """`generate --history` (COPY in batches): every invoice's stored totals equal its lines and taxes, payments
    never exceed the total, dates span the years asked for, and the live workload inserts after it."""
    conn = shop_db
    counts = generator.generate_history(conn, 450, years=5, seed=3, batch=200)
    assert counts["issued"] + counts["void"] == 450 and counts["void"] > 0
    assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 450
    bad = conn.execute("""
        SELECT i.number FROM invoices i
        WHERE i.subtotal <> (SELECT COALESCE(SUM(round(quantity * unit_price, 2)), 0) FROM invoice_lines l WHERE l.invoice_id = i.id)
           OR i.tax_total <> (SELECT COALESCE(SUM(amount), 0) FROM line_taxes t WHERE t.invoice_id = i.id)
           OR i.total <> i.subtotal + i.tax_total
           OR (SELECT COALESCE(SUM(amount), 0) FROM payments p WHERE p.invoice_id = i.id) > i.total""").fetchall()
    assert bad == []
    books = generator.expected_books(conn)
    paid = [b for b in books.values() if b.status == "issued" and b.paid == b.total]
    assert len(paid) > 300 and any(b.payment_count == 2 for b in paid)
    assert all(b.paid == 0 for b in books.values() if b.status == "void")
    first, last = conn.execute("SELECT min(issue_date), max(issue_date) FROM invoices").fetchone()
    assert (last - first).days > 365 * 4
    invoice_id = generator.Workload(conn, seed=4).new_job_invoice()  # the sequences moved past the history
    assert invoice_id > max(conn.execute("SELECT id FROM invoices WHERE number LIKE 'INV-%%-H%%'").fetchall())[0]
