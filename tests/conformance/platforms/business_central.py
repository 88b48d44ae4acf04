"""Conformance driver for Dynamics 365 Business Central (API v2.0)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "business-central"
KEY = re.compile(r"\([^)]*\)")  # an entity key (a GUID or a preview's placeholder)


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.business_central import Sandbox

        self.sandbox = Sandbox()

    def close_books(self, through: date) -> None:
        raise AssertionError("business-central: closed periods are off (capability closed_periods)")

    def expire_tokens(self) -> None:
        self.sandbox.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice in Business Central: its ETag moves on."""
        self.sandbox.bookkeeper_touch("salesInvoices", external_id)

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("customers") if c.get("displayName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(externalDocumentNumber, total, credit still open) of every posted credit memo we made."""
        return [(m.get("externalDocumentNumber", ""), m["totalAmountIncludingTax"], m["_open"])
                for m in self.sandbox.records("salesCreditMemos") if m["status"] == "Open"]

    def credit_applications(self) -> int:
        return sum(1 for m in self.sandbox.records("salesCreditMemos") if m["status"] == "Open" and m.get("invoiceId"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{method} {KEY.sub('()', path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {KEY.sub('()', p['path'])}", p["body"]) for p in planned]
