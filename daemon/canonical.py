"""The canonical invoice event: the whole invoice as the bookkeeper would read it.

The fold emits one of these per touched invoice per source transaction; every sink worker consumes
them. The Avro schema in ``schemas/canonical/invoice_event.avsc`` is the wire format; these pydantic
models are what the code handles. Money and quantities are ``Decimal`` end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import fastavro
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
CENT = Decimal("0.01")


def money(value: Decimal) -> Decimal:
    """Round to cents the way shops and ledgers do (half up, never banker's rounding)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _at_scale(places: int):
    exponent = Decimal(1).scaleb(-places)
    return AfterValidator(lambda v: Decimal(v).quantize(exponent, rounding=ROUND_HALF_UP))


# Each decimal kind has one fixed scale, the same as the source column and the Avro schema, so values
# compare, hash and round-trip through Avro exactly.
Money = Annotated[Decimal, _at_scale(2)]
Quantity = Annotated[Decimal, _at_scale(3)]
UnitPrice = Annotated[Decimal, _at_scale(4)]
Rate = Annotated[Decimal, _at_scale(5)]


class LineKind(StrEnum):
    PART = "part"
    LABOUR = "labour"
    SUBLET = "sublet"
    FEE = "fee"
    DISCOUNT = "discount"
    CORE_CHARGE = "core_charge"
    CORE_RETURN = "core_return"


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    VOID = "void"
    DELETED = "deleted"  # the row is gone from the source; sinks void or delete their document


class PaymentStatus(StrEnum):
    RECEIVED = "received"
    REVERSED = "reversed"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Model):
    id: int
    code: str
    name: str
    timezone: str = "UTC"


class Customer(_Model):
    id: int
    name: str
    email: str | None = None
    phone: str | None = None
    is_fleet: bool = False
    payment_terms_days: int | None = None
    tax_exempt: bool = False
    billing_address: str | None = None


class Job(_Model):
    id: int
    number: str
    description: str | None = None
    vehicle: str | None = None  # "2014 Ford F-150 (ABC123)", for the document memo


class LineTax(_Model):
    tax_rate_id: int
    code: str
    name: str
    rate: Rate  # 0.05000 = 5 %
    amount: Money  # the shop's own tax amount for this line


class InvoiceLine(_Model):
    id: int
    position: int
    kind: LineKind
    part_number: str | None = None
    description: str
    quantity: Quantity
    unit_price: UnitPrice
    amount: Money  # money(quantity * unit_price)
    taxes: tuple[LineTax, ...] = ()


class Payment(_Model):
    id: int
    amount: Money
    method: str
    reference: str | None = None
    received_at: datetime
    status: PaymentStatus = PaymentStatus.RECEIVED


class Refund(_Model):
    id: int
    kind: Literal["refund", "return"]
    amount: Money
    tax_amount: Money = Decimal("0")
    payment_id: int | None = None
    line_id: int | None = None
    reason: str | None = None
    created_at: datetime


class Totals(_Model):
    subtotal: Money
    tax_total: Money
    total: Money


class SourcePosition(_Model):
    """Where in the source stream this version came from (for tracing, never for ordering)."""

    tx_id: str | None = None  # PostgreSQL xid (the part of Debezium's "txId:LSN" before the colon)
    lsn: int | None = None
    committed_at: datetime | None = None  # source commit time, for end-to-end latency


class InvoiceEvent(_Model):
    """One version of one invoice. ``version`` grows by at least one per emitted change."""

    invoice_id: int
    version: int = Field(ge=1)
    number: str
    status: InvoiceStatus
    issue_date: date | None = None
    due_date: date | None = None
    currency: str = "USD"
    tax_inclusive: bool = False
    location: Location
    customer: Customer
    job: Job | None = None
    lines: tuple[InvoiceLine, ...] = ()
    payments: tuple[Payment, ...] = ()
    refunds: tuple[Refund, ...] = ()
    notes: str | None = None
    computed: Totals  # from the lines and line taxes
    stored: Totals  # as the shop software stored them on the invoice row
    totals_mismatch: bool = False  # computed != stored: flagged, never silently "fixed"
    source: SourcePosition = SourcePosition()
    emitted_at: datetime

    @property
    def key(self) -> str:
        return str(self.invoice_id)

    @property
    def paid_total(self) -> Decimal:
        return sum((p.amount for p in self.payments if p.status == PaymentStatus.RECEIVED), Decimal("0"))

    @property
    def balance(self) -> Decimal:
        return self.computed.total - self.paid_total

    def content_hash(self) -> str:
        """Hash of what a ledger would see; ignores version, source position and emit time."""
        body = self.model_dump(mode="json", exclude={"version", "source", "emitted_at"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# --- Avro wire format -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def invoice_event_schema() -> dict:
    raw = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    return fastavro.parse_schema(raw)


def encode_invoice_event(event: InvoiceEvent) -> bytes:
    """Avro binary (schemaless) of the event: the same bytes fastavro writes, built straight from the model."""
    writer = _direct_writer()
    if writer is None:
        return encode_invoice_event_fastavro(event)
    parts: list[bytes] = []
    writer(event, parts)
    return b"".join(parts)


def encode_invoice_event_fastavro(event: InvoiceEvent) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, invoice_event_schema(), _to_avro(event))
    return buf.getvalue()


def decode_invoice_event(payload: bytes) -> InvoiceEvent:
    record = fastavro.schemaless_reader(io.BytesIO(payload), invoice_event_schema(), invoice_event_schema())
    return InvoiceEvent.model_validate(record)


def _to_avro(event: InvoiceEvent) -> dict:
    # Python mode keeps Decimal/date/datetime, which fastavro's logical types take as they are.
    return event.model_dump(mode="python")



# --- the direct Avro writer ----------------------------------------------------------------------------
#
# The fold encodes every version it emits; fastavro plus ``model_dump`` cost ~130 µs per invoice, mostly
# in per-value type dispatch and union resolution. The writer below is compiled once from the same schema
# file into one closure per schema node and reads the model's attributes directly. It implements Avro's
# binary encoding as fastavro does (zig-zag varints, length-prefixed UTF-8, block-encoded arrays, union
# branch index, enum index, big-endian two's-complement decimals sized like fastavro's
# ``prepare_bytes_decimal``, dates as days and timestamps as microseconds since the epoch); a schema
# construct it does not cover makes ``encode_invoice_event`` fall back to fastavro. Tests compare both
# byte for byte.

_Writer = Callable[[Any, list], None]
_VARINT_CACHE = [bytes([z]) for z in range(0x80)]
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class _Unsupported(Exception):
    pass


def _varint_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _VARINT_CACHE[z]
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _decimal_bytes(value: Decimal, scale: int, precision: int) -> bytes:
    sign, digits, exp = value.as_tuple()
    if len(digits) > precision:
        raise ValueError("The decimal precision is bigger than allowed by schema")
    delta = exp + scale  # type: ignore[operator]
    if delta < 0:
        raise ValueError("Scale provided in schema does not match the decimal")
    unscaled = int("".join(map(str, digits)) or "0") * 10**delta
    size = (unscaled.bit_length() + 8) // 8
    if sign:
        unscaled = -unscaled
    return unscaled.to_bytes(size, byteorder="big", signed=True)


def _micros(value: datetime) -> int:
    if value.tzinfo is not None:
        delta = value - _EPOCH_UTC
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(time.mktime(value.timetuple())) * 1_000_000 + value.microsecond  # as fastavro does


def _compile(node: Any, named: dict[str, Any], namespace: str | None) -> _Writer:
    if isinstance(node, str):
        if node in named:
            return named[node]
        qualified = f"{namespace}.{node}" if namespace and "." not in node else node
        if qualified in named:
            return named[qualified]
        node = {"type": node}
    if isinstance(node, list):
        branches = [b for b in node if b != "null" and b != {"type": "null"}]
        if len(node) != 2 or len(branches) != 1 or node[0] not in ("null", {"type": "null"}):
            raise _Unsupported(f"union {node!r}")
        inner = _compile(branches[0], named, namespace)

        def write_optional(value: Any, parts: list) -> None:
            if value is None:
                parts.append(b"\x00")
            else:
                parts.append(b"\x02")
                inner(value, parts)
        return write_optional
    kind = node.get("type")
    logical = node.get("logicalType")
    if isinstance(kind, (dict, list)):
        return _compile(kind, named, namespace)
    if kind == "record":
        name = node["name"]
        space = node.get("namespace", namespace)
        fullname = name if "." in name else (f"{space}.{name}" if space else name)
        fields: list[tuple[str, _Writer]] = []

        def write_record(value: Any, parts: list) -> None:
            if isinstance(value, dict):
                for field_name, write in fields:
                    write(value[field_name], parts)
            else:
                for field_name, write in fields:
                    write(getattr(value, field_name), parts)
        named[fullname] = named[name] = write_record  # before the fields: a record may refer to itself
        for f in node["fields"]:
            fields.append((f["name"], _compile(f["type"], named, space)))
        return write_record
    if kind == "enum":
        index = {symbol: _varint_long(i) for i, symbol in enumerate(node["symbols"])}
        name = node["name"]
        space = node.get("namespace", namespace)

        def write_enum(value: Any, parts: list) -> None:
            parts.append(index[value])
        named[name if "." in name else (f"{space}.{name}" if space else name)] = named[name] = write_enum
        return write_enum
    if kind == "array":
        item = _compile(node["items"], named, namespace)

        def write_array(value: Any, parts: list) -> None:
            if len(value):
                parts.append(_varint_long(len(value)))
                for element in value:
                    item(element, parts)
            parts.append(b"\x00")
        return write_array
    if kind == "bytes" and logical == "decimal":
        scale, precision = int(node.get("scale", 0)), int(node["precision"])

        encoded: dict[str, bytes] = {}  # str(value) (digits and exponent) -> length-prefixed bytes

        def write_decimal(value: Any, parts: list) -> None:
            if not isinstance(value, Decimal):
                parts.append(_varint_long(len(value)))
                parts.append(value)
                return
            key = str(value)
            data = encoded.get(key)
            if data is None:
                raw = _decimal_bytes(value, scale, precision)
                data = _varint_long(len(raw)) + raw
                if len(encoded) >= 10_000:
                    encoded.clear()
                encoded[key] = data
            parts.append(data)
        return write_decimal
    if kind == "int" and logical == "date":
        def write_date(value: Any, parts: list) -> None:
            parts.append(_varint_long(value.toordinal() - _EPOCH_ORDINAL if isinstance(value, date) else value))
        return write_date
    if kind == "long" and logical == "timestamp-micros":
        def write_timestamp(value: Any, parts: list) -> None:
            parts.append(_varint_long(_micros(value) if isinstance(value, datetime) else value))
        return write_timestamp
    if logical is not None:
        raise _Unsupported(f"logical type {logical!r}")
    if kind in ("int", "long"):
        def write_long(value: Any, parts: list) -> None:
            parts.append(_varint_long(value))
        return write_long
    if kind == "string":
        def write_string(value: Any, parts: list) -> None:
            data = value.encode()
            parts.append(_varint_long(len(data)))
            parts.append(data)
        return write_string
    if kind == "boolean":
        def write_boolean(value: Any, parts: list) -> None:
            parts.append(b"\x01" if value else b"\x00")
        return write_boolean
    if kind == "bytes":
        def write_bytes(value: Any, parts: list) -> None:
            parts.append(_varint_long(len(value)))
            parts.append(bytes(value))
        return write_bytes
    raise _Unsupported(f"type {kind!r}")


@lru_cache(maxsize=1)
def _direct_writer() -> _Writer | None:
    raw = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    try:
        return _compile(raw, {}, None)
    except _Unsupported:
        return None
