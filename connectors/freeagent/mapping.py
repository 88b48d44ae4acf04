"""Canonical events → FreeAgent API v2 request bodies (``{"<resource>": {...}}`` envelopes, field names as in
FreeAgent's Postman collection and its API pages).

Pure functions of the event and the mapping; ids come in resolved and are sent as FreeAgent sends them: full
resource URIs (``uri(kind, id)``). Money goes as decimal strings, FreeAgent's own format. FreeAgent computes a
line's tax from its rate: each source tax code maps (``mapping.tax_codes``) to a rate of FreeAgent's first sales
tax (``"5"``) or, on a Universal account, of its second one (``"second:7"``); a line's components add up per
slot. Lines carry an income category (``mapping.income_accounts``: nominal codes) and an item type by kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, income_kind, invoice_memo, line_text, payment_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")
Uri = Callable[[str, str], str]  # (resource, id) -> the resource's URI
# FreeAgent's invoice item units: labour is billed in hours, parts as products, the rest as services.
ITEM_TYPES = {LineKind.LABOUR: "Hours", LineKind.PART: "Products", LineKind.CORE_CHARGE: "Products",
              LineKind.CORE_RETURN: "Products", LineKind.SUBLET: "Services", LineKind.FEE: "Services",
              LineKind.DISCOUNT: "Discount"}


def money(value: Decimal) -> str:
    return f"{value:f}"


def contact_name(customer: Customer) -> str:
    """FreeAgent contacts carry no reference field: ours carry the shop's customer id in their name, so one
    shop customer is never taken for another with the same name or email."""
    return f"{customer.name[:80]} (#{customer.id})"


def contact_payload(customer: Customer) -> dict[str, Any]:
    contact: dict[str, Any] = {"organisation_name": contact_name(customer)}
    if customer.email:
        contact["email"] = customer.email
    if customer.phone:
        contact["phone_number"] = customer.phone
    if customer.billing_address:
        contact["address1"] = customer.billing_address[:100]
    if customer.payment_terms_days:
        contact["default_payment_terms_in_days"] = customer.payment_terms_days
    return {"contact": contact}


def contact_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(contact_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def tax_rates(taxes: Iterable[LineTax], mapping: MappingConfig) -> dict[str, str]:
    """``sales_tax_rate`` / ``second_sales_tax_rate`` of a line (percentages)."""
    slots: dict[str, Decimal] = {}
    for tax in taxes:
        rate = mapping.tax_codes.get(tax.code)
        if rate is None:
            raise PermanentError(f"mapping.tax_codes names no FreeAgent sales tax rate for {tax.code!r}")
        slot, _, value = rate.rpartition(":")
        field = "second_sales_tax_rate" if slot == "second" else "sales_tax_rate"
        slots[field] = slots.get(field, ZERO) + Decimal(value)
    return {"sales_tax_rate": "0"} | {field: money(rate) for field, rate in slots.items()}


def category(kind: LineKind, mapping: MappingConfig) -> str:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    if kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account" and mapping.discount_account:
        return mapping.discount_account
    code = mapping.income_accounts.get(income_kind(kind)) or mapping.income_accounts.get(LineKind.PART)
    if not code:
        raise PermanentError(f"mapping.income_accounts names no FreeAgent income category for {kind.value} lines")
    return code


def _item(description: str, kind: LineKind, quantity: Decimal, price: Decimal, taxes: Iterable[LineTax],
          mapping: MappingConfig, uri: Uri) -> dict[str, Any]:
    return {"item_type": ITEM_TYPES[kind], "quantity": money(quantity), "price": money(price),
            "description": description, "category": uri("categories", category(kind, mapping))
            } | tax_rates(taxes, mapping)


def invoice_item(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig, uri: Uri) -> dict[str, Any]:
    """FreeAgent prices exclude tax: a tax-inclusive line goes as one unit at its net amount (the shop's
    quantity stays in the description)."""
    if event.tax_inclusive:
        net = line.amount - sum((t.amount for t in line.taxes), ZERO)
        text = f"{line_text(line, 200)} ({line.quantity:f} @ {line.unit_price:f} incl. tax)"
        return _item(text, line.kind, Decimal("1"), net, line.taxes, mapping, uri)
    return _item(line_text(line, 250), line.kind, line.quantity, line.unit_price, line.taxes, mapping, uri)


def due_date(event: InvoiceEvent, day: date) -> date:
    """Fleet customers: due from their terms; everyone else: the shop's due date (never before the date)."""
    if event.customer.payment_terms_days:
        return day + timedelta(days=event.customer.payment_terms_days)
    return max(event.due_date or day, day)


def invoice_payload(event: InvoiceEvent, contact_id: str, mapping: MappingConfig, uri: Uri,
                    posted_on: date | None = None, replaced: Iterable[str] = ()) -> dict[str, Any]:
    """The whole invoice. An update names the items it replaces (``replaced``: their URIs) with
    ``_destroy`` so the lines become the shop's. ``posted_on``: the first open day of locked books."""
    day = posted_on or event.issue_date
    comments = invoice_memo(event, 2000)
    if posted_on is not None:
        comments = f"{comments}; shop date {event.issue_date} is in a locked period"
    due = due_date(event, day)
    items = [{"url": url, "_destroy": True} for url in replaced]
    items += [invoice_item(line, event, mapping, uri) for line in event.lines]
    return {"invoice": {"contact": uri("contacts", contact_id), "reference": event.number,
                        "dated_on": day.isoformat(), "due_on": due.isoformat(),
                        "payment_terms_in_days": (due - day).days, "currency": event.currency,
                        "comments": comments, "invoice_items": items}}


def payment_reference(payment: Payment) -> str:
    return f"LW{payment.id}"


def explanation_payload(payment: Payment, invoice_id: str, mapping: MappingConfig, uri: Uri,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A payment is money in on a bank account explained as this invoice's receipt (``paid_invoice``)."""
    bank = payment_account(payment, mapping, "FreeAgent", "bank account")
    return {"bank_transaction_explanation": {
        "bank_account": uri("bank_accounts", bank), "dated_on": (posted_on or payment.received_at.date()).isoformat(),
        "gross_value": money(payment.amount), "paid_invoice": uri("invoices", invoice_id),
        "description": f"{payment_reference(payment)} {payment.method} payment"}}


def credit_note_reference(event: InvoiceEvent, refund_id: str) -> str:
    return f"{event.number}-CN{refund_id}"


def _credit_note(contact_id: str, reference: str, day: date, comments: str, items: list[dict[str, Any]],
                 currency: str, uri: Uri) -> dict[str, Any]:
    return {"credit_note": {"contact": uri("contacts", contact_id), "reference": reference,
                            "dated_on": day.isoformat(), "due_on": day.isoformat(), "payment_terms_in_days": 0,
                            "currency": currency, "comments": comments[:2000], "credit_note_items": items}}


def credit_note_payload(event: InvoiceEvent, refund: Refund, contact_id: str, mapping: MappingConfig, uri: Uri,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund as a credit note: one item at minus the refunded amount, at the refunded line's rates; a goodwill
    refund (no line) that carries tax at the rates of the invoice's largest taxed line (issue #20)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    kind = line.kind if line else LineKind.PART
    description = f"Returned: {line_text(line, 200)}" if line else (refund.reason or "Refund")
    taxed = line or references.main_taxed_line(event, refund)
    item = _item(description, kind, Decimal("1"), -refund.amount, taxed.taxes if taxed and refund.tax_amount else (),
                 mapping, uri)
    return _credit_note(contact_id, credit_note_reference(event, str(refund.id)),
                        posted_on or refund.created_at.date(),
                        f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}", [item], event.currency, uri)


def refund_explanation_payload(event: InvoiceEvent, refund: Refund, credit_note_id: str, amount: Decimal,
                               reference: str, mapping: MappingConfig, uri: Uri, day: date) -> dict[str, Any]:
    """Money paid back: money out (a negative ``gross_value``) on the bank account of the payment the refund pays
    back, explained as the credit note's refund (``paid_invoice`` naming the credit note, as FreeAgent's staff
    describe on api-discuss "Record manual payment / net off credit note")."""
    bank = references.refund_account(event, refund, mapping, "FreeAgent", "bank account")
    return {"bank_transaction_explanation": {
        "bank_account": uri("bank_accounts", bank), "dated_on": day.isoformat(), "gross_value": money(-amount),
        "paid_invoice": uri("credit_notes", credit_note_id), "description": f"{reference} refund paid back"}}


def reconciliation_payload(invoice_id: str, credit_note_id: str, amount: Decimal, day: date, uri: Uri
                           ) -> dict[str, Any]:
    """``amount`` of the credit note set against the invoice (in the documents' own currency)."""
    return {"credit_note_reconciliation": {"gross_value": money(amount), "dated_on": day.isoformat(),
                                           "invoice": uri("invoices", invoice_id),
                                           "credit_note": uri("credit_notes", credit_note_id)}}


def adjustment_reference(event: InvoiceEvent, sequence: int, kind: str) -> str:
    """``<number>-A<n>`` (increase, an invoice) or ``<number>-C<n>`` (decrease, a credit note)."""
    return f"{event.number}-{'A' if kind == 'increase' else 'C'}{sequence}"


def adjustment_payload(event: InvoiceEvent, kind: str, sequence: int, contact_id: str, net: Decimal, tax: Decimal,
                       day: date, original_id: str | None, reason: str, mapping: MappingConfig, uri: Uri
                       ) -> tuple[str, dict[str, Any]]:
    """(resource, body): the difference between what FreeAgent holds and the shop's version, dated in the first
    open period. FreeAgent computes tax from a rate, so the taxed part is the net that gives ``tax`` at the
    rates of the invoice's first taxed line (exact for one rate; two rates may round a cent apart) and the
    rest of the net goes untaxed."""
    taxes = next((ln.taxes for ln in event.lines if ln.taxes), ()) if tax else ()
    rates = tax_rates(taxes, mapping)
    combined = sum((Decimal(r) for r in rates.values()), ZERO)
    taxed = (tax * 100 / combined).quantize(Decimal("0.01")) if combined else ZERO
    sign = 1 if kind == "increase" else -1
    text = f"Adjustment to invoice {event.number} ({reason})"[:250]
    items = [_item(text, LineKind.PART, Decimal("1"), sign * part, part_taxes, mapping, uri)
             for part, part_taxes in ((taxed, taxes), (net - taxed, ())) if part]
    reference = adjustment_reference(event, sequence, kind)
    comments = (f"Adjustment {sequence} to shop invoice {event.number} v{event.version}"
                f"{f' (FreeAgent invoice {original_id})' if original_id else ''}: {reason}; the original is dated "
                "in a locked period")
    if kind == "decrease":
        return "credit_notes", _credit_note(contact_id, reference, day, comments, items, event.currency, uri)
    return "invoices", {"invoice": {"contact": uri("contacts", contact_id), "reference": reference,
                                    "dated_on": day.isoformat(), "due_on": day.isoformat(), "payment_terms_in_days": 0,
                                    "currency": event.currency, "comments": comments[:2000], "invoice_items": items}}
