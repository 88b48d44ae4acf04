"""Canonical events → SAP Business One Service Layer bodies (``SAPB1.Document``, ``SAPB1.BusinessPartner``,
``SAPB1.Payment`` property names as in the field table of ``sap-business-one/SOURCE.md``).

Pure functions of the event and the mapping; ids come in resolved. Documents are service-type
(``dDocument_Service``): each line posts its ``LineTotal`` on the G/L account the mapping names
(``AccountCode``) with one ``TaxCode`` (the code for a combination of components named by the mapping as
``"GST+PST"``, codes sorted; a line without tax ``"none"``). Business One computes the tax itself, per row and
jurisdiction. A tax-inclusive shop line is sent at its net amount. The shop's invoice number is ``NumAtCard``
(the customer reference: Business One has no idempotency key, so look-ups filter on it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, combined_tax_code, line_text, required_posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, LineTax, Payment, Refund
from daemon.config import MappingConfig

ZERO = Decimal("0")
SERVICE = "dDocument_Service"
INVOICE_OBJECT = 13  # BaseType of a line copied from an A/R invoice


def card_code(customer: Customer) -> str:
    """Our business partners' ``CardCode`` (string(15), the key): the shop's customer id, so a retry finds it."""
    code = f"LWC{customer.id}"
    if len(code) > 15:
        raise PermanentError(f"shop customer id {customer.id} is too long for a Business One CardCode (15)")
    return code


def customer_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"CardCode": card_code(customer), "CardName": customer.name[:100], "CardType": "cCustomer"}
    if customer.email:
        body["EmailAddress"] = customer.email[:100]
    if customer.phone:
        body["Phone1"] = customer.phone[:20]
    return body


def customer_digest(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def tax_code(taxes: Iterable[LineTax], mapping: MappingConfig) -> str:
    return combined_tax_code(taxes, mapping, "Business One")


def account_code(kind: LineKind, mapping: MappingConfig) -> str:
    return required_posting_account(kind, mapping, "Business One")


def document_line(line: InvoiceLine, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    net = line.amount - sum((t.amount for t in line.taxes), ZERO) if event.tax_inclusive else line.amount
    return {"ItemDescription": f"{line.quantity.normalize():f} x {line_text(line, 80)}"[:100],
            "AccountCode": account_code(line.kind, mapping), "LineTotal": net,
            "TaxCode": tax_code(line.taxes, mapping)}


def due_date(event: InvoiceEvent, day: date) -> date:
    if event.customer.payment_terms_days:
        return max(day, (event.issue_date or day) + timedelta(days=event.customer.payment_terms_days))
    return max(day, event.due_date or day)


def invoice_payload(event: InvoiceEvent, card: str, mapping: MappingConfig, posted_on: date | None = None
                    ) -> dict[str, Any]:
    day = posted_on or event.issue_date or date.today()
    body: dict[str, Any] = {"CardCode": card, "DocType": SERVICE, "NumAtCard": event.number[:100],
                            "DocDate": day.isoformat(), "TaxDate": day.isoformat(),
                            "DocDueDate": due_date(event, day).isoformat(), "DocCurrency": event.currency,
                            "DocumentLines": [document_line(ln, event, mapping) for ln in event.lines]}
    if event.job and event.job.number:
        body["Comments"] = f"Work order {event.job.number}"[:254]
    return body


def payment_reference(event: InvoiceEvent, payment_id: str) -> str:
    """``Remarks`` of our incoming payments (shop payment ids repeat across invoices: the number makes it unique)."""
    return f"LWP{payment_id} {event.number}"[:254]


def payment_payload(event: InvoiceEvent, payment: Payment, invoice_entry: str, card: str, account: str,
                    invoice_open: Decimal | None = None, posted_on: date | None = None) -> dict[str, Any]:
    """A bank transfer received on ``account`` and applied to this invoice: all of it, or as much as the invoice
    still has open (Business One applies no more; the rest stays on the customer's account, as when a refund's
    credit memo already reduced the invoice)."""
    day = (posted_on or payment.received_at.date()).isoformat()
    applied = payment.amount if invoice_open is None else min(payment.amount, invoice_open)
    return {"CardCode": card, "DocType": "rCustomer", "DocDate": day, "DocCurrency": event.currency,
            "Remarks": payment_reference(event, str(payment.id)), "TransferAccount": account,
            "TransferSum": payment.amount, "TransferDate": day,
            "TransferReference": (payment.reference or payment.method)[:27],
            "PaymentInvoices": [{"DocEntry": _entry(invoice_entry), "SumApplied": applied, "InvoiceType": "it_Invoice"}]
            if applied > 0 else []}


def credit_note_reference(refund_id: object) -> str:
    return f"LWR{refund_id}"


def credit_note_payload(event: InvoiceEvent, refund: Refund, card: str, invoice_entry: str, mapping: MappingConfig,
                        posted_on: date | None = None) -> dict[str, Any]:
    """A refund as an A/R credit memo copied from its invoice's line (``BaseType`` 13, ``BaseEntry``,
    ``BaseLine``): Business One reconciles it with the invoice. A goodwill refund (no line) that carries tax is
    copied from the invoice's largest taxed line, on its tax code, so its tax is posted as tax (issue #20). A refund
    the shop paid back (``payment_id``) is a memo of its own, not copied: the money went back to the customer, so
    it never takes what is open on the invoice; an outgoing payment settles it (``refund_payment_payload``)."""
    index = next((i for i, ln in enumerate(event.lines) if ln.id == refund.line_id), None)
    goodwill = references.main_taxed_line(event, refund)
    if index is None and goodwill is not None:
        index = next(i for i, ln in enumerate(event.lines) if ln.id == goodwill.id)
    line = event.lines[index] if index is not None else None
    day = (posted_on or refund.created_at.date()).isoformat()
    description = f"Returned: {line_text(line, 80)}" if line and not goodwill else (refund.reason or "Refund")
    row = {"ItemDescription": description[:100], "AccountCode": account_code(line.kind if line else LineKind.PART, mapping),
           "LineTotal": refund.amount, "TaxCode": tax_code(line.taxes if line and refund.tax_amount else (), mapping)}
    if refund.payment_id is None:
        row |= {"BaseType": INVOICE_OBJECT, "BaseEntry": _entry(invoice_entry), "BaseLine": index or 0}
    return {"CardCode": card, "DocType": SERVICE, "NumAtCard": credit_note_reference(refund.id),
            "DocDate": day, "TaxDate": day, "DocDueDate": day, "DocCurrency": event.currency,
            "Comments": f"Refund on shop invoice {event.number}"[:254], "DocumentLines": [row]}


def refund_payment_reference(event: InvoiceEvent, refund_id: str) -> str:
    """``Remarks`` of the outgoing payment that pays a refund back (what its look-up filters on): its credit memo's
    reference, never an incoming payment's ``LWP<payment id>``."""
    return f"{credit_note_reference(refund_id)} paid back {event.number}"[:254]


def refund_payment_payload(event: InvoiceEvent, refund: Refund, memo_entry: str, amount: Decimal, reference: str,
                           card: str, account: str, posted_on: date | None = None) -> dict[str, Any]:
    """The money paid back: an outgoing payment to the customer (``VendorPayments``, ``DocType`` rCustomer) by bank
    transfer from ``account`` (the one the shop's payments are received on), paying the A/R credit memo
    (``PaymentInvoices`` ``it_CredItnote``), which closes it."""
    day = (posted_on or refund.created_at.date()).isoformat()
    return {"CardCode": card, "DocType": "rCustomer", "DocDate": day, "DocCurrency": event.currency,
            "Remarks": reference, "TransferAccount": account, "TransferSum": amount, "TransferDate": day,
            "TransferReference": credit_note_reference(refund.id)[:27],
            "PaymentInvoices": [{"DocEntry": _entry(memo_entry), "SumApplied": amount, "InvoiceType": "it_CredItnote"}]}


def _entry(doc_entry: str) -> int | str:
    """A ``DocEntry`` (an integer key); a preview's placeholder stays as it is."""
    return int(doc_entry) if doc_entry.isdigit() else doc_entry
