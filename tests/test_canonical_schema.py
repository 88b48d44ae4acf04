"""The canonical event's Avro schema: round trip with exact decimals, and the evolution rule — the
current schema reads every released version's data and every released version reads the current one's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from connectors.testing import invoice_event, payment
from daemon.canonical import SCHEMAS_DIR, decode_invoice_event, encode_invoice_event, _to_avro

RELEASED = sorted((SCHEMAS_DIR / "canonical" / "released").glob("invoice_event.v*.avsc"))
CURRENT = fastavro.parse_schema(json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text()))


def test_round_trip_keeps_every_decimal_exact():
    event = invoice_event(payments=[payment(1, "100.01")])
    decoded = decode_invoice_event(encode_invoice_event(event))
    assert decoded == event and decoded.content_hash() == event.content_hash()
    assert str(decoded.lines[1].unit_price) == "289.9500" and str(decoded.computed.total) == "677.58"


def _write(schema, record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


@pytest.mark.parametrize("released", RELEASED, ids=[p.name for p in RELEASED])
def test_current_schema_is_backward_and_forward_compatible(released: Path):
    old = fastavro.parse_schema(json.loads(released.read_text()))
    record = _to_avro(invoice_event(payments=[payment(1, "50.00")]))
    # Backward: the current schema reads what the released one wrote.
    old_bytes = _write(old, {k: v for k, v in record.items() if k in {f["name"] for f in old["fields"]}})
    fastavro.schemaless_reader(io.BytesIO(old_bytes), old, CURRENT)
    # Forward: the released schema reads what the current one writes.
    fastavro.schemaless_reader(io.BytesIO(_write(CURRENT, record)), CURRENT, old)


def test_an_incompatible_change_is_caught():
    changed = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    changed["fields"].append({"name": "po_number", "type": "string"})  # no default: old data cannot be read
    new = fastavro.parse_schema(changed)
    old = fastavro.parse_schema(json.loads(RELEASED[0].read_text()))
    record = _to_avro(invoice_event())
    with pytest.raises(Exception):
        fastavro.schemaless_reader(io.BytesIO(_write(old, record)), old, new)


def test_there_is_a_released_version():
    assert RELEASED, "schemas/canonical/released/ must hold the released versions"
