"""Conformance driver for QuickFile (JSON API v1.2): reaches into ``connectors.quickfile.Sandbox``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "quickfile"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.quickfile import Sandbox

        self.sandbox = Sandbox(day_limit=100_000)  # the sweeps make more calls than a day's 1,000

    def close_books(self, through: date) -> None:
        raise NotImplementedError("QuickFile's API exposes no lock date (capability closed_periods is off)")

    def expire_tokens(self) -> None:
        raise NotImplementedError("QuickFile signs a static key into every request (expiring_credentials is off)")

    def token_refreshes(self) -> int:
        return 0

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes in QuickFile (no concurrency token: the last write wins)."""
        with self.sandbox._lock:
            for account in self.sandbox.accounts.values():
                if int(external_id) in account.invoices:
                    account.invoices[int(external_id)]["Notes"] = "Edited by the bookkeeper"

    def customers(self, name: str) -> int:
        return sum(1 for a in self.sandbox.accounts.values() for c in a.clients.values() if c.get("CompanyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        return self.sandbox.credit_notes()

    def credit_applications(self) -> int:
        """Credit notes applied to their parent invoice (QuickFile applies them as it creates them)."""
        return sum(1 for _, _, left in self.sandbox.credit_notes() if left == 0)

    def writes(self) -> list[tuple[str, Any]]:
        return list(self.sandbox.requests)

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        methods = {"/1_2/invoice/create": "Invoice_Create", "/1_2/invoice/delete": "Invoice_Delete",
                   "/1_2/payment/create": "Payment_Create", "/1_2/payment/delete": "Payment_Delete",
                   "/1_2/client/create": "Client_Create", "/1_2/client/update": "Client_Update"}
        return [(methods[p["path"]], p["body"]) for p in planned]
