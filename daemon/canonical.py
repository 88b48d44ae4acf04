"""The canonical invoice event: the whole invoice as the bookkeeper would read it.

The fold emits one of these per touched invoice per source transaction; every sink worker consumes
them. The Avro schema in ``schemas/canonical/invoice_event.avsc`` is the wire format; these pydantic
models are what the code handles. Money and quantities are ``Decimal`` end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

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
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, invoice_event_schema(), _to_avro(event))
    return buf.getvalue()


def decode_invoice_event(payload: bytes) -> InvoiceEvent:
    record = fastavro.schemaless_reader(io.BytesIO(payload), invoice_event_schema(), invoice_event_schema())
    return InvoiceEvent.model_validate(record)


def _to_avro(event: InvoiceEvent) -> dict:
    # Python mode keeps Decimal/date/datetime, which fastavro's logical types take as they are.
    return event.model_dump(mode="python")
