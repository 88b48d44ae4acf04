"""The fold's output is byte-identical across internal changes (compact state, direct Avro records).

A fixed workload (the property tests' shop model, plus refunds, vehicles, tax-inclusive invoices, TOAST
placeholders, string-mode decimals, a truncate and a restore from the state changelog half way) is folded
and every canonical event is Avro-encoded with a fixed emit time. The digest of all those bytes was
recorded from the fold before the memory and throughput work (commit 1c21faf); any change to what the
fold emits — a value, an order, the wire encoding — changes it. When the canonical output changes on
purpose, re-record it with ``python3 -m tests.test_fold_golden`` and say why in the commit.
"""

from __future__ import annotations

import hashlib
import random
from datetime import date, datetime, timezone
from decimal import Decimal

from daemon.canonical import decode_invoice_event, encode_invoice_event
from daemon.decode import UNAVAILABLE, RowChange, SourceInfo, TxBlock
from daemon.fold import Mirror, SourceTransaction
from tests.test_fold_properties import OPS, ShopModel, apply_op

GOLDEN = "c9fcd4a9b3eba2c1839730ccafc504fdf8685b9bcbd8143fb516f1663f47f954"
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


def fold_digest() -> tuple[str, int]:
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
    for n, tx in enumerate(transactions):
        if n == len(transactions) // 2:
            mirror = Mirror()  # crash: restore from the compacted changelog
            for key, value in changelog.items():
                mirror.restore(key, value)
        for invoice_id in sorted(mirror.apply(tx)):
            event = mirror.build_event(invoice_id, tx)
            if event is None:
                continue
            payload = encode_invoice_event(_fixed(event))
            assert decode_invoice_event(payload) == _fixed(event)
            digest.update(payload)
            digest.update(event.content_hash().encode())
            emitted += 1
        mirror.end_batch()
        for key, value in mirror.changelog():
            changelog[key] = value
    for invoice_id, _row in sorted(mirror.rows["invoices"].items()):
        event = mirror.current_event(invoice_id)
        if event is not None:
            digest.update(encode_invoice_event(_fixed(event)))
    # A truncate of the lines table re-emits every invoice without lines.
    truncate = SourceTransaction("999999", [RowChange(
        table="invoice_lines", op="t", before=None, after=None,
        source=SourceInfo(db="shop", schema_="public", table="invoice_lines", ts_ms=1_795_000_100_000,
                          snapshot="false", txId=999999, lsn=999999),
        transaction=None, topic="shop.public.invoice_lines", partition=0, offset=0)], "no_metadata")
    for invoice_id in sorted(mirror.apply(truncate)):
        event = mirror.build_event(invoice_id, truncate)
        if event is not None:
            digest.update(encode_invoice_event(_fixed(event)))
            emitted += 1
    return digest.hexdigest(), emitted


def test_fold_output_is_byte_identical_to_the_recorded_digest():
    digest, emitted = fold_digest()
    assert emitted > 300
    assert digest == GOLDEN


if __name__ == "__main__":
    print(fold_digest())
