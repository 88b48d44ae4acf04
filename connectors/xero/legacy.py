"""Documents the Xero connector delivered before it ran on the delivery engine: their state, read into the
engine's typed state on their next delivery (a one-off migration; nothing here runs for a new document)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from connectors.base import DocumentState
from connectors.engine_state import CreditApplication, EngineState


def from_legacy(doc: DocumentState) -> DocumentState:
    """A document the pre-engine connector delivered: its credit allocations, split payments and re-dated
    invoice date move into the engine's typed state (``EngineState.from_legacy`` reads the rest)."""
    if doc.engine is not None or doc.delivered_version == 0:
        return doc
    doc = doc.model_copy(deep=True)
    extra = doc.extra
    # A refund reversal changed nothing the original holds: not an adjustment of its lines.
    entries = [e for e in json.loads(extra.get("adjustments", "[]")) if not e.get("refund")]
    doc.engine = EngineState.from_legacy({**extra, "adjustments": json.dumps(entries)})
    for adjustment, entry in zip(doc.engine.adjustments, [e for e in entries if e.get("id")]):
        adjustment.reference = str(entry.get("number") or "")
    for ref in doc.refunds.values():
        if ref.status == "reversed":  # kept by the lock date and charged again by its reversal: settled
            ref.status = "voided"
    for refund_id, refs in json.loads(extra.get("allocations", "{}")).items():
        if refund_id in doc.refunds and doc.refunds[refund_id].status != "voided" and refs:
            doc.engine.applications[refund_id] = CreditApplication(  # every allocation, released together
                external_id=f"{doc.refunds[refund_id].external_id}/{' '.join(r[0] for r in refs)}",
                amount=sum((Decimal(r[1]) for r in refs), Decimal("0")))
    for payment_id, parts in json.loads(extra.get("payment_parts", "{}")).items():
        if payment_id in doc.payments:
            doc.payments[payment_id].external_id = " ".join(part[0] for part in parts)
    extra.pop("total_difference", None)  # the engine reports the tax difference alone (``tax_difference``)
    if extra.get("open_date"):
        doc.engine.posted_on = date.fromisoformat(extra["open_date"])
    return doc
