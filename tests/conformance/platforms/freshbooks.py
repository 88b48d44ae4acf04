"""FreshBooks in the conformance suite: how to reach into its sandbox."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "freshbooks"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.freshbooks import Sandbox

        self.sandbox = Sandbox(minute_limit=6000)  # our 60/minute default would make the sweeps wait

    def close_books(self, through: date) -> None:
        raise AssertionError("FreshBooks exposes no closing date (capability closed_periods is off)")

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes (FreshBooks has no concurrency token: last write wins)."""
        with self.sandbox._lock:
            for account in self.sandbox.accounts.values():
                invoice = account.tables["invoices/invoices"].get(int(external_id))
                if invoice is not None:
                    invoice.update(notes="Edited by the bookkeeper", updated="2026-11-29 12:00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("users/clients") if c.get("organization") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(credit number, total, credit still open) of every live credit note."""
        return [(n.get("credit_number", ""), Decimal(n["amount"]["amount"]), n["_left"])
                for n in self.sandbox.records("credit_notes/credit_notes")]

    def credit_applications(self) -> int:
        return sum(1 for p in self.sandbox.records("payments/payments") if p["type"] == "Credit")

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <resource>", body)."""
        return [(f"{method} {path.strip('/').split('/')[0]}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {p['path'].split('/account/', 1)[1].split('/')[1]}", p["body"]) for p in planned]
