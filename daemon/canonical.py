"""The canonical invoice event: the whole invoice as the bookkeeper would read it.

The fold emits one of these per touched invoice per source transaction; every sink worker consumes
them. The Avro schema in ``schemas/canonical/invoice_event.avsc`` is the wire format; these pydantic
models are what the code handles. Money and quantities are ``Decimal`` end to end.

Every record names its writer schema: Avro single-object encoding (0xC3 0x01, the writer schema's 8-byte
little-endian CRC-64-AVRO fingerprint, then the Avro body). Readers resolve the fingerprint among the
released versions (``schemas/canonical/released/invoice_event.v<N>.avsc``) and decode with Avro schema
resolution into the current schema, so a rolling upgrade or a replay of old records reads every version.
A record without the header was written by the release before single-object encoding: schema v1.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import fastavro
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from daemon.avro_writer import CompiledWriter, Unwritable, compile_writer

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
    completion: str | None = None  # how the fold released the source transaction (schema v2; None before)


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
        return encode_with_content_hash(self)[1]


# --- Avro wire format -------------------------------------------------------------------------------


SINGLE_OBJECT_MAGIC = b"\xc3\x01"
HEADER_LENGTH = 10  # magic + 8-byte fingerprint
HEADERLESS_SCHEMA_VERSION = 1  # what records without the header were written with


class CanonicalDecodeError(ValueError):
    """A canonical record no released schema reads: ``kind`` is ``unknown_schema`` or ``undecodable``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@lru_cache(maxsize=1)
def invoice_event_schema() -> dict:
    raw = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    return fastavro.parse_schema(raw)


def schema_fingerprint(schema: dict) -> bytes:
    """The 8 bytes single-object encoding puts in the header (fastavro gives them little-endian, as hex)."""
    form = fastavro.schema.to_parsing_canonical_form(schema)
    return bytes.fromhex(fastavro.schema.fingerprint(form, "CRC-64-AVRO"))


@lru_cache(maxsize=1)
def released_schemas() -> dict[int, dict]:
    """Released version -> parsed schema (every version any process of this deployment may have written)."""
    out = {}
    for path in (SCHEMAS_DIR / "canonical" / "released").glob("invoice_event.v*.avsc"):
        out[int(path.stem.rpartition(".v")[2])] = fastavro.parse_schema(json.loads(path.read_text()))
    return dict(sorted(out.items()))


@lru_cache(maxsize=1)
def _writer_schemas() -> dict[bytes, dict]:
    writers = {schema_fingerprint(schema): schema for schema in released_schemas().values()}
    writers[schema_fingerprint(invoice_event_schema())] = invoice_event_schema()
    return writers


@lru_cache(maxsize=1)
def _header() -> bytes:
    return SINGLE_OBJECT_MAGIC + schema_fingerprint(invoice_event_schema())


def encode_invoice_event(event: InvoiceEvent) -> bytes:
    return _header() + _write_body(_to_avro(event))


@lru_cache(maxsize=1)
def _compiled_writer() -> CompiledWriter | None:
    """The canonical schema's compiled writer, marking the fields that bound the content hash's span; None when
    the schema has a type the compiler does not write (a future version's ``double``): fastavro writes it all."""
    names = [field["name"] for field in invoice_event_schema()["fields"]]
    try:
        return compile_writer(invoice_event_schema(), marks=(names[1], names[2], names[-2]))
    except TypeError:
        return None


def _write_body(record: dict) -> bytes:
    """The record's Avro body: fastavro's bytes, from the writer compiled from the schema (a quarter of
    fastavro's time); a record that writer does not expect is fastavro's to write (``daemon/avro_writer.py``)."""
    writer = _compiled_writer()
    if writer is not None:
        try:
            return writer(record)
        except Unwritable:
            pass
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, invoice_event_schema(), record)
    return buf.getvalue()


def encode_with_content_hash(event: InvoiceEvent) -> tuple[bytes, str]:
    """The event's Avro bytes and its content hash, from one encoding (see ``encode_record_with_content_hash``)."""
    return encode_record_with_content_hash(_to_avro(event))


def encode_record_with_content_hash(record: dict) -> tuple[bytes, str]:
    """The Avro bytes of an event given as the record fastavro writes (``_to_avro``'s form: decimals as the bytes
    of their unscaled values) and its content hash, from one encoding. The fold builds this record from its
    plain values without an ``InvoiceEvent`` in between (tests/test_fold_golden.py and the fold property tests
    prove the bytes equal the model's).

    Avro writes a record as its fields' encodings one after another, in schema order, without names or
    separators, so the bytes between ``version`` and ``source`` (the schema puts the fields the hash
    ignores at the ends) are a canonical encoding of the content: equal content, equal bytes. The hash is
    SHA-256 over the invoice id's bytes and that span.
    """
    writer = _compiled_writer()
    try:
        if writer is None:
            raise Unwritable("no compiled writer for this schema")
        parts, (version, after_version, trailer) = writer.parts(record)
    except Unwritable:
        pass
    else:  # the writer marked where version, the field after it and source start: no measuring
        content = b"".join(parts[:version]) + b"".join(parts[after_version:trailer])
        return _header() + b"".join(parts), hashlib.sha256(content).hexdigest()
    payload = _header() + _write_body(record)
    source = record["source"]
    trailer = _trailer_bytes(source["tx_id"], source["lsn"], source["committed_at"], source["completion"],
                             record["emitted_at"])
    if trailer is None:  # a naive datetime or another schema: let fastavro measure it
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, _trailer_schema(), record)
        trailer = len(buf.getvalue())
    head = HEADER_LENGTH + _varint_length(record["invoice_id"])
    span = payload[head + _varint_length(record["version"]): len(payload) - trailer]
    return payload, hashlib.sha256(payload[HEADER_LENGTH:head] + span).hexdigest()


def _varint_length(value: int) -> int:
    """Bytes of an Avro ``long`` (zig-zag, then 7 bits a byte)."""
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, -(-zigzag.bit_length() // 7))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _trailer_length(event: InvoiceEvent) -> int | None:
    source = event.source
    return _trailer_bytes(source.tx_id, source.lsn, source.committed_at, source.completion, event.emitted_at)


def _trailer_bytes(tx_id: str | None, lsn: int | None, committed_at: datetime | None, completion: str | None,
                   emitted_at: datetime) -> int | None:
    """Bytes of ``source`` and ``emitted_at`` as Avro writes them (a union is its branch index, one byte
    here, then the value); None for a naive datetime. ``tests/test_canonical_schema.py`` checks it against
    fastavro's own encoding."""
    if not _trailer_layout_is_known():
        return None
    length = 1 if tx_id is None else 1 + _string_length(tx_id)
    length += 1 if lsn is None else 1 + _varint_length(lsn)
    length += 1 if completion is None else 1 + _string_length(completion)
    for moment, in_union in ((committed_at, True), (emitted_at, False)):
        if moment is None:
            length += 1
            continue
        if moment.tzinfo is None:
            return None
        delta = moment - _EPOCH  # fastavro's timestamp-micros arithmetic, exactly
        length += in_union + _varint_length((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    return length


def _string_length(text: str) -> int:
    size = len(text.encode())
    return _varint_length(size) + size


_KNOWN_TRAILER = [
    {"name": "source", "type": {"type": "record", "name": "SourcePosition", "fields": [
        {"name": "tx_id", "type": ["null", "string"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "committed_at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
         "default": None},
        {"name": "completion", "type": ["null", "string"], "default": None,
         "doc": "How the fold released the source transaction (complete, snapshot, incremental, timed_out, late, "
                "no_metadata); added in v2, for tracing."}]}},
    {"name": "emitted_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
]


@lru_cache(maxsize=1)
def _trailer_layout_is_known() -> bool:
    """``_trailer_length``'s arithmetic holds for this layout only; a changed schema falls back to fastavro."""
    raw = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    return raw["fields"][-2:] == _KNOWN_TRAILER


@lru_cache(maxsize=1)
def _trailer_schema() -> dict:
    """A record of the schema's last fields (the ones the content hash ignores), to measure their bytes."""
    raw = json.loads((SCHEMAS_DIR / "canonical" / "invoice_event.avsc").read_text())
    names = [f["name"] for f in raw["fields"]]
    if names[:2] != ["invoice_id", "version"] or names[-2:] != ["source", "emitted_at"]:
        raise RuntimeError("invoice_event.avsc must keep invoice_id, version first and source, emitted_at last")
    return fastavro.parse_schema({"type": "record", "name": "ledgerwire.InvoiceEventTrailer",
                                  "fields": raw["fields"][-2:]})


def decode_invoice_event(payload: bytes) -> InvoiceEvent:
    """Decode a canonical record written with any released schema (see the module's docstring)."""
    body = io.BytesIO(payload)
    if payload[:2] == SINGLE_OBJECT_MAGIC:
        fingerprint = bytes(payload[2:HEADER_LENGTH])
        writer = _writer_schemas().get(fingerprint)
        if writer is None:
            raise CanonicalDecodeError("unknown_schema", f"unknown writer schema: fingerprint {fingerprint.hex()} "
                                                         "is none of the released canonical schemas")
        body.seek(HEADER_LENGTH)
    else:
        # Bare Avro from the release before. Its first byte starts the invoice id's varint, and C3 01 there
        # would be the id -98: ids are serials, so a legacy record is never mistaken for a header.
        writer = released_schemas()[HEADERLESS_SCHEMA_VERSION]
    try:
        record = fastavro.schemaless_reader(body, writer, invoice_event_schema())
        return InvoiceEvent.model_validate(record)
    except (EOFError, ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        raise CanonicalDecodeError("undecodable", f"undecodable canonical record: {type(exc).__name__}: "
                                                  f"{str(exc)[:300]}") from exc


def _to_avro(event: InvoiceEvent) -> dict:
    """The record fastavro writes: python mode keeps date/datetime for fastavro's logical types; every
    decimal is given as the bytes of its unscaled value (what fastavro would compute, at ~10× the cost)."""
    record = event.model_dump(mode="python")
    for totals in (record["computed"], record["stored"]):
        for name in ("subtotal", "tax_total", "total"):
            totals[name] = _decimal_bytes(totals[name], 2)
    for line in record["lines"]:
        line["quantity"] = _decimal_bytes(line["quantity"], 3)
        line["unit_price"] = _decimal_bytes(line["unit_price"], 4)
        line["amount"] = _decimal_bytes(line["amount"], 2)
        for tax in line["taxes"]:
            tax["rate"] = _decimal_bytes(tax["rate"], 5)
            tax["amount"] = _decimal_bytes(tax["amount"], 2)
    for payment in record["payments"]:
        payment["amount"] = _decimal_bytes(payment["amount"], 2)
    for refund in record["refunds"]:
        refund["amount"] = _decimal_bytes(refund["amount"], 2)
        refund["tax_amount"] = _decimal_bytes(refund["tax_amount"], 2)
    return record


_decimal_cache: dict[tuple[Decimal, int], bytes] = {}


def _decimal_bytes(value: Decimal, scale: int) -> bytes:
    """Avro's decimal encoding: the unscaled value, big-endian two's complement, fewest bytes. Values are
    already at the schema's scale (the models quantize them); amounts repeat a lot, so results are cached
    (equal decimals at one scale have one unscaled value)."""
    key = (value, scale)
    encoded = _decimal_cache.get(key)
    if encoded is None:
        unscaled = int(value.scaleb(scale))
        if unscaled != value.scaleb(scale):
            raise ValueError(f"{value} has more than {scale} decimal places")
        encoded = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
        if len(_decimal_cache) >= 4096:
            _decimal_cache.clear()
        _decimal_cache[key] = encoded
    return encoded
