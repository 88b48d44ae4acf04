"""The canonical event's Avro schema: round trip with exact decimals, and the evolution rule — the
current schema reads every released version's data and every released version reads the current one's."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.testing import invoice_event, payment
from daemon.canonical import (
    SCHEMAS_DIR, InvoiceEvent, SourcePosition, _decimal_bytes, _to_avro, _trailer_length, _trailer_schema,
    _header, _varint_length, decode_invoice_event, encode_invoice_event, encode_with_content_hash,
)

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


# --- the encoder's shortcuts against fastavro's own encoding ------------------------------------------

_amounts = st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2,
                       allow_nan=False, allow_infinity=False)
_moments = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)), timezone(timedelta(hours=13))])),
    st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2200, 1, 1)),  # naive: fastavro's local time
)


@settings(max_examples=300, deadline=None)
@given(amount=_amounts, quantity=st.decimals(min_value=Decimal("-9999.999"), max_value=Decimal("9999.999"), places=3,
                                             allow_nan=False, allow_infinity=False),
       price=st.decimals(min_value=Decimal("-999999.9999"), max_value=Decimal("999999.9999"), places=4,
                         allow_nan=False, allow_infinity=False),
       rate=st.decimals(min_value=Decimal("0"), max_value=Decimal("9.99999"), places=5, allow_nan=False,
                        allow_infinity=False),
       tx_id=st.one_of(st.none(), st.text(max_size=200)), lsn=st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
       completion=st.one_of(st.none(), st.text(max_size=40)), committed_at=_moments, emitted_at=_moments.filter(lambda m: m is not None),
       invoice_id=st.integers(-2**63, 2**63 - 1), version=st.integers(1, 2**63 - 1))
def test_encoding_equals_fastavro_encoding_the_model_dump(amount, quantity, price, rate, tx_id, lsn, completion,
                                                          committed_at, emitted_at, invoice_id, version):
    """Pre-encoded decimals and the measured trailer give exactly fastavro's bytes for the plain dump."""
    event = invoice_event(payments=[payment(1, str(amount))])
    lines = list(event.lines)
    lines[0] = lines[0].model_copy(update={
        "quantity": quantity, "unit_price": price, "amount": amount,
        "taxes": (lines[0].taxes[0].model_copy(update={"rate": rate, "amount": -amount}),)})
    event = InvoiceEvent.model_validate({
        **event.model_dump(), "lines": [ln.model_dump() for ln in lines], "invoice_id": invoice_id,
        "version": version, "emitted_at": emitted_at,
        "source": {"tx_id": tx_id, "lsn": lsn, "committed_at": committed_at, "completion": completion},
        "stored": {"subtotal": amount, "tax_total": Decimal("0.00"), "total": -amount}})
    reference = _write(CURRENT, event.model_dump(mode="python"))
    assert encode_invoice_event(event) == _header() + reference
    trailer = _write(fastavro.parse_schema(_trailer_schema()), event.model_dump(mode="python"))
    assert reference.endswith(trailer)
    measured = _trailer_length(event)
    assert measured is None or measured == len(trailer)
    assert (measured is None) == any(m is not None and m.tzinfo is None for m in (committed_at, emitted_at))


def test_content_hash_ignores_version_source_and_emit_time_only():
    event = invoice_event(payments=[payment(1, "50.00")])
    moved = event.model_copy(update={
        "version": 7, "emitted_at": datetime(2030, 1, 1, tzinfo=timezone.utc),
        "source": SourcePosition(tx_id="123456789", lsn=2**40, committed_at=datetime(2030, 1, 1, tzinfo=timezone.utc))})
    assert moved.content_hash() == event.content_hash()
    changes = {
        "invoice_id": 1002, "number": "INV-X", "notes": "n", "currency": "CAD", "tax_inclusive": True,
        "totals_mismatch": True, "payments": (), "lines": event.lines[:1],
        "computed": event.computed.model_copy(update={"total": event.computed.total + Decimal("0.01")}),
    }
    hashes = {event.content_hash()}
    for name, value in changes.items():
        hashes.add(event.model_copy(update={name: value}).content_hash())
    assert len(hashes) == len(changes) + 1
    # The hash covers the encoded span exactly: the invoice id's bytes plus everything between version and source.
    payload, digest = encode_with_content_hash(event)
    payload = payload[len(_header()):]  # the single-object header names the schema, it is not content
    head, version = _varint_length(event.invoice_id), _varint_length(event.version)
    span = payload[head + version: len(payload) - _trailer_length(event)]
    assert digest == hashlib.sha256(payload[:head] + span).hexdigest()
    assert span.startswith(_write(fastavro.parse_schema("string"), event.number))


def test_decimal_with_more_places_than_its_scale_is_refused():
    with pytest.raises(ValueError):
        _decimal_bytes(Decimal("1.005"), 2)
    assert _decimal_bytes(Decimal("-0.00"), 2) == b"\x00" and _decimal_bytes(Decimal("1.5"), 2) == (150).to_bytes(2, "big")


def test_trailer_arithmetic_applies_to_the_current_schema_only(monkeypatch):
    from daemon import canonical  # noqa: PLC0415

    assert canonical._trailer_layout_is_known()  # noqa: SLF001 - else every hash pays a second encoding
    event = invoice_event()
    reference = encode_with_content_hash(event)
    changed = [dict(field) for field in canonical._KNOWN_TRAILER]  # noqa: SLF001
    changed[1] = {**changed[1], "doc": "a documentation-only change"}
    monkeypatch.setattr(canonical, "_KNOWN_TRAILER", changed)
    canonical._trailer_layout_is_known.cache_clear()  # noqa: SLF001
    try:
        assert _trailer_length(event) is None
        assert encode_with_content_hash(event) == reference  # fastavro measured it instead: same result
    finally:
        monkeypatch.undo()
        canonical._trailer_layout_is_known.cache_clear()  # noqa: SLF001
