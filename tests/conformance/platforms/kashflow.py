"""The conformance suite's driver for KashFlow (its SOAP sandbox's books, read directly)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from tests.conformance.drivers import SandboxDriver

PLATFORM = "kashflow"


class Driver(SandboxDriver):
    platform = PLATFORM
    limits_lifted = True  # KashFlow documents no request limit: the sandbox enforces none

    def make_sandbox(self) -> Any:
        from connectors.kashflow import Sandbox

        return Sandbox()

    def close_books(self, through: date) -> None:
        raise NotImplementedError("KashFlow's SOAP API exposes no lock date (capability closed_periods is off)")

    def expire_tokens(self) -> None:
        """No token (the user name and password travel in every call): what lapses is the daemon's place in the
        account's API IP list, which the connector renews once through AutoAuthIP."""
        self.sandbox.forget_ips()

    def token_refreshes(self) -> int:
        return self.sandbox.auto_authorisations

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper edits the invoice's text in KashFlow (no concurrency token: the last write wins)."""
        with self.sandbox._lock:
            self.sandbox.invoices[int(external_id)]["ReadableString"] = "Edited by the bookkeeper"

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.customers.values() if c.get("Name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(our reference, total, credit still open) of every credit note (an invoice with negative lines)."""
        return [(n.get("CustomerReference") or "", -(n["NetAmount"] + n["VATAmount"]),
                 -(n["NetAmount"] + n["VATAmount"] - n["AmountPaid"])) for n in self.sandbox.credit_notes()]

    def credit_applications(self) -> int:
        return sum(1 for p in self.sandbox.payments.values() if p.get("pair") and p["PayAmount"] < 0)

    def writes(self) -> list[tuple[str, Any]]:
        return list(self.sandbox.requests)

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"], p["body"]) for p in planned]
