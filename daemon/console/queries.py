"""Read-only queries behind the console's pages, on the ledger database (and, for customer names and
payment dates, the shop database when ``source.shop_dsn`` is configured).

The ledger's tables belong to ``daemon/ledger.py``; this module only reads them, adds the indexes its
pages need (``CONSOLE_DDL``) and keeps the console's own ``console_actions`` table.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from connectors.base import DocumentState
from daemon.canonical import decode_invoice_event
from daemon.ledger import GENESIS, Ledger

CONSOLE_DDL = """
CREATE TABLE IF NOT EXISTS console_actions (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text,
    invoice_number  text,
    detail          jsonb NOT NULL DEFAULT '{}',
    outcome         text NOT NULL
);
CREATE INDEX IF NOT EXISTS console_documents_recent ON documents (issue_date DESC NULLS LAST, invoice_id DESC);
CREATE INDEX IF NOT EXISTS console_documents_number_prefix ON documents (invoice_number text_pattern_ops);
CREATE INDEX IF NOT EXISTS console_documents_id ON documents (invoice_id);
CREATE INDEX IF NOT EXISTS console_audit_latest ON audit_log (target, invoice_id, id DESC);
"""

PAGE_SIZE = 50


def ensure_console_schema(ledger: Ledger) -> None:
    with ledger.pool.connection() as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerwire-console-schema'))")
            conn.execute(CONSOLE_DDL)


def record_action(ledger: Ledger, *, actor: str, action: str, outcome: str, target: str | None = None,
                  invoice_number: str | None = None, detail: dict[str, Any] | None = None) -> None:
    with ledger.pool.connection() as conn:
        conn.execute("INSERT INTO console_actions (actor, action, target, invoice_number, detail, outcome) "
                     "VALUES (%s,%s,%s,%s,%s,%s)", (actor, action, target, invoice_number, Jsonb(detail or {}), outcome))


def recent_actions(ledger: Ledger, limit: int = 20) -> list[dict[str, Any]]:
    with ledger.pool.connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(
            "SELECT at, actor, action, target, invoice_number, outcome FROM console_actions ORDER BY id DESC LIMIT %s",
            (limit,)).fetchall()


def append_audit_action(ledger: Ledger, *, target: str, invoice_id: int, invoice_number: str, version: int,
                        action: str, actor: str, detail: dict[str, Any]) -> None:
    """A console action on an invoice, appended to the hash-chained audit trail (so ``ledgerwire trace``
    and the invoice's history show who did it). Uses the ledger's own append, which takes the chain lock."""
    with ledger.pool.connection() as conn:
        with conn.transaction():
            ledger._append_audit(conn, target=target, invoice_id=invoice_id, invoice_number=invoice_number,
                                 version=version, action=action, payload_hash=None,
                                 request_summary={"by": actor, **detail}, response_status=None, external_id=None,
                                 source_tx=None)


# --- invoices ---------------------------------------------------------------------------------------


@dataclass
class InvoiceSearch:
    number: str = ""
    customer: str = ""
    date_from: date | None = None
    date_to: date | None = None
    page: int = 0


@dataclass
class TargetState:
    target: str
    state: str  # posted | posted with differences | voided | deleted | queued | parked | waiting | not posted yet
    detail: str = ""
    external_id: str | None = None
    link: str | None = None
    delivered_version: int = 0
    updated_at: datetime | None = None


@dataclass
class InvoiceRow:
    invoice_id: int
    number: str
    issue_date: date | None
    location: str | None
    customer: str | None = None
    targets: list[TargetState] = field(default_factory=list)


def _prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def shop_customer_ids(shop_dsn: str, name: str, limit: int = 500) -> list[int]:
    """Invoice ids of customers whose name contains ``name`` (the shop database holds the names)."""
    with psycopg.connect(shop_dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT i.id FROM invoices i JOIN customers c ON c.id = i.customer_id "
                            "WHERE c.name ILIKE %s ORDER BY i.id DESC LIMIT %s",
                            ("%" + _prefix(name.strip())[:-1] + "%", limit)).fetchall()
    return [r[0] for r in rows]


def shop_customer_names(shop_dsn: str, invoice_ids: Iterable[int]) -> dict[int, str]:
    ids = list(invoice_ids)
    if not ids:
        return {}
    with psycopg.connect(shop_dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT i.id, c.name FROM invoices i JOIN customers c ON c.id = i.customer_id "
                            "WHERE i.id = ANY(%s)", (ids,)).fetchall()
    return {r[0]: r[1] for r in rows}


def find_invoice_ids(ledger: Ledger, search: InvoiceSearch, targets: int,
                     customer_ids: list[int] | None = None) -> tuple[list[int], bool]:
    """One page of invoice ids, newest issue date first: documents and dead letters (an invoice whose first
    version was refused has no document yet). Returns (ids, more pages)."""
    where, args = ["true"], []
    if search.number.strip():
        number = search.number.strip()
        where.append("(invoice_number LIKE %s OR invoice_number LIKE %s)")
        args += [_prefix(number), _prefix(number.upper())]
    if customer_ids is not None:
        where.append("invoice_id = ANY(%s)")
        args.append(customer_ids)
    doc_where = list(where)
    doc_args = list(args)
    if search.date_from:
        doc_where.append("issue_date >= %s")
        doc_args.append(search.date_from)
    if search.date_to:
        doc_where.append("issue_date <= %s")
        doc_args.append(search.date_to)
    wanted = PAGE_SIZE * (search.page + 1) + 1
    with ledger.pool.connection() as conn:
        # Each invoice has one document per target: read enough rows for a page of distinct invoices.
        doc_rows = conn.execute(
            f"SELECT invoice_id, issue_date FROM documents WHERE {' AND '.join(doc_where)} "
            "ORDER BY issue_date DESC NULLS LAST, invoice_id DESC LIMIT %s", doc_args + [wanted * max(1, targets)]
        ).fetchall()
        dl_rows = conn.execute(
            f"SELECT DISTINCT invoice_id FROM dead_letters WHERE {' AND '.join(where)} "
            "AND invoice_id NOT IN (SELECT invoice_id FROM documents) ORDER BY invoice_id DESC LIMIT %s",
            args + [wanted]).fetchall()
    ordered: dict[int, None] = {}
    # Never-posted invoices (only dead letters) first: they are what needs looking at.
    for (invoice_id,) in dl_rows:
        ordered.setdefault(invoice_id)
    for invoice_id, _ in doc_rows:
        ordered.setdefault(invoice_id)
    ids = list(ordered)
    start = PAGE_SIZE * search.page
    return ids[start:start + PAGE_SIZE], len(ids) > start + PAGE_SIZE


def documents_for(ledger: Ledger, invoice_ids: list[int]) -> list[dict[str, Any]]:
    with ledger.pool.connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(
            "SELECT target, invoice_id, invoice_number, delivered_version, status, external_id, state, issue_date, "
            "location_code, updated_at FROM documents WHERE invoice_id = ANY(%s)", (invoice_ids,)).fetchall()


def dead_letters_for(ledger: Ledger, invoice_ids: list[int] | None = None, number: str | None = None,
                     statuses: tuple[str, ...] = ("open", "parked")) -> list[dict[str, Any]]:
    sql = ("SELECT id, target, invoice_id, invoice_number, version, error_class, reason, detail, status, created_at, "
           "resolved_at, event FROM dead_letters WHERE status = ANY(%s)")
    args: list[Any] = [list(statuses)]
    if invoice_ids is not None:
        sql += " AND invoice_id = ANY(%s)"
        args.append(invoice_ids)
    if number is not None:
        sql += " AND invoice_number = %s"
        args.append(number)
    with ledger.pool.connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(sql + " ORDER BY id", args).fetchall()


def event_facts(dead_letter: dict[str, Any]) -> tuple[date | None, str | None, str]:
    """(issue date, location code, customer name) from a dead letter's stored canonical event."""
    event = decode_invoice_event(bytes(dead_letter["event"]))
    return event.issue_date, event.location.code, event.customer.name


# --- audit trail of one invoice -----------------------------------------------------------------------


def _record_hash(row: dict[str, Any]) -> str:
    # The same body ``Ledger._append_audit`` hashes.
    body = {k: row[k] for k in ("target", "invoice_id", "invoice_number", "version", "action", "payload_hash",
                                "request_summary", "response_status", "external_id", "source_tx")}
    body["at"] = row["at"].isoformat()
    body["prev_hash"] = row["prev_hash"]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def invoice_history(ledger: Ledger, number: str) -> tuple[list[dict[str, Any]], bool, int | None]:
    """The invoice's audit records, and whether each is intact and linked into the chain: its own hash
    recomputes and its ``prev_hash`` is the hash of the record before it (the whole chain is checked by
    ``verify_chain``; this check costs two index reads per record, whatever the chain's length)."""
    rows = ledger.audit_trail(number)
    with ledger.pool.connection() as conn:
        for row in rows:
            before = conn.execute("SELECT record_hash FROM audit_log WHERE id < %s ORDER BY id DESC LIMIT 1",
                                  (row["id"],)).fetchone()
            if _record_hash(row) != row["record_hash"] or row["prev_hash"] != (before[0] if before else GENESIS):
                return rows, False, row["id"]
    return rows, True, None


def verify_chain(ledger: Ledger) -> tuple[bool, int | None, int]:
    ok, bad = ledger.verify_audit_chain()
    with ledger.pool.connection() as conn:
        count = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    return ok, bad, count


# --- needs attention ------------------------------------------------------------------------------------


def paused_targets(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.pool.connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(
            "SELECT target, reason, updated_at FROM sink_control WHERE paused ORDER BY target").fetchall()


def reason_group(reason: str) -> str:
    """Dead letters whose reasons differ only in ids and numbers belong together."""
    return re.sub(r"\d+", "#", reason.strip())[:200]


# --- cash -------------------------------------------------------------------------------------------------

AGING_BUCKETS = ("0-30", "31-60", "61-90", "over 90", "no issue date")


@dataclass
class CashFigures:
    target: str
    aging: dict[str, dict[str, Decimal]]  # location -> bucket -> outstanding
    aging_totals: dict[str, Decimal]
    invoices_without_total: int
    payments_by_location: dict[str, tuple[int, Decimal]]
    payments_without_amount: int
    payments_by_day: list[tuple[date, str, int, Decimal]] | None  # from the shop database, when configured
    as_of: date


def cash_figures(ledger: Ledger, target: str, today: date, shop_dsn: str | None) -> CashFigures:
    """Receivables aging and payments per location for one target, from the ledger: an invoice's total is
    the total of the version delivered (its audit record), its payments are those the ledger posted."""
    aging: dict[str, dict[str, Decimal]] = {}
    totals = {b: Decimal("0") for b in AGING_BUCKETS}
    with ledger.pool.connection() as conn:
        rows = conn.execute("""
            SELECT COALESCE(d.location_code, '-') AS location,
                   CASE WHEN d.issue_date IS NULL THEN 'no issue date'
                        WHEN %(today)s - d.issue_date <= 30 THEN '0-30'
                        WHEN %(today)s - d.issue_date <= 60 THEN '31-60'
                        WHEN %(today)s - d.issue_date <= 90 THEN '61-90' ELSE 'over 90' END AS bucket,
                   sum(t.total - COALESCE(p.paid, 0)) FILTER (WHERE t.total IS NOT NULL) AS outstanding,
                   count(*) FILTER (WHERE t.total IS NULL) AS without_total
            FROM documents d
            LEFT JOIN LATERAL (
                SELECT (a.request_summary->>'total')::numeric AS total FROM audit_log a
                WHERE a.target = d.target AND a.invoice_id = d.invoice_id AND a.request_summary ? 'total'
                ORDER BY a.id DESC LIMIT 1) t ON true
            LEFT JOIN LATERAL (
                SELECT sum((v->>'amount')::numeric) AS paid FROM jsonb_each(d.state->'payments') AS e(k, v)
                WHERE COALESCE(v->>'status', 'applied') NOT IN ('voided', 'deleted', 'reversed')) p ON true
            WHERE d.target = %(target)s AND d.status = 'posted'
            GROUP BY 1, 2""", {"today": today, "target": target}).fetchall()
        without_total = 0
        for location, bucket, outstanding, missing in rows:
            without_total += missing
            amount = Decimal(outstanding or 0)
            aging.setdefault(location, {b: Decimal("0") for b in AGING_BUCKETS})[bucket] += amount
            totals[bucket] += amount
        pay_rows = conn.execute("""
            SELECT COALESCE(d.location_code, '-'), count(v->>'amount'), COALESCE(sum((v->>'amount')::numeric), 0),
                   count(*) FILTER (WHERE v->>'amount' IS NULL)
            FROM documents d, jsonb_each(d.state->'payments') AS e(k, v)
            WHERE d.target = %s AND COALESCE(v->>'status', 'applied') NOT IN ('voided', 'deleted', 'reversed')
            GROUP BY 1 ORDER BY 1""", (target,)).fetchall()
    by_location = {loc: (int(n), Decimal(total)) for loc, n, total, _ in pay_rows}
    without_amount = sum(int(r[3]) for r in pay_rows)
    by_day = None
    if shop_dsn:
        with psycopg.connect(shop_dsn, autocommit=True, connect_timeout=5) as conn:
            by_day = [(r[0], r[1], int(r[2]), Decimal(r[3])) for r in conn.execute("""
                SELECT (p.received_at AT TIME ZONE l.timezone)::date, l.code, count(*), sum(p.amount)
                FROM payments p JOIN jobs j ON j.id = p.job_id JOIN locations l ON l.id = j.location_id
                WHERE p.status = 'received' AND p.received_at > now() - interval '31 days'
                GROUP BY 1, 2 ORDER BY 1 DESC, 2""").fetchall()]
    return CashFigures(target, aging, totals, without_total, by_location, without_amount, by_day, today)


def document_state(raw: Any) -> DocumentState:
    return DocumentState.model_validate(raw)
