"""Fold: source row changes → whole-invoice canonical events, one per touched invoice per transaction.

Pure logic, no Kafka (``daemon/fold_runner.py`` drives it inside Kafka transactions):

* ``TransactionAssembler`` reassembles one source transaction from the table topics and Debezium's
  transaction topic (BEGIN/END with per-table event counts). Transactions are released in commit order
  (the order of their END records) and only once complete; a transaction whose END or data never
  arrives is released after a bounded wait and counted, never buffered forever.
* ``Mirror`` keeps the current row of every captured table (the fold's state) with the indices needed
  to rebuild an invoice, applies a transaction's changes, and says which invoices they touched.
* ``Mirror.build_event`` produces the whole current invoice; an unchanged invoice (same content hash
  as its last emitted version — e.g. a re-snapshot) yields no new version.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import structlog

from daemon import metrics
from daemon.canonical import (
    Customer,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    Job,
    LineTax,
    Location,
    Payment,
    Refund,
    SourcePosition,
    Totals,
    money,
)
from daemon.decode import UNAVAILABLE, RowChange, TxMarker

log = structlog.get_logger(__name__)

TABLES = ("locations", "customers", "vehicles", "jobs", "tax_rates", "invoices", "invoice_lines",
          "line_taxes", "payments", "refunds")
ZERO = Decimal("0")


# --- transaction assembly -----------------------------------------------------------------------------


@dataclass
class SourceTransaction:
    """The row changes of one source transaction, in commit (total_order) order."""

    xid: str | None
    changes: list[RowChange]
    completion: str  # complete | snapshot | timed_out | late | no_metadata | incremental
    end_offset: int | None = None  # offset of its END record in the transaction topic
    committed_at: datetime | None = None


@dataclass
class _Pending:
    xid: str
    changes: list[RowChange] = field(default_factory=list)
    end: TxMarker | None = None
    begin_offset: int | None = None
    marker_partition: tuple[str, int] | None = None  # where its BEGIN/END live (the transaction topic)
    first_seen: float = field(default_factory=time.monotonic)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for c in self.changes:
            counts[f"{c.source.schema_ or 'public'}.{c.table}"] += 1
        return counts

    def complete(self, collections: frozenset[str] | None = None) -> bool:
        if self.end is None:
            return False
        expected = self.end.data_collections
        if collections is not None:
            # Tables the fold does not read (Debezium's signal table, its watermarks) never arrive here.
            expected = {k: v for k, v in expected.items() if k in collections}
        return self.counts() == expected


class TransactionAssembler:
    def __init__(self, timeout_s: float = 30.0, max_buffered_events: int = 200_000,
                 done_memory: int = 100_000, clock=time.monotonic, schema: str = "public") -> None:
        self.collections = frozenset(f"{schema}.{t}" for t in TABLES)
        self.timeout_s = timeout_s
        self.max_buffered_events = max_buffered_events
        self.clock = clock
        self.pending: dict[str, _Pending] = {}
        self.snapshot: list[RowChange] = []
        self.snapshot_watermarks: dict[tuple[str, int], int] | None = None  # set once "last" is seen
        self.snapshot_first_seen: float | None = None
        self._done: OrderedDict[str, None] = OrderedDict()  # xids already applied (dedup after restart)
        self._released_early: OrderedDict[str, None] = OrderedDict()  # timed out: stragglers still apply
        self._done_memory = done_memory
        self.last_applied_end_offset = -1  # restored from the fold state on start
        self.buffered_events = 0
        self._immediate: list[SourceTransaction] = []  # changes outside any transaction: apply as they come

    # -- input --
    def add_change(self, change: RowChange) -> None:
        if change.is_snapshot:
            if self.snapshot_first_seen is None:
                self.snapshot_first_seen = self.clock()
            self.snapshot.append(change)
            self.buffered_events += 1
            return
        xid = change.xid
        if xid is None:
            self._immediate.append(SourceTransaction(None, [change], "incremental" if change.is_incremental_snapshot
                                                     else "no_metadata", committed_at=change.committed_at))
            return
        if xid in self._released_early:
            # A straggler of a transaction released after the bounded wait: apply it now rather than lose it.
            self._immediate.append(SourceTransaction(xid, [change], "late", committed_at=change.committed_at))
            return
        if xid in self._done:
            return  # re-read after a restart; already applied
        pending = self.pending.get(xid)
        if pending is None:
            pending = self.pending[xid] = _Pending(xid, first_seen=self.clock())
        pending.changes.append(change)
        self.buffered_events += 1

    def add_marker(self, marker: TxMarker) -> None:
        xid = marker.xid
        if marker.status == "END" and marker.offset <= self.last_applied_end_offset:
            self._mark_done(xid)
            dropped = self.pending.pop(xid, None)
            if dropped:
                self.buffered_events -= len(dropped.changes)
            return
        if xid in self._done or xid in self._released_early:
            return
        pending = self.pending.get(xid)
        if pending is None:
            pending = self.pending[xid] = _Pending(xid, first_seen=self.clock())
        pending.marker_partition = (marker.topic, marker.partition)
        if marker.status == "BEGIN":
            pending.begin_offset = marker.offset
        else:
            pending.end = marker

    def snapshot_seen_last(self, watermarks: dict[tuple[str, int], int]) -> None:
        """The snapshot's final record was read; it is complete once every partition reaches these ends."""
        self.snapshot_watermarks = watermarks

    # -- output --
    def ready(self, positions: dict[tuple[str, int], int]) -> list[SourceTransaction]:
        """Transactions that may be applied now, in commit order. ``positions`` = next offset per partition."""
        out: list[SourceTransaction] = []
        if self.snapshot and self._snapshot_complete(positions):
            out.append(self._release_snapshot("snapshot"))
        elif self.snapshot and self.snapshot_first_seen is not None and \
                self.clock() - self.snapshot_first_seen > max(self.timeout_s * 4, 120) and self.snapshot_watermarks is None:
            out.append(self._release_snapshot("timed_out"))
        if self.snapshot:
            return out  # streaming transactions never overtake the initial snapshot
        out.extend(self._immediate)
        self._immediate.clear()
        now = self.clock()
        # Commit order = END offset order; a complete transaction waits for earlier ENDs still missing data.
        with_end = sorted((p for p in self.pending.values() if p.end is not None), key=lambda p: p.end.offset)
        for p in with_end:
            if p.complete(self.collections):
                out.append(self._release(p, "complete"))
            elif now - p.first_seen > self.timeout_s:
                log.warning("transaction_incomplete_released", xid=p.xid, expected=p.end.data_collections,
                            got=dict(p.counts()), waited_s=round(now - p.first_seen, 1))
                out.append(self._release(p, "timed_out"))
            else:
                break
        # Data with no END at all (connector restarted mid-transaction): bounded wait, then release.
        for p in sorted((p for p in self.pending.values() if p.end is None and p.changes),
                        key=lambda p: p.first_seen):
            if now - p.first_seen > self.timeout_s or self.buffered_events > self.max_buffered_events:
                log.warning("transaction_without_end_released", xid=p.xid, events=len(p.changes),
                            waited_s=round(now - p.first_seen, 1))
                out.append(self._release(p, "timed_out"))
        metrics.FOLD_BUFFERED_TRANSACTIONS.set(len(self.pending))
        metrics.FOLD_BUFFERED_EVENTS.set(self.buffered_events)
        return out

    def _snapshot_complete(self, positions: dict[tuple[str, int], int]) -> bool:
        if self.snapshot_watermarks is None:
            return False
        return all(positions.get(tp, 0) >= end for tp, end in self.snapshot_watermarks.items())

    def _release_snapshot(self, completion: str) -> SourceTransaction:
        changes, self.snapshot = self.snapshot, []
        self.buffered_events -= len(changes)
        self.snapshot_watermarks = None
        self.snapshot_first_seen = None
        return SourceTransaction(None, changes, completion, committed_at=changes[-1].committed_at if changes else None)

    def _release(self, p: _Pending, completion: str) -> SourceTransaction:
        del self.pending[p.xid]
        self.buffered_events -= len(p.changes)
        if completion == "timed_out":
            self._released_early[p.xid] = None
            if len(self._released_early) > 10_000:
                self._released_early.popitem(last=False)
        else:
            self._mark_done(p.xid)
        changes = sorted(p.changes, key=lambda c: (c.transaction.total_order if c.transaction else 0, c.offset))
        if p.end is not None:
            self.last_applied_end_offset = max(self.last_applied_end_offset, p.end.offset)
        committed = changes[-1].committed_at if changes else None
        return SourceTransaction(p.xid, changes, completion, end_offset=p.end.offset if p.end else None,
                                 committed_at=committed)

    def _mark_done(self, xid: str) -> None:
        self._done[xid] = None
        if len(self._done) > self._done_memory:
            self._done.popitem(last=False)

    def committable(self, positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Offsets safe to commit: nothing before them is still waiting in a buffer."""
        lowest: dict[tuple[str, int], int] = dict(positions)

        def hold(tp: tuple[str, int], offset: int) -> None:
            if offset < lowest.get(tp, offset + 1):
                lowest[tp] = offset

        for c in itertools.chain(self.snapshot, *(p.changes for p in self.pending.values())):
            hold((c.topic, c.partition), c.offset)
        for p in self.pending.values():
            if p.marker_partition is not None:
                first_marker = p.begin_offset if p.begin_offset is not None else p.end.offset  # type: ignore[union-attr]
                hold(p.marker_partition, first_marker)
        for tx in self._immediate:
            for c in tx.changes:
                hold((c.topic, c.partition), c.offset)
        return lowest


# --- the mirror of source rows ------------------------------------------------------------------------


class Mirror:
    """Current rows of the captured tables, indexed for invoice rebuilding; the fold's whole state."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TABLES}
        self.by_invoice: dict[str, dict[int, set[int]]] = {
            t: defaultdict(set) for t in ("invoice_lines", "line_taxes", "payments", "refunds")
        }
        self.invoices_by_customer: dict[int, set[int]] = defaultdict(set)
        self.invoices_by_job: dict[int, set[int]] = defaultdict(set)
        self.versions: dict[int, tuple[int, str]] = {}  # invoice id -> (last version, content hash)
        self.dirty_rows: set[tuple[str, int]] = set()
        self.dirty_versions: set[int] = set()
        self._deleted_headers: dict[int, dict[str, Any]] = {}
        self._event_counters: dict[tuple[str, str], Any] = {}

    # -- applying changes --
    def apply(self, tx: SourceTransaction) -> set[int]:
        """Apply one transaction's changes; return the ids of the invoices it touched."""
        touched: set[int] = set()
        counters = self._event_counters
        for change in tx.changes:
            counter = counters.get((change.table, change.op))
            if counter is None:
                counter = counters[(change.table, change.op)] = metrics.CDC_EVENTS.labels(change.table, change.op)
            counter.inc()
            if change.table not in self.rows:
                continue
            if change.op == "t":
                touched |= self._truncate(change.table)
                continue
            touched |= self._apply_row(change)
        return touched

    def _apply_row(self, change: RowChange) -> set[int]:
        table = change.table
        image = change.after if change.op != "d" else change.before
        if image is None or "id" not in image:
            return set()
        pk = int(image["id"])
        old = self.rows[table].get(pk)
        if change.op == "d":
            if old is None:
                return set()
            new = None
        else:
            after = dict(change.after or {})
            # Unchanged TOAST columns: keep the stored value, never the placeholder.
            for key, value in after.items():
                if value is UNAVAILABLE:
                    after[key] = old.get(key) if old else None
            new = after
        self._unindex(table, pk, old)
        if new is None:
            del self.rows[table][pk]
            if table == "invoices":
                self._deleted_headers[pk] = old
        else:
            self.rows[table][pk] = new
            self._index(table, pk, new)
        self.dirty_rows.add((table, pk))
        return self._touched_by(table, pk, old, new)

    def _truncate(self, table: str) -> set[int]:
        touched: set[int] = set()
        for pk, row in list(self.rows[table].items()):
            self._unindex(table, pk, row)
            touched |= self._touched_by(table, pk, row, None)
            self.dirty_rows.add((table, pk))
            if table == "invoices":
                self._deleted_headers[pk] = row
        self.rows[table].clear()
        return touched

    def _index(self, table: str, pk: int, row: dict[str, Any]) -> None:
        if table in self.by_invoice and row.get("invoice_id") is not None:
            self.by_invoice[table][int(row["invoice_id"])].add(pk)
        elif table == "invoices":
            self.invoices_by_customer[int(row["customer_id"])].add(pk)
            self.invoices_by_job[int(row["job_id"])].add(pk)

    def _unindex(self, table: str, pk: int, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        if table in self.by_invoice and row.get("invoice_id") is not None:
            self.by_invoice[table][int(row["invoice_id"])].discard(pk)
        elif table == "invoices":
            self.invoices_by_customer[int(row["customer_id"])].discard(pk)
            self.invoices_by_job[int(row["job_id"])].discard(pk)

    def _touched_by(self, table: str, pk: int, old: dict | None, new: dict | None) -> set[int]:
        if table == "invoices":
            return {pk}
        if table in self.by_invoice:
            return {int(r["invoice_id"]) for r in (old, new) if r and r.get("invoice_id") is not None}
        if table == "customers":
            # A customer edit re-sends that customer's open invoices (so the ledger's customer record is
            # corrected when one of them is delivered); settled and void invoices are left alone.
            return {i for i in self.invoices_by_customer.get(pk, ()) if self._is_open(i)}
        if table == "jobs":
            return set(self.invoices_by_job.get(pk, ()))
        return set()  # locations, vehicles, tax rates: picked up by the next change of each invoice

    def _is_open(self, invoice_id: int) -> bool:
        row = self.rows["invoices"].get(invoice_id)
        return row is not None and row.get("status") != "void"

    # -- building the canonical invoice --
    def build_event(self, invoice_id: int, tx: SourceTransaction) -> InvoiceEvent | None:
        """The next version of the invoice, or None when its content did not change."""
        header = self.rows["invoices"].get(invoice_id)
        deleted = header is None
        if deleted:
            header = self._deleted_headers.get(invoice_id)
            if header is None or invoice_id not in self.versions:
                return None  # never emitted (or already reported deleted): nothing for a ledger to undo
        body = self._invoice_body(invoice_id, header, deleted)
        last_version, last_hash = self.versions.get(invoice_id, (0, ""))
        now = datetime.now(timezone.utc)
        event = InvoiceEvent(
            **body, version=last_version + 1, emitted_at=now,
            source=SourcePosition(tx_id=tx.xid, lsn=tx.changes[-1].source.lsn if tx.changes else None,
                                  committed_at=tx.committed_at),
        )
        content = event.content_hash()
        if content == last_hash:
            metrics.FOLD_UNCHANGED_SKIPPED.inc()
            return None
        self.versions[invoice_id] = (event.version, content)
        self.dirty_versions.add(invoice_id)
        return event

    def current_event(self, invoice_id: int) -> InvoiceEvent | None:
        """The invoice as last emitted (same version), rebuilt from the state — for resync and reconcile."""
        header = self.rows["invoices"].get(invoice_id)
        if header is None or invoice_id not in self.versions:
            return None
        version, _ = self.versions[invoice_id]
        return InvoiceEvent(**self._invoice_body(invoice_id, header, False), version=version,
                            emitted_at=datetime.now(timezone.utc))

    def end_batch(self) -> None:
        self._deleted_headers.clear()

    def _invoice_body(self, invoice_id: int, header: dict[str, Any], deleted: bool) -> dict[str, Any]:
        rows = self.rows
        lines: list[InvoiceLine] = []
        taxes_by_line: dict[int, list[LineTax]] = defaultdict(list)
        if not deleted:
            for tax_id in self.by_invoice["line_taxes"].get(invoice_id, ()):
                t = rows["line_taxes"][tax_id]
                rate = rows["tax_rates"].get(int(t["tax_rate_id"]), {})
                taxes_by_line[int(t["line_id"])].append(LineTax(
                    tax_rate_id=int(t["tax_rate_id"]), code=rate.get("code", f"TAX{t['tax_rate_id']}"),
                    name=rate.get("name", rate.get("code", "Tax")), rate=_dec(rate.get("rate", 0)),
                    amount=_dec(t["amount"]),
                ))
            for line_id in self.by_invoice["invoice_lines"].get(invoice_id, ()):
                ln = rows["invoice_lines"][line_id]
                quantity, unit_price = _dec(ln["quantity"]), _dec(ln["unit_price"])
                lines.append(InvoiceLine(
                    id=line_id, position=int(ln["position"]), kind=ln["kind"], part_number=ln.get("part_number"),
                    description=ln["description"], quantity=quantity, unit_price=unit_price,
                    amount=money(quantity * unit_price),
                    taxes=tuple(sorted(taxes_by_line.get(line_id, []), key=lambda t: (t.code, t.tax_rate_id))),
                ))
        lines.sort(key=lambda ln: (ln.position, ln.id))
        payments = [] if deleted else sorted(
            (self._payment(pid) for pid in self.by_invoice["payments"].get(invoice_id, ())),
            key=lambda p: (p.received_at, p.id))
        refunds = [] if deleted else sorted(
            (self._refund(rid) for rid in self.by_invoice["refunds"].get(invoice_id, ())), key=lambda r: r.id)
        subtotal = sum((ln.amount for ln in lines), ZERO)
        tax_total = sum((t.amount for ln in lines for t in ln.taxes), ZERO)
        tax_inclusive = bool(header.get("tax_inclusive"))
        total = subtotal if tax_inclusive else subtotal + tax_total
        if tax_inclusive:
            subtotal -= tax_total
        stored = Totals(subtotal=_dec(header.get("subtotal", 0)), tax_total=_dec(header.get("tax_total", 0)),
                        total=_dec(header.get("total", 0)))
        computed = Totals(subtotal=subtotal, tax_total=tax_total, total=total) if not deleted else stored
        mismatch = computed != stored
        if mismatch:
            metrics.FOLD_TOTALS_MISMATCH.inc()
        job = None
        job_row = rows["jobs"].get(int(header["job_id"])) if header.get("job_id") is not None else None
        if job_row is not None:
            vehicle = rows["vehicles"].get(int(job_row["vehicle_id"])) if job_row.get("vehicle_id") else None
            job = Job(id=int(job_row["id"]), number=job_row["number"], description=job_row.get("description"),
                      vehicle=_vehicle(vehicle))
        return dict(
            invoice_id=int(header["id"]), number=header["number"],
            status=InvoiceStatus.DELETED if deleted else InvoiceStatus(header["status"]),
            issue_date=_date(header.get("issue_date")), due_date=_date(header.get("due_date")),
            currency=(header.get("currency") or "USD").strip(), tax_inclusive=tax_inclusive,
            location=self._location(int(header["location_id"])), customer=self._customer(int(header["customer_id"])),
            job=job, lines=tuple(lines), payments=tuple(payments), refunds=tuple(refunds), notes=header.get("notes"),
            computed=computed, stored=stored, totals_mismatch=mismatch,
        )

    def _payment(self, pid: int) -> Payment:
        p = self.rows["payments"][pid]
        return Payment(id=pid, amount=_dec(p["amount"]), method=p["method"], reference=p.get("reference"),
                       received_at=_ts(p["received_at"]), status=p.get("status") or "received")

    def _refund(self, rid: int) -> Refund:
        r = self.rows["refunds"][rid]
        return Refund(id=rid, kind=r["kind"], amount=_dec(r["amount"]), tax_amount=_dec(r.get("tax_amount") or 0),
                      payment_id=r.get("payment_id"), line_id=r.get("line_id"), reason=r.get("reason"),
                      created_at=_ts(r["created_at"]))

    def _location(self, location_id: int) -> Location:
        row = self.rows["locations"].get(location_id)
        if row is None:
            log.warning("fold_missing_reference", table="locations", id=location_id)
            return Location(id=location_id, code=f"LOC{location_id}", name=f"Location {location_id}")
        return Location(id=location_id, code=row["code"], name=row["name"], timezone=row.get("timezone") or "UTC")

    def _customer(self, customer_id: int) -> Customer:
        row = self.rows["customers"].get(customer_id)
        if row is None:
            log.warning("fold_missing_reference", table="customers", id=customer_id)
            return Customer(id=customer_id, name=f"Customer {customer_id}")
        return Customer(id=customer_id, name=row["name"], email=row.get("email"), phone=row.get("phone"),
                        is_fleet=bool(row.get("is_fleet")), payment_terms_days=row.get("payment_terms_days"),
                        tax_exempt=bool(row.get("tax_exempt")), billing_address=row.get("billing_address"))

    # -- state changelog (compacted topic) --
    def changelog(self) -> Iterable[tuple[str, bytes | None]]:
        """Changed state entries since the last call, as (key, value) records; None is a tombstone."""
        for table, pk in sorted(self.dirty_rows):
            row = self.rows[table].get(pk)
            yield f"r:{table}:{pk}", (encode_state(row) if row is not None else None)
        for invoice_id in sorted(self.dirty_versions):
            version, content = self.versions[invoice_id]
            yield f"v:{invoice_id}", encode_state({"version": version, "hash": content})
        self.dirty_rows.clear()
        self.dirty_versions.clear()

    def restore(self, key: str, value: bytes | None) -> None:
        """Load one changelog record (the latest value per key wins, as compaction keeps it)."""
        kind, _, rest = key.partition(":")
        if kind == "r":
            table, _, pk_text = rest.partition(":")
            pk = int(pk_text)
            old = self.rows[table].get(pk)
            self._unindex(table, pk, old)
            if value is None:
                self.rows[table].pop(pk, None)
            else:
                row = decode_state(value)
                self.rows[table][pk] = row
                self._index(table, pk, row)
        elif kind == "v" and value is not None:
            data = decode_state(value)
            self.versions[int(rest)] = (int(data["version"]), data["hash"])

    def row_counts(self) -> dict[str, int]:
        return {t: len(r) for t, r in self.rows.items()}


# --- helpers ------------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _vehicle(row: dict[str, Any] | None) -> str | None:
    if not row:
        return None
    parts = [str(row[k]) for k in ("year", "make", "model") if row.get(k)]
    return " ".join(parts) or None


def _state_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    raise TypeError(f"cannot store {type(value).__name__} in fold state")


def _state_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$d" in obj:
            return Decimal(obj["$d"])
        if "$t" in obj:
            return datetime.fromisoformat(obj["$t"])
        if "$date" in obj:
            return date.fromisoformat(obj["$date"])
    return obj


def encode_state(value: dict[str, Any]) -> bytes:
    # orjson serialises datetimes itself; Decimals and dates go through the tagging default.
    return orjson.dumps(value, default=_state_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def decode_state(value: bytes) -> dict[str, Any]:
    return json.loads(value, object_hook=_state_hook)


__all__ = ["Mirror", "SourceTransaction", "TransactionAssembler", "encode_state", "decode_state"]
