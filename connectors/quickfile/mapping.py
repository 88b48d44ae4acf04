"""Canonical events → QuickFile JSON API v1.2 request bodies (names as on QuickFile's per-method schema pages).

Pure functions of the event and the mapping configuration; ids come in resolved. QuickFile numbers invoices
itself, so the shop's invoice number is the invoice's ``InvoiceDescription`` (2-35 characters), which is what
look-ups compare. Lines post on nominal codes (``mapping.income_accounts``) with the shop's tax per component
(``Tax1``/``Tax2``: name from ``mapping.tax_codes``, percentage and the shop's amount). A credit note is an
``Invoice_Create`` with negative lines and a ``CreditNotes`` block naming its parent invoice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from connectors import references
from connectors.base import PermanentError, income_kind, invoice_memo, line_text
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO, HUNDRED, CENT = Decimal("0"), Decimal("100"), Decimal("0.01")
DESCRIPTION_MAX = 35  # InvoiceDescription: 2-35 characters


def client_reference(customer: Customer) -> str:
    """The client's AccountReference: ours carry the shop's customer id (how a retry finds what it made)."""
    return f"LWC{customer.id}"


def client_payload(customer: Customer, client_id: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"CompanyName": customer.name[:100], "AccountReference": client_reference(customer)}
    if client_id is not None:
        details = {"ClientID": int(client_id)} | details
    if customer.payment_terms_days:
        details["TermDays"] = customer.payment_terms_days
    if customer.billing_address:
        details["Address"] = {"Address1": customer.billing_address[:100]}
    contact = {k: v for k, v in (("Email", customer.email), ("Telephone", customer.phone)) if v}
    if contact:
        details["DefaultContact"] = {"FirstName": customer.name[:35]} | contact
    return {"ClientDetails": details}


def client_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(client_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def description(number: str) -> str:
    """The shop's number as InvoiceDescription; longer than 35 characters: a deterministic short form."""
    if len(number) <= DESCRIPTION_MAX:
        return number if len(number) >= 2 else f"{number}-"
    digest = hashlib.sha256(number.encode()).hexdigest()[:8]
    return f"{number[:DESCRIPTION_MAX - 9]}~{digest}"


def nominal_code(kind: LineKind, mapping: MappingConfig) -> str:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    if kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account" and mapping.discount_account:
        return mapping.discount_account
    code = mapping.income_accounts.get(income_kind(kind)) or mapping.income_accounts.get(LineKind.PART)
    if not code:
        raise PermanentError(f"mapping.income_accounts names no QuickFile nominal code for {kind.value} lines")
    return code


def taxes(components: tuple[LineTax, ...] | list[LineTax], mapping: MappingConfig, sign: int = 1) -> dict[str, Any]:
    """``Tax1`` (and ``Tax2``) of a line: QuickFile carries at most two tax components per line."""
    if len(components) > 2:
        raise PermanentError("QuickFile lines carry at most two taxes (Tax1, Tax2)")
    out: dict[str, Any] = {}
    for n, tax in enumerate(components, start=1):
        name = mapping.tax_codes.get(tax.code)
        if not name:
            raise PermanentError(f"mapping.tax_codes names no QuickFile tax for {tax.code!r}")
        out[f"Tax{n}"] = {"TaxName": name, "TaxPercentage": tax.rate * HUNDRED, "TaxAmount": sign * tax.amount}
    return out


def item_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), ZERO)
    if event.tax_inclusive:  # QuickFile's UnitCost is net: the line goes as one unit at its net amount
        quantity, unit = Decimal("1"), line.amount - tax
    else:
        quantity, unit = line.quantity, line.unit_price
    return {"ItemName": line.kind.value, "ItemDescription": line_text(line, 500),
            "ItemNominalCode": nominal_code(line.kind, mapping), "UnitCost": unit, "Qty": quantity
            } | taxes(list(line.taxes), mapping)


def due_days(event: InvoiceEvent, day: date) -> int:
    if event.customer.payment_terms_days:
        return event.customer.payment_terms_days
    return max((event.due_date - day).days, 0) if event.due_date else 0


def _invoice(event: InvoiceEvent, client_id: str, day: date, label: str, notes: str, lines: list[dict[str, Any]]
             ) -> dict[str, Any]:
    return {"InvoiceType": "INVOICE", "ClientID": int(client_id), "Currency": event.currency,
            "TermDays": due_days(event, day), "InvoiceDescription": label, "Notes": notes[:2000],
            "Scheduling": {"SingleInvoiceData": {"IssueDate": day.isoformat()}},
            "ItemLines": {"ItemLine": lines}}


def invoice_payload(event: InvoiceEvent, client_id: str, mapping: MappingConfig, invoice_id: str | None = None
                    ) -> dict[str, Any]:
    """The whole invoice; with ``invoice_id`` QuickFile updates that invoice (its lines replaced)."""
    data = _invoice(event, client_id, event.issue_date, description(event.number), invoice_memo(event, 2000),
                    [item_line(ln, event, mapping) for ln in event.lines])
    return {"InvoiceData": ({"InvoiceID": int(invoice_id)} if invoice_id else {}) | data}


def payment_reference(payment: Payment) -> str:
    return f"LWP{payment.id}"


def payment_payload(payment: Payment, invoice_id: str, client_id: str, currency: str, mapping: MappingConfig,
                    pay_methods: dict[str, str]) -> dict[str, Any]:
    """A client payment attributed to this invoice (PaymentType PAYMENT), our reference in its Notes."""
    method = pay_methods.get(payment.method)
    bank = mapping.payment_accounts.get(payment.method)
    if not method or not bank:
        raise PermanentError(f"settings.pay_methods / mapping.payment_accounts name nothing for {payment.method!r}")
    return {"PaymentDetails": {
        "Designation": "CLIENT", "PaymentType": "PAYMENT", "PaymentDate": payment.received_at.date().isoformat(),
        "InvoiceID": int(invoice_id), "DesignatedTo": {"ClientID": int(client_id)}, "Amount": payment.amount,
        "Currency": currency, "PayMethod": method, "BankNominalCode": int(bank), "Notes": payment_reference(payment)}}


def credit_note_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def tax_share(tax: Decimal, gross: Decimal, part: Decimal) -> Decimal:
    """The tax carried by ``part`` of a credit of ``gross`` holding ``tax`` (in proportion, to the cent)."""
    return (tax * part / gross).quantize(CENT, rounding=ROUND_HALF_UP) if gross else ZERO


CreditNoteType = Literal["VOID", "HOLD", "REFUND"]


def credit_parts(net: Decimal, tax: Decimal, owed: Decimal, held_room: Decimal
                 ) -> list[tuple[CreditNoteType, Decimal, Decimal]]:
    """A refund's credit (``net`` + ``tax``) as QuickFile's credit note types allow it: VOID for what the invoice
    still owes (it cannot exceed the unpaid balance), HOLD for money already paid that moves to the client's
    account (it cannot exceed what was paid and not held yet, ``held_room``), and for the rest — neither owed nor
    paid: refunds larger than the invoice — an independent REFUND note (no parent: a negative invoice, credit on
    the client's account). (type, net, tax) of each part in that order; the tax is shared in proportion, the
    first parts holding the first share (what ``finish_for`` assumes of the parts already posted)."""
    gross = net + tax
    void = min(gross, max(owed, ZERO))
    hold = min(gross - void, max(held_room, ZERO))
    parts: list[tuple[CreditNoteType, Decimal, Decimal]] = []
    done, done_tax = ZERO, ZERO
    for kind, amount in (("VOID", void), ("HOLD", hold), ("REFUND", gross - void - hold)):
        if amount > 0:
            share = tax_share(tax, gross, done + amount) - done_tax
            parts.append((kind, amount - share, share))
            done, done_tax = done + amount, done_tax + share
    return parts


PAID_BACK = "; paid back from bank "  # in a paid-out credit note's Notes: how our look-ups tell it
AGAINST = " against invoice "


def credit_note_notes(event: InvoiceEvent, refund: Refund, kind: CreditNoteType, paid_from: int | None = None,
                      parent_id: str = "") -> str:
    """Our Notes on a refund's credit note part: its type (QuickFile's look-ups do not return it), and for money
    paid back the bank it went out of and the invoice it was paid on (``settle_refund``)."""
    text = f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number} [{kind}]"
    if paid_from is not None:
        text += f"{PAID_BACK}{paid_from}" + (f"{AGAINST}{parent_id}" if parent_id else "")
    return text


def credit_note_payload(event: InvoiceEvent, refund: Refund, client_id: str, parent_id: str, mapping: MappingConfig,
                        kind: CreditNoteType, paid_from: int | None = None) -> dict[str, Any]:
    """A refund as a credit note: VOID reduces what its invoice still owes, HOLD moves an amount already paid
    to the client's account (QuickFile's CreditNoteType); REFUND without ``paid_from`` stands alone — no parent
    and no ``PaidFromAccount``, credit on the client's account. With ``paid_from`` (a refund the shop paid back,
    issue #20) a REFUND note pays the amount back out of that bank nominal code: against ``parent_id`` for money
    paid on the invoice ("Refund a paid amount from an existing fully/partially paid invoice"), alone otherwise."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    code = nominal_code(line.kind if line else LineKind.PART, mapping)
    text = f"Returned: {line_text(line, 480)}" if line else (refund.reason or "Refund")
    tax: dict[str, Any] = {}
    # The refund's tax on its line's first tax component; a goodwill refund (no line) is taxed like the invoice's
    # main taxed line, so its tax is posted as tax, never dropped (issue #20).
    taxed = line or references.main_taxed_line(event, refund)
    if refund.tax_amount and taxed and taxed.taxes:
        tax = taxes([taxed.taxes[0].model_copy(update={"amount": refund.tax_amount})], mapping, sign=-1)
    lines = [{"ItemName": "refund", "ItemDescription": text, "ItemNominalCode": code, "UnitCost": -refund.amount,
              "Qty": Decimal("1")} | tax]
    day = max(refund.created_at.date(), event.issue_date)
    against = parent_id if kind != "REFUND" or paid_from is not None else ""
    data = _invoice(event, client_id, day, credit_note_reference(refund.id),
                    credit_note_notes(event, refund, kind, paid_from, against), lines)
    block: dict[str, Any] = {"CreditNoteType": kind} | ({"ParentInvoiceId": int(against)} if against else {})
    if paid_from is not None:
        block["PaidFromAccount"] = paid_from
    return {"InvoiceData": data | {"CreditNotes": block}}


def delete_invoice_payload(invoice_id: str) -> dict[str, Any]:
    # Payments QuickFile holds that are not ours turn into client credit rather than vanish.
    return {"InvoiceDetails": {"InvoiceIDs": {"InvoiceID": [int(invoice_id)]}, "DeleteAssociatedPayments": False}}


SEARCH_ORDER = {"Client_Search": "CreatedDate", "Invoice_Search": "IssueDate", "Payment_Search": "PayDate"}


def search_payload(method: str, return_count: int, offset: int, **criteria: Any) -> dict[str, Any]:
    return {"SearchParameters": {"ReturnCount": return_count, "Offset": offset, "OrderResultsBy": SEARCH_ORDER[method],
                                 "OrderDirection": "ASC"} | criteria}


