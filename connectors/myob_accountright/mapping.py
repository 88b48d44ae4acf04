"""Canonical events → MYOB AccountRight API v2 bodies (field names as in MYOB's SDK contracts, Version2).

Pure functions of the event and the mapping configuration; UIDs come in resolved. One shop invoice is one
MYOB *Item* invoice (``Sale/Invoice/Item``): an invoice has one layout, and a repair job mixes parts and labour,
so labour, fees, sublets and core charges post on non-inventoried items like parts do (``mapping.items``: one
item UID per line kind, whose income account decides the ledger). Refunds and closed-period adjustments need no
item: they are *Service* invoices (``Sale/Invoice/Service``) with lines on income accounts — a refund or a
decrease is one with negative lines, which MYOB holds as a credit (status ``Credit``).

MYOB computes tax itself from each line's tax code (no tax amount can be sent): where a money line must carry
exactly the shop's tax, it is split into a taxed part whose computed tax is the shop's and an untaxed rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, combined_tax_code, income_kind, invoice_memo, line_text, payment_account, required_posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund, money
from daemon.config import MappingConfig

ZERO, CENT = Decimal("0"), Decimal("0.01")
NUMBER_MAX = 13  # Sale.Number: string(13)


def when(day: date) -> str:
    """MYOB's DateTime as its reference writes it."""
    return f"{day.isoformat()} 00:00:00"


def link(uid: str) -> dict[str, str]:
    return {"UID": uid}


def number(text: str) -> str:
    """The shop's number in MYOB's 13 characters: itself, else without its punctuation (``INV-MAIN-000001`` →
    ``INVMAIN000001``), else a deterministic short form. The whole number is the document's
    ``CustomerPurchaseOrderNumber``, which is what look-ups use, so a shortened number never has to be unique."""
    if len(text) <= NUMBER_MAX:
        return text
    compact = re.sub(r"[^A-Za-z0-9]", "", text)
    if len(compact) <= NUMBER_MAX:
        return compact
    return f"{compact[:6]}~{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def card_id(customer: Customer) -> str:
    """The card's DisplayID (15 characters): ours carry the shop's customer id."""
    return f"LWC{customer.id}"[:15]


def tax_code(taxes: Iterable[LineTax], mapping: MappingConfig) -> str:
    return combined_tax_code(taxes, mapping, "MYOB", "tax code UID")


def customer_payload(customer: Customer, mapping: MappingConfig) -> dict[str, Any]:
    address: dict[str, Any] = {"Location": 1}
    for name, value in (("Street", customer.billing_address), ("Email", customer.email), ("Phone1", customer.phone)):
        if value:
            address[name] = value[:255]
    default_code = tax_code((), mapping)  # AccountRight expects a tax code and a freight tax code on a card
    return {"CompanyName": customer.name[:50], "IsIndividual": False, "DisplayID": card_id(customer),
            "IsActive": True, "Addresses": [address],
            "SellingDetails": {"TaxCode": link(default_code), "FreightTaxCode": link(default_code)}}


def customer_digest(customer: Customer, mapping: MappingConfig) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer, mapping), sort_keys=True).encode()).hexdigest()[:16]


def item_uid(kind: LineKind, mapping: MappingConfig) -> str:
    uid = mapping.items.get(income_kind(kind)) or mapping.items.get(LineKind.PART)
    if not uid:
        raise PermanentError(f"mapping.items names no MYOB item UID for {kind.value} lines")
    return uid


def income_account(kind: LineKind, mapping: MappingConfig) -> str:
    """The income account a service line posts to: the framework's one rule (``base.posting_account``)."""
    return required_posting_account(kind, mapping, "MYOB", "account UID")


def _header(event: InvoiceEvent, customer_uid: str, mapping: MappingConfig, doc_number: str, day: date,
            memo: str) -> dict[str, Any]:
    body: dict[str, Any] = {"Number": number(doc_number), "CustomerPurchaseOrderNumber": doc_number[:255],
                            "Date": when(day), "Customer": link(customer_uid), "JournalMemo": memo[:255]}
    tracking = mapping.location_tracking.get(event.location.code) or ""
    if tracking.startswith("category:"):
        body["Category"] = link(tracking.split(":", 1)[1])
    return body


def invoice_payload(event: InvoiceEvent, customer_uid: str, item_uids: dict[int, str], mapping: MappingConfig,
                    posted_on: date | None = None) -> dict[str, Any]:
    """The whole item invoice (create and update alike: an update's lines replace the lines). ``posted_on``:
    the first open day when the books are closed for the shop's date (the memo says so)."""
    memo = invoice_memo(event, 255)
    if posted_on is not None:
        memo = f"shop date {event.issue_date} is in a closed period; {memo}"
    day = posted_on or event.issue_date
    body = _header(event, customer_uid, mapping, event.number, day, memo) | {
        "IsTaxInclusive": event.tax_inclusive,
        "Lines": [{"Type": "Transaction", "Description": line_text(ln, 255), "ShipQuantity": ln.quantity,
                   "UnitPrice": ln.unit_price, "Total": ln.amount,
                   "Item": link(item_uids.get(ln.id) or item_uid(ln.kind, mapping)),
                   "TaxCode": link(tax_code(ln.taxes, mapping))} for ln in event.lines]}
    due = event.due_date
    if event.customer.payment_terms_days:
        body["Terms"] = {"PaymentIsDue": "InAGivenNumberOfDays", "BalanceDueDate": event.customer.payment_terms_days}
    elif due and due >= day:
        body["Terms"] = {"PaymentIsDue": "InAGivenNumberOfDays", "BalanceDueDate": (due - day).days}
    return body


def money_lines(description: str, account: str, net: Decimal, tax: Decimal, taxes: tuple[LineTax, ...],
                mapping: MappingConfig, sign: int) -> list[dict[str, Any]]:
    """Service lines worth ``net`` + ``tax`` (positive amounts; ``sign`` -1 makes a credit): a taxed part on the
    taxes' code whose tax MYOB computes as ``tax``, the rest on the untaxed code."""
    rate = sum((t.rate for t in taxes), ZERO)
    parts: list[tuple[Decimal, tuple[LineTax, ...]]] = [(net, ())]
    if tax and rate:
        base = (tax / rate).quantize(CENT)  # MYOB rounds each component of a consolidated code on its own
        base = next((b for b in (net, base, base - CENT, base + CENT) if sum(money(b * t.rate) for t in taxes) == tax),
                    base)
        parts = [(base, taxes), (net - base, ())]
    return [{"Type": "Transaction", "Description": description[:255], "Total": sign * amount,
             "Account": link(account), "TaxCode": link(tax_code(codes, mapping))} for amount, codes in parts if amount]


def payment_reference(payment: Payment) -> str:
    return f"LWP{payment.id}"


def payment_payload(payment: Payment, invoice_uid: str, customer_uid: str, mapping: MappingConfig,
                    posted_on: date | None = None) -> dict[str, Any]:
    """A customer payment applied to this invoice only; ``posted_on``: the first open day when the books are
    closed for the day it was received. Its memo is our reference (MYOB numbers receipts itself)."""
    account = payment_account(payment, mapping, "MYOB", "account UID")
    return {"DepositTo": "Account", "Account": link(account), "Customer": link(customer_uid),
            "Date": when(posted_on or payment.received_at.date()), "AmountReceived": payment.amount,
            "PaymentMethod": payment.method[:30], "Memo": payment_reference(payment),
            "Invoices": [{"UID": invoice_uid, "AmountApplied": payment.amount, "Type": "Invoice"}]}


def credit_note_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def settlement_reference(refund_id: object) -> str:
    return f"LWA{refund_id}"


def credit_note_payload(event: InvoiceEvent, refund: Refund, customer_uid: str, mapping: MappingConfig,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund or returned part: a service invoice with negative lines on the returned line's account. A goodwill
    refund (no line) that carries tax is taxed on the tax code of the invoice's largest taxed line (issue #20)."""
    line: InvoiceLine | None = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    taxed = line or references.main_taxed_line(event, refund)
    account = income_account(line.kind if line else LineKind.PART, mapping)
    description = f"Returned: {line_text(line, 200)}" if line else (refund.reason or "Refund")
    memo = f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"
    return _header(event, customer_uid, mapping, credit_note_reference(refund.id),
                   posted_on or refund.created_at.date(), memo) | {
        "IsTaxInclusive": False,
        "Lines": money_lines(description, account, refund.amount, refund.tax_amount,
                             taxed.taxes if taxed else (), mapping, -1)}


def refund_payment_reference(refund_id: object) -> str:
    """The memo of the money paid back on a refund's credit (``Sale/CreditRefund``)."""
    return f"LWRP{refund_id}"


def credit_refund_payload(event: InvoiceEvent, refund: Refund, credit_uid: str, customer_uid: str, amount: Decimal,
                          day: date, reference: str, mapping: MappingConfig) -> dict[str, Any]:
    """Money paid back on a credit (``Sale/CreditRefund``, SDK CreditRefund.cs): out of the account of the payment
    the refund pays back, ``amount`` of the credit, so nothing of it is left."""
    account = references.refund_account(event, refund, mapping, "MYOB", "account UID")
    return {"Invoice": link(credit_uid), "Account": link(account), "Customer": link(customer_uid), "Date": when(day),
            "Amount": amount, "Memo": reference}


def settlement_payload(credit_uid: str, invoice_uid: str, customer_uid: str, amount: Decimal, day: date,
                       reference: str) -> dict[str, Any]:
    """``amount`` of a credit note applied to the invoice (``Sale/CreditSettlement``)."""
    return {"CreditFromInvoice": link(credit_uid), "Customer": link(customer_uid), "Date": when(day),
            "CreditAmount": amount, "Memo": reference,
            "Lines": [{"Type": "Invoice", "Sale": link(invoice_uid), "AmountApplied": amount}]}


def adjustment_reference(event: InvoiceEvent, sequence: int, kind: str) -> str:
    """``A<n>-`` (increase) or ``C<n>-`` (decrease, a credit) + the shop's invoice number."""
    return f"{'A' if kind == 'increase' else 'C'}{sequence}-{event.number}"


def adjustment_payload(event: InvoiceEvent, kind: str, sequence: int, customer_uid: str, net: Decimal, tax: Decimal,
                       day: date, original_uid: str | None, reason: str, mapping: MappingConfig) -> dict[str, Any]:
    """The difference between what MYOB holds and the shop's version, as a service invoice dated in the first
    open period, naming the original."""
    taxed = next((ln.taxes for ln in event.lines if ln.taxes), ())
    memo = (f"Adjustment {sequence} to shop invoice {event.number} v{event.version}"
            f"{f' (MYOB invoice {original_uid})' if original_uid else ''}: {reason}")
    return _header(event, customer_uid, mapping, adjustment_reference(event, sequence, kind), day, memo) | {
        "IsTaxInclusive": False,
        "Lines": money_lines(f"Adjustment to invoice {event.number} ({reason})", income_account(LineKind.PART, mapping),
                             net, tax, taxed, mapping, 1 if kind == "increase" else -1)}
