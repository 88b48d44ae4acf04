"""The fold's output is byte-identical across internal changes (compact state, one-call event building).

A fixed workload (the property tests' shop model, plus refunds, vehicles, tax-inclusive invoices, TOAST
placeholders, string-mode decimals, a truncate and a restore from the state changelog half way) is folded
and every canonical event is Avro-encoded with a fixed emit time. The digest of all those bytes was
recorded from the fold before the memory and throughput work (commit 1c21faf; until the content hash was
redefined over the Avro encoding it also covered each content hash, and was re-recorded without them from
the code just before that change); any change to what the fold emits — a value, an order, which versions
are emitted, the wire encoding — changes it. When the canonical output changes on
purpose, re-record it with ``python3 -m tests.test_fold_golden`` and say why in the commit.

Schema v2 (single-object header + ``source.completion``) changed every record's bytes; ``GOLDEN_V1`` is the
digest recorded before it, and the same workload's records, header stripped and read back as schema v1
(Avro schema resolution drops the new field), still give exactly that digest: nothing else changed.
"""

from __future__ import annotations

import hashlib
import io
import random
from datetime import date, datetime, timezone
from decimal import Decimal

import fastavro

from daemon.canonical import decode_invoice_event, encode_invoice_event
from daemon.source.decode import UNAVAILABLE, RowChange, SourceInfo, TxBlock
from daemon.source.fold import Mirror, SourceTransaction
from tests.test_fold_properties import OPS, ShopModel, apply_op

GOLDEN = "fc017f00e673660e9bc6d74130b7eea9e8531d38e01f1f06e319a4217bfac870"
GOLDEN_V1 = "bd7624fdaebb6719cb31b5df02fe8f33e2ecb488ce47024235bce73be42f7ef8"  # before schema v2
FIXED_NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
TS = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)


def _fixed(event):
    return event.model_copy(update={"emitted_at": FIXED_NOW})


def _extra_transactions(model: ShopModel, rng: random.Random) -> None:
    """Rows the property model does not write: vehicles, refunds, tax-inclusive headers, odd values."""
    t = model.tables
    t.setdefault("vehicles", {})
    t.setdefault("refunds", {})
    invoices = sorted(t["invoices"])
    model.begin()
    model.insert("vehicles", {"id": 1, "customer_id": 1, "vin": None, "year": 2014, "make": "Ford", "model": "F-150",
                              "plate": "ABC123"})
    model.insert("customers", {"id": 2, "location_id": 1, "name": "Walk-in", "email": None, "phone": "555-0100",
                               "is_fleet": False, "payment_terms_days": None, "tax_exempt": True,
                               "billing_address": "1 Main St"})
    model.insert("locations", {"id": 2, "code": "NORTH", "name": "North", "timezone": "America/Denver",
                               "currency": "CAD"})
    model.commit()
    for inv in invoices[: max(1, len(invoices) // 2)]:
        model.begin()
        job = t["invoices"][inv]["job_id"]
        model.update("jobs", job, vehicle_id=1, description="Brakes & rotors")
        lines = sorted(i for i, ln in t["invoice_lines"].items() if ln["invoice_id"] == inv)
        rid = model.new_id()
        model.insert("refunds", {"id": rid, "invoice_id": inv, "payment_id": None,
                                 "line_id": lines[0] if lines else None, "kind": rng.choice(["refund", "return"]),
                                 "amount": Decimal(f"{rng.randint(1, 50)}.{rng.randint(0, 99):02d}"),
                                 "tax_amount": Decimal("0.50"), "reason": "returned part", "created_at": TS})
        model.update("invoices", inv, notes="Customer: keep old parts", due_date=date(2026, 12, 2),
                     tax_inclusive=rng.random() < 0.3, customer_id=rng.choice([1, 2]),
                     location_id=rng.choice([1, 2]), currency="CAD ")
        model.commit()


def _changes(model: ShopModel) -> list[SourceTransaction]:
    out = []
    lsn = 5000
    for xid, changes in model.transactions:
        lsn += 10
        rows = []
        for order, (table, op, before, after) in enumerate(changes, start=1):
            if after is not None and table == "invoices" and order % 3 == 0:
                after = dict(after, notes=UNAVAILABLE)  # an unchanged TOAST column: keep the stored value
            if after is not None and table == "payments" and order % 4 == 0:
                after = dict(after, amount=str(after["amount"]))  # decimal.handling.mode=string
            rows.append(RowChange(
                table=table, op=op, before=before, after=after,
                source=SourceInfo(db="shop", schema_="public", table=table, ts_ms=1_795_000_000_000 + order,
                                  snapshot="false", txId=int(xid), lsn=lsn + order),
                transaction=TxBlock(id=f"{xid}:{lsn}", total_order=order, data_collection_order=order),
                topic=f"shop.public.{table}", partition=0, offset=order))
        out.append(SourceTransaction(xid, rows, "complete", committed_at=rows[-1].committed_at))
    return out


def as_released_v1(payload: bytes) -> bytes:
    """A record of the current writer as schema v1 would have written it: the header stripped, the body read
    with the writer's schema into v1 (Avro resolution drops what v1 lacks) and written with v1."""
    from daemon.canonical import (  # noqa: PLC0415
        HEADER_LENGTH, SINGLE_OBJECT_MAGIC, invoice_event_schema, released_schemas, schema_fingerprint)

    assert payload[:HEADER_LENGTH] == SINGLE_OBJECT_MAGIC + schema_fingerprint(invoice_event_schema())
    v1 = released_schemas()[1]
    record = fastavro.schemaless_reader(io.BytesIO(payload[HEADER_LENGTH:]), invoice_event_schema(), v1)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, v1, record)
    return out.getvalue()


def fold_digest(project=lambda payload: payload) -> tuple[str, int]:
    """The digest of every record the golden workload makes (``project`` maps each record first)."""
    rng = random.Random(20261125)
    model = ShopModel()
    for _ in range(400):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    _extra_transactions(model, rng)
    for _ in range(100):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    transactions = _changes(model)
    digest = hashlib.sha256()
    changelog: dict[str, bytes | None] = {}
    mirror = Mirror()
    emitted = 0
    mirror.now = lambda: FIXED_NOW
    for n, tx in enumerate(transactions):
        if n == len(transactions) // 2:
            mirror = Mirror()  # crash: restore from the compacted changelog
            mirror.now = lambda: FIXED_NOW
            for key, value in changelog.items():
                mirror.restore(key, value)
        for invoice_id in sorted(mirror.apply(tx)):
            built = mirror.build_encoded(invoice_id, tx)  # the fold's own bytes, as the runner produces them
            if built is None:
                continue
            payload = built.payload
            # The same bytes as the validated model's encoding (what the fold emitted before it stopped
            # building an InvoiceEvent on its hot path).
            assert encode_invoice_event(decode_invoice_event(payload)) == payload
            digest.update(project(payload))
            emitted += 1
        mirror.end_batch()
        for key, value in mirror.changelog():
            changelog.pop(key, None)  # the latest value last, in write order, as the compacted topic keeps it
            changelog[key] = value
    for invoice_id, _row in sorted(mirror.rows["invoices"].items()):
        event = mirror.current_event(invoice_id)
        if event is not None:
            digest.update(project(encode_invoice_event(_fixed(event))))
    # A truncate of the lines table re-emits every invoice without lines.
    truncate = SourceTransaction("999999", [RowChange(
        table="invoice_lines", op="t", before=None, after=None,
        source=SourceInfo(db="shop", schema_="public", table="invoice_lines", ts_ms=1_795_000_100_000,
                          snapshot="false", txId=999999, lsn=999999),
        transaction=None, topic="shop.public.invoice_lines", partition=0, offset=0)], "no_metadata")
    for invoice_id in sorted(mirror.apply(truncate)):
        built = mirror.build_encoded(invoice_id, truncate)
        if built is not None:
            assert encode_invoice_event(decode_invoice_event(built.payload)) == built.payload
            digest.update(project(built.payload))
            emitted += 1
    return digest.hexdigest(), emitted


def test_fold_output_is_byte_identical_to_the_recorded_digest():
    digest, emitted = fold_digest()
    assert emitted > 300
    assert digest == GOLDEN


def test_fold_output_read_as_schema_v1_is_byte_identical_to_the_digest_before_v2():
    digest, _ = fold_digest(as_released_v1)
    assert digest == GOLDEN_V1


if __name__ == "__main__":
    print(fold_digest())


def test_state_written_as_whole_row_objects_restores_to_the_same_invoices():
    """A fold-state topic written before compact rows (each row a JSON object) still restores."""
    from daemon.source.fold import decode_state, encode_state  # noqa: PLC0415

    rng = random.Random(7)
    model = ShopModel()
    for _ in range(120):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    _extra_transactions(model, rng)
    mirror = Mirror()
    changelog: dict[str, bytes | None] = {}
    for tx in _changes(model):
        for invoice_id in mirror.apply(tx):
            mirror.build_event(invoice_id, tx)
        mirror.end_batch()
        for key, value in mirror.changelog():
            changelog.pop(key, None)  # as the compacted topic keeps it: the latest value last
            changelog[key] = value
    old_format: dict[str, bytes | None] = {}
    for key, value in changelog.items():
        if key.startswith("r:") and value is not None:
            table, pk = key.split(":")[1], int(key.split(":")[2])
            # The whole row as the old state held it: every source column (the fold reads some of them).
            full = {**model.tables.get(table, {}).get(pk, {}), **mirror.rows[table][pk]}
            value = encode_state(full)
            assert decode_state(value) == full
        old_format[key] = value
    restored = Mirror()
    for key, value in old_format.items():
        restored.restore(key, value)
    assert restored.row_counts() == mirror.row_counts()
    invoices = sorted(pk for pk, _ in mirror.rows["invoices"].items())
    assert invoices
    for invoice_id in invoices:
        a, b = mirror.current_event(invoice_id), restored.current_event(invoice_id)
        assert a is not None and b is not None
        assert encode_invoice_event(_fixed(a)) == encode_invoice_event(_fixed(b))
        assert mirror.by_invoice["invoice_lines"].get(invoice_id) == restored.by_invoice["invoice_lines"].get(invoice_id)
    assert restored.versions.get(invoices[0]) == mirror.versions.get(invoices[0])


def test_compact_rows_keep_values_and_absent_columns():
    from daemon.source.fold import Rows  # noqa: PLC0415

    rows = Rows("invoices")
    row = {"id": 7, "number": "INV-7", "job_id": 1, "customer_id": 2, "location_id": 3, "status": "issued",
           "issue_date": date(2026, 11, 2), "due_date": datetime(2026, 12, 2, 1, 2, 3),  # odd: a timestamp
           "currency": "USD", "tax_inclusive": True, "subtotal": Decimal("1E+2"), "tax_total": "5.25",
           "total": Decimal("-105.2500"), "created_at": TS}  # no "notes" column; created_at is not kept
    rows[7] = row
    back = rows[7]
    assert "notes" not in back and "created_at" not in back
    assert back == {**{k: v for k, v in row.items() if k != "created_at"}, "tax_total": Decimal("5.25")}
    assert str(back["subtotal"]) == "1E+2" and str(back["total"]) == "-105.2500"
    assert type(back["due_date"]) is datetime and type(back["issue_date"]) is date
    assert 7 in rows and 8 not in rows and len(rows) == 1 and rows.get(8, {}) == {}
    rows.drop(7)
    assert len(rows) == 0 and rows.get(7) is None
