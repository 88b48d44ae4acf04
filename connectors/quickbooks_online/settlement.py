"""A refund paid back as QuickBooks keeps it (expense, linking Payment, A/R account): shared by settle, unsettle, find."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from connectors.base import ExternalRef, PermanentError


class RefundSettlement:
    """Mixed into the connector: uses its ``client``."""

    _receivable: str | None = None  # looked up once per connector

    def _receivable_account(self) -> str:
        """The company's Accounts Receivable account (an expense line on it is a charge on the customer)."""
        if self._receivable is None:
            found = self.client.query("Account", AccountType="Accounts Receivable")
            if not found:
                raise PermanentError("QuickBooks has no Accounts Receivable account to refund a customer credit from")
            self._receivable = str(found[0]["Id"])
        return self._receivable


def derived_key(request_id: str, part: str) -> str:
    """A second write's own requestid, stable for the step (QuickBooks replays an answer by requestid)."""
    return hashlib.sha256(f"{request_id}:{part}".encode()).hexdigest()[:32]


def has_link(row: dict[str, Any], txn_type: str) -> bool:
    return any(linked.get("TxnType") == txn_type for line in row.get("Line", []) for linked in line.get("LinkedTxn", []))


def settlement_ref(row: dict[str, Any]) -> ExternalRef:
    """A refund's settlement: its linking Payment, its amount the credit memo used."""
    used = next((line.get("Amount") for line in row.get("Line", []) for linked in line.get("LinkedTxn", [])
                 if linked.get("TxnType") == "CreditMemo"), None)
    return ExternalRef(external_id=str(row["Id"]), token=row.get("SyncToken"),
                       amount=Decimal(str(used)) if used is not None else None)
