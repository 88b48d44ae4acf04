"""Queue rows QuickBooks Desktop's connector wrote before it ran on the delivery engine: their state, read as
the engine's legacy document on their next run (a one-off migration; nothing here runs for a new document)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import DocumentState, ExternalRef


def from_queue_state(state: dict[str, Any]) -> DocumentState:
    """A queue row written before the engine: its state as the engine's legacy document."""
    def refs(kind: str, status: str) -> dict[str, ExternalRef]:
        return {key: ExternalRef(external_id=v["txn_id"], amount=Decimal(v["amount"]), status=status)
                for key, v in (state.get(kind) or {}).items()}

    extra = {f"credit_applied:{key}": f"{v['txn_id']}:{v['amount']}" for key, v in (state.get("credits") or {}).items()}
    if state.get("txn_date"):
        extra["txn_date"] = state["txn_date"]
    return DocumentState(external_id=state.get("txn_id"), token=state.get("edit_seq"),
                         status="voided" if state.get("voided") else "posted" if state.get("txn_id") else "none",
                         delivered_version=1 if state.get("txn_id") else 0, payments=refs("payments", "applied"),
                         refunds=refs("refunds", "open"), extra=extra)
