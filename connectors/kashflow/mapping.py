"""Canonical events → KashFlow SOAP arguments (element names as in KashFlow's WSDL).

Pure functions of the event and the mapping configuration; ids come in resolved. KashFlow numbers invoices
itself: the shop's number goes in ``CustomerReference`` (what look-ups match on). A line posts on a nominal code
(``ChargeType``: ``mapping.income_accounts``) with one VAT rate in percent (``VatRate``: ``mapping.tax_codes``
names the rate for the line's tax codes, ``"GST+PST"`` sorted, ``"none"`` for an untaxed line) and the shop's own
tax amount (``VatAmount``), so KashFlow keeps the shop's rounding. A credit note is an invoice with negative
lines (KashFlow's SOAP API has no separate credit note type).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.rest import is_placeholder
from connectors.base import PermanentError, invoice_memo, line_text, posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")
CODE_PREFIX = "LW"


def when(day: date) -> datetime:
    """KashFlow's dates are ``xsd:dateTime``: midnight of the day."""
    return datetime.combine(day, time())


def as_id(value: str | int) -> int | str:
    """A KashFlow number/id as the WSDL types it; a preview's placeholder stays as it is (never sent)."""
    return value if is_placeholder(value) else int(value)


def customer_code(customer: Customer) -> str:
    """KashFlow's customer code is unique per account: ours carry the shop's customer id."""
    return f"{CODE_PREFIX}{customer.id}"


def customer_args(customer: Customer) -> dict[str, Any]:
    record: dict[str, Any] = {"Code": customer_code(customer), "Name": customer.name[:100]}
    if customer.email:
        record["Email"] = customer.email
    if customer.phone:
        record["Telephone"] = customer.phone
    if customer.billing_address:
        record["Address1"] = customer.billing_address[:100]
    if customer.payment_terms_days:
        record["PaymentTerms"] = customer.payment_terms_days
    return record


def customer_digest(customer: Customer) -> str:
    return references.payload_digest(customer_args(customer))


def vat_rate(taxes: Iterable[LineTax], mapping: MappingConfig) -> Decimal:
    key = "+".join(sorted({t.code for t in taxes})) or "none"
    if key not in mapping.tax_codes:
        raise PermanentError(f"mapping.tax_codes names no KashFlow VAT rate for {key!r}")
    return Decimal(mapping.tax_codes[key])


def nominal_code(kind: LineKind, mapping: MappingConfig) -> int:
    account = posting_account(kind, mapping, fallback=LineKind.PART)
    if not account or not account.isdigit():
        raise PermanentError(f"mapping.income_accounts names no KashFlow nominal code id for {kind.value} lines")
    return int(account)


def money_line(description: str, code: int, quantity: Decimal, rate: Decimal, vat_percent: Decimal, vat: Decimal
               ) -> dict[str, Any]:
    return {"Quantity": quantity, "Description": description, "Rate": rate, "ChargeType": code,
            "VatRate": vat_percent, "VatAmount": vat}


def invoice_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), ZERO)
    code, percent = nominal_code(line.kind, mapping), vat_rate(line.taxes, mapping)
    if event.tax_inclusive:  # KashFlow's Rate is net: one of the net amount keeps the shop's total exact
        return money_line(f"{line.quantity} x {line_text(line, 180)}", code, Decimal("1"), line.amount - tax,
                          percent, tax)
    return money_line(line_text(line, 200), code, line.quantity, line.unit_price, percent, tax)


def invoice_args(event: InvoiceEvent, customer_id: str, mapping: MappingConfig, posted_on: date | None = None,
                 number: int = 0) -> dict[str, Any]:
    """The whole invoice (``Invoice_TypeDefined``): create and update alike (an update replaces the lines)."""
    day = posted_on or event.issue_date
    due = references.terms_due_date(event) or day
    return {"InvoiceNumber": number, "InvoiceDate": when(day), "DueDate": when(max(due, day)), "CustomerID": as_id(customer_id),
            "CustomerReference": event.number, "ReadableString": invoice_memo(event, 250),
            "Lines": {"InvoiceLine": [invoice_line(ln, event, mapping) for ln in event.lines]}}


def payment_args(payment: Payment, invoice_number: int | str, mapping: MappingConfig, pay_method: int,
                 posted_on: date | None = None) -> dict[str, Any]:
    """A payment on this invoice; ``PayAccount``: the bank account id the mapping names for the method."""
    bank = mapping.payment_accounts.get(payment.method)
    if not bank or not bank.isdigit():
        raise PermanentError(f"mapping.payment_accounts names no KashFlow bank account id for {payment.method!r}")
    return {"PayID": 0, "PayInvoice": invoice_number, "PayDate": when(posted_on or payment.received_at.date()),
            "PayNote": references.payment_reference(payment.id), "PayMethod": pay_method, "PayAccount": int(bank),
            "PayAmount": payment.amount}


def refund_payment_args(event: InvoiceEvent, refund: Refund, credit_note_number: int | str, amount: Decimal,
                        reference: str, mapping: MappingConfig, pay_method: int) -> dict[str, Any]:
    """Money paid back on a credit note: a negative payment on it (KashFlow's "Refunds & Credit Notes": a credit
    note is settled by a negative payment) out of the bank account of the payment the refund pays back."""
    bank = references.refund_account(event, refund, mapping, "KashFlow", "bank account id")
    if not bank.isdigit():
        raise PermanentError(f"mapping.payment_accounts names no KashFlow bank account id for refund {refund.id}")
    return {"PayID": 0, "PayInvoice": credit_note_number, "PayDate": when(refund.created_at.date()), "PayNote": reference,
            "PayMethod": pay_method, "PayAccount": int(bank), "PayAmount": -amount}


def credit_note_args(event: InvoiceEvent, refund: Refund, customer_id: str, mapping: MappingConfig) -> dict[str, Any]:
    """A refund or returned part: an invoice of one negative line on the returned line's nominal code; a goodwill
    refund (no line) that carries tax at the VAT rate of the invoice's largest taxed line (issue #20)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    code = nominal_code(line.kind if line else LineKind.PART, mapping)
    taxed = line or references.main_taxed_line(event, refund)
    percent = vat_rate(taxed.taxes if taxed and refund.tax_amount else (), mapping)
    description = f"Returned: {line_text(line, 180)}" if line else (refund.reason or "Refund")
    day = refund.created_at.date()
    return {"InvoiceNumber": 0, "InvoiceDate": when(day), "DueDate": when(day), "CustomerID": as_id(customer_id),
            "CustomerReference": references.refund_reference(refund.id),
            "ReadableString": f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"[:250],
            "Lines": {"InvoiceLine": [money_line(description[:200], code, Decimal("-1"), refund.amount, percent,
                                                 -refund.tax_amount)]}}
