"""Decode: Debezium's raw JSON envelopes (with schemas) into typed row changes and transaction markers.

Values are converted by Debezium's *semantic* type names, not by the primitive type: a NUMERIC arrives
as ``bytes`` (base64, two's complement, scale in the schema parameters) under
``org.apache.kafka.connect.data.Decimal``, as a ``{scale, value}`` struct under
``io.debezium.data.VariableScaleDecimal``, or as a string when ``decimal.handling.mode=string``; a
``timestamptz`` is an ISO string under ``io.debezium.time.ZonedTimestamp``; a ``date`` is days since the
epoch under ``io.debezium.time.Date``. Unchanged TOAST columns arrive as Debezium's placeholder and are
marked ``UNAVAILABLE`` so the fold never writes them over stored data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, WrapValidator

UNAVAILABLE_PLACEHOLDER = "__debezium_unavailable_value"
_UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE_PLACEHOLDER.encode()).decode()
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_DATE = date(1970, 1, 1)
_CONVERTER_MEMORY = 4096


class _Unavailable:
    """Marker for an unchanged TOAST column: 'keep what you had'."""

    _instance: _Unavailable | None = None

    def __new__(cls) -> _Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE = _Unavailable()


class DecodeError(ValueError):
    """A record that is not a Debezium envelope we understand; it goes to the dead-letter topic."""


def _row_image(value: Any, handler: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise ValueError("a row image must be an object or null")


class TxBlock(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    total_order: int
    data_collection_order: int

    @property
    def xid(self) -> str:
        # "txId:LSN" — the LSN part differs between BEGIN, END and data events: group by the xid.
        return self.id.split(":", 1)[0]


class SourceInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    db: str
    schema_: str | None = None
    table: str
    ts_ms: int
    snapshot: str | None = "false"
    txId: int | None = None
    lsn: int | None = None


class RowChange(BaseModel):
    """One row event from a table topic (op c/u/d/r) or a truncate (op t)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    table: str
    op: Literal["c", "u", "d", "r", "t"]
    # Row images are converted by the codec; pydantic only checks they are objects, without a deep copy.
    before: Annotated[dict[str, Any] | None, WrapValidator(_row_image)]
    after: Annotated[dict[str, Any] | None, WrapValidator(_row_image)]
    source: SourceInfo
    transaction: TxBlock | None
    topic: str
    partition: int
    offset: int

    @property
    def xid(self) -> str | None:
        if self.transaction is not None:
            return self.transaction.xid
        return str(self.source.txId) if self.source.txId is not None and self.is_streaming else None

    @property
    def is_snapshot(self) -> bool:
        return self.source.snapshot not in (None, "false", "incremental")

    @property
    def is_incremental_snapshot(self) -> bool:
        return self.source.snapshot == "incremental"

    @property
    def is_streaming(self) -> bool:
        return self.source.snapshot in (None, "false")

    @property
    def committed_at(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.source.ts_ms)


class TxMarker(BaseModel):
    """A BEGIN or END record from Debezium's transaction topic."""

    model_config = ConfigDict(frozen=True)
    status: Literal["BEGIN", "END"]
    id: str
    event_count: int | None = None
    data_collections: dict[str, int] = {}  # "public.invoices" -> events of that table in the transaction
    ts_ms: int
    topic: str
    partition: int
    offset: int

    @property
    def xid(self) -> str:
        return self.id.split(":", 1)[0]


class Source:
    """``SourceInfo``'s fields as a plain object (``decode_change``)."""

    __slots__ = ("db", "schema_", "table", "ts_ms", "snapshot", "txId", "lsn")

    def __init__(self, db: str, schema_: str | None, table: str, ts_ms: int, snapshot: str | None,
                 txId: int | None, lsn: int | None) -> None:  # noqa: N803 (Debezium's name, as SourceInfo's)
        self.db, self.schema_, self.table, self.ts_ms = db, schema_, table, ts_ms
        self.snapshot, self.txId, self.lsn = snapshot, txId, lsn


class Block:
    """``TxBlock``'s fields as a plain object (``decode_change``)."""

    __slots__ = ("id", "total_order", "data_collection_order")

    def __init__(self, id: str, total_order: int, data_collection_order: int) -> None:  # noqa: A002
        self.id, self.total_order, self.data_collection_order = id, total_order, data_collection_order

    xid = TxBlock.xid


class Change:
    """A ``RowChange`` as a plain object: what ``decode_change`` gives the fold for a record whose every field
    has the type the model declares (the same checks, without building a model per record)."""

    __slots__ = ("table", "op", "before", "after", "source", "transaction", "topic", "partition", "offset")

    xid = RowChange.xid
    is_snapshot = RowChange.is_snapshot
    is_incremental_snapshot = RowChange.is_incremental_snapshot
    is_streaming = RowChange.is_streaming
    committed_at = RowChange.committed_at


# --- semantic value conversion ------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def _decimal_bytes(scale: int) -> Converter:
    # Prices, quantities and tax amounts repeat: remember recent encodings (Decimals are immutable).
    seen: dict[str, Decimal] = {}

    def convert(value: Any) -> Any:
        if value is None:
            return None
        decimal = seen.get(value)
        if decimal is not None:
            return decimal
        if value == _UNAVAILABLE_B64 or value == UNAVAILABLE_PLACEHOLDER:
            return UNAVAILABLE
        try:
            raw = binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, TypeError):
            raw = base64.b64decode(value)  # its error, as before
        decimal = Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)
        if len(seen) >= _CONVERTER_MEMORY:
            seen.clear()
        seen[value] = decimal
        return decimal

    return convert


def _variable_scale_decimal(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return UNAVAILABLE if value == UNAVAILABLE_PLACEHOLDER else Decimal(value)
    unscaled = int.from_bytes(base64.b64decode(value["value"]), "big", signed=True)
    return Decimal(unscaled).scaleb(-int(value["scale"]))


def _passthrough_text(value: Any) -> Any:
    return UNAVAILABLE if value == UNAVAILABLE_PLACEHOLDER else value


def _micro_timestamp(value: Any) -> Any:
    return None if value is None else (EPOCH + timedelta(microseconds=value)).replace(tzinfo=None)


def _milli_timestamp(value: Any) -> Any:
    return None if value is None else (EPOCH + timedelta(milliseconds=value)).replace(tzinfo=None)


def _nano_timestamp(value: Any) -> Any:
    return None if value is None else (EPOCH + timedelta(microseconds=value // 1000)).replace(tzinfo=None)


_last_zoned: list[Any] = [None, None]  # the last timestamp text and its value (a transaction repeats its now())


def _zoned_timestamp(value: Any) -> Any:
    if value is None:
        return None
    last = _last_zoned
    if value == last[0]:
        return last[1]
    if value == UNAVAILABLE_PLACEHOLDER:
        return UNAVAILABLE
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    last[0], last[1] = value, parsed
    return parsed


def _days(value: Any) -> Any:
    return None if value is None else EPOCH_DATE + timedelta(days=value)


def _micro_time(value: Any) -> Any:
    if value is None:
        return None
    return (datetime.min + timedelta(microseconds=value)).time()


_SEMANTIC: dict[str, Callable[[dict[str, Any]], Converter]] = {
    "org.apache.kafka.connect.data.Decimal": lambda f: _decimal_bytes(int(f["parameters"]["scale"])),
    "io.debezium.data.VariableScaleDecimal": lambda f: _variable_scale_decimal,
    "io.debezium.time.MicroTimestamp": lambda f: _micro_timestamp,
    "io.debezium.time.Timestamp": lambda f: _milli_timestamp,
    "io.debezium.time.NanoTimestamp": lambda f: _nano_timestamp,
    "io.debezium.time.ZonedTimestamp": lambda f: _zoned_timestamp,
    "io.debezium.time.Date": lambda f: _days,
    "org.apache.kafka.connect.data.Date": lambda f: _days,
    "io.debezium.time.MicroTime": lambda f: _micro_time,
}


def _converter_for(field: dict[str, Any]) -> Converter:
    name = field.get("name")
    if name in _SEMANTIC:
        return _SEMANTIC[name](field)
    if field.get("type") in ("string", "bytes"):
        return _passthrough_text
    return _identity


def _identity(value: Any) -> Any:
    return value


_ABSENT = object()


class _RowCodec:
    """Field converters for one table schema version (cached by the schema's field signature)."""

    def __init__(self, fields: list[dict[str, Any]]) -> None:
        self.converters = {f["field"]: _converter_for(f) for f in fields}
        # What convert() does per column, split by kind: most columns (ids, counts, flags) are kept as they
        # are, text only needs the TOAST placeholder check, and the rest go through their converter.
        self._texts = tuple(name for name, conv in self.converters.items() if conv is _passthrough_text)
        self._converted = tuple((name, conv) for name, conv in self.converters.items()
                                if conv is not _passthrough_text and conv is not _identity)

    def convert(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """The row with its values converted, in place (the row is this record's own, fresh from the JSON)."""
        if row is None:
            return None
        get = row.get
        for name in self._texts:
            if get(name) == UNAVAILABLE_PLACEHOLDER:
                row[name] = UNAVAILABLE
        for name, conv in self._converted:
            value = get(name, _ABSENT)
            if value is not _ABSENT:
                row[name] = conv(value)
        return row


_codecs: dict[str, tuple[list[dict[str, Any]], _RowCodec]] = {}  # topic -> (row fields, codec)
# topic -> (the envelope's bytes up to the payload, codec): Debezium's JSON converter writes the same schema
# before every payload of a topic, so once a record's prefix is known, later records that start with the very
# same bytes skip parsing the schema (~3/4 of each record) and reuse its codec.
_prefixes: dict[str, tuple[bytes, _RowCodec]] = {}
_PAYLOAD_KEYS = (b'"payload":', b'"payload": ')


def _codec(topic: str, value_fields: list[dict[str, Any]]) -> _RowCodec:
    # The 'after' struct's fields describe the row. The codec is reused while the fields are equal (a C-level
    # list comparison); a schema change (added column, widened numeric) builds a new one — the daemon keeps
    # running.
    for f in value_fields:
        if f.get("field") in ("after", "before"):
            fields = f.get("fields", [])
            cached = _codecs.get(topic)
            if cached is not None and cached[0] == fields:
                return cached[1]
            codec = _RowCodec(fields)
            _codecs[topic] = (fields, codec)
            return codec
    raise DecodeError("envelope schema has no before/after struct")


def _learn_prefix(topic: str, value: bytes, payload: Any, codec: _RowCodec) -> None:
    """Remember the bytes before the payload when they provably hold only the schema."""
    for key in _PAYLOAD_KEYS:
        at = value.find(key)
        if at < 0 or not value.startswith(b'{"schema":') or value[-1:] != b"}":
            continue
        end = at + len(key)
        try:
            if orjson.loads(value[end:-1]) == payload and orjson.loads(value[:end] + b"null}")["payload"] is None:
                _prefixes[topic] = (value[:end], codec)
                return
        except orjson.JSONDecodeError:
            continue
    _prefixes.pop(topic, None)


_ROW_CHANGE_FIELDS = set(RowChange.model_fields)  # every field is always given: one shared "fields set"
_SOURCE_FIELDS = set(SourceInfo.model_fields)
_TX_FIELDS = set(TxBlock.model_fields)
_set_fields = object.__setattr__


def decode_row_change(topic: str, partition: int, offset: int, value: bytes | None) -> RowChange | None:
    """Decode a table-topic record; None for a tombstone (the delete event before it has the data)."""
    if value is None:
        return None
    return _validated(topic, partition, offset, *_envelope(topic, value))


def decode_change(topic: str, partition: int, offset: int, value: bytes | None) -> RowChange | Change | None:
    """``decode_row_change`` for the fold's hot path: the same record, checked the same way, as a plain
    ``Change`` (same attributes) instead of a pydantic model when every field already has exactly the type
    the model declares (what Debezium writes); anything else goes through the model's validation, which
    coerces or refuses it as before. Building the model was ~1/3 of decoding a record."""
    if value is None:
        return None
    payload, before, after = _envelope(topic, value)
    source = payload["source"]
    tx = payload.get("transaction")
    if type(source) is dict and (not tx or type(tx) is dict):
        get = source.get
        plain = Source(get("db"), get("schema"), get("table"), get("ts_ms"), get("snapshot", "false"), get("txId"),
                       get("lsn"))
        block = Block(tx.get("id"), tx.get("total_order"), tx.get("data_collection_order")) if tx else None
        # The model's types, checked inline (a helper call per field was ~5 % of a decode).
        if type(plain.db) is str and type(plain.table) is str and type(plain.ts_ms) is int and \
                (plain.schema_ is None or type(plain.schema_) is str) and \
                (plain.snapshot is None or type(plain.snapshot) is str) and \
                (plain.txId is None or type(plain.txId) is int) and (plain.lsn is None or type(plain.lsn) is int) and \
                (block is None or (type(block.id) is str and type(block.total_order) is int
                                   and type(block.data_collection_order) is int)):
            change = Change.__new__(Change)
            change.table, change.op, change.before, change.after = plain.table, payload["op"], before, after
            change.source, change.transaction = plain, block
            change.topic, change.partition, change.offset = topic, partition, offset
            return change
    return _validated(topic, partition, offset, payload, before, after)


def _envelope(topic: str, value: bytes) -> tuple[dict[str, Any], Any, Any]:
    """The change envelope's payload and its converted row images (before, after)."""
    payload = None
    codec = None
    known = _prefixes.get(topic)
    if known is not None and value.startswith(known[0]) and value[-1:] == b"}":
        try:
            payload = orjson.loads(value[len(known[0]):-1])
            codec = known[1]
        except orjson.JSONDecodeError:
            payload = None  # not the shape we learned: parse it whole below
    if payload is None:
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        if not isinstance(message, dict):
            raise DecodeError("not a JSON object")
        payload = message.get("payload", message)
        schema = message.get("schema")
        if isinstance(payload, dict) and "op" in payload and "source" in payload and schema:
            codec = _codec(topic, schema["fields"])
            _learn_prefix(topic, value, payload, codec)
    if not isinstance(payload, dict) or "op" not in payload or "source" not in payload:
        raise DecodeError("not a Debezium change envelope (no op/source); ExtractNewRecordState must be off")
    if payload["op"] not in ("c", "u", "d", "r", "t"):
        raise DecodeError(f"unknown op {payload['op']!r}")
    before, after = payload.get("before"), payload.get("after")
    if not (before is None or type(before) is dict) or not (after is None or type(after) is dict):
        raise DecodeError("invalid envelope: a row image must be an object or null")
    if codec is not None:
        before, after = codec.convert(before), codec.convert(after)
    return payload, before, after


def _validated(topic: str, partition: int, offset: int, payload: dict[str, Any], before: Any, after: Any) -> RowChange:
    try:
        source = payload["source"]
        tx = payload.get("transaction")
        # One validation call builds the whole typed change (nested models included) in pydantic-core;
        # the row images were converted above and are not walked again.
        change = RowChange.model_validate({
            "table": source["table"], "op": payload["op"], "before": before, "after": after,
            "source": {"db": source["db"], "schema_": source.get("schema"), "table": source["table"],
                       "ts_ms": source["ts_ms"], "snapshot": source.get("snapshot", "false"),
                       "txId": source.get("txId"), "lsn": source.get("lsn")},
            "transaction": tx or None, "topic": topic, "partition": partition, "offset": offset})
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid envelope: {exc}") from exc
    # Every field was given, so each "fields set" equals the model's field names: share one set per model
    # instead of three per change (~1.7 KB of a buffered change).
    _set_fields(change, "__pydantic_fields_set__", _ROW_CHANGE_FIELDS)
    _set_fields(change.source, "__pydantic_fields_set__", _SOURCE_FIELDS)
    if change.transaction is not None and change.transaction.__pydantic_fields_set__ == _TX_FIELDS:
        _set_fields(change.transaction, "__pydantic_fields_set__", _TX_FIELDS)
    return change


def decode_tx_marker(topic: str, partition: int, offset: int, value: bytes | None) -> TxMarker | None:
    if value is None:
        return None
    try:
        message = orjson.loads(value)
        payload = message.get("payload", message)
        collections = {c["data_collection"]: int(c["event_count"]) for c in payload.get("data_collections") or []}
        return TxMarker(status=payload["status"], id=payload["id"], event_count=payload.get("event_count"),
                        data_collections=collections, ts_ms=payload["ts_ms"], topic=topic,
                        partition=partition, offset=offset)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise DecodeError(f"invalid transaction marker: {exc}") from exc


__all__ = ["Change", "DecodeError", "RowChange", "TxMarker", "UNAVAILABLE", "decode_change", "decode_row_change",
           "decode_tx_marker"]
