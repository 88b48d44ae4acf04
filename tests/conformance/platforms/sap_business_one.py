"""Conformance driver for the SAP Business One Service Layer: reaches into ``connectors.sap_business_one.Sandbox``."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "sap-business-one"
KEY = re.compile(r"\([^)]*\)")  # an entity key (a DocEntry, a CardCode or a preview's placeholder)


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.sap_business_one import Sandbox

        self.sandbox = Sandbox()

    def close_books(self, through: date) -> None:
        raise AssertionError("sap-business-one: posting periods are not modelled (capability closed_periods)")

    def expire_tokens(self) -> None:
        self.sandbox.expire_sessions()

    def token_refreshes(self) -> int:
        """A session login is the Service Layer's only renewal: the first login included."""
        return self.sandbox.logins

    def bookkeeper_edit(self, external_id: str) -> None:
        self.sandbox.bookkeeper_edit(external_id)

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("BusinessPartners") if c.get("CardName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(NumAtCard, total, credit still open: neither reconciled nor paid out) of every live A/R credit memo."""
        return [(m.get("NumAtCard", ""), m["DocTotal"], self.sandbox.credit_open(m))
                for m in self.sandbox.records("CreditNotes") if m["CancelStatus"] == "csNo"]

    def credit_applications(self) -> int:
        return sum(1 for m in self.sandbox.records("CreditNotes") if m["CancelStatus"] == "csNo" and m["_applied"])

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{method} {KEY.sub('()', path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {KEY.sub('()', p['path'])}", p["body"]) for p in planned]
