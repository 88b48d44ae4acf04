"""What Xero's lock dates need beyond the engine's re-dating and adjustments: a payment more than the original
invoice still owes is split across its increase adjustments and refund reversals, and a refund's credit note
that cannot be voided (dated on or before the lock date) is reversed by an invoice it pays."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.base import ExternalRef
from connectors.engine import Posting
from connectors.xero import mapping
from connectors.xero.client import UNITDP, XeroClient, quote
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig

ZERO = Decimal("0.00")


def payment_parts(client: XeroClient, number: str, invoice_id: str, body: dict[str, Any], amount: Decimal
                  ) -> list[dict[str, Any]]:
    """``body`` (a payment Xero refused as more than the invoice's AmountDue) split across the original (first)
    and its increase adjustments and refund reversals (``<number>-A<n>``, ``-R<id>``: they carry its number as
    Reference), one part per invoice; none when there is nothing else or all of it together is still too little."""
    found = client.rows("Invoices", where=f"Reference=={quote(number)}", unitdp=UNITDP)
    extra = sorted((i for i in found if i.get("Type") == "ACCREC" and
                    str(i.get("InvoiceNumber", "")).startswith(f"{number}-")), key=lambda i: str(i.get("InvoiceNumber")))
    original = client.document("Invoices", invoice_id)
    if not extra or original is None:
        return []
    left, bodies = amount, []
    for invoice in [original, *extra]:
        take = min(left, Decimal(str(invoice.get("AmountDue") or 0)) if invoice.get("Status") == "AUTHORISED" else ZERO)
        if take > 0:
            bodies.append({**body, "Invoice": {"InvoiceID": invoice["InvoiceID"]}, "Amount": take})
            left -= take
    return [] if left > 0 else bodies


def reverse_kept_credit_note(client: XeroClient, config: MappingConfig, event: InvoiceEvent, credit_id: str,
                             posting: Posting, find_invoice: Callable[[str], list[ExternalRef]],
                             first_open_day: Callable[[], date]) -> None:
    """A credit note Xero keeps (its void refused: dated on or before the lock date): an invoice
    ``<number>-R<refund>`` dated the first open day with its lines charges the amount again, and the credit the
    note still has pays that reversal, so the customer owes exactly what they owed before the refund."""
    note = client.document("CreditNotes", credit_id) or {}
    number = f"{event.number}-R{str(note.get('CreditNoteNumber', '')).removeprefix(mapping.CREDIT_NOTE_PREFIX)}"
    reversal = next(iter(find_invoice(number)), None)  # an earlier attempt's
    day = first_open_day()
    if reversal is None:
        lines = mapping.document_groups(note)
        reason = f"credit note {note.get('CreditNoteNumber')} kept: its refund was removed after the books were locked"
        payload = {**mapping.adjustment_payload(event, "increase", 0, posting.customer_id, lines, day, config,
                                                reason), "InvoiceNumber": number}
        made = client.put("Invoices", payload, key=posting.request_id + ":r", unitdp=UNITDP)
        reversal = ExternalRef(external_id=made["InvoiceID"], amount=made.get("Total"))
    amount = min(Decimal(str(note.get("RemainingCredit") or 0)), Decimal(str(reversal.amount or 0)))
    if amount > 0 and note.get("Status") == "AUTHORISED":
        client.write("PUT", f"/CreditNotes/{credit_id}/Allocations",
                     mapping.allocation_payload(reversal.external_id, amount, day.isoformat()),
                     key=posting.request_id + ":ra")
