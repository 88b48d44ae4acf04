"""Canonical events → Reckon One API v2 request bodies (field names as in Reckon's OpenAPI 3.0).

Pure functions of the event and the mapping configuration; ids come in resolved. Lines post on ledger
accounts (``accountDetails``: Reckon's amount is the line's amount, tax included or not as the invoice's
``amountTaxStatus`` says), one tax rate per line named as Reckon names it (``"GST"``); a line with several
tax components uses the rate the mapping names for the combination (``"GST+PST"``, codes sorted), a line
without tax the rate named ``"none"`` (no rate sent when the mapping has none). The shop's tax amount is sent
on every line, so Reckon keeps the shop's rounding. Dates are the spec's ``date-time`` at midnight UTC.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.base import PermanentError, income_kind, invoice_memo, line_text, payment_account
# The same rules as Sage's (pure, platform-neutral): fleet terms set the due date; adjustments are numbered
# ``A<n>-`` / ``C<n>-`` + the shop's number.
from connectors import references
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

INVOICE = "Invoice"  # LinkedTransactionType


def day_time(day: date) -> str:
    """The spec's ``date-time`` (RFC 3339, so with an offset): midnight UTC is the same day in AU and NZ."""
    return f"{day.isoformat()}T00:00:00Z"


def customer_marker(customer: Customer) -> str:
    """Reckon's customers have no unique reference field: ours carry the shop's id in their notes."""
    return f"Ledgerwire customer {customer.id}"


def customer_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"name": customer.name[:100], "entityTypes": {"isCustomer": True},
                            "notes": customer_marker(customer)}
    if customer.email:
        body["electronicAddresses"] = [{"type": "Email", "address": customer.email[:100]}]
    if customer.phone:
        body["phoneNumbers"] = [{"type": "Work", "number": customer.phone[:30]}]
    if customer.billing_address:
        body["addresses"] = [{"type": "Billing", "line1": customer.billing_address[:80]}]
    return body


def customer_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def tax_rate(taxes: Iterable[LineTax], mapping: MappingConfig) -> dict[str, str]:
    key = "+".join(sorted({t.code for t in taxes})) or "none"
    if key in mapping.tax_codes:
        return {"taxRate": mapping.tax_codes[key]}
    if key == "none":
        return {}
    raise PermanentError(f"mapping.tax_codes names no Reckon One tax rate for {key!r}")


def ledger_account(kind: LineKind, mapping: MappingConfig) -> str:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    if kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account" and mapping.discount_account:
        return mapping.discount_account
    account = mapping.income_accounts.get(income_kind(kind)) or mapping.income_accounts.get(LineKind.PART)
    if not account:
        raise PermanentError(f"mapping.income_accounts names no Reckon One ledger account for {kind.value} lines")
    return account


def _line(number: int, description: str, account: str, quantity: Decimal, amount: Decimal, tax: Decimal,
          rate: dict[str, str]) -> dict[str, Any]:
    return {"lineNumber": number, "description": description[:1000],
            "accountDetails": {"ledgerAccount": account, "quantity": quantity, "amount": amount},
            "taxAmount": tax} | rate


def invoice_line(number: int, line: InvoiceLine, mapping: MappingConfig) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), Decimal("0"))
    return _line(number, line_text(line, 1000), ledger_account(line.kind, mapping), line.quantity, line.amount, tax,
                 tax_rate(line.taxes, mapping))


def _classification(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, str]:
    tracking = mapping.location_tracking.get(event.location.code) or ""
    return {"classification": tracking.split(":", 1)[1]} if tracking.startswith("classification:") else {}


def tax_status(event: InvoiceEvent) -> str:
    return "Inclusive" if event.tax_inclusive else "Exclusive"


def invoice_payload(event: InvoiceEvent, customer_id: str, mapping: MappingConfig, posted_on: date | None = None
                    ) -> dict[str, Any]:
    """The whole invoice (``POST`` and ``PUT`` alike: a ``PUT`` replaces the lines). The shop's number is the
    ``reference`` (Reckon numbers invoices itself); ``posted_on``: the first open day when the books are
    locked for the shop's date (the notes say so)."""
    notes = invoice_memo(event, 2000)
    if posted_on is not None:
        notes = f"{notes}; shop date {event.issue_date} is in a closed period"
    day = posted_on or event.issue_date
    body: dict[str, Any] = {"customer": customer_id, "invoiceDate": day_time(day), "amountTaxStatus": tax_status(event),
                            "reference": event.number, "notes": notes,
                            "lineItems": [invoice_line(n, ln, mapping) for n, ln in enumerate(event.lines, 1)]}
    due = references.terms_due_date(event)
    if due:
        body["dueDate"] = day_time(max(due, day))
    return body | _classification(event, mapping)


def payment_reference(payment: Payment) -> str:
    return f"LW{payment.id}"


def receipt_payload(payment: Payment, invoice_id: str, customer_id: str, mapping: MappingConfig,
                    posted_on: date | None = None) -> dict[str, Any]:
    """A customer receipt allocated in full to this invoice through ``transactionLinks`` (never on account)."""
    bank = payment_account(payment, mapping, "Reckon One", "bank account")
    return {"customer": customer_id, "receiptDate": day_time(posted_on or payment.received_at.date()),
            "ledgerAccount": bank, "reference": payment_reference(payment), "totalAmount": payment.amount,
            "notes": f"Payment {payment.id} ({payment.method})"[:255],
            "transactionLinks": [link_payload(invoice_id, payment.amount)]}


def link_payload(invoice_id: str, amount: Decimal) -> dict[str, Any]:
    return {"transactionId": invoice_id, "transactionAmount": amount, "transactionType": INVOICE}


def credit_note_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def credit_note_payload(event: InvoiceEvent, refund: Refund, customer_id: str, mapping: MappingConfig,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund or returned part: its amount on the returned line's ledger account, with its tax. A goodwill refund
    (no line) that carries tax takes the tax code of the invoice's largest taxed line (issue #20)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    account = ledger_account(line.kind if line else LineKind.PART, mapping)
    taxed = line or references.main_taxed_line(event, refund)
    rate = tax_rate(taxed.taxes if taxed and refund.tax_amount else (), mapping)
    description = f"Returned: {line_text(line, 900)}" if line else (refund.reason or "Refund")
    return {"customer": customer_id, "creditNoteDate": day_time(posted_on or refund.created_at.date()),
            "amountTaxStatus": "Exclusive", "reference": credit_note_reference(refund.id),
            "notes": f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}",
            "lineItems": [_line(1, description, account, Decimal("1"), refund.amount, refund.tax_amount, rate)]}


def adjustment_payload(event: InvoiceEvent, kind: str, sequence: int, customer_id: str, net: Decimal, tax: Decimal,
                       day: date, original_id: str | None, reason: str, mapping: MappingConfig
                       ) -> tuple[str, dict[str, Any]]:
    """(resource, body): the difference between what Reckon holds and the shop's version, dated in the first
    open period, naming the original invoice."""
    taxed = next((ln.taxes for ln in event.lines if ln.taxes), ())
    line = _line(1, f"Adjustment to invoice {event.number} ({reason})", ledger_account(LineKind.PART, mapping),
                 Decimal("1"), net, tax, tax_rate(taxed if tax else (), mapping))
    notes = (f"Adjustment {sequence} to shop invoice {event.number} v{event.version}"
             f"{f' (Reckon invoice {original_id})' if original_id else ''}: {reason}; the original is dated in a "
             "locked period")
    common = {"customer": customer_id, "amountTaxStatus": "Exclusive",
              "reference": adjustment_reference(event, sequence, kind), "notes": notes, "lineItems": [line]}
    if kind == "increase":
        return "invoices", common | {"invoiceDate": day_time(day)}
    return "creditNotes", common | {"creditNoteDate": day_time(day)}


def adjustment_reference(event: InvoiceEvent, sequence: int, kind: str) -> str:
    """``A<n>-`` (increase, an invoice) or ``C<n>-`` (decrease, a credit note) + the shop's invoice number."""
    return f"{references.adjustment_tag(kind, sequence)}-{event.number}"
