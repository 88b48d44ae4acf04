"""Property tests of the fold: random shop operations, emitted as Debezium would (one topic per table,
transaction markers on their own topic, topics interleaved arbitrarily, END ids with a different LSN
part), folded by the TransactionAssembler + Mirror — with an optional crash and restore from the state
changelog in the middle — must yield, for every invoice, exactly the final database state; and every
emitted version must equal the invoice as it stood after the source transaction that produced it (never
a half-written invoice, never an older state after a newer one).
"""

from __future__ import annotations

import copy
from datetime import date, datetime, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.canonical import InvoiceEvent, decode_invoice_event, encode_invoice_event, money
from daemon.source.decode import Block, Change, RowChange, Source, SourceInfo, TxBlock, TxMarker
from daemon.source.fold import Mirror, TransactionAssembler, decode_state, encode_state

TX_TOPIC = "shop.transaction"
TS = datetime(2026, 11, 1, tzinfo=timezone.utc)


class ShopModel:
    """A tiny in-memory shop database that records each transaction's row changes like pgoutput."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[int, dict]] = {t: {} for t in (
            "locations", "customers", "jobs", "tax_rates", "invoices", "invoice_lines", "line_taxes", "payments")}
        self.next_id = 100
        self.transactions: list[tuple[str, list[tuple[str, str, dict | None, dict | None]]]] = []
        self.snapshots: dict[str, dict[int, dict]] = {}  # xid -> invoice views after that transaction
        self.xid = 500
        self._pending: list = []
        self.begin()
        self.insert("locations", {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC", "currency": "USD"})
        self.insert("customers", {"id": 1, "location_id": 1, "name": "Fleet Co", "email": "a@x", "phone": None,
                                  "is_fleet": True, "payment_terms_days": 30, "tax_exempt": False,
                                  "billing_address": None})
        self.insert("tax_rates", {"id": 1, "code": "GST", "name": "GST", "rate": Decimal("0.05000"),
                                  "jurisdiction": None, "active": True})
        self.insert("tax_rates", {"id": 2, "code": "PST", "name": "PST", "rate": Decimal("0.07000"),
                                  "jurisdiction": None, "active": True})
        self.commit()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def begin(self) -> None:
        self._pending = []

    def insert(self, table: str, row: dict) -> None:
        self.tables[table][row["id"]] = dict(row)
        self._pending.append((table, "c", None, dict(row)))

    def update(self, table: str, pk: int, **changes) -> None:
        before = dict(self.tables[table][pk])
        self.tables[table][pk].update(changes)
        self._pending.append((table, "u", before, dict(self.tables[table][pk])))

    def delete(self, table: str, pk: int) -> None:
        before = self.tables[table].pop(pk)
        self._pending.append((table, "d", before, None))

    def commit(self) -> None:
        if not self._pending:
            return
        self.xid += 1
        xid = str(self.xid)
        self.transactions.append((xid, self._pending))
        self.snapshots[xid] = {i: self.view(i) for i in self.tables["invoices"]}
        self._pending = []

    # -- what the fold should produce for an invoice --
    def view(self, invoice_id: int) -> dict:
        t = self.tables
        header = t["invoices"][invoice_id]
        lines = sorted((ln for ln in t["invoice_lines"].values() if ln["invoice_id"] == invoice_id),
                       key=lambda ln: (ln["position"], ln["id"]))
        taxes = [x for x in t["line_taxes"].values() if x["invoice_id"] == invoice_id]
        payments = sorted((p for p in t["payments"].values() if p["invoice_id"] == invoice_id), key=lambda p: p["id"])
        return {
            "status": header["status"],
            # Customer edits re-send open invoices only; a void invoice keeps the details it was voided with.
            "customer_email": t["customers"][header["customer_id"]]["email"] if header["status"] != "void" else None,
            "lines": [(ln["id"], ln["position"], ln["quantity"], ln["unit_price"], money(ln["quantity"] * ln["unit_price"]),
                       sorted((x["tax_rate_id"], x["amount"]) for x in taxes if x["line_id"] == ln["id"]))
                      for ln in lines],
            "payments": [(p["id"], p["amount"], p["status"]) for p in payments],
        }


def event_view(event) -> dict:
    return {
        "status": event.status.value,
        "customer_email": event.customer.email if event.status.value != "void" else None,
        "lines": [(ln.id, ln.position, ln.quantity, ln.unit_price, ln.amount,
                   sorted((t.tax_rate_id, t.amount) for t in ln.taxes)) for ln in event.lines],
        "payments": [(p.id, p.amount, p.status.value) for p in sorted(event.payments, key=lambda p: p.id)],
    }


OPS = ["new_invoice", "add_line", "change_qty", "delete_line", "reorder", "pay", "reverse", "move_payment",
       "void", "delete_invoice", "customer_email"]


def apply_op(model: ShopModel, op: str, pick: int) -> None:
    t = model.tables
    invoices = sorted(i for i, r in t["invoices"].items() if r["status"] != "void")
    model.begin()
    if op == "new_invoice" or not invoices:
        inv = model.new_id()
        job = model.new_id()
        model.insert("jobs", {"id": job, "number": f"J-{job}", "location_id": 1, "customer_id": 1, "vehicle_id": None,
                              "description": "Alternator", "status": "open", "opened_at": TS, "closed_at": None})
        model.insert("invoices", {"id": inv, "number": f"INV-{inv}", "job_id": job, "customer_id": 1, "location_id": 1,
                                  "status": "issued", "issue_date": date(2026, 11, 1), "due_date": None,
                                  "currency": "USD", "tax_inclusive": False, "subtotal": Decimal("0.00"),
                                  "tax_total": Decimal("0.00"), "total": Decimal("0.00"), "notes": None})
        for n in range(1 + pick % 3):
            _add_line(model, inv, n + 1, pick + n)
    else:
        inv = invoices[pick % len(invoices)]
        lines = sorted(i for i, ln in t["invoice_lines"].items() if ln["invoice_id"] == inv)
        live_payments = sorted(i for i, p in t["payments"].items() if p["invoice_id"] == inv and p["status"] == "received")
        if op == "add_line":
            _add_line(model, inv, len(lines) + 1, pick)
        elif op == "change_qty" and lines:
            line_id = lines[pick % len(lines)]
            model.update("invoice_lines", line_id, quantity=Decimal(pick % 5 + 1).quantize(Decimal("0.001")))
            for tax_id, tax in list(t["line_taxes"].items()):
                if tax["line_id"] == line_id:
                    line = t["invoice_lines"][line_id]
                    rate = t["tax_rates"][tax["tax_rate_id"]]["rate"]
                    model.update("line_taxes", tax_id, amount=money(line["quantity"] * line["unit_price"] * rate))
        elif op == "delete_line" and lines:
            line_id = lines[pick % len(lines)]
            model.delete("invoice_lines", line_id)  # the cascade's child deletes follow the parent's
            for tax_id in [k for k, x in t["line_taxes"].items() if x["line_id"] == line_id]:
                model.delete("line_taxes", tax_id)
        elif op == "reorder" and len(lines) >= 2:
            a, b = lines[0], lines[-1]
            pa, pb = t["invoice_lines"][a]["position"], t["invoice_lines"][b]["position"]
            model.update("invoice_lines", a, position=pb)
            model.update("invoice_lines", b, position=pa)
        elif op == "pay":
            pid = model.new_id()
            model.insert("payments", {"id": pid, "job_id": t["invoices"][inv]["job_id"], "invoice_id": inv,
                                      "customer_id": 1, "amount": Decimal(f"{pick % 90 + 10}.25"), "method": "card",
                                      "reference": None, "received_at": TS, "status": "received", "reversed_at": None})
        elif op == "reverse" and live_payments:
            model.update("payments", live_payments[pick % len(live_payments)], status="reversed", reversed_at=TS)
        elif op == "move_payment" and live_payments and len(invoices) > 1:
            other = invoices[(pick + 1) % len(invoices)]
            if other != inv:
                model.update("payments", live_payments[0], invoice_id=other)
        elif op == "void":
            for pid in live_payments:
                model.update("payments", pid, status="reversed", reversed_at=TS)
            model.update("invoices", inv, status="void")
        elif op == "delete_invoice":
            for pid in [k for k, p in t["payments"].items() if p["invoice_id"] == inv]:
                model.delete("payments", pid)
            model.delete("invoices", inv)
            for line_id in lines:
                model.delete("invoice_lines", line_id)
            for tax_id in [k for k, x in t["line_taxes"].items() if x["invoice_id"] == inv]:
                model.delete("line_taxes", tax_id)
        elif op == "customer_email":
            model.update("customers", 1, email=f"ap{pick}@fleet.example")
    _restate_totals(model)
    model.commit()


def _add_line(model: ShopModel, inv: int, position: int, pick: int) -> None:
    line_id = model.new_id()
    quantity, price = Decimal(pick % 3 + 1).quantize(Decimal("0.001")), Decimal(f"{pick % 200 + 5}.9900")
    model.insert("invoice_lines", {"id": line_id, "invoice_id": inv, "position": position, "kind": "part",
                                   "part_number": f"P{pick}", "description": "Part", "quantity": quantity,
                                   "unit_price": price, "created_at": TS})
    for rate_id in ([1] if pick % 2 else [1, 2]):
        rate = model.tables["tax_rates"][rate_id]["rate"]
        model.insert("line_taxes", {"id": model.new_id(), "line_id": line_id, "invoice_id": inv,
                                    "tax_rate_id": rate_id, "amount": money(quantity * price * rate)})


def _restate_totals(model: ShopModel) -> None:
    t = model.tables
    touched = {c[3]["invoice_id"] if c[3] else c[2]["invoice_id"] for c in model._pending
               if c[0] in ("invoice_lines", "line_taxes")}
    for inv in touched:
        if inv not in t["invoices"]:
            continue
        sub = sum((money(ln["quantity"] * ln["unit_price"]) for ln in t["invoice_lines"].values()
                   if ln["invoice_id"] == inv), Decimal("0"))
        tax = sum((x["amount"] for x in t["line_taxes"].values() if x["invoice_id"] == inv), Decimal("0"))
        model.update("invoices", inv, subtotal=sub, tax_total=tax, total=sub + tax)


def debezium_records(model: ShopModel) -> dict[str, list]:
    """Per topic, the records Debezium would write (row changes, and BEGIN/END markers)."""
    topics: dict[str, list] = {TX_TOPIC: []}
    lsn = 1000
    for xid, changes in model.transactions:
        lsn += 10
        begin_id = f"{xid}:{lsn}"
        tx_records = topics[TX_TOPIC]
        tx_records.append(TxMarker(status="BEGIN", id=begin_id, ts_ms=0, topic=TX_TOPIC, partition=0,
                                   offset=len(tx_records)))
        per_collection: dict[str, int] = {}
        for order, (table, op, before, after) in enumerate(changes, start=1):
            topic = f"shop.public.{table}"
            records = topics.setdefault(topic, [])
            per_collection[f"public.{table}"] = per_collection.get(f"public.{table}", 0) + 1
            records.append(RowChange(
                table=table, op=op, before=copy.deepcopy(before), after=copy.deepcopy(after),
                source=SourceInfo(db="shop", schema_="public", table=table, ts_ms=1_795_000_000_000, snapshot="false",
                                  txId=int(xid), lsn=lsn + order),
                transaction=TxBlock(id=begin_id, total_order=order, data_collection_order=per_collection[f"public.{table}"]),
                topic=topic, partition=0, offset=len(records)))
        tx_records.append(TxMarker(status="END", id=f"{xid}:{lsn + 9}", event_count=len(changes),
                                   data_collections=per_collection, ts_ms=0, topic=TX_TOPIC, partition=0,
                                   offset=len(tx_records)))
    return topics


def as_plain(change: RowChange) -> Change:
    """The plain ``Change`` that ``decode_change`` makes of the record this model is (tests/test_decode.py
    proves the two decodes agree field by field)."""
    plain = Change.__new__(Change)
    plain.table, plain.op, plain.before, plain.after = change.table, change.op, change.before, change.after
    s = change.source
    plain.source = Source(s.db, s.schema_, s.table, s.ts_ms, s.snapshot, s.txId, s.lsn)
    t = change.transaction
    plain.transaction = None if t is None else Block(t.id, t.total_order, t.data_collection_order)
    plain.topic, plain.partition, plain.offset = change.topic, change.partition, change.offset
    return plain


def _committable_by_walking(assembler: TransactionAssembler, positions: dict) -> dict:
    """The committable offsets computed the plain way: the lowest offset of everything still buffered."""
    lowest = dict(positions)
    held = list(assembler.snapshot) + [c for p in assembler.pending.values() for c in p.changes] + \
        [c for tx in assembler._immediate for c in tx.changes]
    for c in held:
        lowest[(c.topic, c.partition)] = min(lowest.get((c.topic, c.partition), c.offset), c.offset)
    for p in assembler.pending.values():
        if p.marker_partition is not None:
            first = p.begin_offset if p.begin_offset is not None else p.end.offset
            lowest[p.marker_partition] = min(lowest.get(p.marker_partition, first), first)
    return lowest


def emitted_event(built):
    """What a sink reads from an emitted record: it must decode and validate as an ``InvoiceEvent`` (the fold
    builds the Avro record without the model), say what the runner's key and headers say, and be exactly the
    model's own encoding of that event (nothing the validators would round or default differently)."""
    event = decode_invoice_event(built.payload)
    assert isinstance(event, InvoiceEvent)
    assert (event.invoice_id, event.version, event.status.value, event.key.encode()) == \
        (built.invoice_id, built.version, built.status, built.key)
    assert encode_invoice_event(event) == built.payload
    return event


class FoldHarness:
    """Feeds records like the runner does, 'commits' after each step (changelog, checkpoint and offsets
    together, as one Kafka transaction does), and can crash and restore, or be rewound."""

    def __init__(self) -> None:
        self.changelog: dict[str, bytes | None] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.emitted: list = []
        self._fresh()

    def _fresh(self) -> None:
        self.mirror = Mirror()
        self.assembler = TransactionAssembler(timeout_s=3600)
        for key, value in self.changelog.items():
            if key == "meta":
                self.assembler.restore_checkpoint(decode_state(value))
            else:
                self.mirror.restore(key, value)
        self.positions = dict(self.committed)
        self.assembler.restored_at(self.positions)

    def feed(self, record) -> None:
        self.positions[(record.topic, record.partition)] = record.offset + 1
        if isinstance(record, TxMarker):
            self.assembler.add_marker(record)
        else:
            self.assembler.add_change(record)
            if record.source.snapshot == "last":
                self.assembler.snapshot_seen_last(dict(self.positions))
        self.commit()

    def commit(self) -> None:
        """One loop of the runner's: apply what is ready, then commit."""
        for tx in self.assembler.ready(self.positions):
            for invoice_id in sorted(self.mirror.apply(tx)):
                built = self.mirror.build_encoded(invoice_id, tx)
                if built is not None:
                    self.emitted.append(emitted_event(built))
            self.mirror.end_batch()
        for key, value in self.mirror.changelog():
            self.changelog.pop(key, None)  # the latest value last, in write order, as the compacted topic keeps it
            self.changelog[key] = value
        self.changelog["meta"] = encode_state(self.assembler.checkpoint())
        self.committed = self.assembler.committable(self.positions)
        assert self.committed == _committable_by_walking(self.assembler, self.positions)

    def crash_and_restore(self) -> None:
        self._fresh()

    def reset_to_earliest(self) -> None:
        """`offsets reset --target fold --to-earliest`: only the group's offsets move; the fold restarts."""
        self.committed = {}
        self._fresh()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1000)), min_size=1, max_size=25),
       interleave_seed=st.randoms(use_true_random=False), crash_at=st.one_of(st.none(), st.floats(0.05, 0.95)),
       plain=st.booleans())
def test_fold_yields_final_database_state(ops, interleave_seed, crash_at, plain):
    model = ShopModel()
    for op, pick in ops:
        apply_op(model, op, pick)
    topics = debezium_records(model)
    if plain:  # the runner's decode_change gives the fold plain Change objects: the same fold must come out
        topics = {t: [as_plain(r) if isinstance(r, RowChange) else r for r in records] for t, records in topics.items()}

    # Interleave the topics arbitrarily (each topic in its own order, as a consumer sees them).
    cursors = {topic: 0 for topic in topics}
    sequence = []
    while any(cursors[t] < len(r) for t, r in topics.items()):
        topic = interleave_seed.choice([t for t, r in topics.items() if cursors[t] < len(r)])
        sequence.append(topics[topic][cursors[topic]])
        cursors[topic] += 1

    harness = FoldHarness()
    crash_index = int(len(sequence) * crash_at) if crash_at is not None else None
    i = 0
    while i < len(sequence):
        harness.feed(sequence[i])
        i += 1
        if crash_index is not None and i == crash_index:
            crash_index = None
            harness.crash_and_restore()
            # Re-read every topic from its committed offset, in the same interleaving style.
            replay = [r for r in sequence if r.offset >= harness.committed.get((r.topic, r.partition), 0)]
            resumed = {(r.topic, r.offset) for r in sequence[i:]}
            sequence = sequence[:i] + [r for r in replay if (r.topic, r.offset) not in resumed] + sequence[i:]

    latest: dict[int, object] = {}
    versions: dict[int, int] = {}
    order = {xid: n for n, (xid, _) in enumerate(model.transactions)}
    last_tx: dict[int, int] = {}
    for event in harness.emitted:
        # Every version is the invoice exactly as it stood after its source transaction.
        if event.status.value != "deleted":
            assert event_view(event) == model.snapshots[event.source.tx_id][event.invoice_id]
            assert event.computed == event.stored, "the model keeps stored totals right"
        # Versions only grow, and never go back to an older transaction's state.
        assert event.version > versions.get(event.invoice_id, 0)
        assert order[event.source.tx_id] >= last_tx.get(event.invoice_id, -1)
        versions[event.invoice_id] = event.version
        last_tx[event.invoice_id] = order[event.source.tx_id]
        latest[event.invoice_id] = event

    final = model.tables["invoices"]
    for invoice_id in final:
        assert invoice_id in latest, f"invoice {invoice_id} never emitted"
        assert event_view(latest[invoice_id]) == model.view(invoice_id)
    for invoice_id, event in latest.items():
        if invoice_id not in final:
            assert event.status.value == "deleted"


def test_incomplete_transaction_waits_then_is_released_after_the_bounded_wait():
    model = ShopModel()
    apply_op(model, "new_invoice", 3)
    topics = debezium_records(model)
    now = [0.0]
    assembler = TransactionAssembler(timeout_s=30, clock=lambda: now[0])
    mirror = Mirror()
    positions: dict = {}
    # Everything except the invoice_lines topic arrives: the END says lines are missing.
    for topic, records in topics.items():
        if topic == "shop.public.invoice_lines":
            continue
        for r in records:
            (assembler.add_marker if isinstance(r, TxMarker) else assembler.add_change)(r)
            positions[(r.topic, 0)] = r.offset + 1
    ready = assembler.ready(positions)
    assert [tx.completion for tx in ready] == ["complete"]  # the set-up transaction (location etc.)
    assert assembler.buffered_events > 0
    held = assembler.committable(positions)
    assert held[("shop.public.invoices", 0)] == 0, "the incomplete transaction's offsets are not committed"
    now[0] = 31.0
    released = assembler.ready(positions)
    assert [tx.completion for tx in released] == ["timed_out"]
    assert assembler.buffered_events == 0
    for tx in ready + released:
        mirror.apply(tx)
    # The stragglers arrive after all: they are applied, never dropped.
    for r in topics["shop.public.invoice_lines"]:
        assembler.add_change(r)
    late = assembler.ready(positions)
    assert [tx.completion for tx in late] == ["late"] * len(topics["shop.public.invoice_lines"])
    for tx in late:
        mirror.apply(tx)
    (invoice_id,) = model.tables["invoices"]
    assert len(mirror.by_invoice["invoice_lines"][invoice_id]) == len(topics["shop.public.invoice_lines"])


def test_end_before_data_and_lsn_suffixes_differ():
    model = ShopModel()
    apply_op(model, "new_invoice", 1)
    topics = debezium_records(model)
    assembler = TransactionAssembler()
    positions: dict = {}
    for r in topics[TX_TOPIC]:  # all markers first: END arrives before any data
        assembler.add_marker(r)
    assert assembler.ready(positions) == []
    for topic, records in topics.items():
        if topic != TX_TOPIC:
            for r in records:
                assembler.add_change(r)
    ready = assembler.ready(positions)
    assert [tx.completion for tx in ready] == ["complete", "complete"]
    assert all(c.transaction.id.split(":")[1] != ready[1].xid for c in ready[1].changes)


def test_a_long_snapshot_that_keeps_arriving_is_not_released_before_its_last_record():
    """A history import's initial snapshot takes many minutes (Debezium reads millions of rows). The bounded
    wait is for a snapshot that stopped arriving (connector restarted mid-snapshot), so it counts from the
    last snapshot record: a snapshot still arriving is never released in pieces (an invoice emitted without
    its lines, then again with them)."""
    now = [0.0]
    assembler = TransactionAssembler(timeout_s=30, clock=lambda: now[0])
    positions: dict = {}

    def snapshot_record(n: int, last: bool = False) -> RowChange:
        return RowChange(table="invoice_lines", op="r", before=None,
                         after={"id": n, "invoice_id": 1, "position": n, "kind": "part", "description": "x",
                                "quantity": Decimal("1.000"), "unit_price": Decimal("1.0000")},
                         source=SourceInfo(db="shop", schema_="public", table="invoice_lines", ts_ms=0,
                                           snapshot="last" if last else "true"),
                         transaction=None, topic="shop.public.invoice_lines", partition=0, offset=n)

    for n in range(20):  # one record a minute for twenty minutes: slow, but arriving
        assembler.add_change(snapshot_record(n))
        positions[("shop.public.invoice_lines", 0)] = n + 1
        assert assembler.ready(positions) == [], f"released in pieces after {now[0]:.0f} s"
        now[0] += 60
    now[0] += 121  # then nothing more for longer than the bounded wait: a stalled snapshot is released
    (released,) = assembler.ready(positions)
    assert released.completion == "timed_out" and len(released.changes) == 20
    # A snapshot that completes is released whole, however long it took.
    for n in range(20, 25):
        assembler.add_change(snapshot_record(n, last=n == 24))
        now[0] += 60
    assembler.snapshot_seen_last({("shop.public.invoice_lines", 0): 25})
    (complete,) = assembler.ready({("shop.public.invoice_lines", 0): 25})
    assert complete.completion == "snapshot" and len(complete.changes) == 5


def test_a_buffered_snapshot_folds_to_the_same_bytes_as_its_decoded_rows():
    """The initial snapshot is held in the mirror's compact row form while it is buffered (a history import is
    millions of rows); folded, it gives exactly the events the decoded rows give."""
    from datetime import datetime as _dt  # noqa: PLC0415

    from daemon.source.fold import BufferedSnapshotRow, SourceTransaction  # noqa: PLC0415

    model = ShopModel()
    for n in range(40):
        apply_op(model, OPS[n % len(OPS)], n * 37)
    rows = [(table, row) for table, table_rows in model.tables.items() for row in table_rows.values()]
    changes = [RowChange(table=table, op="r", before=None, after=dict(row, extra_column="not folded"),
                         source=SourceInfo(db="shop", schema_="public", table=table, ts_ms=1_795_000_000_000 + n,
                                           snapshot="last" if n == len(rows) - 1 else "true", lsn=7000 + n),
                         transaction=None, topic=f"shop.public.{table}", partition=0, offset=n)
               for n, (table, row) in enumerate(rows)]
    assembler = TransactionAssembler()
    positions = {}
    for change in changes:
        assembler.add_change(change)
        positions[(change.topic, 0)] = change.offset + 1
    assert all(isinstance(c, BufferedSnapshotRow) for c in assembler.snapshot)
    assembler.snapshot_seen_last(dict(positions))
    (released,) = assembler.ready(positions)
    assert released.completion == "snapshot"
    fixed = _dt(2026, 11, 25, tzinfo=timezone.utc)

    def fold(tx) -> list[bytes]:
        mirror = Mirror()
        mirror.now = lambda: fixed
        out = [mirror.build_encoded(i, tx) for i in sorted(mirror.apply(tx))]
        return [b.payload for b in out if b is not None]

    direct = SourceTransaction(None, changes, "snapshot", committed_at=changes[-1].committed_at)
    assert released.committed_at == direct.committed_at
    assert fold(released) == fold(direct) and len(fold(direct)) == len(model.tables["invoices"]) >= 3
    # A batch bigger than the decoded-row cache's bound (a history import's snapshot) folds to the same bytes.
    import daemon.source.fold as fold_module  # noqa: PLC0415

    bound = fold_module._BATCH_CACHE  # noqa: SLF001
    fold_module._BATCH_CACHE = 3  # noqa: SLF001
    try:
        assert fold(released) == fold(direct)
    finally:
        fold_module._BATCH_CACHE = bound  # noqa: SLF001
