"""Canonical events → NetSuite records, one mapping for both transports (REST JSON and SuiteTalk SOAP XML).

Pure functions of the event, the settings and the mapping configuration; internal ids come in resolved. The
records are typed models whose field names are NetSuite's own record field ids (the REST record API's JSON
names, the SuiteTalk XSD's element names: ``entity``, ``tranId``, ``tranDate``, ``item`` lines with ``item``,
``quantity``, ``rate``, ``amount``, ``taxCode``; ``apply`` lines with ``doc``, ``apply``, ``amount``). A
transport renders them: REST wraps a sublist as ``{"items": [...]}`` and a reference as ``{"id": ...}``;
SOAP as ``itemList``/``applyList`` and ``RecordRef internalId``.

Every record we create carries our ``externalId`` (NetSuite keeps it unique per record type), so a create is
an upsert by external id and a retry finds, and never duplicates, what an interrupted attempt made:
``LWC<customer id>``, ``LWI<invoice id>``, ``LW<payment id>``, ``LWR<refund id>``, ``LWP<refund id>`` for the
customer refund that pays a refund back, ``LWI<invoice id>-A<n>`` / ``-C<n>`` for closed-period adjustments.

A NetSuite transaction line is always an item line: each line kind posts on the item ``mapping.items`` names
(its income account decides the ledger); the tax code per line is ``mapping.tax_codes`` of the line's tax
components (legacy tax: NetSuite computes the tax from the code; amounts sent are net of tax).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors import references
from connectors.base import PermanentError, combined_tax_code, income_kind, invoice_memo, line_text
from connectors.netsuite_common.settings import NetSuiteSettings
from daemon.canonical import Customer as ShopCustomer
from daemon.canonical import InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund, money
from daemon.config import MappingConfig

ZERO, CENT = Decimal("0"), Decimal("0.01")
PLATFORM = "NetSuite"
# Lengths NetSuite's UI and help give for these fields (the REST metadata of an account states its own).
NAME_MAX, TRAN_ID_MAX, MEMO_MAX, DESCRIPTION_MAX, EMAIL_MAX, PHONE_MAX = 83, 45, 999, 4000, 254, 32


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Ref(_Record):
    """A reference to another record: by internal id (``id``) or by our external id (``externalId``)."""

    id: str | None = None
    externalId: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> "Ref":
        if not (self.id or self.externalId):
            raise ValueError("a NetSuite reference needs an internal id or an external id")
        return self


def ref(internal_id: str | None) -> Ref | None:
    return Ref(id=str(internal_id)) if internal_id else None


class ItemLine(_Record):
    """A line of the ``item`` sublist (invoice, credit memo)."""

    item: Ref
    quantity: Decimal
    rate: Decimal | None = None  # unit price; None where only the amount is known (tax-inclusive lines)
    amount: Decimal
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)
    taxCode: Ref | None = None


class ApplyLine(_Record):
    """A line of the ``apply`` sublist: ``amount`` of this payment / credit applied to the document ``doc``."""

    doc: Ref
    apply: bool = True
    amount: Decimal


class _Transaction(_Record):
    externalId: str
    tranDate: date
    memo: str | None = Field(None, max_length=MEMO_MAX)
    currency: Ref | None = None
    subsidiary: Ref | None = None


class _Segments(_Record):
    """Classification segments a location's mapping names (``mapping.location_tracking``)."""

    location: Ref | None = None
    department: Ref | None = None
    class_: Ref | None = Field(None, alias="class")


class Invoice(_Transaction, _Segments):
    record_type: Literal["invoice"] = Field("invoice", exclude=True)
    entity: Ref
    tranId: str = Field(max_length=TRAN_ID_MAX)
    dueDate: date | None = None
    terms: Ref | None = None
    otherRefNum: str | None = None  # the shop's job number
    item: tuple[ItemLine, ...] = Field(min_length=1)


class CreditMemo(_Transaction, _Segments):
    record_type: Literal["creditMemo"] = Field("creditMemo", exclude=True)
    entity: Ref
    tranId: str = Field(max_length=TRAN_ID_MAX)
    item: tuple[ItemLine, ...] = Field(min_length=1)
    apply: tuple[ApplyLine, ...] = ()  # empty: applied later (``credit_application``)


class CustomerPayment(_Transaction):
    record_type: Literal["customerPayment"] = Field("customerPayment", exclude=True)
    customer: Ref
    payment: Decimal = Field(gt=0)
    account: Ref | None = None  # the deposit account; None with ``undepFunds``
    undepFunds: bool = False
    apply: tuple[ApplyLine, ...] = Field(min_length=1)  # never left unapplied on the customer


class CustomerRefund(_Transaction):
    """Money paid back to the customer (NetSuite's customer refund, SuiteTalk ``tranCust:CustomerRefund``): out of
    ``account`` (the bank account it is paid from), its ``apply`` sublist naming the credit memo it refunds (the
    memo's amount left to apply drops by it; NetSuite's refund total is what it applies)."""

    record_type: Literal["customerRefund"] = Field("customerRefund", exclude=True)
    customer: Ref
    account: Ref
    apply: tuple[ApplyLine, ...] = Field(min_length=1)


class CreditApplication(_Record):
    """A sparse credit memo update: its ``apply`` sublist only (apply ``True``: applied; ``False``: released)."""

    record_type: Literal["creditMemo"] = Field("creditMemo", exclude=True)
    apply: tuple[ApplyLine, ...] = Field(min_length=1)


class Customer(_Record):
    record_type: Literal["customer"] = Field("customer", exclude=True)
    externalId: str
    entityId: str = Field(max_length=NAME_MAX)
    companyName: str = Field(max_length=NAME_MAX)
    isPerson: bool = False
    email: str | None = Field(None, max_length=EMAIL_MAX)
    phone: str | None = Field(None, max_length=PHONE_MAX)
    subsidiary: Ref | None = None
    currency: Ref | None = None
    terms: Ref | None = None


class CustomerCurrency(_Record):
    """A line of a customer's ``currencyList`` sublist: a currency it may transact in besides its primary one."""

    currency: Ref


class CustomerCurrencies(_Record):
    """A sparse customer update adding currencies to its ``currencyList`` (the lines it holds are kept)."""

    record_type: Literal["customer"] = Field("customer", exclude=True)
    currencyList: tuple[CustomerCurrency, ...] = Field(min_length=1)


def customer_currency(currency_id: str) -> CustomerCurrencies:
    return CustomerCurrencies(currencyList=(CustomerCurrency(currency=Ref(id=currency_id)),))


# -- our external ids --

def customer_external_id(customer: ShopCustomer) -> str:
    return f"LWC{customer.id}"


def invoice_external_id(event: InvoiceEvent) -> str:
    return f"LWI{event.invoice_id}"


def adjustment_external_id(event: InvoiceEvent, kind: str, sequence: int) -> str:
    return references.adjustment_number(invoice_external_id(event), sequence, kind)


# -- references the mapping and settings resolve --

def currency(code: str, settings: NetSuiteSettings) -> Ref | None:
    return ref(settings.currency_ids.get(code))


def tax_code(taxes: Iterable[LineTax], mapping: MappingConfig) -> Ref:
    return Ref(id=combined_tax_code(taxes, mapping, PLATFORM))


def item_ref(kind: LineKind, mapping: MappingConfig, settings: NetSuiteSettings | None = None) -> Ref:
    """The item a line kind posts on: its own, a core return's the core charge's, else the parts item (else,
    for refund and adjustment lines, ``settings.adjustment_item_id``)."""
    found = mapping.items.get(kind) or mapping.items.get(income_kind(kind)) or mapping.items.get(LineKind.PART)
    found = found or (settings.adjustment_item_id if settings else None)
    if not found:
        raise PermanentError(f"mapping.items names no NetSuite item for {kind.value} lines")
    return Ref(id=found)


def segments(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Ref]:
    """``mapping.location_tracking``: ``"location:<id>"``, ``"department:<id>"`` or ``"class:<id>"`` (several
    joined by ``,``) for the shop location."""
    out: dict[str, Ref] = {}
    for part in filter(None, (mapping.location_tracking.get(event.location.code) or "").split(",")):
        segment, _, internal_id = part.strip().partition(":")
        if segment not in ("location", "department", "class") or not internal_id:
            raise PermanentError(f"mapping.location_tracking {part!r}: expected location:, department: or class:<id>")
        out[segment] = Ref(id=internal_id)
    return out


def terms(customer: ShopCustomer, mapping: MappingConfig) -> Ref | None:
    return ref(mapping.payment_terms.get(customer.payment_terms_days)) if customer.payment_terms_days else None


# -- records --

def customer_record(customer: ShopCustomer, settings: NetSuiteSettings, mapping: MappingConfig,
                    currency_code: str | None = None) -> Customer:
    """Our customer: ``entityId`` carries the shop's id (unique in NetSuite when auto-numbering is off)."""
    return Customer(externalId=customer_external_id(customer),
                    entityId=references.customer_label(customer.id, customer.name, NAME_MAX),
                    companyName=customer.name[:NAME_MAX], email=(customer.email or None) and customer.email[:EMAIL_MAX],
                    phone=(customer.phone or None) and customer.phone[:PHONE_MAX], subsidiary=ref(settings.subsidiary_id),
                    currency=currency(currency_code, settings) if currency_code else None,
                    terms=terms(customer, mapping))


def customer_digest(customer: ShopCustomer, settings: NetSuiteSettings, mapping: MappingConfig) -> str:
    return references.payload_digest(customer_record(customer, settings, mapping).model_dump(mode="json", by_alias=True))


def invoice_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig, item_id: str | None = None
                 ) -> ItemLine:
    tax = sum((t.amount for t in line.taxes), ZERO)
    net = line.amount - tax if event.tax_inclusive else line.amount
    return ItemLine(item=Ref(id=item_id) if item_id else item_ref(line.kind, mapping), quantity=line.quantity,
                    rate=None if event.tax_inclusive else line.unit_price, amount=net,
                    description=line_text(line, DESCRIPTION_MAX), taxCode=tax_code(line.taxes, mapping))


def invoice_record(event: InvoiceEvent, customer_id: str, settings: NetSuiteSettings, mapping: MappingConfig,
                   posted_on: date | None = None, item_ids: dict[int, str] | None = None) -> Invoice:
    """The whole invoice (create and update alike: an update replaces the item lines). ``posted_on``: the first
    open day when the shop's date is in a closed period (the memo says so)."""
    memo = invoice_memo(event, MEMO_MAX)
    if posted_on is not None:
        memo = f"{memo}; shop date {event.issue_date} is in a closed period"[:MEMO_MAX]
    day = posted_on or event.issue_date or date.today()
    due = references.terms_due_date(event)
    return Invoice(externalId=invoice_external_id(event), entity=Ref(id=customer_id), tranId=event.number[:TRAN_ID_MAX],
                   tranDate=day, dueDate=max(due, day) if due else None, currency=currency(event.currency, settings),
                   subsidiary=ref(settings.subsidiary_id), terms=terms(event.customer, mapping),
                   otherRefNum=event.job.number if event.job else None, memo=memo,
                   item=tuple(invoice_line(ln, event, mapping, (item_ids or {}).get(ln.id)) for ln in event.lines),
                   **segments(event, mapping))


def payment_record(event: InvoiceEvent, payment: Payment, invoice_id: str, customer_id: str,
                   settings: NetSuiteSettings, mapping: MappingConfig, posted_on: date | None = None) -> CustomerPayment:
    """A customer payment applied to this invoice only, deposited to the method's account (``mapping.
    payment_accounts``) or, for a method it does not name, to Undeposited Funds."""
    account = mapping.payment_accounts.get(payment.method)
    memo = f"{payment.method} payment {payment.reference or payment.id} of shop invoice {event.number}"
    return CustomerPayment(externalId=references.payment_reference(payment.id), customer=Ref(id=customer_id),
                           payment=payment.amount, tranDate=posted_on or payment.received_at.date(),
                           account=ref(account), undepFunds=account is None, memo=memo[:MEMO_MAX],
                           currency=currency(event.currency, settings),
                           apply=(ApplyLine(doc=Ref(id=invoice_id), amount=payment.amount),))


def money_line(description: str, kind: LineKind, net: Decimal, taxes: Iterable[LineTax], settings: NetSuiteSettings,
               mapping: MappingConfig) -> ItemLine:
    return ItemLine(item=item_ref(kind, mapping, settings), quantity=Decimal("1"), rate=net, amount=net,
                    description=description[:DESCRIPTION_MAX], taxCode=tax_code(taxes, mapping))


def money_lines(description: str, kind: LineKind, net: Decimal, tax: Decimal, taxes: Iterable[LineTax],
                settings: NetSuiteSettings, mapping: MappingConfig) -> tuple[ItemLine, ...]:
    """Lines worth ``net`` whose tax NetSuite computes (amount × each code's rate) as exactly ``tax``: a taxed
    part on the taxes' code and the untaxed rest on the ``"none"`` code (one line when the tax allows)."""
    taxes = tuple(taxes)
    rate = sum((t.rate for t in taxes), ZERO)
    if not tax or not rate:
        return (money_line(description, kind, net, taxes if tax else (), settings, mapping),)
    base = (tax / rate).quantize(CENT)
    base = next((b for b in (net, base, base - CENT, base + CENT) if sum(money(b * t.rate) for t in taxes) == tax), base)
    parts = [(base, taxes), (net - base, ())]
    return tuple(money_line(description, kind, amount, codes, settings, mapping) for amount, codes in parts if amount)


def credit_memo_record(event: InvoiceEvent, refund: Refund, customer_id: str, settings: NetSuiteSettings,
                       mapping: MappingConfig, posted_on: date | None = None) -> CreditMemo:
    """A refund or returned part: its net amount on the returned line's item, with that line's tax code when
    the refund carries tax (split so that NetSuite's computed tax is the shop's); a goodwill refund (no line) that
    carries tax on the tax code of the invoice's largest taxed line (``references.main_taxed_line``), so its tax
    is posted as tax (issue #20). Applied to the invoice afterwards (``credit_application``)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    description = f"Returned: {line_text(line, 180)}" if line else (refund.reason or "Refund")
    taxed = line or references.main_taxed_line(event, refund)
    taxes = taxed.taxes if taxed and refund.tax_amount else ()
    return CreditMemo(externalId=references.refund_reference(refund.id), entity=Ref(id=customer_id),
                      tranId=references.refund_reference(refund.id), tranDate=posted_on or refund.created_at.date(),
                      memo=f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"[:MEMO_MAX],
                      currency=currency(event.currency, settings), subsidiary=ref(settings.subsidiary_id),
                      item=money_lines(description, line.kind if line else LineKind.PART, refund.amount,
                                       refund.tax_amount, taxes, settings, mapping), **segments(event, mapping))


def refund_account(event: InvoiceEvent, refund: Refund, mapping: MappingConfig) -> Ref:
    """The bank account a paid-back refund leaves from: the one ``mapping.payment_accounts`` gives the refunded
    payment's method. A method it does not name (deposited to Undeposited Funds) has no account to pay from: a
    clear refusal, never a guess."""
    method = references.refund_method(event, refund)
    account = mapping.payment_accounts.get(method or "")
    if not account:
        raise PermanentError(f"mapping.payment_accounts names no NetSuite account for payment method {method!r}: "
                             f"refund {refund.id} pays back payment {refund.payment_id} and needs the account the "
                             "money goes out from")
    return Ref(id=account)


def customer_refund_record(event: InvoiceEvent, refund: Refund, credit_memo_id: str, amount: Decimal, reference: str,
                           customer_id: str, settings: NetSuiteSettings, mapping: MappingConfig,
                           posted_on: date | None = None) -> CustomerRefund:
    """The money the shop paid back (``refund.payment_id``): a customer refund of ``amount`` applied to the
    refund's credit memo, out of the refunded payment's account, external id ``reference`` (``LWP<refund id>``)."""
    return CustomerRefund(externalId=reference, customer=Ref(id=customer_id), account=refund_account(event, refund, mapping),
                          tranDate=posted_on or refund.created_at.date(),
                          memo=f"Refund {refund.id} paid back to the customer, shop invoice {event.number}"[:MEMO_MAX],
                          currency=currency(event.currency, settings), subsidiary=ref(settings.subsidiary_id),
                          apply=(ApplyLine(doc=Ref(id=credit_memo_id), amount=amount),))


def credit_application(invoice_id: str, amount: Decimal, applied: bool = True) -> CreditApplication:
    """``amount`` of a credit memo applied to (or, ``applied=False``, released from) the invoice."""
    return CreditApplication(apply=(ApplyLine(doc=Ref(id=invoice_id), apply=applied, amount=amount),))


def adjustment_record(event: InvoiceEvent, kind: Literal["increase", "decrease"], sequence: int, customer_id: str,
                      net: Decimal, tax: Decimal, day: date, original_id: str | None, reason: str,
                      settings: NetSuiteSettings, mapping: MappingConfig) -> Invoice | CreditMemo:
    """The difference between what NetSuite holds and the shop's version, dated in the first open period and
    naming the original: an invoice (increase) or a credit memo (decrease) of one line, net of tax, on the
    tax code of the invoice's taxed lines when the difference carries tax."""
    taxes = next((ln.taxes for ln in event.lines if ln.taxes), ()) if tax else ()
    lines = money_lines(f"Adjustment to invoice {event.number} ({reason})", LineKind.PART, net, tax, taxes, settings,
                        mapping)
    memo = (f"Adjustment {sequence} to shop invoice {event.number} v{event.version}"
            f"{f' (NetSuite invoice {original_id})' if original_id else ''}: {reason}; the original is dated in a "
            "closed period")[:MEMO_MAX]
    common = dict(externalId=adjustment_external_id(event, kind, sequence), entity=Ref(id=customer_id),
                  tranId=references.adjustment_number(event.number, sequence, kind)[:TRAN_ID_MAX], tranDate=day,
                  memo=memo, currency=currency(event.currency, settings), subsidiary=ref(settings.subsidiary_id),
                  item=lines, **segments(event, mapping))
    return Invoice(**common) if kind == "increase" else CreditMemo(**common)
