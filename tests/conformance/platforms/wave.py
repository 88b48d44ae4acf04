"""Conformance driver for Wave (public GraphQL API): reaches into ``connectors.wave.Sandbox``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "wave"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.wave import Sandbox

        self.sandbox = Sandbox(minute_limit=6000)  # Wave publishes no limit; the sandbox's 60/minute would make the sweeps wait

    def close_books(self, through: date) -> None:
        raise NotImplementedError("Wave's API exposes no lock date (capability closed_periods is off)")

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's memo in Wave (no concurrency token: the last write wins)."""
        with self.sandbox._lock:
            for business in self.sandbox.businesses.values():
                invoice = business.invoices.get(external_id)
                if invoice is not None:
                    invoice.update(memo="Edited by the bookkeeper", modifiedAt="2026-11-29T12:00:00.000000+00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.customers() if c.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(number, total, credit still open) of every refund's negative invoice (Wave has no credit note)."""
        return [(i["invoiceNumber"], -i["total"]["value"], -i["amountDue"]["value"])
                for i in self.sandbox.invoices() if i["total"]["value"] < 0]

    def credit_applications(self) -> int:
        """Credit applied to an invoice: live payments from the customer credit account on positive invoices."""
        count = 0
        for invoice in self.sandbox.invoices():
            if invoice["total"]["value"] >= 0:
                amounts = [p["amount"] for p in invoice["payments"] if p["paymentAccount"]["id"] == "acct-credit"]
                count += sum(1 for a in amounts if a > 0) - sum(1 for a in amounts if a < 0)
        return count

    def writes(self) -> list[tuple[str, Any]]:
        """Every mutation the sandbox received, as (mutation, input)."""
        return list(self.sandbox.requests)

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"], p["body"]["input"]) for p in planned]
