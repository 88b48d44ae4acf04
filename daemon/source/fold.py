"""Fold: source row changes → whole-invoice canonical events, one per touched invoice per transaction.

Pure logic, no Kafka (``daemon/source/fold_runner.py`` drives it inside Kafka transactions):

* ``TransactionAssembler`` reassembles one source transaction from the table topics and Debezium's
  transaction topic (BEGIN/END with per-table event counts). Transactions are released in commit order
  (the order of their END records) and only once complete; a transaction whose END or data never
  arrives is released after a bounded wait and counted, never buffered forever.
* ``Mirror`` keeps the current row of every captured table (the fold's state) with the indices needed
  to rebuild an invoice, applies a transaction's changes, and says which invoices they touched. Rows are
  kept compact (only the columns the fold reads, one small array each, paged by id; see ``COLUMNS``) so
  100,000 open invoices fit in ~190 MiB (bench/memory.py).
* ``Mirror.build_event`` produces the whole current invoice; an unchanged invoice (same content hash
  as its last emitted version — e.g. a re-snapshot) yields no new version.
"""

from __future__ import annotations

import heapq
import itertools
from itertools import repeat
from operator import is_
import json
import sys
from array import array
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

import orjson
import structlog
from orjson import Fragment

from daemon import metrics
from daemon.canonical import (CENT, InvoiceEvent, InvoiceStatus, _decimal_bytes, decode_invoice_event,
                              encode_record_with_content_hash, money)
from daemon.source.decode import EPOCH, UNAVAILABLE, RowChange, SourceInfo, TxMarker

log = structlog.get_logger(__name__)

TABLES = ("locations", "customers", "vehicles", "jobs", "tax_rates", "invoices", "invoice_lines",
          "line_taxes", "payments", "refunds")
ZERO = Decimal("0")


class Emitted(NamedTuple):
    """One new canonical version, encoded: what the runner produces."""

    invoice_id: int
    version: int
    status: str
    payload: bytes

    @property
    def key(self) -> bytes:
        return str(self.invoice_id).encode()


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
    tally: dict[str, int] = field(default_factory=dict)  # "schema.table" -> changes so far (kept as they come)
    low: dict[tuple[str, int], int] = field(default_factory=dict)  # lowest buffered offset per partition
    seq: int = 0  # creation order (ties of first_seen)

    def add(self, change: RowChange) -> bool:
        """Buffer a change; True when it is this transaction's first on its partition."""
        self.changes.append(change)
        source = change.source
        key = _COLLECTION_KEYS.get((source.schema_, change.table))
        if key is None:
            key = _COLLECTION_KEYS[(source.schema_, change.table)] = f"{source.schema_ or 'public'}.{change.table}"
        self.tally[key] = self.tally.get(key, 0) + 1
        tp = (change.topic, change.partition)
        current = self.low.get(tp)
        if current is not None and current <= change.offset:
            return False
        self.low[tp] = change.offset
        return True

    def counts(self) -> dict[str, int]:
        return dict(self.tally)

    def complete(self, collections: frozenset[str] | None = None) -> bool:
        if self.end is None:
            return False
        expected = self.end.data_collections
        if collections is not None:
            # Tables the fold does not read (Debezium's signal table, its watermarks) never arrive here.
            expected = {k: v for k, v in expected.items() if k in collections}
        return self.tally == expected


class TransactionAssembler:
    def __init__(self, timeout_s: float = 30.0, max_buffered_events: int = 200_000,
                 done_memory: int = 100_000, clock=time.monotonic, schema: str = "public") -> None:
        self.collections = frozenset(f"{schema}.{t}" for t in TABLES)
        self.timeout_s = timeout_s
        self.max_buffered_events = max_buffered_events
        self.clock = clock
        self.pending: dict[str, _Pending] = {}
        self.snapshot: list[RowChange | BufferedSnapshotRow] = []
        self.snapshot_low: dict[tuple[str, int], int] = {}  # lowest buffered snapshot offset per partition
        self._snapshot_token = _SnapshotToken()
        # Per partition, a heap of (offset, n, holder): the first offset each buffer holds there. Released
        # holders are dropped lazily when they reach the top, so committable() never walks the buffers.
        self._holds: dict[tuple[str, int], list[tuple[int, int, Any]]] = {}
        self._hold_seq = itertools.count()
        # Pending transactions by END offset and by age, kept as heaps so ready() looks at the few at their heads
        # instead of sorting every pending transaction on every call: on a loaded machine the invoice lines topic
        # was read tens of seconds behind the others, thousands of transactions waited for their lines, and those
        # two sorts per consumed batch doubled the fold's CPU. Released entries are dropped when they surface.
        self._by_end: list[tuple[int, int, _Pending]] = []
        self._by_age: list[tuple[float, int, _Pending]] = []
        self._expired_without_changes: list[_Pending] = []  # past the wait, no END and no change yet
        self.snapshot_watermarks: dict[tuple[str, int], int] | None = None  # set once "last" is seen
        # The last snapshot record's arrival: the bounded wait for a snapshot counts from it (a history import's
        # snapshot takes many minutes while records keep coming; only a snapshot that stopped arriving —
        # the connector restarted mid-snapshot — is released without its "last" record).
        self.snapshot_last_seen: float | None = None
        self._done: OrderedDict[str, None] = OrderedDict()  # xids already applied (dedup after restart)
        self._released_early: OrderedDict[str, None] = OrderedDict()  # timed out: stragglers still apply
        self._done_memory = done_memory
        self.last_applied_end_offset = -1  # restored from the fold state on start
        self.buffered_events = 0
        self._immediate: list[SourceTransaction] = []  # changes outside any transaction: apply as they come
        # Per partition, the next offset after the last applied record that had no END marker to recognise it
        # by (snapshot, incremental snapshot, no transaction metadata); restored from the checkpoint.
        self.applied_outside_tx: dict[tuple[str, int], int] = {}
        self.checkpoint_changed = False  # applied_outside_tx moved without a release: write the checkpoint
        self.replays_skipped = 0

    # -- input --
    def add_change(self, change: RowChange) -> None:
        is_snapshot = change.source.snapshot not in _NOT_SNAPSHOT  # RowChange.is_snapshot, inlined (hot path)
        xid = change.xid
        if (is_snapshot or xid is None) and self._replayed(change):
            self.replays_skipped += 1
            return
        if is_snapshot:
            self.snapshot_last_seen = self.clock()
            self.snapshot.append(BufferedSnapshotRow.of(change))
            tp = (change.topic, change.partition)
            current = self.snapshot_low.get(tp)
            if current is None or change.offset < current:
                self.snapshot_low[tp] = change.offset
                self._push_hold(tp, change.offset, self._snapshot_token)
            self.buffered_events += 1
            return
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
            pending = self._new_pending(xid)
        if pending.add(change):
            self._push_hold((change.topic, change.partition), change.offset, pending)
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
            pending = self._new_pending(xid)
        pending.marker_partition = (marker.topic, marker.partition)
        self._push_hold(pending.marker_partition, marker.offset, pending)
        if marker.status == "BEGIN":
            pending.begin_offset = marker.offset
        else:
            pending.end = marker
            heapq.heappush(self._by_end, (marker.offset, next(self._hold_seq), pending))

    def _new_pending(self, xid: str) -> _Pending:
        pending = self.pending[xid] = _Pending(xid, first_seen=self.clock(), seq=next(self._hold_seq))
        heapq.heappush(self._by_age, (pending.first_seen, pending.seq, pending))
        return pending

    def _is_pending(self, p: _Pending) -> bool:
        return self.pending.get(p.xid) is p

    # -- checkpoint (the fold state changelog's ``m:assembler`` record, committed with the state) --
    def checkpoint(self) -> dict[str, Any]:
        self.checkpoint_changed = False
        return {"last_end_offset": self.last_applied_end_offset,
                "outside_tx": {f"{t}:{p}": o for (t, p), o in self.applied_outside_tx.items()}}

    def restore_checkpoint(self, data: dict[str, Any]) -> None:
        self.last_applied_end_offset = int(data["last_end_offset"])
        self.applied_outside_tx = {}
        for key, offset in (data.get("outside_tx") or {}).items():  # absent in checkpoints of older releases
            topic, _, partition = key.rpartition(":")
            self.applied_outside_tx[(topic, int(partition))] = int(offset)

    def restored_at(self, committed: dict[tuple[str, int], int]) -> None:
        """The fold restarts from these committed offsets. Nothing outside a transaction is ever held below a
        committed offset (a buffered snapshot or immediate change holds it), so every such record below it
        was applied: that covers checkpoints written before ``outside_tx`` existed (an upgrade), and a
        rewind below it is recognised (the maximum is kept, never the rewound offset)."""
        applied = self.applied_outside_tx
        for tp, offset in committed.items():
            if offset > applied.get(tp, 0):
                applied[tp] = offset
                self.checkpoint_changed = True

    def _replayed(self, change: RowChange) -> bool:
        """A snapshot record or a change outside any transaction that was already applied (the fold's offsets
        were rewound): such records are applied in offset order per partition, so every one below the
        next-offset recorded at the last application is a replay."""
        return change.offset < self.applied_outside_tx.get((change.topic, change.partition), 0)

    def _mark_applied_outside_tx(self, changes: list[RowChange]) -> None:
        applied = self.applied_outside_tx
        for change in changes:
            tp = (change.topic, change.partition)
            if change.offset >= applied.get(tp, 0):
                applied[tp] = change.offset + 1

    def snapshot_seen_last(self, watermarks: dict[tuple[str, int], int]) -> None:
        """The snapshot's final record was read; it is complete once every partition reaches these ends."""
        if not self.snapshot:
            return  # a replayed snapshot (every record skipped): nothing waits for these ends
        self.snapshot_watermarks = watermarks

    # -- output --
    def ready(self, positions: dict[tuple[str, int], int]) -> list[SourceTransaction]:
        """Transactions that may be applied now, in commit order. ``positions`` = next offset per partition."""
        out: list[SourceTransaction] = []
        if self.snapshot and self._snapshot_complete(positions):
            out.append(self._release_snapshot("snapshot"))
        elif self.snapshot and self.snapshot_last_seen is not None and \
                self.clock() - self.snapshot_last_seen > max(self.timeout_s * 4, 120) and self.snapshot_watermarks is None:
            out.append(self._release_snapshot("timed_out"))
        if self.snapshot:
            return out  # streaming transactions never overtake the initial snapshot
        for tx in self._immediate:
            if tx.xid is None:
                self._mark_applied_outside_tx(tx.changes)
        out.extend(self._immediate)
        self._immediate.clear()
        now = self.clock()
        # Commit order = END offset order; a complete transaction waits for earlier ENDs still missing data.
        by_end = self._by_end
        while by_end:
            offset, _, p = by_end[0]
            if not self._is_pending(p) or p.end is None or p.end.offset != offset:
                heapq.heappop(by_end)  # released, dropped, or its END read again (a newer entry stands)
            elif p.complete(self.collections):
                heapq.heappop(by_end)
                out.append(self._release(p, "complete"))
            elif now - p.first_seen > self.timeout_s:
                heapq.heappop(by_end)
                log.warning("transaction_incomplete_released", xid=p.xid, expected=p.end.data_collections,
                            got=dict(p.counts()), waited_s=round(now - p.first_seen, 1))
                out.append(self._release(p, "timed_out"))
            else:
                break
        # Data with no END at all (connector restarted mid-transaction): bounded wait, then release, oldest first.
        if self.buffered_events > self.max_buffered_events:
            candidates = [p for p in self.pending.values() if p.end is None and p.changes]
        else:
            candidates = self._expired_without_end(now)
        for p in sorted(candidates, key=_age_order):
            if now - p.first_seen > self.timeout_s or self.buffered_events > self.max_buffered_events:
                log.warning("transaction_without_end_released", xid=p.xid, events=len(p.changes),
                            waited_s=round(now - p.first_seen, 1))
                out.append(self._release(p, "timed_out"))
        metrics.FOLD_BUFFERED_TRANSACTIONS.set(len(self.pending))
        metrics.FOLD_BUFFERED_EVENTS.set(self.buffered_events)
        return out

    def _expired_without_end(self, now: float) -> list[_Pending]:
        """Pending transactions past the bounded wait that have changes and no END (popped off the age heap; those
        with no change yet are kept aside until one arrives)."""
        out: list[_Pending] = []
        waiting: list[_Pending] = []
        for p in self._expired_without_changes:
            if self._is_pending(p) and p.end is None:
                (out if p.changes else waiting).append(p)
        by_age = self._by_age
        while by_age and now - by_age[0][0] > self.timeout_s:
            p = heapq.heappop(by_age)[2]
            if self._is_pending(p) and p.end is None:
                (out if p.changes else waiting).append(p)
        self._expired_without_changes = waiting
        return out

    def _snapshot_complete(self, positions: dict[tuple[str, int], int]) -> bool:
        if self.snapshot_watermarks is None:
            return False
        return all(positions.get(tp, 0) >= end for tp, end in self.snapshot_watermarks.items())

    def _release_snapshot(self, completion: str) -> SourceTransaction:
        changes, self.snapshot = self.snapshot, []
        self._mark_applied_outside_tx(changes)
        self.snapshot_low = {}
        self._snapshot_token = _SnapshotToken()
        self.buffered_events -= len(changes)
        self.snapshot_watermarks = None
        self.snapshot_last_seen = None
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
        changes = sorted(p.changes, key=_commit_order)
        p.changes = []  # the heaps may hold this entry a while longer: not its changes
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
        for tp, heap in self._holds.items():
            while heap and not self._holding(heap[0][2]):
                heapq.heappop(heap)
            if heap:
                offset = heap[0][0]
                if offset < lowest.get(tp, offset + 1):
                    lowest[tp] = offset
        for tx in self._immediate:
            for c in tx.changes:
                tp = (c.topic, c.partition)
                if c.offset < lowest.get(tp, c.offset + 1):
                    lowest[tp] = c.offset
        return lowest

    def _push_hold(self, tp: tuple[str, int], offset: int, holder: Any) -> None:
        heap = self._holds.get(tp)
        if heap is None:
            heap = self._holds[tp] = []
        heapq.heappush(heap, (offset, next(self._hold_seq), holder))

    def _holding(self, holder: Any) -> bool:
        if isinstance(holder, _SnapshotToken):
            return holder is self._snapshot_token and bool(self.snapshot)
        return self.pending.get(holder.xid) is holder


_NOT_SNAPSHOT = (None, "false", "incremental")
_COLLECTION_KEYS: dict[tuple[str | None, str], str] = {}  # (schema, table) -> "schema.table", as END counts them


def _age_order(p: _Pending) -> tuple[float, int]:
    return p.first_seen, p.seq


def _commit_order(change: RowChange) -> tuple[int, int]:
    return (change.transaction.total_order if change.transaction else 0), change.offset


class BufferedSnapshotRow:
    """A snapshot record while the initial snapshot is buffered, holding its row in the mirror's compact form
    (only the columns the fold reads, ~100 bytes) instead of the decoded ``RowChange`` (~2.2 KiB): a history
    import's snapshot is millions of rows, all held until its last record. Offers what ``Mirror.apply`` and
    the assembler read of a ``RowChange``; ``after`` is decoded again on application (the mirror encodes the
    same compact form, so what it stores is unchanged)."""

    __slots__ = ("table", "op", "raw", "topic", "partition", "offset", "lsn", "ts_ms", "schema_", "snapshot")
    before = None
    transaction = None
    xid = None

    @staticmethod
    def of(change: RowChange) -> RowChange | BufferedSnapshotRow:
        after = change.after
        if change.op != "r" or after is None or change.table not in _ROW_CODECS or "id" not in after or \
                any(map(is_, after.values(), repeat(UNAVAILABLE))):
            return change  # deletes, unknown tables, TOAST placeholders: kept as they came
        row = BufferedSnapshotRow.__new__(BufferedSnapshotRow)
        row.table, row.op, row.raw = change.table, change.op, _ROW_CODECS[change.table].encode(after)
        row.topic, row.partition, row.offset = change.topic, change.partition, change.offset
        source = change.source
        row.lsn, row.ts_ms, row.schema_, row.snapshot = source.lsn, source.ts_ms, source.schema_, source.snapshot
        return row

    @property
    def after(self) -> dict[str, Any]:
        return _ROW_CODECS[self.table].decode(self.raw)

    @property
    def source(self) -> SourceInfo:
        return SourceInfo.model_construct(db="", schema_=self.schema_, table=self.table, ts_ms=self.ts_ms,
                                          snapshot=self.snapshot, txId=None, lsn=self.lsn)

    @property
    def committed_at(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ts_ms)


class _SnapshotToken:
    """Identifies one buffered initial snapshot in the hold heaps."""

    __slots__ = ()


# --- compact row storage -----------------------------------------------------------------------------
#
# The mirror holds every current source row of every open invoice (100,000 open invoices ≈ 1.3 million rows),
# so rows are kept compact: only the columns the fold reads, as one small orjson array per row (numbers as
# JSON numbers, decimals/dates/timestamps as strings), decoded on demand when an invoice is rebuilt. Rows and
# indices live in pages of 64 slots keyed by id (ids are serials, so pages are dense): ~8 bytes of
# bookkeeping per row instead of ~80 for a dict entry and its int key. The same compact array is the row's
# value in the state changelog; restore still reads the older whole-row JSON objects.

# The columns the fold reads, per table (everything else never reaches a canonical event), and how each is
# stored: "v" a JSON value as it is, "d" a decimal, "date" a date, "ts" a timestamp.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "locations": (("id", "v"), ("code", "v"), ("name", "v"), ("timezone", "v")),
    "customers": (("id", "v"), ("name", "v"), ("email", "v"), ("phone", "v"), ("is_fleet", "v"),
                  ("payment_terms_days", "v"), ("tax_exempt", "v"), ("billing_address", "v")),
    "vehicles": (("id", "v"), ("year", "v"), ("make", "v"), ("model", "v")),
    "jobs": (("id", "v"), ("number", "v"), ("description", "v"), ("vehicle_id", "v")),
    "tax_rates": (("id", "v"), ("code", "v"), ("name", "v"), ("rate", "d")),
    "invoices": (("id", "v"), ("number", "v"), ("job_id", "v"), ("customer_id", "v"), ("location_id", "v"),
                 ("status", "v"), ("issue_date", "date"), ("due_date", "date"), ("currency", "v"),
                 ("tax_inclusive", "v"), ("subtotal", "d"), ("tax_total", "d"), ("total", "d"), ("notes", "v")),
    "invoice_lines": (("id", "v"), ("invoice_id", "v"), ("position", "v"), ("kind", "v"), ("part_number", "v"),
                      ("description", "v"), ("quantity", "d"), ("unit_price", "d")),
    "line_taxes": (("id", "v"), ("line_id", "v"), ("invoice_id", "v"), ("tax_rate_id", "v"), ("amount", "d")),
    "payments": (("id", "v"), ("invoice_id", "v"), ("amount", "d"), ("method", "v"), ("reference", "v"),
                 ("received_at", "ts"), ("status", "v")),
    "refunds": (("id", "v"), ("invoice_id", "v"), ("payment_id", "v"), ("line_id", "v"), ("kind", "v"),
                ("amount", "d"), ("tax_amount", "d"), ("reason", "v"), ("created_at", "ts")),
}
LAYOUT = 1  # first element of every compact row; bump when COLUMNS change (restore refuses other layouts)
INVOICE_STATE = 1  # first element of an invoice's state record (``Mirror._invoice_state``)
_ABSENT_TAG = {"$a": 0}  # a column the source row did not have (kept absent, not None)
_MISSING = object()
_PAGE_BITS = 6
_PAGE_MASK = (1 << _PAGE_BITS) - 1
_EMPTY_PAGE = [None] * (1 << _PAGE_BITS)


def _compact(values: list[Any]) -> bytes:
    """A compact row read back from an invoice's state record, as its stored bytes (orjson writes the same
    bytes for the values it read)."""
    return orjson.dumps(values)


def _parse_decimal(text: str) -> Any:
    try:
        return Decimal(text)
    except ArithmeticError:
        return text


def _parse_date(text: str) -> Any:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return text


def _parse_ts(text: str) -> Any:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text


_PARSERS = {"v": None, "d": _parse_decimal, "date": _parse_date, "ts": _parse_ts}


class _Paged:
    """int key -> object (never None), in pages of 64 slots."""

    __slots__ = ("pages", "count")

    def __init__(self) -> None:
        self.pages: dict[int, list[Any]] = {}
        self.count = 0

    def get(self, key: int) -> Any:
        page = self.pages.get(key >> _PAGE_BITS)
        return None if page is None else page[key & _PAGE_MASK]

    def set(self, key: int, value: Any) -> None:
        page = self.pages.get(key >> _PAGE_BITS)
        if page is None:
            page = self.pages[key >> _PAGE_BITS] = _EMPTY_PAGE.copy()
        slot = key & _PAGE_MASK
        if page[slot] is None:
            self.count += 1
        page[slot] = value

    def pop(self, key: int) -> Any:
        page = self.pages.get(key >> _PAGE_BITS)
        if page is None:
            return None
        slot = key & _PAGE_MASK
        value = page[slot]
        if value is not None:
            page[slot] = None
            self.count -= 1
            if page == _EMPTY_PAGE:
                del self.pages[key >> _PAGE_BITS]
        return value

    def items(self) -> Iterable[tuple[int, Any]]:
        for number, page in list(self.pages.items()):
            base = number << _PAGE_BITS
            for slot, value in enumerate(page):
                if value is not None:
                    yield base + slot, value

    def clear(self) -> None:
        self.pages.clear()
        self.count = 0


def _compile_values(columns: tuple[tuple[str, str], ...]) -> Callable[[dict[str, Any]], list[Any]]:
    """A function giving a row's compact values (``Rows.encode``'s list, before absent columns are tagged), compiled
    per table so encoding loops over no column list: the layout, then each column's value (``_MISSING`` when the
    row lacks it), decimals, dates and timestamps of exactly those types as their text."""
    body = ["def values(row):", "    get = row.get"]
    for number, (name, kind) in enumerate(columns):
        body.append(f"    v{number} = get({name!r}, _MISSING)")
        if kind == "d":
            body.append(f"    if type(v{number}) is Decimal: v{number} = str(v{number})")
        elif kind == "date":
            body.append(f"    if type(v{number}) is date: v{number} = v{number}.isoformat()")
        elif kind == "ts":
            body.append(f"    if type(v{number}) is datetime: v{number} = v{number}.isoformat()")
    body.append(f"    return [{LAYOUT}, {', '.join(f'v{n}' for n in range(len(columns)))}]")
    namespace = {"_MISSING": _MISSING, "Decimal": Decimal, "date": date, "datetime": datetime}
    exec("\n".join(body), namespace)  # noqa: S102 - our own generated code
    return namespace["values"]


class Rows:
    """One table's current rows, id -> row dict (decoded on access), stored as compact arrays."""

    def __init__(self, table: str) -> None:
        self.table = table
        columns = COLUMNS.get(table, ())
        self.columns = columns
        self._decoders = tuple((name, _PARSERS[kind]) for name, kind in columns)
        self.store = _Paged()
        self._values = _compile_values(columns)

    # -- the compact form --
    def encode(self, row: dict[str, Any]) -> bytes:
        values = self._values(row)
        if any(map(is_, values, repeat(_MISSING))):
            values = [_ABSENT_TAG if v is _MISSING else v for v in values]
        # orjson's result keeps its spare buffer capacity (~4 KiB): copy it to an exact-size bytes object.
        return memoryview(orjson.dumps(values, default=_state_default,
                                       option=orjson.OPT_PASSTHROUGH_DATETIME)).tobytes()

    def decode(self, data: bytes) -> dict[str, Any]:
        values = orjson.loads(data)
        if values[0] != LAYOUT:
            raise ValueError(f"fold state row of layout {values[0]!r}, this version reads layout {LAYOUT}")
        out: dict[str, Any] = {}
        for (name, parse), value in zip(self._decoders, values[1:]):
            if value is None:
                out[name] = None
            elif type(value) is str:
                out[name] = parse(value) if parse is not None else value
            elif type(value) is dict:
                if "$a" not in value:
                    out[name] = _hook_value(value)
            else:
                out[name] = value
        return out

    def raw(self, pk: int) -> bytes | None:
        return self.store.get(pk)

    def put_raw(self, pk: int, data: bytes) -> None:
        self.store.set(pk, data)

    def drop(self, pk: int) -> None:
        self.store.pop(pk)

    # -- a read-only-ish mapping view (resync, tests) --
    def get(self, pk: int, default: Any = None) -> Any:
        data = self.store.get(pk)
        return default if data is None else self.decode(data)

    def __getitem__(self, pk: int) -> dict[str, Any]:
        data = self.store.get(pk)
        if data is None:
            raise KeyError(pk)
        return self.decode(data)

    def __setitem__(self, pk: int, row: dict[str, Any]) -> None:
        self.store.set(pk, self.encode(row))

    def __contains__(self, pk: object) -> bool:
        return isinstance(pk, int) and self.store.get(pk) is not None

    def __len__(self) -> int:
        return self.store.count

    def __iter__(self):
        return (pk for pk, _ in self.store.items())

    def keys(self) -> list[int]:
        return list(self)

    def items(self) -> Iterable[tuple[int, dict[str, Any]]]:
        return ((pk, self.decode(data)) for pk, data in self.store.items())

    def values(self) -> Iterable[dict[str, Any]]:
        return (self.decode(data) for _, data in self.store.items())

    def clear(self) -> None:
        self.store.clear()


_ROW_CODECS = {table: Rows(table) for table in COLUMNS}  # compact-row codecs (buffered snapshot rows)


class ChildIndex:
    """invoice id -> ids of its rows in one child table, kept sorted as packed 8-byte integers."""

    def __init__(self) -> None:
        self.store = _Paged()

    def get(self, invoice_id: int, default: Any = ()) -> Any:
        data = self.store.get(invoice_id)
        return default if data is None else tuple(memoryview(data).cast("q"))

    def __getitem__(self, invoice_id: int) -> tuple[int, ...]:
        return self.get(invoice_id)

    def __contains__(self, invoice_id: object) -> bool:
        return isinstance(invoice_id, int) and self.store.get(invoice_id) is not None

    def __len__(self) -> int:
        return self.store.count

    def add(self, invoice_id: int, pk: int) -> None:
        page = self.store.pages.get(invoice_id >> _PAGE_BITS)  # _Paged.get, inlined: once per child row event
        data = None if page is None else page[invoice_id & _PAGE_MASK]
        if data is None:
            self.store.set(invoice_id, pk.to_bytes(8, sys.byteorder, signed=True))
            return
        if pk > int.from_bytes(data[-8:], sys.byteorder, signed=True):  # the usual case: a new, higher id
            self.store.set(invoice_id, data + pk.to_bytes(8, sys.byteorder, signed=True))
            return
        ids = array("q", data)
        if pk in ids:
            return
        ids.append(pk)
        if len(ids) > 1 and ids[-2] > pk:
            ids = array("q", sorted(ids))
        self.store.set(invoice_id, ids.tobytes())

    def discard(self, invoice_id: int, pk: int) -> None:
        data = self.store.get(invoice_id)
        if data is None:
            return
        ids = array("q", data)
        if pk not in ids:
            return
        ids.remove(pk)
        if ids:
            self.store.set(invoice_id, ids.tobytes())
        else:
            self.store.pop(invoice_id)


class MultiIndex:
    """key -> invoice ids (an int while there is one, a set beyond): customers and jobs to their invoices."""

    def __init__(self) -> None:
        self.store = _Paged()

    def get(self, key: int, default: Any = ()) -> Any:
        value = self.store.get(key)
        if value is None:
            return default
        return (value,) if type(value) is int else value

    def __getitem__(self, key: int) -> Any:
        return self.get(key)

    def add(self, key: int, invoice_id: int) -> None:
        value = self.store.get(key)
        if value is None:
            self.store.set(key, invoice_id)
        elif type(value) is int:
            if value != invoice_id:
                self.store.set(key, {value, invoice_id})
        else:
            value.add(invoice_id)

    def discard(self, key: int, invoice_id: int) -> None:
        value = self.store.get(key)
        if value is None:
            return
        if type(value) is int:
            if value == invoice_id:
                self.store.pop(key)
            return
        value.discard(invoice_id)
        if len(value) == 1:
            self.store.set(key, next(iter(value)))
        elif not value:
            self.store.pop(key)


class Versions:
    """invoice id -> (last emitted version, content hash), packed as 8 bytes + the 32-byte digest."""

    def __init__(self) -> None:
        self.store = _Paged()

    @staticmethod
    def _unpack(data: bytes) -> tuple[int, str]:
        return int.from_bytes(data[:8], "little"), data[8:].hex()

    def get(self, invoice_id: int, default: Any = None) -> Any:
        data = self.store.get(invoice_id)
        return default if data is None else self._unpack(data)

    def __getitem__(self, invoice_id: int) -> tuple[int, str]:
        data = self.store.get(invoice_id)
        if data is None:
            raise KeyError(invoice_id)
        return self._unpack(data)

    def __setitem__(self, invoice_id: int, value: tuple[int, str]) -> None:
        version, content = value
        self.store.set(invoice_id, int(version).to_bytes(8, "little") + bytes.fromhex(content))

    def __contains__(self, invoice_id: object) -> bool:
        return isinstance(invoice_id, int) and self.store.get(invoice_id) is not None

    def __len__(self) -> int:
        return self.store.count

    def items(self) -> Iterable[tuple[int, tuple[int, str]]]:
        return ((k, self._unpack(v)) for k, v in self.store.items())


# --- the mirror of source rows ------------------------------------------------------------------------


class Mirror:
    """Current rows of the captured tables, indexed for invoice rebuilding; the fold's whole state."""

    def __init__(self) -> None:
        self.rows: dict[str, Rows] = {t: Rows(t) for t in TABLES}
        self.by_invoice: dict[str, ChildIndex] = {
            t: ChildIndex() for t in ("invoice_lines", "line_taxes", "payments", "refunds")
        }
        self.invoices_by_customer = MultiIndex()
        self.invoices_by_job = MultiIndex()
        self.versions = Versions()  # invoice id -> (last version, content hash)
        # What the next changelog() writes: rows kept under their own key (reference tables, child rows of no
        # invoice), and invoices whose record (their rows and version, one state record) changed.
        self.dirty_rows: set[tuple[str, int]] = set()
        self.dirty_invoices: set[int] = set()
        self._deleted_headers: dict[int, dict[str, Any]] = {}
        # Decoded rows: those written in the current batch (cleared by end_batch) and reference rows
        # (locations, customers, vehicles, tax rates; bounded), so a rebuild does not decode them again.
        self._cache: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in TABLES}
        self._event_counters: dict[tuple[str, str], Any] = {}
        self._event_counts: dict[tuple[str, str], int] = {}  # (table, op) -> row events not yet counted
        self._totals_mismatches = 0  # invoices built with totals that differ, not yet counted
        self.now = _utc_now  # the events' emitted_at (tests fix it)

    # -- applying changes --
    def apply(self, tx: SourceTransaction, beat: Callable[[], None] | None = None) -> set[int]:
        """Apply one transaction's changes; return the ids of the invoices it touched. ``beat`` is called every
        100,000 changes (a history import's snapshot is millions: the fold is busy, not stuck)."""
        touched: set[int] = set()
        seen = self._event_counts
        rows = self.rows
        for n, change in enumerate(tx.changes):
            if beat is not None and n % 100_000 == 99_999:
                beat()
            key = (change.table, change.op)
            seen[key] = seen.get(key, 0) + 1
            if change.table not in rows:
                continue
            if change.op == "t":
                touched |= self._truncate(change.table)
                continue
            self._apply_row(change, touched)
        return touched

    def flush_metrics(self) -> None:
        """Add what was counted since the last call to the Prometheus counters: once per consumed batch (the
        runner) rather than per transaction, where a counter's lock and lookup were ~0.6 µs of each row event's
        fold. ``changelog()`` calls it too."""
        counters = self._event_counters
        for key, count in self._event_counts.items():
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = metrics.CDC_EVENTS.labels(*key)
            counter.inc(count)
        self._event_counts.clear()
        if self._totals_mismatches:
            metrics.FOLD_TOTALS_MISMATCH.inc(self._totals_mismatches)
            self._totals_mismatches = 0

    def _apply_row(self, change: RowChange, touched: set[int]) -> None:
        """Apply one row change; add the invoices it touched to ``touched``."""
        table = change.table
        image = change.after if change.op != "d" else change.before
        if image is None or "id" not in image:
            return
        pk = int(image["id"])
        rows = self.rows[table]
        old = self._row(table, pk)
        if change.op == "d":
            if old is None:
                return
            new = None
        else:
            new = change.after or {}
            if any(map(is_, new.values(), repeat(UNAVAILABLE))):  # identity: == runs Decimal's ABC checks
                # Unchanged TOAST columns: keep the stored value, never the placeholder.
                new = dict(new)
                for key, value in new.items():
                    if value is UNAVAILABLE:
                        new[key] = old.get(key) if old else None
        children = self.by_invoice.get(table)
        if children is not None:
            # A child row (11 of an invoice's 13 row events): its index, dirty marks and touched invoice in one
            # place, as _index_key / _index / _mark_dirty / _touched_by do them for every table.
            old_invoice = None if old is None else old.get("invoice_id")
            new_invoice = None if new is None else new.get("invoice_id")
            old_invoice = None if old_invoice is None else int(old_invoice)
            new_invoice = None if new_invoice is None else int(new_invoice)
            if (old is None or new is None or old_invoice != new_invoice) and old_invoice is not None:
                children.discard(old_invoice, pk)
            self._store(table, rows, pk, old, new)
            if new is not None and new_invoice is not None and (old is None or old_invoice != new_invoice):
                children.add(new_invoice, pk)
            for invoice_id, row in ((old_invoice, old), (new_invoice, new)):
                if row is not None:
                    if invoice_id is None:
                        self.dirty_rows.add((table, pk))
                    else:
                        self.dirty_invoices.add(invoice_id)
                        if row:
                            touched.add(invoice_id)
            return
        if old is None or new is None or self._index_key(table, old) != self._index_key(table, new):
            self._unindex(table, pk, old)
            reindex = True
        else:
            reindex = False  # same invoice (same customer and job): the indices already hold it
        self._store(table, rows, pk, old, new)
        if new is not None and reindex:
            self._index(table, pk, new)
        self._mark_dirty(table, pk, old, new)
        touched |= self._touched_by(table, pk, old, new)

    def _store(self, table: str, rows: Rows, pk: int, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            rows.drop(pk)
            self._cache[table].pop(pk, None)
            if table == "invoices":
                self._deleted_headers[pk] = old
        else:
            rows.put_raw(pk, rows.encode(new))
            cache = self._cache[table]
            if len(cache) < _BATCH_CACHE or pk in cache:  # beyond the bound: decoded again from the store
                cache[pk] = new

    def _mark_dirty(self, table: str, pk: int, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Note what the changelog must write for a changed row: its invoice's record when it belongs (or
        belonged) to one, its own ``r:`` key otherwise (also to remove that key when a row of no invoice
        becomes one of an invoice's)."""
        if table == "invoices":
            self.dirty_invoices.add(pk)
            return
        if table not in self.by_invoice:
            self.dirty_rows.add((table, pk))
            return
        for row in (old, new):
            if row is not None:
                invoice_id = row.get("invoice_id")
                if invoice_id is None:
                    self.dirty_rows.add((table, pk))
                else:
                    self.dirty_invoices.add(int(invoice_id))

    def _truncate(self, table: str) -> set[int]:
        touched: set[int] = set()
        rows = self.rows[table]
        for pk, row in list(rows.items()):
            self._unindex(table, pk, row)
            touched |= self._touched_by(table, pk, row, None)
            self._mark_dirty(table, pk, row, None)
            if table == "invoices":
                self._deleted_headers[pk] = row
        rows.clear()
        self._cache[table].clear()
        return touched

    def _index_key(self, table: str, row: dict[str, Any]) -> Any:
        if table in self.by_invoice:
            invoice_id = row.get("invoice_id")
            return None if invoice_id is None else int(invoice_id)
        if table == "invoices":
            return int(row["customer_id"]), int(row["job_id"])
        return None

    def _index(self, table: str, pk: int, row: dict[str, Any]) -> None:
        if table in self.by_invoice:
            if row.get("invoice_id") is not None:
                self.by_invoice[table].add(int(row["invoice_id"]), pk)
        elif table == "invoices":
            self.invoices_by_customer.add(int(row["customer_id"]), pk)
            self.invoices_by_job.add(int(row["job_id"]), pk)

    def _unindex(self, table: str, pk: int, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        if table in self.by_invoice:
            if row.get("invoice_id") is not None:
                self.by_invoice[table].discard(int(row["invoice_id"]), pk)
        elif table == "invoices":
            self.invoices_by_customer.discard(int(row["customer_id"]), pk)
            self.invoices_by_job.discard(int(row["job_id"]), pk)

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
    def _row(self, table: str, pk: int) -> dict[str, Any] | None:
        """The current row: from the decoded-row cache (rows written in this batch, reference rows), else
        decoded from its compact form."""
        cache = self._cache[table]
        row = cache.get(pk)
        if row is None:
            rows = self.rows[table]
            page = rows.store.pages.get(pk >> _PAGE_BITS)  # _Paged.get, inlined: once per row event
            data = None if page is None else page[pk & _PAGE_MASK]
            if data is None:
                return None
            row = rows.decode(data)
            if table in _REFERENCE_TABLES:
                if len(cache) >= _REFERENCE_CACHE:
                    cache.clear()
                cache[pk] = row
        return row

    def build_event(self, invoice_id: int, tx: SourceTransaction) -> InvoiceEvent | None:
        """The next version of the invoice as a validated model (its Avro bytes read back), or None when its
        content did not change. The fold itself uses ``build_encoded``; this is for tests and tools."""
        built = self.build_encoded(invoice_id, tx)
        return None if built is None else decode_invoice_event(built.payload)

    def build_encoded(self, invoice_id: int, tx: SourceTransaction) -> Emitted | None:
        """The next version of the invoice as its canonical Avro bytes, or None when its content did not change.

        The record is built from the fold's plain values in the layout fastavro writes (decimals as the bytes
        of their unscaled value at the schema's scale, enums as their symbols), without an ``InvoiceEvent`` in
        between: that model's validation and dump were ~40 % of building an event. The bytes are the model's
        bytes (tests/test_fold_golden.py), and every emitted record decodes and validates as an
        ``InvoiceEvent`` that encodes back to the same bytes (tests/test_fold_properties.py)."""
        header = self._row("invoices", invoice_id)
        deleted = header is None
        if deleted:
            header = self._deleted_headers.get(invoice_id)
            if header is None or invoice_id not in self.versions:
                return None  # never emitted (or already reported deleted): nothing for a ledger to undo
        record = self._invoice_record(invoice_id, header, deleted)
        last_version, last_hash = self.versions.get(invoice_id, (0, ""))
        record["version"] = version = last_version + 1
        record["emitted_at"] = self.now()
        record["source"] = {"tx_id": tx.xid, "lsn": tx.changes[-1].source.lsn if tx.changes else None,
                            "committed_at": tx.committed_at, "completion": tx.completion}
        payload, content = encode_record_with_content_hash(record)
        if content == last_hash:
            metrics.FOLD_UNCHANGED_SKIPPED.inc()
            return None
        self.versions[invoice_id] = (version, content)
        self.dirty_invoices.add(invoice_id)
        return Emitted(invoice_id, version, record["status"], payload)

    def current_event(self, invoice_id: int) -> InvoiceEvent | None:
        """The invoice as last emitted (same version), rebuilt from the state — for resync and reconcile."""
        header = self._row("invoices", invoice_id)
        if header is None or invoice_id not in self.versions:
            return None
        version, _ = self.versions[invoice_id]
        record = self._invoice_record(invoice_id, header, False)
        record["version"] = version
        record["emitted_at"] = self.now()
        record["source"] = {"tx_id": None, "lsn": None, "committed_at": None, "completion": None}
        return decode_invoice_event(encode_record_with_content_hash(record)[0])

    def end_batch(self) -> None:
        self._deleted_headers.clear()
        for table, cache in self._cache.items():
            if table not in _REFERENCE_TABLES:
                cache.clear()

    def _invoice_record(self, invoice_id: int, header: dict[str, Any], deleted: bool) -> dict[str, Any]:
        """The event's fields as the Avro record (everything but version, emitted_at and source). Values are
        rounded exactly as the models' validators round them (``_at``), and totals and sort keys are computed
        from the rounded amounts, as before."""
        row = self._row
        lines: list[dict[str, Any]] = []
        payments: list[dict[str, Any]] = []
        refunds: list[dict[str, Any]] = []
        subtotal = tax_total = ZERO
        if not deleted:
            taxes_by_line: dict[int, list[tuple[Any, int, dict[str, Any], Decimal]]] = {}
            rates: dict[Any, tuple[Any, int, Any, bytes]] = {}  # an invoice's taxes share a rate or two: looked up once
            for tax_id in self.by_invoice["line_taxes"].get(invoice_id, ()):
                t = row("line_taxes", tax_id)
                raw_rate_id = t["tax_rate_id"]
                known = rates.get(raw_rate_id)
                if known is None:
                    rate_id = int(raw_rate_id)
                    rate = row("tax_rates", rate_id) or {}
                    known = rates[raw_rate_id] = (rate.get("code", f"TAX{raw_rate_id}"), rate_id,
                                                  rate.get("name", rate.get("code", "Tax")),
                                                  _at(_dec(rate.get("rate", 0)), 5))
                code, rate_id, name, rate_bytes = known
                amount = _cents(_dec(t["amount"]))
                tax_total += amount  # only the taxes of lines that exist count: subtracted below otherwise
                line_id = int(t["line_id"])
                line_taxes = taxes_by_line.get(line_id)
                if line_taxes is None:
                    line_taxes = taxes_by_line[line_id] = []
                line_taxes.append((code, rate_id, {"tax_rate_id": rate_id, "code": code, "name": name,
                                                   "rate": rate_bytes, "amount": _at(amount, 2)}, amount))
            line_ids = self.by_invoice["invoice_lines"].get(invoice_id, ())
            for line_id in line_ids:
                ln = row("invoice_lines", line_id)
                quantity, unit_price = _dec(ln["quantity"]), _dec(ln["unit_price"])
                amount = money(quantity * unit_price)
                subtotal += amount
                line_taxes = taxes_by_line.pop(line_id, None)
                if line_taxes is not None:
                    if len(line_taxes) > 1:
                        line_taxes.sort(key=_first_two)
                    taxes = [t for _, _, t, _ in line_taxes]
                else:
                    taxes = []
                lines.append({
                    "id": line_id, "position": int(ln["position"]), "kind": ln["kind"],
                    "part_number": ln.get("part_number"), "description": ln["description"],
                    "quantity": _at(quantity, 3), "unit_price": _at(unit_price, 4), "amount": _at(amount, 2),
                    "taxes": taxes,
                })
            for orphans in taxes_by_line.values():  # taxes of lines that do not exist (any more)
                for _, _, _, amount in orphans:
                    tax_total -= amount
            if len(lines) > 1:
                lines.sort(key=_line_order)
            for pid in self.by_invoice["payments"].get(invoice_id, ()):
                payments.append(self._payment(pid))
            if len(payments) > 1:
                payments.sort(key=_payment_order)
            for rid in self.by_invoice["refunds"].get(invoice_id, ()):
                refunds.append(self._refund(rid))
            if len(refunds) > 1:
                refunds.sort(key=_id_order)
        tax_inclusive = bool(header.get("tax_inclusive"))
        total = subtotal if tax_inclusive else subtotal + tax_total
        if tax_inclusive:
            subtotal -= tax_total
        stored = (_cents(_dec(header.get("subtotal", 0))), _cents(_dec(header.get("tax_total", 0))),
                  _cents(_dec(header.get("total", 0))))
        computed = (_cents(subtotal), _cents(tax_total), _cents(total)) if not deleted else stored
        mismatch = computed != stored
        if mismatch:
            self._totals_mismatches += 1
        job = None
        job_row = row("jobs", int(header["job_id"])) if header.get("job_id") is not None else None
        if job_row is not None:
            vehicle = row("vehicles", int(job_row["vehicle_id"])) if job_row.get("vehicle_id") else None
            job = {"id": int(job_row["id"]), "number": job_row["number"], "description": job_row.get("description"),
                   "vehicle": _vehicle(vehicle)}
        return {
            "invoice_id": int(header["id"]), "number": header["number"],
            "status": InvoiceStatus.DELETED.value if deleted else InvoiceStatus(header["status"]).value,
            "issue_date": _date(header.get("issue_date")), "due_date": _date(header.get("due_date")),
            "currency": (header.get("currency") or "USD").strip(), "tax_inclusive": tax_inclusive,
            "location": self._location(int(header["location_id"])),
            "customer": self._customer(int(header["customer_id"])),
            "job": job, "lines": lines, "payments": payments, "refunds": refunds,
            "notes": header.get("notes"), "computed": _totals(computed), "stored": _totals(stored),
            "totals_mismatch": mismatch,
        }

    def _payment(self, pid: int) -> dict[str, Any]:
        p = self._row("payments", pid)
        return {"id": pid, "amount": _at(_dec(p["amount"]), 2), "method": p["method"], "reference": p.get("reference"),
                "received_at": _ts(p["received_at"]), "status": p.get("status") or "received"}

    def _refund(self, rid: int) -> dict[str, Any]:
        r = self._row("refunds", rid)
        return {"id": rid, "kind": r["kind"], "amount": _at(_dec(r["amount"]), 2),
                "tax_amount": _at(_dec(r.get("tax_amount") or 0), 2), "payment_id": r.get("payment_id"),
                "line_id": r.get("line_id"), "reason": r.get("reason"), "created_at": _ts(r["created_at"])}

    def _location(self, location_id: int) -> dict[str, Any]:
        row = self._row("locations", location_id)
        if row is None:
            log.warning("fold_missing_reference", table="locations", id=location_id)
            return {"id": location_id, "code": f"LOC{location_id}", "name": f"Location {location_id}",
                    "timezone": "UTC"}
        return {"id": location_id, "code": row["code"], "name": row["name"], "timezone": row.get("timezone") or "UTC"}

    def _customer(self, customer_id: int) -> dict[str, Any]:
        row = self._row("customers", customer_id)
        if row is None:
            log.warning("fold_missing_reference", table="customers", id=customer_id)
            return {"id": customer_id, "name": f"Customer {customer_id}", "email": None, "phone": None,
                    "is_fleet": False, "payment_terms_days": None, "tax_exempt": False, "billing_address": None}
        return {"id": customer_id, "name": row["name"], "email": row.get("email"), "phone": row.get("phone"),
                "is_fleet": bool(row.get("is_fleet")), "payment_terms_days": row.get("payment_terms_days"),
                "tax_exempt": bool(row.get("tax_exempt")), "billing_address": row.get("billing_address")}

    # -- state changelog (compacted topic) --
    def changelog(self) -> Iterable[tuple[str, bytes | None]]:
        """Changed state entries since the last call, as (key, value) records; None is a tombstone.

        One record per touched invoice, ``i:<invoice id>``: its header and child rows (lines, line taxes,
        payments, refunds) and its last version, so a 13-row invoice transaction is ~2 state records, not 14
        (each produce call costs the fold ~1 µs of its own and librdkafka's work per record). Reference rows
        (locations, customers, vehicles, jobs, tax rates) and child rows of no invoice keep their own key
        ``r:<table>:<id>``. A row's value is its compact array (``[layout, column values...]``, see ``COLUMNS``).
        Records are written in this order (``r:`` keys first): the topic has one partition, and ``restore``
        relies on reading them in offset order, as compaction keeps them."""
        self.flush_metrics()
        rows = self.rows
        for table, pk in sorted(self.dirty_rows):
            raw = rows[table].raw(pk)
            if raw is not None and table in self.by_invoice and self._row(table, pk).get("invoice_id") is not None:
                raw = None  # now one of an invoice's rows: carried by that invoice's record
            yield f"r:{table}:{pk}", raw
        for invoice_id in sorted(self.dirty_invoices):
            yield f"i:{invoice_id}", self._invoice_state(invoice_id)
        self.dirty_rows.clear()
        self.dirty_invoices.clear()

    def changelog_of(self, invoice_ids: Iterable[int]) -> Iterable[tuple[str, bytes | None]]:
        """``changelog()``'s records for these invoices only (a large release committed in parts): the tombstones
        of their rows' own keys where ``changelog()`` would write them, then their ``i:`` records, in that order (an
        ``r:`` tombstone read after an ``i:`` record would drop the row from the invoice); they leave the dirty
        sets."""
        dirty_rows = self.dirty_rows
        for invoice_id in invoice_ids:
            for table, index in self.by_invoice.items():
                for pk in index.get(invoice_id):
                    if (table, pk) in dirty_rows:  # a row of no invoice that became this one's: its own key goes
                        dirty_rows.discard((table, pk))
                        yield f"r:{table}:{pk}", None
            self.dirty_invoices.discard(invoice_id)
            yield f"i:{invoice_id}", self._invoice_state(invoice_id)

    def _invoice_state(self, invoice_id: int) -> bytes:
        """``[INVOICE_STATE, version, hash, header, [lines], [line taxes], [payments], [refunds]]``: rows as
        their compact arrays (embedded as they are stored), version and hash null before the first emission.
        Never a tombstone: an invoice whose rows are all gone keeps its version, as ``v:`` keys did."""
        rows = self.rows
        header = rows["invoices"].raw(invoice_id)
        children = []
        for table, index in self.by_invoice.items():
            store = rows[table].store
            children.append([Fragment(store.get(pk)) for pk in index.get(invoice_id)])
        version = self.versions.get(invoice_id)
        return orjson.dumps([INVOICE_STATE, version[0] if version else None, version[1] if version else None,
                             None if header is None else Fragment(header), *children])

    def restore(self, key: str, value: bytes | None) -> None:
        """Load one changelog record. Records must come in offset order (the latest value per key wins, as
        compaction keeps it): an ``i:`` record replaces every row its invoice had, including rows restored
        from ``r:`` and ``v:`` keys written before invoice records existed (older releases wrote one record
        per row and per version; those keys are still read)."""
        kind, _, rest = key.partition(":")
        if kind == "r":
            table, _, pk_text = rest.partition(":")
            if value is not None and value[:1] == b"{":  # a whole row as a JSON object (state written before compact rows)
                value = self.rows[table].encode(decode_state(value))
            self._restore_row(table, int(pk_text), value)
        elif kind == "i":
            self._restore_invoice(int(rest), value)
        elif kind == "v" and value is not None:
            data = orjson.loads(value)
            self.versions[int(rest)] = (int(data["version"]), data["hash"])

    def _restore_row(self, table: str, pk: int, value: bytes | None) -> None:
        rows = self.rows[table]
        self._cache[table].pop(pk, None)
        old_raw = rows.raw(pk)
        if old_raw is not None:
            self._unindex(table, pk, rows.decode(old_raw))
        if value is None:
            rows.drop(pk)
        else:
            rows.put_raw(pk, value)
            self._index(table, pk, rows.decode(value))

    def _restore_invoice(self, invoice_id: int, value: bytes | None) -> None:
        for table, index in self.by_invoice.items():  # what this invoice had: replaced by the record's rows
            for pk in index.get(invoice_id):
                self._restore_row(table, pk, None)
        self._restore_row("invoices", invoice_id, None)
        if value is None:
            return
        state = orjson.loads(value)
        if state[0] != INVOICE_STATE:
            raise ValueError(f"fold state invoice record of format {state[0]!r}, this version reads {INVOICE_STATE}")
        _, version, content, header, *children = state
        if header is not None:
            self._restore_row("invoices", invoice_id, _compact(header))
        for table, table_rows in zip(self.by_invoice, children):
            for values in table_rows:
                self._restore_row(table, int(values[1]), _compact(values))  # column 1 is every table's id
        if version is not None:
            self.versions[invoice_id] = (int(version), content)

    def row_counts(self) -> dict[str, int]:
        return {t: len(r) for t, r in self.rows.items()}

    def invoice_count(self) -> int:
        return len(self.rows["invoices"])


# --- helpers ------------------------------------------------------------------------------------------


_REFERENCE_TABLES = frozenset({"locations", "customers", "vehicles", "tax_rates"})
_REFERENCE_CACHE = 4096  # decoded reference rows kept (the cache is emptied when full)
# Decoded rows kept per table for one batch (saves decoding them again to build the invoices they touch). A
# history import's snapshot is one batch of millions of rows: unbounded, this cache was its peak memory.
_BATCH_CACHE = 20_000


def _cents(value: Decimal) -> Decimal:
    """What the Money validator makes of a value (the models round every money field this way)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _first_two(item: tuple[Any, int, Any, Any]) -> tuple[Any, int]:
    return item[0], item[1]  # a line's taxes in (code, tax rate id) order


_SCALES = {scale: Decimal(1).scaleb(-scale) for scale in (2, 3, 4, 5)}
_at_caches: dict[int, dict[Decimal, bytes]] = {scale: {} for scale in _SCALES}  # one per scale: no key tuples


def _at(value: Decimal, scale: int) -> bytes:
    """The Avro bytes of a decimal field: rounded half up to the field's scale exactly as the model's validator
    rounds it (``canonical._at_scale``), then the unscaled value (``canonical._decimal_bytes``). Amounts, prices
    and rates repeat: cached (equal decimals round to one value)."""
    cache = _at_caches[scale]
    encoded = cache.get(value)
    if encoded is None:
        encoded = _decimal_bytes(value.quantize(_SCALES[scale], rounding=ROUND_HALF_UP), scale)
        if len(cache) >= 4096:
            cache.clear()
        cache[value] = encoded
    return encoded


def _totals(values: tuple[Decimal, Decimal, Decimal]) -> dict[str, bytes]:
    return {"subtotal": _at(values[0], 2), "tax_total": _at(values[1], 2), "total": _at(values[2], 2)}


def _line_order(ln: dict[str, Any]) -> tuple[int, int]:
    return ln["position"], ln["id"]


def _payment_order(p: dict[str, Any]) -> tuple[datetime, int]:
    return p["received_at"], p["id"]


def _id_order(r: dict[str, Any]) -> int:
    return r["id"]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


def _hook_value(obj: dict[str, Any]) -> Any:
    return _state_hook(obj)


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


__all__ = ["Emitted", "Mirror", "SourceTransaction", "TransactionAssembler", "encode_state", "decode_state"]
