"""A fold rewound (`offsets reset --target fold`) must never emit older content as a newer version.

The fold keeps its state (mirror + versions) across a reset of its source offsets, so every record it reads
again was already applied. Streaming transactions were always recognised by their END offset; snapshot
records and records outside a transaction were re-applied, which emitted the snapshot's content as a new,
higher version (issue #19 item 1: v3 with total 100.00 after v2 had 250.00) and then skipped the streaming
transactions that would have repaired it.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from daemon.source.decode import RowChange, SourceInfo, TxBlock, TxMarker
from daemon.source.fold import decode_state, encode_state
from tests.test_fold_properties import FoldHarness

TX_TOPIC = "shop.transaction"


class Topics:
    """Per topic, the records Debezium wrote (offsets are positions in that topic)."""

    def __init__(self) -> None:
        self.records: dict[str, list] = {}
        self.lsn = 1000

    def _append(self, topic: str, make) -> object:
        records = self.records.setdefault(topic, [])
        record = make(len(records))
        records.append(record)
        return record

    def row(self, table: str, op: str, after: dict | None, before: dict | None = None, *, snapshot: str = "false",
            xid: int | None = None, order: int = 1) -> None:
        self.lsn += 1
        topic = f"shop.public.{table}"
        block = TxBlock(id=f"{xid}:{self.lsn}", total_order=order, data_collection_order=order) if xid else None
        self._append(topic, lambda offset: RowChange(
            table=table, op=op, before=before, after=after,
            source=SourceInfo(db="shop", schema_="public", table=table, ts_ms=1_795_000_000_000,
                              snapshot=snapshot, txId=xid, lsn=self.lsn),
            transaction=block, topic=topic, partition=0, offset=offset))

    def transaction(self, xid: int, rows: list[tuple[str, str, dict | None, dict | None]]) -> None:
        self._append(TX_TOPIC, lambda offset: TxMarker(status="BEGIN", id=f"{xid}:{self.lsn}", ts_ms=0,
                                                       topic=TX_TOPIC, partition=0, offset=offset))
        counts: dict[str, int] = {}
        for order, (table, op, before, after) in enumerate(rows, start=1):
            counts[f"public.{table}"] = counts.get(f"public.{table}", 0) + 1
            self.row(table, op, after, before, xid=xid, order=order)
        self._append(TX_TOPIC, lambda offset: TxMarker(status="END", id=f"{xid}:{self.lsn}", event_count=len(rows),
                                                       data_collections=counts, ts_ms=0, topic=TX_TOPIC,
                                                       partition=0, offset=offset))

    def from_offsets(self, committed: dict[tuple[str, int], int]) -> list:
        """Every record at or after ``committed`` (a consumer's view: topic after topic, each in order)."""
        return [r for topic, records in self.records.items() for r in records
                if r.offset >= committed.get((topic, 0), 0)]


REFERENCE = [
    ("locations", {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC"}),
    ("customers", {"id": 1, "name": "Fleet Co", "email": "a@x", "is_fleet": True}),
    ("jobs", {"id": 1, "number": "J1", "description": "Alternator", "vehicle_id": None}),
]


def _invoice(total: str) -> dict:
    return {"id": 1, "number": "INV-1", "job_id": 1, "customer_id": 1, "location_id": 1, "status": "issued",
            "issue_date": date(2026, 11, 2), "currency": "USD", "tax_inclusive": False,
            "subtotal": Decimal(total), "tax_total": Decimal("0"), "total": Decimal(total)}


def _line(price: str) -> dict:
    return {"id": 1, "invoice_id": 1, "position": 1, "kind": "labour", "description": "work",
            "quantity": Decimal("1.000"), "unit_price": Decimal(price)}


def _snapshot_then_edit(records_without_transaction: bool = False) -> Topics:
    """Invoice 1 at 100.00 in the initial snapshot, then a streaming edit to 250.00."""
    topics = Topics()
    rows = REFERENCE + [("invoices", _invoice("100.00")), ("invoice_lines", _line("100.0000"))]
    for n, (table, row) in enumerate(rows):
        topics.row(table, "r", row, snapshot="last" if n == len(rows) - 1 else "true")
    edit = [("invoice_lines", "u", _line("100.0000"), _line("250.0000")),
            ("invoices", "u", _invoice("100.00"), _invoice("250.00"))]
    if records_without_transaction:  # a connector without transaction metadata: every change on its own
        for table, op, before, after in edit:
            topics.row(table, op, after, before)
    else:
        topics.transaction(600, edit)
    return topics


def read(fold: FoldHarness, records: list) -> None:
    for record in records:
        fold.feed(record)


def _totals(fold: FoldHarness) -> list[tuple[int, Decimal]]:
    return [(e.version, e.computed.total) for e in fold.emitted if e.invoice_id == 1]


def test_rewind_to_earliest_never_emits_the_snapshot_content_as_a_newer_version():
    topics = _snapshot_then_edit()
    fold = FoldHarness()
    read(fold, topics.from_offsets({}))
    assert _totals(fold) == [(1, Decimal("100.00")), (2, Decimal("250.00"))]

    fold.reset_to_earliest()
    read(fold, topics.from_offsets(fold.committed))
    assert _totals(fold) == [(1, Decimal("100.00")), (2, Decimal("250.00"))], \
        "the replayed snapshot was applied again as a new version with old content"

    # Later changes still apply (they are not mistaken for replays).
    topics.transaction(601, [("invoice_lines", "u", _line("250.0000"), _line("300.0000")),
                             ("invoices", "u", _invoice("250.00"), _invoice("300.00"))])
    read(fold, topics.from_offsets(fold.committed))
    assert _totals(fold)[-1] == (3, Decimal("300.00"))


def test_rewind_recognises_replayed_records_without_a_transaction():
    topics = _snapshot_then_edit(records_without_transaction=True)
    fold = FoldHarness()
    read(fold, topics.from_offsets({}))
    assert [t for _, t in _totals(fold)][-1] == Decimal("250.00")
    emitted = len(fold.emitted)

    fold.reset_to_earliest()
    read(fold, topics.from_offsets(fold.committed))
    assert len(fold.emitted) == emitted, f"replay emitted {[(e.version, e.computed.total) for e in fold.emitted[emitted:]]}"

    topics.row("invoice_lines", "u", _line("300.0000"), _line("250.0000"))
    read(fold, topics.from_offsets(fold.committed))
    assert fold.emitted[-1].computed.total == Decimal("300.00")


def test_rewind_to_the_middle_of_the_snapshot_and_a_crash_before_release_still_apply_once():
    """A snapshot re-read because it had not been released yet (a crash) is applied, exactly once."""
    topics = _snapshot_then_edit()
    fold = FoldHarness()
    snapshot_records = topics.from_offsets({})
    # Read part of the snapshot (no "last" yet), crash: nothing was released, so nothing counts as applied.
    read(fold, [r for r in snapshot_records if isinstance(r, RowChange) and r.table in ("locations", "customers")])
    assert fold.emitted == []
    fold.crash_and_restore()
    read(fold, topics.from_offsets(fold.committed))
    assert _totals(fold) == [(1, Decimal("100.00")), (2, Decimal("250.00"))]


def test_a_rewind_after_upgrading_from_a_checkpoint_without_replay_positions():
    """The release before kept only ``last_end_offset``: the first start after the upgrade takes the committed
    offsets as applied (nothing outside a transaction is ever held below them), and writes them down before
    an operator can rewind."""
    topics = _snapshot_then_edit()
    fold = FoldHarness()
    read(fold, topics.from_offsets({}))
    old = decode_state(fold.changelog["meta"])
    fold.changelog["meta"] = encode_state({"last_end_offset": old["last_end_offset"]})
    fold.crash_and_restore()  # the upgraded fold starts ...
    fold.commit()  # ... and commits once with nothing new to read
    fold.reset_to_earliest()
    read(fold, topics.from_offsets(fold.committed))
    assert _totals(fold) == [(1, Decimal("100.00")), (2, Decimal("250.00"))]
