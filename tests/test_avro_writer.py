"""The compiled Avro writer (``daemon/avro_writer.py``) writes fastavro's bytes or leaves the record to fastavro.

Records are generated from the canonical schema itself (every field, every union branch, boundary numbers,
any text), some with values of the wrong type or missing fields. For each: the compiled writer gives exactly
fastavro's bytes, or raises ``Unwritable``; and what the canonical encoder writes is fastavro's bytes, or
fastavro's own error.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import canonical
from daemon.avro_writer import Unwritable, compile_writer

SCHEMA = canonical.invoice_event_schema()
NAMED = SCHEMA["__named_schemas"]
WRITE = compile_writer(SCHEMA)

_ZONES = st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)), timezone(timedelta(hours=13, minutes=45))])
_WRONG = st.one_of(st.none(), st.floats(allow_nan=False), st.decimals(allow_nan=False, allow_infinity=False),
                   st.text(max_size=3), st.binary(max_size=3), st.booleans(), st.integers(),
                   st.lists(st.none(), max_size=1), st.tuples(st.integers()), st.dates())


def _value(schema, wrong: bool):
    """A strategy for values of ``schema``; with ``wrong``, sometimes a value of another type."""
    right = _right(schema, wrong)
    return st.one_of(right, right, right, _WRONG) if wrong else right


def _right(schema, wrong: bool):
    if isinstance(schema, str):
        if schema in NAMED:
            return _right(NAMED[schema], wrong)
        schema = {"type": schema}
    if isinstance(schema, list):
        return st.one_of(*(st.none() if branch == "null" else _value(branch, wrong) for branch in schema))
    kind, logical = schema["type"], schema.get("logicalType")
    if kind == "record":
        fields = {f["name"]: _value(f["type"], wrong) for f in schema["fields"]}
        records = st.fixed_dictionaries(fields)
        if wrong:  # a missing field: fastavro writes its default (or refuses), never the compiled writer
            records = st.one_of(records, records.flatmap(
                lambda r: st.sampled_from(sorted(r)).map(lambda k: {n: v for n, v in r.items() if n != k})))
        return records
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_value(schema["items"], wrong), max_size=3)
    if (kind, logical) == ("int", "date"):
        return st.one_of(st.dates(), st.integers(-(2**31), 2**31 - 1))
    if (kind, logical) == ("long", "timestamp-micros"):
        aware = st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2200, 1, 1), timezones=_ZONES)
        naive = st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2200, 1, 1))
        return st.one_of(aware, aware, naive, st.integers(-(2**62), 2**62))
    if kind == "long":
        return st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 63, 64, -64, -65, 8191, 8192,
                                                                            2**63 - 1, -(2**63)]))
    if kind == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "string":
        return st.text(max_size=40)
    if kind == "boolean":
        return st.booleans()
    if kind == "bytes":
        return st.binary(max_size=10)  # long ones: test_small_and_large_numbers_and_lengths
    raise AssertionError(f"the canonical schema has a {kind}: extend this test")


def _fastavro(record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, record)
    return buf.getvalue()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(record=_right(SCHEMA, wrong=False))
def test_a_well_typed_record_is_written_as_fastavro_writes_it(record):
    naive = any(type(m) is datetime and m.tzinfo is None
                for m in (record["emitted_at"], record["source"]["committed_at"],
                          *(p["received_at"] for p in record["payments"]),
                          *(r["created_at"] for r in record["refunds"])))
    if naive:  # fastavro reads a naive datetime in the host's zone: left to it
        with pytest.raises(Unwritable):
            WRITE(record)
        return
    assert WRITE(record) == _fastavro(record)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(record=_right(SCHEMA, wrong=True))
def test_any_record_is_written_as_fastavro_writes_it_or_left_to_fastavro(record):
    try:
        expected = _fastavro(record)
    except Exception as exc:  # noqa: BLE001 - whatever fastavro refuses, the canonical encoder refuses alike
        refused = exc
        expected = None
    try:
        compiled = WRITE(record)
    except Unwritable:
        compiled = None
    if compiled is not None:
        assert compiled == expected
    if expected is None:
        with pytest.raises(type(refused)):
            canonical._write_body(record)
    else:
        assert canonical._write_body(record) == expected


def test_the_fold_s_records_take_the_compiled_path(monkeypatch):
    """The golden workload's records are written by the compiled writer, not by the fallback (else it saves
    nothing), and give the recorded digest."""
    from tests.test_fold_golden import GOLDEN, fold_digest  # noqa: PLC0415

    calls = []
    real = fastavro.schemaless_writer
    monkeypatch.setattr(canonical.fastavro, "schemaless_writer", lambda *a: calls.append(1) or real(*a))
    assert fold_digest()[0] == GOLDEN
    assert calls == []


def test_a_schema_with_types_it_does_not_write_is_refused_when_compiled():
    for unsupported in ("double", {"type": "map", "values": "long"}, ["null", "long", "string"]):
        schema = fastavro.parse_schema({"type": "record", "name": "X", "fields": [{"name": "f", "type": unsupported}]})
        with pytest.raises(TypeError):
            compile_writer(schema)


def test_small_and_large_numbers_and_lengths():
    schema = fastavro.parse_schema({"type": "record", "name": "N", "fields": [
        {"name": "l", "type": "long"}, {"name": "s", "type": "string"}, {"name": "d", "type": {
            "type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}}]})
    write = compile_writer(schema)
    for number in (0, 1, -1, 8191, 8192, -8192, -8193, 2**40, 2**63 - 1, -(2**63)):
        for text in ("", "é", "x" * 8191, "y" * 8192, "z" * 70000):
            record = {"l": number, "s": text, "d": b"\x01" * (len(text) % 9)}
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, record)
            assert write(record) == buf.getvalue()
    for unwritable in ({"l": 2**63, "s": "", "d": b""}, {"l": True, "s": "", "d": b""},
                       {"l": 1, "s": "", "d": Decimal("1.00")}, {"l": 1, "s": b"", "d": b""}, {"l": 1, "s": ""}):
        with pytest.raises(Unwritable):
            write(unwritable)


def test_another_logical_type_is_written_as_its_base_type_or_left_to_fastavro():
    import uuid  # noqa: PLC0415

    schema = fastavro.parse_schema({"type": "record", "name": "L", "fields": [
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]})
    write = compile_writer(schema)
    for record in ({"u": "0f8fad5b-d9cb-469f-a165-70867728950e", "t": 1_700_000_000_000},):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, record)
        assert write(record) == buf.getvalue()
    for record in ({"u": uuid.uuid4(), "t": 1}, {"u": "x", "t": datetime(2026, 1, 1, tzinfo=timezone.utc)}):
        with pytest.raises(Unwritable):  # values fastavro converts: its to write
            write(record)


def test_a_canonical_schema_the_compiler_refuses_is_written_by_fastavro(monkeypatch):
    """A future schema version with a type the compiler does not write (a double) must not stop the fold."""
    from tests.test_fold_golden import GOLDEN, fold_digest  # noqa: PLC0415

    def refuse(*_args, **_kwargs):
        raise TypeError("the compiled writer does not write 'double'")

    monkeypatch.setattr(canonical, "compile_writer", refuse)
    canonical._compiled_writer.cache_clear()
    try:
        assert canonical._compiled_writer() is None
        assert fold_digest()[0] == GOLDEN  # fastavro writes every record, the same bytes
    finally:
        canonical._compiled_writer.cache_clear()
