"""The conformance suite's driver for FreeAgent (its sandbox's books, read directly)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

PLATFORM = "freeagent"
ID = re.compile(r"/(<[^>]+>|\d+)(?=/|$)")  # a record's id (or a preview's placeholder)


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.freeagent import Sandbox

        self.sandbox = Sandbox(minute_limit=6000, hour_limit=100_000)

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_date(through)

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's comments in FreeAgent (no concurrency token: last write wins)."""
        with self.sandbox._lock:
            self.sandbox.company.tables["invoices"][external_id].update(
                comments="Edited by the bookkeeper", updated_at="2026-11-29T12:00:00.000000Z")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("contacts") if c["organisation_name"].startswith(f"{name} (#"))

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference, total, credit still open) of every live credit note, adjustments included (FreeAgent
        keeps a credit note's values negative)."""
        return [(n["reference"], -n["total_value"], -n["due_value"]) for n in self.sandbox.records("credit_notes")
                if n["status"] != "Cancelled"]

    def credit_applications(self) -> int:
        return len(self.sandbox.records("credit_note_reconciliations"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{method} {ID.sub('/{id}', path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {ID.sub('/{id}', p['path'])}", p["body"]) for p in planned]
