"""Conformance driver for Oracle Fusion Cloud Receivables (REST 11.13.18.05)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from tests.conformance.drivers import SandboxDriver

PLATFORM = "oracle-erp"
KEY = re.compile(r"/(\d+|<[^>]*>)")  # an item key (a number or a preview's placeholder)
UNLIMITED_PER_MINUTE = 1_000_000


class Driver(SandboxDriver):
    platform = PLATFORM
    limits_lifted = True

    def make_sandbox(self) -> Any:
        from connectors.oracle_erp import Sandbox

        return Sandbox(minute_limit=UNLIMITED_PER_MINUTE)  # Oracle publishes no limit: the fair-use stand-in off

    def close_books(self, through: date) -> None:
        raise AssertionError("oracle-erp: closed periods are off (capability closed_periods)")

    def expire_tokens(self) -> None:
        self.sandbox.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's payment terms (one of the three attributes Oracle lets change)."""
        self.sandbox.touch("receivablesInvoices", int(external_id), PaymentTerms="15 Net")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("customerAccounts") if c.get("AccountName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(number, total, credit still open) of every credit memo, reversals included."""
        return [(m["TransactionNumber"], -m["EnteredAmount"], -m["CreditMemoBalance"])
                for m in self.sandbox.records("receivablesCreditMemos")]

    def credit_applications(self) -> int:
        return sum(len(m["_applications"]) for m in self.sandbox.records("receivablesCreditMemos"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{method} {KEY.sub('/()', path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {KEY.sub('/()', '/' + p['path'].lstrip('/'))}", p["body"]) for p in planned]
