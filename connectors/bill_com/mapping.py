"""Canonical events → Bill.com v3 request bodies (field names as in BILL's v3 reference and guides).

Pure functions of the event and the mapping configuration; ids come in resolved. A BILL invoice line is
``quantity`` × ``price`` with a description (no ledger account, no per-line tax rate: BILL's sales tax is one
SALES_TAX item rate over the taxable lines, which cannot carry the shop's per-line amounts). So the shop's tax
goes as its own lines, one per tax code, ``Sales tax <code>`` at the shop's amount: the invoice total is the
shop's to the cent.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, line_text
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

ZERO = Decimal("0")
TAX_LINE = "Sales tax "  # the description prefix of the lines that carry the shop's tax
REVERSAL = "Reversal of "
# BILL's record-payment paymentType enum; the shop's payment methods onto it.
PAYMENT_TYPES = {"cash": "CASH", "check": "CHECK", "cheque": "CHECK", "card": "CREDIT_CARD", "eft": "ACH",
                 "ach": "ACH", "paypal": "PAYPAL"}


def customer_marker(customer: Customer) -> str:
    """Ours carry the shop's customer id in ``accountNumber``, so a look-up never takes another shop customer."""
    return f"LWC{customer.id}"


def customer_payload(customer: Customer, fallback_email: str | None) -> dict[str, Any]:
    email = customer.email or fallback_email
    if not email:
        raise PermanentError(f"Bill.com requires a customer e-mail: shop customer {customer.id} has none "
                             "(set settings.fallback_email)")
    body: dict[str, Any] = {"name": customer.name[:100], "email": email, "accountNumber": customer_marker(customer)}
    if customer.phone:
        body["phone"] = customer.phone
    return body


def customer_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer, "-"), sort_keys=True).encode()).hexdigest()[:16]


def _line(line: InvoiceLine, event: InvoiceEvent) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), ZERO)
    net = line.amount - tax if event.tax_inclusive else line.amount
    description = line_text(line, 4000)
    if line.quantity * line.unit_price == net:
        return {"description": description, "quantity": line.quantity, "price": line.unit_price}
    # BILL computes quantity × price: where the shop's rounding differs, one unit at the shop's net amount.
    return {"description": f"{description} ({line.quantity} × {line.unit_price})"[:4000], "quantity": Decimal("1"),
            "price": net}


def tax_lines(event: InvoiceEvent) -> list[dict[str, Any]]:
    totals: dict[str, Decimal] = {}
    for line in event.lines:
        for tax in line.taxes:
            totals[tax.code] = totals.get(tax.code, ZERO) + tax.amount
    return [{"description": f"{TAX_LINE}{code}", "quantity": Decimal("1"), "price": amount}
            for code, amount in sorted(totals.items()) if amount]


def invoice_lines(event: InvoiceEvent, line_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Every line, the tax lines last. ``line_ids``: BILL's ids of the lines it holds, given to the lines in
    order — a ``PUT`` removes every line whose id it omits, so an update names each line it keeps."""
    lines = [_line(ln, event) for ln in event.lines] + tax_lines(event)
    for held, line in zip(line_ids or [], lines):
        line["id"] = held
    return lines


def due_date(event: InvoiceEvent, day: date) -> date:
    if event.customer.payment_terms_days and event.issue_date:
        return max(day, event.issue_date + timedelta(days=event.customer.payment_terms_days))
    return max(day, event.due_date or day)


def invoice_payload(event: InvoiceEvent, customer_id: str, line_ids: list[str] | None = None,
                    credit_amount: Decimal | None = None) -> dict[str, Any]:
    """The whole invoice (create; and update, which replaces it: ``creditAmount`` — the credit memos applied —
    is sent again as BILL holds it, or the replace would drop it)."""
    body: dict[str, Any] = {"customer": {"id": customer_id}, "invoiceNumber": event.number[:100],
                            "invoiceDate": event.issue_date.isoformat(),
                            "dueDate": due_date(event, event.issue_date).isoformat(),
                            "invoiceLineItems": invoice_lines(event, line_ids)}
    if credit_amount:
        body["creditAmount"] = credit_amount
    return body


def payment_reference(payment_id: object) -> str:
    return f"LW{payment_id}"


def payment_payload(payment: Payment, invoice_id: str, customer_id: str) -> dict[str, Any]:
    """An offline payment (``record-payment``) applied to this invoice only: nothing is left unapplied."""
    return {"paymentDate": payment.received_at.date().isoformat(),
            "paymentType": PAYMENT_TYPES.get(payment.method.lower(), "OTHER"), "amount": payment.amount,
            "customerId": customer_id, "description": payment_reference(payment.id),
            "invoices": [{"id": invoice_id, "amount": payment.amount}]}


def reversal_payload(received: dict[str, Any]) -> dict[str, Any]:
    """BILL v3 publishes no void of a recorded AR payment: a recorded payment of the negative amount on the
    same invoices (not confirmed by a BILL page; see the README)."""
    return {"paymentDate": date.today().isoformat(), "paymentType": received.get("paymentType", "OTHER"),
            "amount": -Decimal(str(received["amount"])), "customerId": received["customerId"],
            "description": f"{REVERSAL}{received['id']} ({received.get('description', '')})"[:4000],
            "invoices": [{"id": i["id"], "amount": -Decimal(str(i["amount"]))} for i in received["invoices"]]}


def credit_memo_reference(event: InvoiceEvent, refund_id: object) -> str:
    return f"CM{refund_id}-{event.number}"[:100]


def credit_memo_payload(event: InvoiceEvent, refund: Refund, customer_id: str) -> dict[str, Any]:
    """A refund or returned part: its amount as a line, its tax as a tax line (as on the invoice)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    description = f"Returned: {line_text(line, 3900)}" if line else (refund.reason or "Refund")
    lines = [{"description": description[:4000], "quantity": Decimal("1"), "price": refund.amount}]
    if refund.tax_amount:
        # A goodwill refund (no line) is taxed like the invoice's main taxed line: its tax line names that code.
        taxed = line or references.main_taxed_line(event, refund)
        code = "+".join(sorted({t.code for t in taxed.taxes})) if taxed and taxed.taxes else "tax"
        lines.append({"description": f"{TAX_LINE}{code}", "quantity": Decimal("1"), "price": refund.tax_amount})
    return {"customerId": customer_id, "referenceNumber": credit_memo_reference(event, refund.id),
            "creditDate": refund.created_at.date().isoformat(),
            "description": f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"[:4000],
            "creditMemoLineItems": lines}
