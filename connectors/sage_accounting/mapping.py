"""Canonical events → Sage Business Cloud Accounting v3.1 request bodies (field names as in Sage's Swagger 2.0).

Pure functions of the event and the mapping configuration; ids come in resolved. Sage lines post straight on
ledger accounts (products and services are optional there), one tax rate per line: a line with several tax
components (GST + PST) uses the rate the mapping names for the combination (``"GST+PST"``, codes sorted),
a line without tax the rate named ``"none"``. The shop's own tax amount is sent on every line (Sage v3.1
requires it for non-zero rates), so Sage keeps the shop's rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, invoice_memo, line_text, posting_account, payment_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")
CUSTOMER_RECEIPT, CUSTOMER_REFUND, CUSTOMER_ALLOCATION = "CUSTOMER_RECEIPT", "CUSTOMER_REFUND", "CUSTOMER_ALLOCATION"


def contact_reference(customer: Customer) -> str:
    """Sage's contact reference is unique per business: ours carry the shop's customer id."""
    return f"LWC{customer.id}"


def contact_payload(customer: Customer) -> dict[str, Any]:
    contact: dict[str, Any] = {"name": customer.name[:100], "contact_type_ids": ["CUSTOMER"],
                               "reference": contact_reference(customer)}
    if customer.email or customer.phone:
        person: dict[str, Any] = {"name": customer.name[:100], "is_main_contact": True}
        if customer.email:
            person["email"] = customer.email
        if customer.phone:
            person["telephone"] = customer.phone
        contact["main_contact_person"] = person
    if customer.billing_address:
        contact["main_address"] = {"address_line_1": customer.billing_address[:100]}
    if customer.payment_terms_days:
        contact["credit_days"] = customer.payment_terms_days
    return {"contact": contact}


def contact_digest(customer: Customer) -> str:
    return references.payload_digest(contact_payload(customer))


def tax_rate_id(taxes: Iterable[LineTax], mapping: MappingConfig) -> str:
    key = "+".join(sorted({t.code for t in taxes})) or "none"
    if key not in mapping.tax_codes:
        raise PermanentError(f"mapping.tax_codes names no Sage tax rate for {key!r}")
    return mapping.tax_codes[key]


def ledger_account(kind: LineKind, mapping: MappingConfig) -> str:
    account = posting_account(kind, mapping, fallback=LineKind.PART)
    if not account:
        raise PermanentError(f"mapping.income_accounts names no Sage ledger account for {kind.value} lines")
    return account


def _tracking(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    tracking = mapping.location_tracking.get(event.location.code) or ""
    return {"analysis_type_categories": [tracking.split(":", 1)[1]]} if tracking.startswith("analysis:") else {}


def _money_line(description: str, account: str, net: Decimal, tax: Decimal, rate: str) -> dict[str, Any]:
    return {"description": description, "ledger_account_id": account, "quantity": Decimal("1"), "unit_price": net,
            "net_amount": net, "tax_rate_id": rate, "tax_amount": tax, "total_amount": net + tax}


def invoice_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), ZERO)
    net = line.amount - tax if event.tax_inclusive else line.amount
    body = {"description": line_text(line, 200), "ledger_account_id": ledger_account(line.kind, mapping),
            "quantity": line.quantity, "unit_price": line.unit_price, "unit_price_includes_tax": event.tax_inclusive,
            "net_amount": net, "tax_rate_id": tax_rate_id(line.taxes, mapping), "tax_amount": tax,
            "total_amount": net + tax}
    return body | _tracking(event, mapping)


def invoice_payload(event: InvoiceEvent, contact_id: str, mapping: MappingConfig, posted_on: date | None = None
                    ) -> dict[str, Any]:
    """The whole invoice (create and update alike: an update replaces the lines). ``posted_on``: the first open
    day when the books are closed for the shop's date (the notes say so)."""
    notes = invoice_memo(event, 2000)
    if posted_on is not None:
        notes = f"{notes}; shop date {event.issue_date} is in a closed period"
    day = posted_on or event.issue_date
    body: dict[str, Any] = {"contact_id": contact_id, "date": day.isoformat(), "reference": event.number,
                            "notes": notes, "invoice_lines": [invoice_line(ln, event, mapping) for ln in event.lines]}
    due = references.terms_due_date(event)
    if due:
        body["due_date"] = max(due, day).isoformat()
    return {"sales_invoice": body}


def payment_payload(payment: Payment, invoice_id: str, contact_id: str, mapping: MappingConfig,
                    posted_on: date | None = None) -> dict[str, Any]:
    """A customer receipt allocated to this invoice only (never left on account); ``posted_on``: the first open
    day when the books are closed for the day it was received."""
    bank = payment_account(payment, mapping, "Sage", "bank account")
    return {"contact_payment": {
        "transaction_type_id": CUSTOMER_RECEIPT, "contact_id": contact_id, "bank_account_id": bank,
        "date": (posted_on or payment.received_at.date()).isoformat(), "total_amount": payment.amount,
        "reference": references.payment_reference(payment.id),
        "allocated_artefacts": [{"artefact_id": invoice_id, "amount": payment.amount}]}}


def credit_note_payload(event: InvoiceEvent, refund: Refund, contact_id: str, mapping: MappingConfig,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund or returned part: its amount on the returned line's ledger account, with its tax. A goodwill
    refund (no line) that carries tax takes the tax rate of the invoice's largest taxed line (issue #20)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    account = ledger_account(line.kind if line else LineKind.PART, mapping)
    taxed = line or references.main_taxed_line(event, refund)
    rate = tax_rate_id(taxed.taxes if taxed and refund.tax_amount else (), mapping)
    description = f"Returned: {line_text(line, 180)}" if line else (refund.reason or "Refund")
    return {"sales_credit_note": {
        "contact_id": contact_id, "date": (posted_on or refund.created_at.date()).isoformat(),
        "reference": references.refund_reference(refund.id),
        "notes": f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"[:2000],
        "credit_note_lines": [_money_line(description[:200], account, refund.amount, refund.tax_amount, rate)]}}


def refund_payment_payload(event: InvoiceEvent, refund: Refund, credit_note_id: str, contact_id: str, amount: Decimal,
                           reference: str, mapping: MappingConfig, day: date) -> dict[str, Any]:
    """The money paid back (Sage's customer refund, ``CUSTOMER_REFUND``) from the bank account of the payment the
    refund pays back, allocated to the refund's credit note so nothing of it is left open."""
    bank = references.refund_account(event, refund, mapping, "Sage", "bank account")
    return {"contact_payment": {
        "transaction_type_id": CUSTOMER_REFUND, "contact_id": contact_id, "bank_account_id": bank,
        "date": day.isoformat(), "total_amount": amount, "reference": reference,
        "allocated_artefacts": [{"artefact_id": credit_note_id, "amount": amount}]}}


def allocation_payload(contact_id: str, invoice_id: str, credit_note_id: str, amount: Decimal, day: date
                       ) -> dict[str, Any]:
    """A credit note allocated to the invoice: the invoice takes ``amount``, the credit note gives it."""
    return {"contact_allocation": {
        "transaction_type_id": CUSTOMER_ALLOCATION, "contact_id": contact_id, "date": day.isoformat(),
        "allocated_artefacts": [{"artefact_id": invoice_id, "amount": amount},
                                {"artefact_id": credit_note_id, "amount": -amount}]}}


def adjustment_reference(event: InvoiceEvent, sequence: int, kind: str) -> str:
    """``A<n>-`` (increase, an invoice) or ``C<n>-`` (decrease, a credit note) + the shop's invoice number."""
    return f"{'A' if kind == 'increase' else 'C'}{sequence}-{event.number}"


def adjustment_payload(event: InvoiceEvent, kind: str, sequence: int, contact_id: str, net: Decimal, tax: Decimal,
                       day: date, original_id: str | None, reason: str, mapping: MappingConfig
                       ) -> tuple[str, dict[str, Any]]:
    """(resource, body): the difference between what Sage holds and the shop's version, dated in the first
    open period, naming the original invoice."""
    taxed = next((ln.taxes for ln in event.lines if ln.taxes), ())
    line = _money_line(f"Adjustment to invoice {event.number} ({reason})"[:200], ledger_account(LineKind.PART, mapping),
                       net, tax, tax_rate_id(taxed if tax else (), mapping))
    notes = (f"Adjustment {sequence} to shop invoice {event.number} v{event.version}"
             f"{f' (Sage invoice {original_id})' if original_id else ''}: {reason}; the original is dated in a "
             "closed period")[:2000]
    common = {"contact_id": contact_id, "date": day.isoformat(), "reference": adjustment_reference(event, sequence, kind),
              "notes": notes}
    if kind == "increase":
        return "sales_invoices", {"sales_invoice": common | {"invoice_lines": [line]}}
    return "sales_credit_notes", {"sales_credit_note": common | {"credit_note_lines": [line]}}
