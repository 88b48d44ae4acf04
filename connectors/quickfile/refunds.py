"""A refund's credit as QuickFile holds it (VOID/HOLD/REFUND parts, notes paid out, their bank): shared by refunds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError
from connectors.engine import received
from connectors.quickfile import mapping
from daemon.canonical import InvoiceEvent, Refund

ZERO = Decimal("0")


class RefundCredits:
    """Mixed into the connector: uses its ``client``, ``mapping`` and ``read_invoice``."""

    def _paid_out(self, refund_id: str) -> list[dict[str, Any]]:
        """The live REFUND notes that paid a refund's money back (``settle_refund``), told by our Notes."""
        note = mapping.credit_note_reference(refund_id)
        return [i for i in self.client.search("Invoice_Search", InvoiceType="INVOICE")
                if i.get("InvoiceDescription") == note and mapping.PAID_BACK in str(i.get("Notes") or "")]

    def _post_credit(self, event: InvoiceEvent, refund: Refund, client_id: str, parent_id: str, net: Decimal,
                     tax: Decimal, posted: Decimal = ZERO, paid_from: int | None = None) -> list[str]:
        """``net`` + ``tax`` of the refund's credit (``posted`` of it already made) as credit notes under its
        reference: VOID for what the parent still owes, HOLD for what was paid and is not held yet, an
        independent REFUND note for the rest (the ids in that order). ``paid_from`` (money paid back, from that
        bank nominal code): nothing more off what is owed; what was paid goes out as a REFUND note against the
        invoice instead of HOLD, the rest as an independent REFUND note paid out too."""
        parent = self.read_invoice(parent_id)
        owed = Decimal(str(parent.balance or 0)) if parent is not None else ZERO
        total = Decimal(str(parent.total or 0)) if parent is not None else ZERO
        # Paid on the parent: our payments, all posted before any credit note (the engine's order). The notes
        # already on it are the refunds before this one (posted in the event's order; all of them posted again
        # when payments change) and the part of this one made: VOID for what they took off the balance, HOLD
        # for the rest up to what was paid — the split this method made them with.
        paid = sum((p.amount for p in received(event).values()), ZERO)
        before = next(n for n, r in enumerate(event.refunds) if r.id == refund.id)
        noted = sum((r.amount + r.tax_amount for r in event.refunds[:before]), posted)
        held = min(max(noted - (total - paid - owed), ZERO), paid)
        made = []
        for kind, part_net, part_tax in mapping.credit_parts(net, tax, owed if paid_from is None else ZERO,
                                                              paid - held):
            part = refund.model_copy(update={"amount": part_net, "tax_amount": part_tax})
            if paid_from is None:
                body = mapping.credit_note_payload(event, part, client_id, parent_id, self.mapping, kind)
            else:  # HOLD's part (money paid on the invoice) goes back against it; the rest stands alone
                body = mapping.credit_note_payload(event, part, client_id, parent_id if kind == "HOLD" else "",
                                                   self.mapping, "REFUND", paid_from)
            made.append(str(self.client.call("Invoice_Create", body, write=True)["InvoiceID"]))
        return made

    def _refund_bank(self, event: InvoiceEvent, refund: Refund) -> int:
        method = references.refund_method(event, refund)
        bank = self.mapping.payment_accounts.get(method) if method else None
        if not bank:
            raise PermanentError(f"mapping.payment_accounts names no bank nominal code for {method!r}, the method of "
                                 f"the payment refund {refund.id} pays back")
        return int(bank)
