"""Conformance driver for Bill.com (API v3): reaches into ``connectors.bill_com.Sandbox``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "bill-com"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.bill_com import Sandbox

        self.sandbox = Sandbox()

    def close_books(self, through: date) -> None:
        raise NotImplementedError("Bill.com's API exposes no closing date (capability closed_periods is off)")

    def expire_tokens(self) -> None:
        self.sandbox.expire_sessions()

    def token_refreshes(self) -> int:
        """A session login is Bill.com's only renewal: the first login included."""
        return self.sandbox.logins

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's due date in BILL (no concurrency token: the last write wins)."""
        with self.sandbox._lock:
            for org in self.sandbox.orgs.values():
                invoice = org.invoices.get(external_id)
                if invoice is not None:
                    invoice.update(dueDate="2027-01-31", updatedTime="2026-11-29T12:00:00.000+00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("customers") if c.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference number, total, credit still open) of every live credit memo."""
        return [(m["referenceNumber"], m["totalAmount"], m["totalAmount"] - m["appliedAmount"])
                for m in self.sandbox.records("memos") if not m["archived"]]

    def credit_applications(self) -> int:
        return sum(1 for i in self.sandbox.records("invoices") for amount in i["credits"].values() if amount > 0)

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <path without ids>", body)."""
        return [(f"{method} {_shape(path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {_shape(p['path'])}", p["body"]) for p in planned]


def _shape(path: str) -> str:
    return "/".join("{id}" if part.startswith(("<", "00e", "0cu", "ccr", "0rp")) else part
                    for part in path.split("/"))
