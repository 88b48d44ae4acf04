"""Canonical invoice, payment and refund → Xero Accounting API payloads (field names as in Xero's OpenAPI).

Pure functions of the event and the mapping configuration; the contact id comes in resolved. The shop's
amounts are kept: every line carries its explicit ``TaxAmount`` (the sum of the line's tax components, as
the shop rounded them per line per component) so Xero's total equals the shop's to the cent.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import adjustments, jsonmoney, references
from connectors.base import PermanentError, income_kind, line_text, payment_account, required_posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

NO_TAX = "NONE"  # Xero's tax type for untaxed lines ("Tax Exempt" / "No Tax")
CREDIT_NOTE_PREFIX = "LW-CN-"
REFERENCE_MAX = 255
ITEM_CODE_MAX = 30  # Item.Code: "max length = 30"
ITEM_NAME_MAX = 50  # Item.Name: "max length = 50"


def contact_name(customer: Customer) -> str:
    return references.customer_label(customer.id, customer.name, 255)  # unique in a Xero organisation


def contact_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": contact_name(customer), "ContactNumber": str(customer.id)}
    if customer.email:
        body["EmailAddress"] = customer.email[:255]
    if customer.phone:
        body["Phones"] = [{"PhoneType": "DEFAULT", "PhoneNumber": customer.phone[:50]}]
    if customer.billing_address:
        body["Addresses"] = [{"AddressType": "STREET", "AddressLine1": customer.billing_address[:500]}]
    if customer.payment_terms_days:
        # Fleet (account) customers: their sales terms on the contact, "N day(s) after the invoice date".
        body["PaymentTerms"] = {"Sales": {"Day": customer.payment_terms_days, "Type": "DAYSAFTERBILLDATE"}}
    return body


def due_date(event: InvoiceEvent) -> date:
    """Fleet customers: the due date from their terms; everyone else: the shop's due date (or the issue date)."""
    issued = references.issued_on(event)
    return references.terms_due_date(event, issued) or issued


def contact_hash(customer: Customer) -> str:
    return hashlib.sha256(jsonmoney.dumps(contact_payload(customer))).hexdigest()[:16]


def account_code(kind: LineKind, mapping: MappingConfig) -> str:
    """The account a line posts to (``base.posting_account``; the part lines' when the kind has none)."""
    return required_posting_account(kind, mapping, "Xero")


def tax_type(codes: list[str], mapping: MappingConfig) -> str:
    """The Xero tax type (tax rate) for a line taxed by ``codes``. A Xero line takes one tax rate, which may
    hold several components: a combination maps as "GST+PST" (codes sorted), else every code must map to
    the same tax type."""
    if not codes:
        return mapping.tax_codes.get(NO_TAX, NO_TAX)  # untaxed lines; a mapping may name another rate
    combined = "+".join(sorted(codes))
    if combined in mapping.tax_codes:
        return mapping.tax_codes[combined]
    mapped = {mapping.tax_codes.get(c) for c in codes}
    if len(mapped) == 1 and None not in mapped:
        return mapped.pop()
    raise PermanentError(f"mapping.tax_codes maps no Xero tax rate for {combined!r} "
                         f"(map {combined!r}, or each code to one tax rate holding all components)")


def tracking(event: InvoiceEvent, mapping: MappingConfig) -> list[dict[str, str]]:
    value = mapping.location_tracking.get(event.location.code)
    if not value:
        return []
    if ":" not in value:
        raise PermanentError(f"mapping.location_tracking[{event.location.code!r}] must be 'Category:Option'")
    name, option = value.split(":", 1)
    return [{"Name": name, "Option": option}]


def item_line(description: str, quantity: Decimal, unit: Decimal, amount: Decimal, account: str, tax_rate: str,
              tax: Decimal, track: list[dict[str, str]], code: str | None = None) -> dict[str, Any]:
    """One LineItem with its explicit tax (unit amounts at 4 dp: requests carry unitdp=4)."""
    item: dict[str, Any] = {"Description": description[:4000], "Quantity": quantity, "UnitAmount": unit,
                            "LineAmount": amount, "AccountCode": account, "TaxType": tax_rate, "TaxAmount": tax}
    return item | ({"ItemCode": code} if code else {}) | ({"Tracking": track} if track else {})


def line_item(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    return item_line(line_text(line, 4000), line.quantity, line.unit_price, line.amount, account_code(line.kind, mapping),
                     tax_type([t.code for t in line.taxes], mapping), sum((t.amount for t in line.taxes), Decimal("0.00")),
                     tracking(event, mapping), item_code(line, mapping))


def invoice_payload(event: InvoiceEvent, contact_id: str, mapping: MappingConfig) -> dict[str, Any]:
    issued = references.issued_on(event)
    body: dict[str, Any] = {
        "Type": "ACCREC",
        "Contact": {"ContactID": contact_id},
        "InvoiceNumber": event.number,
        "Reference": (event.job.number if event.job else "")[:REFERENCE_MAX],
        "Date": issued.isoformat(),
        "DueDate": due_date(event).isoformat(),
        "LineAmountTypes": "Inclusive" if event.tax_inclusive else "Exclusive",
        "Status": "AUTHORISED",
        "CurrencyCode": event.currency,
        "LineItems": [line_item(line, event, mapping) for line in sorted(event.lines, key=lambda ln: ln.position)],
    }
    return body


def part_item_code(part_number: str) -> str:
    """The Xero Item code of a part number: the part number itself, or when longer than Xero's 30 characters
    its first 21 characters and a hash of the whole (stable, so every invoice finds the same item)."""
    return references.short_code(part_number, ITEM_CODE_MAX, keep=21)


def item_code(line: InvoiceLine, mapping: MappingConfig) -> str | None:
    """``item_mode: per_part_number``: the line's part number's own Item; otherwise (and for lines without a
    part number) the generic Item configured for the line kind in ``mapping.items``, if any."""
    if mapping.item_mode == "per_part_number" and line.part_number:
        return part_item_code(line.part_number)
    return mapping.items.get(line.kind) or mapping.items.get(income_kind(line.kind))


def item_payload(line: InvoiceLine, mapping: MappingConfig) -> dict[str, Any]:
    """A sold (not purchased, not tracked) Item for a part number, posting to its line kind's account."""
    code = part_item_code(line.part_number or "")
    return {"Code": code, "Name": (line.part_number or code)[:ITEM_NAME_MAX], "Description": line.description[:4000],
            "IsSold": True, "IsPurchased": False,
            "SalesDetails": {"AccountCode": account_code(line.kind, mapping),
                             "TaxType": tax_type([t.code for t in line.taxes], mapping)}}


def payment_payload(payment: Payment, invoice_id: str, mapping: MappingConfig) -> dict[str, Any]:
    """One Xero payment applied to ``invoice_id``."""
    account = payment_account(payment, mapping, "Xero")
    return {"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": account}, "Amount": payment.amount,
            "Date": payment.received_at.date().isoformat(), "Reference": references.payment_reference(payment.id)}


def credit_refund_payload(event: InvoiceEvent, refund: Refund, credit_note_id: str, amount: Decimal,
                          reference: str, mapping: MappingConfig) -> dict[str, Any]:
    """Money paid back on a credit note, from the account of the payment it refunds (``refund.payment_id``)."""
    return {"CreditNote": {"CreditNoteID": credit_note_id},
            "Account": {"Code": references.refund_account(event, refund, mapping, "Xero")}, "Amount": amount,
            "Date": refund.created_at.date().isoformat(), "Reference": reference}


def credit_note_number(refund: Refund) -> str:
    return f"{CREDIT_NOTE_PREFIX}{refund.id}"


def credit_note_payload(refund: Refund, event: InvoiceEvent, contact_id: str, mapping: MappingConfig
                        ) -> dict[str, Any]:
    """A returned part or refund as an ACCRECCREDIT credit note: the refunded net amount on the account of
    the line it refunds, with the shop's tax on it, referencing the invoice by its number."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    kind = line.kind if line is not None else LineKind.PART
    codes = [t.code for t in line.taxes] if line is not None and refund.tax_amount else []
    description = refund.reason or ("Returned part" if refund.kind == "return" else "Refund")
    if line is not None:
        description = f"{description}: {line.part_number or ''} {line.description}".replace("  ", " ")
    item = item_line(f"{description} (invoice {event.number})", Decimal("1"), refund.amount, refund.amount,
                     account_code(kind, mapping), tax_type(codes, mapping), refund.tax_amount, tracking(event, mapping))
    return {"Type": "ACCRECCREDIT", "Contact": {"ContactID": contact_id}, "CreditNoteNumber": credit_note_number(refund),
            "Reference": event.number, "Date": refund.created_at.date().isoformat(), "Status": "AUTHORISED",
            "LineAmountTypes": "Exclusive", "CurrencyCode": event.currency, "LineItems": [item]}


def allocation_payload(invoice_id: str, amount: Decimal, on: str) -> dict[str, Any]:
    return {"Allocations": [{"Invoice": {"InvoiceID": invoice_id}, "Amount": amount, "Date": on}]}


# --- closed-period adjustments (the arithmetic is in connectors/adjustments.py) ------------------------------

def group_key(account: str, tax: str) -> str:
    return f"{account}|{tax}"


def event_groups(event: InvoiceEvent, mapping: MappingConfig) -> adjustments.Groups:
    """The shop's version per (account, tax rate): net amount and tax."""
    def row(line: InvoiceLine) -> tuple[str, Decimal, Decimal]:
        tax = sum((t.amount for t in line.taxes), Decimal("0.00"))
        key = group_key(account_code(line.kind, mapping), tax_type([t.code for t in line.taxes], mapping))
        return key, line.amount - tax if event.tax_inclusive else line.amount, tax
    return adjustments.grouped(map(row, event.lines))


def document_groups(document: dict[str, Any], sign: int = 1) -> adjustments.Groups:
    """What a Xero invoice or credit note (as read back) holds per (account, tax rate)."""
    inclusive = document.get("LineAmountTypes") == "Inclusive"
    amounts = [(item, Decimal(str(item.get("LineAmount") or 0)), Decimal(str(item.get("TaxAmount") or 0)))
               for item in document.get("LineItems") or []]
    return adjustments.grouped(((group_key(str(item.get("AccountCode")), str(item.get("TaxType") or NO_TAX)),
                                 amount - tax if inclusive else amount, tax) for item, amount, tax in amounts), sign)


def adjustment_payload(event: InvoiceEvent, kind: str, seq: int, contact_id: str,
                       lines: dict[str, tuple[Decimal, Decimal]], day: date, mapping: MappingConfig,
                       reason: str) -> dict[str, Any]:
    """One adjustment document dated the first open day: an ACCREC invoice (increase) or an ACCRECCREDIT
    credit note (decrease), one line per (account, tax rate) with its explicit tax, numbered after the
    original and referencing it (Reference = the original's invoice number)."""
    text, track = f"Adjustment {seq} to invoice {event.number} v{event.version}: {reason}", tracking(event, mapping)
    items = [item_line(text, Decimal("1"), net, net, *key.split("|", 1), tax, track)
             for key, (net, tax) in sorted(lines.items())]
    number = references.adjustment_number(event.number, seq, kind)
    common = {"Contact": {"ContactID": contact_id}, "Reference": event.number[:REFERENCE_MAX],
              "Date": day.isoformat(), "Status": "AUTHORISED", "LineAmountTypes": "Exclusive",
              "CurrencyCode": event.currency, "LineItems": items}
    if kind == "increase":
        return {"Type": "ACCREC", "InvoiceNumber": number, "DueDate": max(due_date(event), day).isoformat(), **common}
    return {"Type": "ACCRECCREDIT", "CreditNoteNumber": number, **common}
