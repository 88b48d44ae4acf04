"""Canonical invoice, payment and refund → Xero Accounting API payloads (field names as in Xero's OpenAPI).

Pure functions of the event and the mapping configuration; the contact id comes in resolved. The shop's
amounts are kept: every line carries its explicit ``TaxAmount`` (the sum of the line's tax components, as
the shop rounded them per line per component) so Xero's total equals the shop's to the cent.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from connectors import jsonmoney
from connectors.base import PermanentError, income_kind
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

NO_TAX = "NONE"  # Xero's tax type for untaxed lines ("Tax Exempt" / "No Tax")
PAYMENT_PREFIX = "LW"
CREDIT_NOTE_PREFIX = "LW-CN-"
REFERENCE_MAX = 255


def contact_name(customer: Customer) -> str:
    # Contact names are unique in a Xero organisation: two shop customers of the same name are kept
    # apart by the shop's customer id.
    return f"{customer.name} (#{customer.id})"[:255]


def contact_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": contact_name(customer), "ContactNumber": str(customer.id)}
    if customer.email:
        body["EmailAddress"] = customer.email[:255]
    if customer.phone:
        body["Phones"] = [{"PhoneType": "DEFAULT", "PhoneNumber": customer.phone[:50]}]
    if customer.billing_address:
        body["Addresses"] = [{"AddressType": "STREET", "AddressLine1": customer.billing_address[:500]}]
    return body


def contact_hash(customer: Customer) -> str:
    return hashlib.sha256(jsonmoney.dumps(contact_payload(customer))).hexdigest()[:16]


def account_code(kind: LineKind, mapping: MappingConfig) -> str:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    code = mapping.income_accounts.get(kind) or mapping.income_accounts.get(income_kind(kind)) \
        or mapping.income_accounts.get(LineKind.PART)
    if not code:
        raise PermanentError(f"mapping.income_accounts has no account for line kind {kind.value!r}")
    return code


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


def line_item(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    text = f"{line.part_number} {line.description}" if line.part_number else line.description
    item: dict[str, Any] = {
        "Description": text[:4000],
        "Quantity": line.quantity,
        "UnitAmount": line.unit_price,  # 4 dp: requests carry unitdp=4
        "LineAmount": line.amount,
        "AccountCode": account_code(line.kind, mapping),
        "TaxType": tax_type([t.code for t in line.taxes], mapping),
        "TaxAmount": sum((t.amount for t in line.taxes), Decimal("0.00")),
    }
    configured_item = mapping.items.get(line.kind)
    if configured_item:
        item["ItemCode"] = configured_item
    track = tracking(event, mapping)
    if track:
        item["Tracking"] = track
    return item


def invoice_payload(event: InvoiceEvent, contact_id: str, mapping: MappingConfig) -> dict[str, Any]:
    issued = event.issue_date or event.emitted_at.date()
    body: dict[str, Any] = {
        "Type": "ACCREC",
        "Contact": {"ContactID": contact_id},
        "InvoiceNumber": event.number,
        "Reference": (event.job.number if event.job else "")[:REFERENCE_MAX],
        "Date": issued.isoformat(),
        "DueDate": (event.due_date or issued).isoformat(),
        "LineAmountTypes": "Inclusive" if event.tax_inclusive else "Exclusive",
        "Status": "AUTHORISED",
        "CurrencyCode": event.currency,
        "LineItems": [line_item(line, event, mapping) for line in sorted(event.lines, key=lambda ln: ln.position)],
    }
    return body


def invoice_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(jsonmoney.dumps(payload)).hexdigest()[:24]


def payment_reference(payment: Payment) -> str:
    return f"{PAYMENT_PREFIX}{payment.id}"


def payment_payload(payment: Payment, invoice_id: str, mapping: MappingConfig) -> dict[str, Any]:
    account = mapping.payment_accounts.get(payment.method)
    if not account:
        raise PermanentError(f"mapping.payment_accounts has no account for payment method {payment.method!r}")
    return {"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": account}, "Amount": payment.amount,
            "Date": payment.received_at.date().isoformat(), "Reference": payment_reference(payment)}


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
    item: dict[str, Any] = {"Description": f"{description} (invoice {event.number})"[:4000], "Quantity": Decimal("1"),
                            "UnitAmount": refund.amount, "LineAmount": refund.amount,
                            "AccountCode": account_code(kind, mapping), "TaxType": tax_type(codes, mapping),
                            "TaxAmount": refund.tax_amount}
    track = tracking(event, mapping)
    if track:
        item["Tracking"] = track
    return {"Type": "ACCRECCREDIT", "Contact": {"ContactID": contact_id}, "CreditNoteNumber": credit_note_number(refund),
            "Reference": event.number, "Date": refund.created_at.date().isoformat(), "Status": "AUTHORISED",
            "LineAmountTypes": "Exclusive", "CurrencyCode": event.currency, "LineItems": [item]}


def allocation_payload(invoice_id: str, amount: Decimal, on: str) -> dict[str, Any]:
    return {"Allocations": [{"Invoice": {"InvoiceID": invoice_id}, "Amount": amount, "Date": on}]}
