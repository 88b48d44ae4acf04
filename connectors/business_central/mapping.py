"""Canonical events → Business Central API v2.0 bodies (property names as in Microsoft's v2.0 resource pages).

Pure functions of the event and the mapping; ids come in resolved. Lines post on G/L accounts (``lineType``
"Account", ``lineObjectNumber`` = the account number the mapping names), one ``taxCode`` per line: Business
Central computes the tax itself (a line's tax amounts are read-only), so the code for a combination of
components is named by the mapping as ``"GST+PST"`` (codes sorted), a line without tax by ``"none"``.
``pricesIncludeTax`` comes from the customer and is read-only: a tax-inclusive shop line is sent as one unit
at its net amount.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, income_kind, line_text
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")


def customer_number(customer: Customer) -> str:
    """Our customers' ``number`` (Code[20], unique): the shop's customer id, so a retry finds what it made."""
    return f"LWC{customer.id}"


def customer_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"number": customer_number(customer), "displayName": customer.name[:100],
                            "type": "Person"}
    if customer.email:
        body["email"] = customer.email[:80]
    if customer.phone:
        body["phoneNumber"] = customer.phone[:30]
    if customer.billing_address:
        body["addressLine1"] = customer.billing_address[:100]
    return body


def customer_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def tax_code(taxes: Iterable[LineTax], mapping: MappingConfig) -> str:
    key = "+".join(sorted({t.code for t in taxes})) or "none"
    if key not in mapping.tax_codes:
        raise PermanentError(f"mapping.tax_codes names no Business Central tax code for {key!r}")
    return mapping.tax_codes[key]


def account_number(kind: LineKind, mapping: MappingConfig) -> str:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    if kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account" and mapping.discount_account:
        return mapping.discount_account
    account = mapping.income_accounts.get(income_kind(kind)) or mapping.income_accounts.get(LineKind.PART)
    if not account:
        raise PermanentError(f"mapping.income_accounts names no G/L account for {kind.value} lines")
    return account


def _account_line(description: str, account: str, quantity: Decimal, price: Decimal, code: str) -> dict[str, Any]:
    return {"lineType": "Account", "lineObjectNumber": account, "description": description[:100],
            "quantity": quantity, "unitPrice": price, "taxCode": code}


def invoice_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    account, code = account_number(line.kind, mapping), tax_code(line.taxes, mapping)
    if event.tax_inclusive:  # prices including tax are the customer's setting: one unit at the net amount
        net = line.amount - sum((t.amount for t in line.taxes), ZERO)
        return _account_line(f"{line.quantity} x {line_text(line, 90)}", account, Decimal("1"), net, code)
    return _account_line(line_text(line, 100), account, line.quantity, line.unit_price, code)


def rounding_line(difference: Decimal, account: str, mapping: MappingConfig) -> dict[str, Any]:
    """The shop's total less Business Central's, as one non-taxable line on the tax rounding account."""
    return _account_line("Tax rounding: the shop rounds tax per line and component", account, Decimal("1"),
                         difference, tax_code((), mapping))


def due_date(event: InvoiceEvent) -> date | None:
    if event.customer.payment_terms_days and event.issue_date:
        return event.issue_date + timedelta(days=event.customer.payment_terms_days)
    return event.due_date


def invoice_payload(event: InvoiceEvent, customer_id: str, mapping: MappingConfig, posted_on: date | None = None
                    ) -> dict[str, Any]:
    """A draft invoice with its lines (deep insert); the shop's number in ``externalDocumentNumber``."""
    day = posted_on or event.issue_date
    body: dict[str, Any] = {"customerId": customer_id, "externalDocumentNumber": event.number[:35],
                            "invoiceDate": day.isoformat(), "postingDate": day.isoformat(),
                            "currencyCode": event.currency,
                            "salesInvoiceLines": [invoice_line(ln, event, mapping) for ln in event.lines]}
    if event.job and event.job.number:
        body["customerPurchaseOrderReference"] = event.job.number[:35]
    due = due_date(event)
    if due:
        body["dueDate"] = max(due, day).isoformat()
    return body


def payment_reference(payment: Payment) -> str:
    return f"LW{payment.id}"[:20]


def payment_payload(event: InvoiceEvent, payment: Payment, invoice_id: str, customer_id: str,
                    posted_on: date | None = None) -> dict[str, Any]:
    """A customer payment journal line applied to this invoice (never left unapplied)."""
    return {"customerId": customer_id, "postingDate": (posted_on or payment.received_at.date()).isoformat(),
            "documentNumber": payment_reference(payment), "externalDocumentNumber": (payment.reference or "")[:35],
            "amount": payment.amount, "appliesToInvoiceId": invoice_id,
            "description": f"{payment.method} payment of shop invoice {event.number}"[:100]}


def adjustment_number(document_number: str, sequence: int, kind: str) -> str:
    """An adjustment's ``externalDocumentNumber`` (Text[35]): the invoice's number, cut so ``-A<n>``/``-C<n>`` fits."""
    tag = references.adjustment_tag(kind, sequence)
    return f"{document_number[:35 - len(tag) - 1]}-{tag}"


def adjustment_lines(held: Iterable[tuple[int, Iterable[dict[str, Any]]]], wanted: Iterable[dict[str, Any]],
                     sign: int, rounding_account: str | None) -> list[dict[str, Any]]:
    """The lines of an adjustment document: per G/L account and tax code, what the shop's lines (``wanted``) hold
    less what the documents Business Central holds for the invoice hold (``held``: (+1 the invoice and each
    increase, -1 each decrease credit memo), their lines as read), as one line each, ``sign`` -1 on a credit memo.
    Lines on the tax rounding account are tax, not sales: Business Central taxes the adjustment's lines itself and
    the rounding line makes its total the engine's."""
    net: dict[tuple[str, str], Decimal] = {}
    for held_sign, lines in held:
        for ln in lines:
            if rounding_account is None or ln.get("lineObjectNumber") != rounding_account:
                key = (str(ln.get("lineObjectNumber")), str(ln.get("taxCode") or ""))
                net[key] = net.get(key, ZERO) - held_sign * Decimal(str(ln.get("amountExcludingTax") or 0))
    for ln in wanted:
        key = (str(ln["lineObjectNumber"]), str(ln.get("taxCode") or ""))
        amount = (Decimal(str(ln["quantity"])) * Decimal(str(ln["unitPrice"]))).quantize(Decimal("0.01"), ROUND_HALF_UP)
        net[key] = net.get(key, ZERO) + amount
    return [_account_line(f"Adjustment: the shop's invoice changed ({account})", account, Decimal("1"),
                          sign * amount, code) for (account, code), amount in sorted(net.items()) if amount]


def credit_memo_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def credit_memo_payload(event: InvoiceEvent, refund: Refund, customer_id: str, invoice_id: str,
                        mapping: MappingConfig, posted_on: date | None = None) -> dict[str, Any]:
    """A refund as a draft credit memo linked to its invoice (``invoiceId``: posting applies it there)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    account = account_number(line.kind if line else LineKind.PART, mapping)
    code = tax_code(line.taxes if line and refund.tax_amount else (), mapping)
    description = f"Returned: {line_text(line, 80)}" if line else (refund.reason or "Refund")
    day = (posted_on or refund.created_at.date()).isoformat()
    return {"customerId": customer_id, "externalDocumentNumber": credit_memo_reference(refund.id),
            "creditMemoDate": day, "postingDate": day, "invoiceId": invoice_id,
            "salesCreditMemoLines": [_account_line(description, account, Decimal("1"), refund.amount, code)]}

