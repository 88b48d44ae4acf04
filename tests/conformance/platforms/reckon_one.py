"""Reckon One's conformance driver: reaches into its sandbox (lock the book, expire tokens, edit as the
bookkeeper, count what landed)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "reckon-one"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.reckon_one import Sandbox

        self.sandbox = Sandbox()

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_off_date(through)

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes in Reckon (no concurrency token: the last write wins)."""
        with self.sandbox._lock:
            for book in self.sandbox.books.values():
                invoice = book.tables["invoices"].get(external_id)
                if invoice is not None:
                    invoice["notes"] = "Edited by the bookkeeper"

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("customers") if c.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference, total, credit still open) of every credit note, adjustments included."""
        return [(n.get("reference", ""), n["totalAmount"], n["balance"]) for n in self.sandbox.records("creditNotes")]

    def credit_applications(self) -> int:
        return sum(len(n["transactionLinks"]) for n in self.sandbox.records("creditNotes"))

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <resource>", body)."""
        return [(f"{method} {path.strip('/').split('/')[0]}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {p['path'].strip('/').split('/')[0]}", p["body"]) for p in planned]
