"""Read-only queries behind the console's pages, on the ledger database (and, for customer names and
payment dates, the shop database when ``source.shop_dsn`` is configured).

The ledger's tables belong to ``daemon/sink/ledger.py``; this module only reads them, adds the indexes its
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

from daemon.canonical import decode_invoice_event
from daemon.sink.ledger import GENESIS, Ledger

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
CREATE INDEX IF NOT EXISTS console_documents_updated ON documents (updated_at);
-- One row per document: its delivered total (from its audit record) and what was paid, kept up to date
-- incrementally from documents.updated_at, so the cash page aggregates small columns, not JSON.
CREATE TABLE IF NOT EXISTS console_receivables (
    target          text NOT NULL,
    invoice_id      bigint NOT NULL,
    location_code   text,
    issue_date      date,
    status          text NOT NULL,
    total           numeric,
    paid            numeric NOT NULL,
    payments        integer NOT NULL,
    payments_without_amount integer NOT NULL,
    doc_updated_at  timestamptz NOT NULL,
    PRIMARY KEY (target, invoice_id)
);
CREATE INDEX IF NOT EXISTS console_receivables_day
    ON console_receivables (target, COALESCE(location_code, '-'), COALESCE(issue_date, '-infinity'::date));
-- The same per target, location and issue date: what the cash page aggregates (a few thousand rows).
CREATE TABLE IF NOT EXISTS console_receivables_daily (
    target          text NOT NULL,
    location        text NOT NULL,
    issue_date      date,
    outstanding     numeric NOT NULL,
    without_total   integer NOT NULL,
    payments        integer NOT NULL,
    paid            numeric NOT NULL,
    payments_without_amount integer NOT NULL
);
CREATE INDEX IF NOT EXISTS console_receivables_daily_key ON console_receivables_daily (target, location, issue_date);
CREATE TABLE IF NOT EXISTS console_watermarks (
    name  text PRIMARY KEY,
    at    timestamptz NOT NULL
);
"""

# A document's updated_at is its transaction's start, so one committed just after a refresh can be older
# than the watermark: each refresh re-reads this much before it (a delivery's transaction lasts milliseconds;
# at QuickBooks' batch ceiling, 1,200 invoices a minute, that is a few thousand rows).
REFRESH_OVERLAP = "2 minutes"

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
            f"SELECT DISTINCT dl.invoice_id FROM dead_letters dl WHERE {' AND '.join(where)} AND NOT EXISTS "
            "(SELECT 1 FROM documents d WHERE d.invoice_id = dl.invoice_id) ORDER BY dl.invoice_id DESC LIMIT %s",
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
    """Dead letters without their stored event (``dead_letter_event`` reads one when a page needs it)."""
    sql = ("SELECT id, target, invoice_id, invoice_number, version, error_class, reason, detail, status, created_at, "
           "resolved_at FROM dead_letters WHERE status = ANY(%s)")
    args: list[Any] = [list(statuses)]
    if invoice_ids is not None:
        sql += " AND invoice_id = ANY(%s)"
        args.append(invoice_ids)
    if number is not None:
        sql += " AND invoice_number = %s"
        args.append(number)
    with ledger.pool.connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(sql + " ORDER BY id", args).fetchall()


def event_facts(ledger: Ledger, invoice_ids: list[int]) -> dict[int, tuple[date | None, str | None, str]]:
    """invoice id -> (issue date, location code, customer name), from its newest dead letter's stored event
    (for invoices the ledger has no document of)."""
    if not invoice_ids:
        return {}
    with ledger.pool.connection() as conn:
        rows = conn.execute("SELECT DISTINCT ON (invoice_id) invoice_id, event FROM dead_letters "
                            "WHERE invoice_id = ANY(%s) ORDER BY invoice_id, id DESC", (invoice_ids,)).fetchall()
    facts = {}
    for invoice_id, raw in rows:
        event = decode_invoice_event(bytes(raw))
        facts[invoice_id] = (event.issue_date, event.location.code, event.customer.name)
    return facts


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


def refresh_receivables(ledger: Ledger) -> None:
    """Bring ``console_receivables`` (per invoice) and ``console_receivables_daily`` (per target, location
    and issue date) up to date with the documents changed since the last refresh."""
    daily_select = """
        SELECT r.target, COALESCE(r.location_code, '-'), r.issue_date,
               COALESCE(sum(r.total - r.paid) FILTER (WHERE r.status = 'posted' AND r.total IS NOT NULL), 0),
               count(*) FILTER (WHERE r.status = 'posted' AND r.total IS NULL),
               sum(r.payments), sum(r.paid), sum(r.payments_without_amount)
        FROM console_receivables r"""
    with ledger.pool.connection() as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledgerwire-console-receivables'))")
            row = conn.execute("SELECT at FROM console_watermarks WHERE name='receivables'").fetchone()
            since = row[0] if row else None
            changed = ("SELECT * FROM documents" if since is None else
                       f"SELECT * FROM documents WHERE updated_at > %(since)s - interval '{REFRESH_OVERLAP}'")
            # The day groups a changed invoice leaves (its location or issue date may have changed) …
            keys = set(conn.execute(
                f"SELECT r.target, COALESCE(r.location_code, '-'), r.issue_date FROM console_receivables r "
                f"JOIN ({changed}) d ON d.target = r.target AND d.invoice_id = r.invoice_id", {"since": since}))
            upserted = conn.execute(f"""
                INSERT INTO console_receivables AS r (target, invoice_id, location_code, issue_date, status, total,
                                                      paid, payments, payments_without_amount, doc_updated_at)
                SELECT d.target, d.invoice_id, d.location_code, d.issue_date, d.status, t.total,
                       COALESCE(p.paid, 0), COALESCE(p.n, 0), COALESCE(p.missing, 0), d.updated_at
                FROM ({changed}) d
                LEFT JOIN LATERAL (
                    SELECT (a.request_summary->>'total')::numeric AS total FROM audit_log a
                    WHERE a.target = d.target AND a.invoice_id = d.invoice_id AND a.request_summary ? 'total'
                    ORDER BY a.id DESC LIMIT 1) t ON true
                LEFT JOIN LATERAL (
                    SELECT sum((v->>'amount')::numeric) AS paid, count(v->>'amount') AS n,
                           count(*) FILTER (WHERE v->>'amount' IS NULL) AS missing
                    FROM jsonb_each(d.state->'payments') AS e(k, v)
                    WHERE COALESCE(v->>'status', 'applied') NOT IN ('voided', 'deleted', 'reversed')) p ON true
                ON CONFLICT (target, invoice_id) DO UPDATE SET location_code = EXCLUDED.location_code,
                    issue_date = EXCLUDED.issue_date, status = EXCLUDED.status, total = EXCLUDED.total,
                    paid = EXCLUDED.paid, payments = EXCLUDED.payments,
                    payments_without_amount = EXCLUDED.payments_without_amount,
                    doc_updated_at = EXCLUDED.doc_updated_at
                RETURNING target, COALESCE(location_code, '-'), issue_date, doc_updated_at""", {"since": since}).fetchall()
            # … and the ones it joins are recomputed from the per-invoice rows.
            keys |= {(t, loc, day) for t, loc, day, _ in upserted}
            if since is None:
                conn.execute("DELETE FROM console_receivables_daily")
                conn.execute(f"INSERT INTO console_receivables_daily {daily_select} GROUP BY 1, 2, 3")
            elif keys:
                targets, locations, days = (list(column) for column in zip(*keys))
                match = ("JOIN unnest(%(t)s::text[], %(l)s::text[], %(d)s::date[]) AS k(t, l, d) ON r.target = k.t "
                         "AND COALESCE(r.location_code, '-') = k.l "
                         "AND COALESCE(r.issue_date, '-infinity'::date) = COALESCE(k.d, '-infinity'::date)")
                conn.execute("DELETE FROM console_receivables_daily r USING unnest(%(t)s::text[], %(l)s::text[], "
                             "%(d)s::date[]) AS k(t, l, d) WHERE r.target = k.t AND r.location = k.l "
                             "AND r.issue_date IS NOT DISTINCT FROM k.d", {"t": targets, "l": locations, "d": days})
                conn.execute(f"INSERT INTO console_receivables_daily {daily_select} {match} GROUP BY 1, 2, 3",
                             {"t": targets, "l": locations, "d": days})
            newest = max((u[3] for u in upserted), default=None)
            if newest is not None and (since is None or newest > since):
                conn.execute("INSERT INTO console_watermarks (name, at) VALUES ('receivables', %s) ON CONFLICT (name) "
                             "DO UPDATE SET at = EXCLUDED.at", (newest,))


def cash_figures(ledger: Ledger, target: str, today: date, shop_dsn: str | None) -> CashFigures:
    """Receivables aging and payments per location for one target, from the ledger: an invoice's total is
    the total of the version delivered (its audit record), its payments are those the ledger posted."""
    refresh_receivables(ledger)
    aging: dict[str, dict[str, Decimal]] = {}
    totals = {b: Decimal("0") for b in AGING_BUCKETS}
    by_location: dict[str, tuple[int, Decimal]] = {}
    without_total = without_amount = 0
    with ledger.pool.connection() as conn:
        # One pass over the daily summary: aging of posted invoices and payments, per location.
        rows = conn.execute("""
            SELECT location,
                   CASE WHEN issue_date IS NULL THEN 'no issue date'
                        WHEN %(today)s - issue_date <= 30 THEN '0-30'
                        WHEN %(today)s - issue_date <= 60 THEN '31-60'
                        WHEN %(today)s - issue_date <= 90 THEN '61-90' ELSE 'over 90' END AS bucket,
                   sum(outstanding), sum(without_total), sum(payments), sum(paid), sum(payments_without_amount)
            FROM console_receivables_daily WHERE target = %(target)s
            GROUP BY 1, 2""", {"today": today, "target": target}).fetchall()
    for location, bucket, outstanding, missing, payments, paid, no_amount in rows:
        without_total += missing
        without_amount += int(no_amount)
        amount = Decimal(outstanding or 0)
        aging.setdefault(location, {b: Decimal("0") for b in AGING_BUCKETS})[bucket] += amount
        totals[bucket] += amount
        if payments or no_amount:
            n, sum_paid = by_location.get(location, (0, Decimal("0")))
            by_location[location] = (n + int(payments), sum_paid + Decimal(paid))
    by_day = None
    if shop_dsn:
        with psycopg.connect(shop_dsn, autocommit=True, connect_timeout=5) as conn:
            by_day = [(r[0], r[1], int(r[2]), Decimal(r[3])) for r in conn.execute("""
                SELECT (p.received_at AT TIME ZONE l.timezone)::date, l.code, count(*), sum(p.amount)
                FROM payments p JOIN jobs j ON j.id = p.job_id JOIN locations l ON l.id = j.location_id
                WHERE p.status = 'received' AND p.received_at > now() - interval '31 days'
                GROUP BY 1, 2 ORDER BY 1 DESC, 2""").fetchall()]
    return CashFigures(target, aging, totals, without_total, by_location, without_amount, by_day, today)
