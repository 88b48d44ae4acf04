"""Canonical events → Wave GraphQL input variables (field names as in ``schema.SDL``).

Pure functions of the event and the mapping configuration; ids come in resolved. Every Wave invoice line names a
product (no free-text line): one product per line kind (or per part number), created once with the kind's income
account. Wave computes each line's tax from the sales taxes named on it (the line tax ``amount`` is deprecated):
the mapping names a Wave sales tax per shop tax code, ``taxes`` is always sent (an omitted list would apply the
product's default taxes). Amounts are Decimals, dates ISO dates.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, invoice_memo, line_text, payment_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")
PRODUCT_NAMES = {LineKind.PART: "Parts", LineKind.LABOUR: "Labour", LineKind.FEE: "Shop fees",
                 LineKind.SUBLET: "Sublet work", LineKind.DISCOUNT: "Discounts", LineKind.CORE_CHARGE: "Core charges",
                 LineKind.CORE_RETURN: "Core returns"}
# Shop payment method -> Wave's InvoicePaymentMethod (names as third-party clients send them; not confirmed).
PAYMENT_METHODS = {"card": "CREDIT_CARD", "cash": "CASH", "check": "CHEQUE", "cheque": "CHEQUE", "eft": "BANK_TRANSFER",
                   "transfer": "BANK_TRANSFER", "paypal": "PAYPAL"}
REVERSAL = "Reversal of payment "


def customer_marker(customer: Customer) -> str:
    """Ours carry the shop's customer id in ``internalNotes`` (a retry finds what it made; never a look-alike)."""
    return f"LWC{customer.id}"


def customer_input(customer: Customer) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": customer.name[:255], "internalNotes": customer_marker(customer)}
    if customer.email:
        fields["email"] = customer.email
    if customer.phone:
        fields["phone"] = customer.phone
    if customer.billing_address:
        fields["address"] = {"addressLine1": customer.billing_address[:255]}
    return fields


def customer_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_input(customer), sort_keys=True).encode()).hexdigest()[:16]


def product_key(line: InvoiceLine, mapping: MappingConfig) -> tuple[str, str]:
    """(entity key, product name): per line kind, or per part number when the mapping says so."""
    if mapping.item_mode == "per_part_number" and line.part_number and line.kind == LineKind.PART:
        return f"part:{line.part_number}", line.part_number[:255]
    return f"kind:{line.kind.value}", PRODUCT_NAMES.get(line.kind, line.kind.value.title())


def product_input(name: str, kind: LineKind, mapping: MappingConfig) -> dict[str, Any]:
    """A sellable product at price 0 (every line sends its own price) on the kind's income account."""
    account = mapping.income_accounts.get(kind) or mapping.income_accounts.get(LineKind.PART)
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        account = mapping.core_account
    if not account:
        raise PermanentError(f"mapping.income_accounts names no Wave income account for {kind.value} lines")
    return {"name": name, "unitPrice": ZERO, "incomeAccountId": account, "description": f"Shop {name.lower()}"}


def sales_taxes(line: InvoiceLine, mapping: MappingConfig) -> list[dict[str, Any]]:
    taxes = []
    for tax in line.taxes:
        if tax.code not in mapping.tax_codes:
            raise PermanentError(f"mapping.tax_codes names no Wave sales tax for {tax.code!r}")
        taxes.append({"salesTaxId": mapping.tax_codes[tax.code]})
    return taxes


def line_item(line: InvoiceLine, product_id: str, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    """Wave's prices exclude tax: a tax-inclusive line goes as one unit at its net amount."""
    item: dict[str, Any] = {"productId": product_id, "description": line_text(line, 255),
                            "quantity": line.quantity, "unitPrice": line.unit_price,
                            "taxes": sales_taxes(line, mapping)}
    if event.tax_inclusive:
        item.update(quantity=Decimal("1"), unitPrice=line.amount - sum((t.amount for t in line.taxes), ZERO),
                    description=f"{line.quantity} x {line_text(line, 230)}")
    return item


def invoice_fields(event: InvoiceEvent, customer_id: str, item_ids: dict[int, str], mapping: MappingConfig
                   ) -> dict[str, Any]:
    """What invoiceCreate and invoicePatch share (a patch with ``items`` replaces the lines)."""
    fields: dict[str, Any] = {
        "customerId": customer_id, "invoiceNumber": event.number, "invoiceDate": event.issue_date.isoformat(),
        "memo": invoice_memo(event, 1000), "items": [line_item(ln, item_ids[ln.id], event, mapping) for ln in event.lines]}
    if event.job:
        fields["poNumber"] = event.job.number[:255]
    due = event.due_date or event.issue_date
    fields["dueDate"] = max(due, event.issue_date).isoformat()
    return fields


def invoice_create_input(event: InvoiceEvent, business_id: str, customer_id: str, item_ids: dict[int, str],
                         mapping: MappingConfig) -> dict[str, Any]:
    # SAVED is Wave's approved, unsent invoice: payments can be recorded on it; Wave never emails it (the shop
    # hands its invoices over itself).
    return {"businessId": business_id, "status": "SAVED", "currency": event.currency,
            **invoice_fields(event, customer_id, item_ids, mapping)}


def payment_reference(event: InvoiceEvent, payment_id: str) -> str:
    """A payment's memo: the shop's invoice number (to find the invoice again) and the shop's payment id."""
    return f"{event.number}#LWP{payment_id}"


def application_reference(event: InvoiceEvent, refund_id: str) -> str:
    return f"{event.number}#LWA{refund_id}"


def settlement_reference(event: InvoiceEvent, refund_id: str) -> str:
    """The memo of the money paid back on a refund's negative invoice: that invoice's number (to find it again)
    and ``LWP<refund id>``."""
    return f"{credit_note_number(event, refund_id)}#{references.settlement_reference(refund_id)}"


def invoice_number_of(reference: str) -> str:
    return reference.rsplit("#", 1)[0]


def credit_note_number(event: InvoiceEvent, refund_id: str) -> str:
    return f"CN{refund_id}-{event.number}"


def credit_note_number_of(application_reference: str) -> str:
    number, _, refund = application_reference.rpartition("#LWA")
    return f"CN{refund}-{number}"


def payment_input(invoice_id: str, account_id: str, amount: Decimal, day: date, method: str, memo: str,
                  exchange_rate: Decimal) -> dict[str, Any]:
    """``exchange_rate``: required by Wave; the rate Wave holds on the invoice paid (currency.py)."""
    return {"invoiceId": invoice_id, "paymentAccountId": account_id, "amount": amount, "paymentDate": day.isoformat(),
            "paymentMethod": method, "exchangeRate": exchange_rate, "memo": memo[:255]}


def received_payment_input(event: InvoiceEvent, payment: Payment, invoice_id: str, mapping: MappingConfig,
                           exchange_rate: Decimal) -> dict[str, Any]:
    account = payment_account(payment, mapping, "Wave", "payment account")
    return payment_input(invoice_id, account, payment.amount, payment.received_at.date(),
                         PAYMENT_METHODS.get(payment.method, "OTHER"), payment_reference(event, str(payment.id)),
                         exchange_rate)


def credit_note_input(event: InvoiceEvent, refund: Refund, business_id: str, customer_id: str, product_id: str,
                      mapping: MappingConfig) -> dict[str, Any]:
    """Wave has no credit note: a refund is a negative invoice numbered ``CN<refund>-<invoice>`` on the returned
    line's product, taxed with the line's sales taxes when the refund carries tax (Wave computes the amount); a
    goodwill refund without a line with the sales taxes of the invoice's main taxed line (issue #20: its tax is
    posted as tax, never folded into an untaxed amount)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    taxed = line or references.main_taxed_line(event, refund)
    taxes = sales_taxes(taxed, mapping) if taxed and refund.tax_amount else []
    description = f"Returned: {line_text(line, 240)}" if line else (refund.reason or "Refund")[:255]
    return {"businessId": business_id, "customerId": customer_id, "status": "SAVED", "currency": event.currency,
            "invoiceNumber": credit_note_number(event, str(refund.id)), "invoiceDate": refund.created_at.date().isoformat(),
            "memo": f"Credit for refund {refund.id} ({refund.kind}) of shop invoice {event.number}",
            "items": [{"productId": product_id, "description": description, "quantity": Decimal("1"),
                       "unitPrice": -refund.amount, "taxes": taxes}]}
