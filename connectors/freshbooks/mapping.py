"""Canonical events → FreshBooks request bodies (field names as in FreshBooks' Node SDK serialisers, the field
table in ``$LEDGERWIRE_SPECS_DIR/freshbooks/SOURCE.md``).

Pure functions of the event and the mapping configuration; ids come in resolved. Bodies are wrapped
(``{"invoice": …}``, ``{"client": …}``, ``{"payment": …}``, ``{"credit_notes": …}`` — the SDK's credit note
envelope). Amounts are Money objects ``{"amount": "<decimal string>", "code": <currency>}``. A line carries up
to two taxes by NAME and RATE in percent (``taxName1``/``taxAmount1`` — camelCase in a snake_case API):
FreshBooks computes the tax itself from the rate, per line. FreshBooks prices exclude tax, so a tax-inclusive
shop line is sent as one unit at its net amount.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, invoice_memo, line_text
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO, CENT, HUNDRED = Decimal("0"), Decimal("0.01"), Decimal("100")
# The shop's payment methods → FreshBooks' payment types (the SDK's PaymentType enum).
PAYMENT_TYPES = {"cash": "Cash", "card": "Credit Card", "credit_card": "Credit Card", "debit": "Debit",
                 "check": "Check", "cheque": "Check", "eft": "Bank Transfer", "bank_transfer": "Bank Transfer",
                 "ach": "ACH", "paypal": "PayPal"}
CREDIT = "Credit"  # a payment of this type is paid out of the client's credit (credit notes)


def money(amount: Decimal, currency: str | None = None) -> dict[str, str]:
    """Money; a payment leaves ``code`` out and takes its invoice's currency (as FreshBooks' own example does)."""
    cents = amount.quantize(CENT)
    return {"amount": format(cents if cents == amount else amount.normalize(), "f")} | (  # 1.25, 0.125
        {"code": currency} if currency else {})


def client_reference(customer: Customer) -> str:
    """FreshBooks clients have no reference field: ours carry the shop's customer id first in ``note``."""
    return f"LWC{customer.id}"


def client_payload(customer: Customer) -> dict[str, Any]:
    client: dict[str, Any] = {"organization": customer.name[:100],
                              "note": f"{client_reference(customer)} (shop customer, kept by Ledgerwire)"}
    if customer.email:
        client["email"] = customer.email
    if customer.phone:
        client["bus_phone"] = customer.phone
    if customer.billing_address:
        client["p_street"] = customer.billing_address[:100]
    return {"client": client}


def client_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(client_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def _taxes(taxes: tuple[LineTax, ...], mapping: MappingConfig) -> dict[str, Any]:
    """``taxName<n>`` / ``taxAmount<n>``: the FreshBooks tax's name (``mapping.tax_codes``) and rate in percent."""
    if len(taxes) > 2:
        raise PermanentError(f"FreshBooks takes at most two taxes per line; this line has {len(taxes)}")
    out: dict[str, Any] = {}
    for n, tax in enumerate(taxes, start=1):
        name = mapping.tax_codes.get(tax.code)
        if not name:
            raise PermanentError(f"mapping.tax_codes names no FreshBooks tax for {tax.code!r}")
        percent = (tax.rate * HUNDRED).normalize()  # 5, 6.25 — never 1E+1
        out |= {f"taxName{n}": name, f"taxAmount{n}": percent.quantize(1) if percent == percent.to_integral() else percent}
    return out


def _line(name: str, description: str, qty: Decimal, unit_cost: Decimal, currency: str,
          taxes: tuple[LineTax, ...], mapping: MappingConfig) -> dict[str, Any]:
    return {"name": name[:100], "description": description, "qty": qty, "unit_cost": money(unit_cost, currency),
            "type": 0} | _taxes(taxes, mapping)


def invoice_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    name = line.part_number or line.kind.value.replace("_", " ").capitalize()
    if event.tax_inclusive:  # FreshBooks prices exclude tax: one unit at the line's net amount
        net = line.amount - sum((t.amount for t in line.taxes), ZERO)
        return _line(name, f"{line.quantity} x {line_text(line, 980)}", Decimal("1"), net, event.currency,
                     line.taxes, mapping)
    return _line(name, line_text(line, 1000), line.quantity, line.unit_price, event.currency, line.taxes, mapping)


def invoice_payload(event: InvoiceEvent, client_id: str, mapping: MappingConfig, posted_on: date | None = None
                    ) -> dict[str, Any]:
    """The whole invoice (create and update alike: an update's ``lines`` replace the lines)."""
    day = posted_on or event.issue_date
    body: dict[str, Any] = {"customerid": int(client_id), "create_date": day.isoformat(),
                            "invoice_number": event.number, "currency_code": event.currency,
                            "notes": invoice_memo(event, 2000),
                            "lines": [invoice_line(ln, event, mapping) for ln in event.lines]}
    if event.job is not None:
        body["po_number"] = event.job.number
    if event.due_date and event.due_date >= day:
        body["due_offset_days"] = (event.due_date - day).days
    return {"invoice": body}


def payment_reference(payment: Payment) -> str:
    return f"LW{payment.id}"


def payment_payload(payment: Payment, invoice_id: str, posted_on: date | None = None) -> dict[str, Any]:
    """A payment on this invoice (FreshBooks payments always name their invoice); our reference leads ``note``."""
    return {"payment": {"invoiceid": int(invoice_id), "amount": money(payment.amount),
                        "date": (posted_on or payment.received_at.date()).isoformat(),
                        "type": PAYMENT_TYPES.get(payment.method.lower(), "Other"),
                        "note": f"{payment_reference(payment)} shop payment"}}


def credit_note_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def application_reference(refund_id: object) -> str:
    return f"LWA{refund_id}"


def credit_note_payload(event: InvoiceEvent, refund: Refund, client_id: str, mapping: MappingConfig,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund or returned part: its amount with the returned line's taxes (FreshBooks computes the tax); a
    goodwill refund without a line with the taxes of the invoice's main taxed line (issue #20: its tax is posted as
    tax, never folded into an untaxed amount)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    taxed = line or references.main_taxed_line(event, refund)
    taxes = taxed.taxes if taxed is not None and refund.tax_amount else ()
    description = f"Returned: {line_text(line, 980)}" if line else (refund.reason or "Refund")
    return {"credit_notes": {
        "clientid": int(client_id), "create_date": (posted_on or refund.created_at.date()).isoformat(),
        "credit_number": credit_note_reference(refund.id), "currency_code": event.currency,
        "lines": [_line(f"Refund of {event.number}", description, Decimal("1"), refund.amount, event.currency,
                        taxes, mapping)]}}


def credit_payment_payload(refund_id: str, invoice_id: str, amount: Decimal, day: date) -> dict[str, Any]:
    """A credit note applied to the invoice: a payment of type Credit, paid out of the client's credit
    (FreshBooks draws on the client's credit as a whole, not on one named credit note)."""
    return {"payment": {"invoiceid": int(invoice_id), "amount": money(amount), "date": day.isoformat(),
                        "type": CREDIT, "note": f"{application_reference(refund_id)} credit note "
                                                f"{credit_note_reference(refund_id)} applied"}}
