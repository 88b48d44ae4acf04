"""Closed-period adjustments at Zoho Books, line by line (Zoho computes each line's tax itself, so an adjustment
posts the lines that differ between what Zoho holds for an invoice — the original and every earlier adjustment,
read back — and the shop's version): an invoice ``<number>-A<n>`` for an increase, a credit note referenced
``<number>-C<n>`` for a decrease, dated the first open day."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from connectors import adjustments, references
from connectors.base import PermanentError
from connectors.engine import AdjustmentSpec
from connectors.zoho_books.client import ZohoClient
from connectors.zoho_books.mapping import line_posting, tracking
from daemon.canonical import CENT, InvoiceEvent
from daemon.config import MappingConfig

Posted = tuple[tuple[str, str], Decimal, str]  # ((account id, tax id), line amount, description)
DOCUMENT = {"increase": "invoice", "decrease": "creditnote"}  # the Zoho document an adjustment kind is


def posted_line(item: dict[str, Any]) -> Posted:
    """A line as Zoho holds it (``item_total``) or as we send it (rate × quantity): what adjustments compare
    (``adjustments.line_difference`` on account, tax and amount; Zoho then computes each line's tax)."""
    amount = item.get("item_total")
    if amount is None:
        amount = (Decimal(str(item["rate"])) * Decimal(str(item["quantity"]))).quantize(CENT, ROUND_HALF_UP)
    return ((str(item.get("account_id") or ""), str(item.get("tax_id") or "")), Decimal(str(amount)),
            str(item.get("description") or item.get("name") or ""))


def lines_to_post(client: ZohoClient, adjustment: AdjustmentSpec, posted: Iterable[Any],
                  wanted_items: list[dict[str, Any]]) -> list[Posted]:
    """The lines that differ between what Zoho holds (``posted``: the adjustments already recorded) and
    ``wanted_items`` (the shop's version as we send it; none for a void), each with a description."""
    held = [(sign, [posted_line(i) for i in (client.get(f"/{DOCUMENT[kind]}s/{external_id}", DOCUMENT[kind]) or {})
                    .get("line_items", [])])
            for sign, kind, external_id in adjustments.held_documents(adjustment.original_id, posted)]
    wanted = [posted_line(item) for item in wanted_items]
    texts = {(key, abs(amount)): text for _, lines in held for key, amount, text in lines} | {
        (key, abs(amount)): text for key, amount, text in wanted}
    lines = [(key, amount, texts[key, abs(amount)]) for key, amount in adjustments.line_difference(
        [(sign, [line[:2] for line in lines]) for sign, lines in held], [line[:2] for line in wanted])]
    if not lines:
        raise PermanentError(f"Zoho: a difference of {adjustment.net + adjustment.tax} with no line changed (tax "
                             "Zoho computes itself) cannot be posted as an adjustment; post it by hand")
    return lines


def adjustment_number(number: str, seq: int, kind: str) -> str:
    return references.adjustment_number(number, seq, kind)[:100]  # an invoice number or a credit note reference


def adjustment_payload(event: InvoiceEvent, kind: str, seq: int, customer_id: str, lines: list[Posted], day: date,
                       mapping: MappingConfig, original_id: str | None, reason: str) -> dict[str, Any]:
    """An adjustment dated the first open day: an invoice (increase) numbered ``<number>-A<n>`` whose
    reference is the original's number, or a credit note (decrease) referenced ``<number>-C<n>``; one line per
    line that differs (a decrease carries them negated)."""
    track, sign = tracking(event, mapping), 1 if kind == "increase" else -1
    items = [line_posting({"name": f"Adjustment {event.number}"[:100],
                           "description": f"Adjustment {seq} ({reason}): {text}"[:2000], "item_order": order,
                           "rate": sign * amount, "quantity": Decimal("1")}, account, tax_id, track)
             for order, ((account, tax_id), amount, text) in enumerate(lines, start=1)]
    notes = (f"Adjustment to shop invoice {event.number} (Zoho invoice {original_id or '-'}), "
             f"posted in the open period: {reason}")[:5000]
    body: dict[str, Any] = {"customer_id": customer_id, "date": day.isoformat(),
                            "is_inclusive_tax": event.tax_inclusive, "notes": notes, "line_items": items}
    if kind == "increase":
        body |= {"invoice_number": adjustment_number(event.number, seq, kind), "reference_number": event.number[:100]}
        if event.due_date:
            body["due_date"] = max(event.due_date, day).isoformat()
    else:
        body["reference_number"] = adjustment_number(event.number, seq, kind)
    return body | {k: v for k, v in track.items() if k != "tags"}
