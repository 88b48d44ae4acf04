"""Decoding Debezium envelopes by semantic type, TOAST placeholders, and malformed records."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.source.decode import (UNAVAILABLE, Change, DecodeError, RowChange, decode_change, decode_row_change,
                                  decode_tx_marker)


def _b64_decimal(value: str, scale: int) -> str:
    unscaled = int(Decimal(value).scaleb(scale))
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


FIELDS = [
    {"type": "int64", "optional": False, "field": "id"},
    {"type": "bytes", "optional": False, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
     "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": "total"},
    {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "rate",
     "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]},
    {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "created_at"},
    {"type": "int32", "name": "io.debezium.time.Date", "field": "issue_date"},
    {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "local_ts"},
    {"type": "string", "optional": True, "field": "notes"},
]


def envelope(after: dict, before: dict | None = None, op: str = "u", transaction: dict | None = None,
             snapshot: str = "false") -> bytes:
    return json.dumps({
        "schema": {"type": "struct", "fields": [
            {"type": "struct", "fields": FIELDS, "field": "before"},
            {"type": "struct", "fields": FIELDS, "field": "after"},
            {"type": "struct", "field": "source", "fields": []}]},
        "payload": {"before": before, "after": after, "op": op, "ts_ms": 1,
                    "source": {"db": "shop", "schema": "public", "table": "invoices", "ts_ms": 1795559149827,
                               "snapshot": snapshot, "txId": 729, "lsn": 31160120},
                    "transaction": transaction},
    }).encode()


def test_precise_decimals_dates_and_timestamps_decode_exactly():
    row = {"id": 7, "total": _b64_decimal("-1234.56", 2), "rate": {"scale": 5, "value": _b64_decimal("0.07125", 5)},
           "created_at": "2026-11-24T22:25:49.827947Z", "issue_date": 20416, "local_ts": 1795559149827947,
           "notes": "ok"}
    change = decode_row_change("shop.public.invoices", 0, 5, envelope(row, op="c",
                               transaction={"id": "729:31160120", "total_order": 1, "data_collection_order": 1}))
    assert change.after["total"] == Decimal("-1234.56") and isinstance(change.after["total"], Decimal)
    assert change.after["rate"] == Decimal("0.07125")
    assert change.after["created_at"] == datetime(2026, 11, 24, 22, 25, 49, 827947, tzinfo=timezone.utc)
    assert change.after["issue_date"] == date(2025, 11, 24)
    assert change.after["local_ts"] == datetime(2026, 11, 24, 22, 25, 49, 827947)
    assert change.xid == "729" and change.transaction.total_order == 1
    assert change.is_streaming and not change.is_snapshot


def test_unchanged_toast_column_is_marked_unavailable():
    row = {"id": 7, "total": _b64_decimal("1.00", 2), "rate": None, "created_at": None, "issue_date": None,
           "local_ts": None, "notes": "__debezium_unavailable_value"}
    change = decode_row_change("shop.public.invoices", 0, 6, envelope(row))
    assert change.after["notes"] is UNAVAILABLE


def test_tombstone_is_none_and_snapshot_rows_are_flagged():
    assert decode_row_change("shop.public.invoices", 0, 1, None) is None
    row = {"id": 1, "total": _b64_decimal("0.00", 2), "rate": None, "created_at": None, "issue_date": None,
           "local_ts": None, "notes": None}
    change = decode_row_change("shop.public.invoices", 0, 2, envelope(row, op="r", snapshot="last"))
    assert change.is_snapshot and change.op == "r"


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not JSON"),
    (b"[1,2]", "not a JSON object"),
    (json.dumps({"payload": {"id": 1, "code": "x"}}).encode(), "ExtractNewRecordState"),
    (json.dumps({"payload": {"op": "x", "source": {}}}).encode(), "unknown op"),
    (json.dumps({"payload": {"op": "c", "after": {"id": 1}, "source": {"db": "shop"}}}).encode(), "invalid envelope"),
])
def test_malformed_records_raise_decode_error(raw, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_row_change("shop.public.invoices", 0, 9, raw)


def test_transaction_markers_group_by_xid_not_lsn():
    begin = decode_tx_marker("shop.transaction", 0, 0, json.dumps({"payload": {
        "status": "BEGIN", "id": "729:31160120", "event_count": None, "data_collections": None, "ts_ms": 1}}).encode())
    end = decode_tx_marker("shop.transaction", 0, 1, json.dumps({"payload": {
        "status": "END", "id": "729:31160576", "event_count": 3,
        "data_collections": [{"data_collection": "public.invoices", "event_count": 1},
                             {"data_collection": "public.invoice_lines", "event_count": 2}], "ts_ms": 1}}).encode())
    assert begin.xid == end.xid == "729"
    assert end.data_collections == {"public.invoices": 1, "public.invoice_lines": 2}
    with pytest.raises(DecodeError):
        decode_tx_marker("shop.transaction", 0, 2, b'{"payload": {"status": "END"}}')


def test_known_schema_prefix_skips_the_schema_but_decodes_the_same():
    from daemon.source import decode  # noqa: PLC0415

    topic = "shop.public.prefix_test"
    decode._prefixes.pop(topic, None)
    rows = [{"id": n, "total": _b64_decimal(f"{n}.25", 2), "rate": None, "created_at": "2026-11-24T22:25:49Z",
             "issue_date": 20416, "local_ts": None, "notes": "a \"payload\": note"} for n in (1, 2)]
    first = decode_row_change(topic, 0, 1, envelope(rows[0], op="c"))
    assert topic in decode._prefixes  # learned from the first record
    second = decode_row_change(topic, 0, 2, envelope(rows[1], op="c"))
    assert second.after["total"] == Decimal("2.25") and first.after["total"] == Decimal("1.25")
    assert second.after["notes"] == 'a "payload": note'
    assert second.after["created_at"] == datetime(2026, 11, 24, 22, 25, 49, tzinfo=timezone.utc)

    # A record with the same schema bytes but another key after the payload: parsed whole, not misread.
    extra = envelope(rows[1], op="c")[:-1] + b', "extra": 1}'
    assert decode_row_change(topic, 0, 3, extra).after == second.after

    # A schema change (the decimal widened to 4 places) is not mistaken for the learned prefix.
    widened = json.loads(envelope(rows[1], op="c"))
    for part in widened["schema"]["fields"][:2]:
        for f in part["fields"]:
            if f["field"] == "total":
                f["parameters"] = {"scale": "4", "connect.decimal.precision": "14"}
    widened["payload"]["after"]["total"] = _b64_decimal("2.2500", 4)
    again = decode_row_change(topic, 0, 4, json.dumps(widened).encode())
    assert again.after["total"] == Decimal("2.2500") and str(again.after["total"]) == "2.2500"
    assert decode_row_change(topic, 0, 5, json.dumps(widened).encode()).after["total"] == Decimal("2.2500")
    with pytest.raises(DecodeError, match="not JSON"):
        decode_row_change(topic, 0, 6, envelope(rows[0], op="c")[:-1] + b"}garbage")


# --- decode_change (the fold's plain decode) agrees with decode_row_change --------------------------------

_ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False, width=32),
                        st.text(max_size=6), st.sampled_from(["false", "true", "last", "incremental", "12", "x"]))
_MISSING = object()


def _maybe(value_strategy):
    return st.one_of(value_strategy, _ANY_SCALAR, st.just(_MISSING))


def _put(target: dict, key: str, value) -> None:
    if value is not _MISSING:
        target[key] = value


@settings(max_examples=300, deadline=None)
@given(db=_maybe(st.just("shop")), schema=_maybe(st.just("public")), table=_maybe(st.just("invoices")),
       ts_ms=_maybe(st.integers(0, 2**45)), snapshot=_maybe(st.sampled_from(["false", "true", "last", "incremental"])),
       tx_id=_maybe(st.integers(0, 2**32)), lsn=_maybe(st.integers(0, 2**40)),
       tx=st.one_of(st.none(), st.just({}), st.fixed_dictionaries(
           {"id": _maybe(st.just("729:31160120")), "total_order": _maybe(st.integers(0, 99)),
            "data_collection_order": _maybe(st.integers(0, 99))})),
       op=st.sampled_from(["c", "u", "d", "r", "t", "x"]), with_after=st.booleans())
def test_plain_decode_agrees_with_the_model_decode(db, schema, table, ts_ms, snapshot, tx_id, lsn, tx, op, with_after):
    """For any envelope, ``decode_change`` refuses exactly what ``decode_row_change`` refuses and otherwise gives
    the same values (a plain ``Change`` when every field already has the model's type, else the model itself)."""
    source: dict = {}
    for key, value in (("db", db), ("schema", schema), ("table", table), ("ts_ms", ts_ms), ("snapshot", snapshot),
                       ("txId", tx_id), ("lsn", lsn)):
        _put(source, key, value)
    if tx:
        tx = {k: v for k, v in tx.items() if v is not _MISSING}
    after = {"id": 7, "total": _b64_decimal("12.50", 2), "notes": "ok"} if with_after else None
    raw = json.loads(envelope(after or {}, op="c"))
    raw["payload"].update({"op": op, "source": source, "transaction": tx, "after": after})
    value = json.dumps(raw).encode()

    def outcome(decode):
        try:
            return decode("shop.public.invoices", 0, 5, value)
        except DecodeError:
            return DecodeError

    model, plain = outcome(decode_row_change), outcome(decode_change)
    if model is DecodeError:
        assert plain is DecodeError
        return
    assert plain is not DecodeError
    assert isinstance(plain, (Change, RowChange))
    fields = ("table", "op", "before", "after", "topic", "partition", "offset", "xid", "is_snapshot",
              "is_incremental_snapshot", "is_streaming", "committed_at")
    assert {f: getattr(plain, f) for f in fields} == {f: getattr(model, f) for f in fields}
    source_fields = ("db", "schema_", "table", "ts_ms", "snapshot", "txId", "lsn")
    assert {f: getattr(plain.source, f) for f in source_fields} == {f: getattr(model.source, f) for f in source_fields}
    if model.transaction is None:
        assert plain.transaction is None
    else:
        assert (plain.transaction.id, plain.transaction.total_order, plain.transaction.data_collection_order,
                plain.transaction.xid) == (model.transaction.id, model.transaction.total_order,
                                           model.transaction.data_collection_order, model.transaction.xid)


def test_plain_decode_gives_a_plain_change_for_what_debezium_writes():
    row = {"id": 7, "total": _b64_decimal("-1234.56", 2), "notes": "ok"}
    value = envelope(row, op="c", transaction={"id": "729:31160120", "total_order": 1, "data_collection_order": 1})
    plain = decode_change("shop.public.invoices", 0, 5, value)
    model = decode_row_change("shop.public.invoices", 0, 5, value)
    assert type(plain) is Change and plain.after == model.after and plain.xid == "729"
    assert decode_change("shop.public.invoices", 0, 6, None) is None
