"""Per-platform drivers of the conformance suite: how to reach into a connector's sandbox (close its books,
expire tokens, edit as the bookkeeper, count what landed). A connector joins the suite by one line in
``ON_ENGINE`` (and a driver here); registered connectors missing from it show as skips."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any


class QuickBooksOnlineDriver:
    platform = "quickbooks-online"

    def __init__(self) -> None:
        from connectors.quickbooks_online import Sandbox

        self.sandbox = Sandbox()

    def _realm(self):
        return next(iter(self.sandbox.realms.values()))

    def close_books(self, through: date) -> None:
        self.sandbox.set_book_close_date(through)

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's memo at the platform: its concurrency token moves on."""
        invoice = self._realm().entities["Invoice"][external_id]
        invoice["CustomerMemo"] = {"value": "Edited by the bookkeeper"}
        invoice["SyncToken"] = str(int(invoice["SyncToken"]) + 1)

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.entities("Customer") if c.get("CompanyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(number, total, credit still open) of every credit note, adjustments included."""
        return [(m.get("DocNumber", ""), Decimal(m["TotalAmt"]), Decimal(m.get("Balance", 0)))
                for m in self.sandbox.entities("CreditMemo")]

    def credit_applications(self) -> int:
        return sum(1 for p in self.sandbox.entities("Payment") if not p.get("_deleted")
                   and Decimal(p["TotalAmt"]) == 0)

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as (entity, body)."""
        return [(path.strip("/"), body) for _, path, body in self.sandbox.requests if path != "/preferences"]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"].split("?")[0].rsplit("/", 1)[1], p["body"]) for p in planned]


class SageAccountingDriver:
    platform = "sage-accounting"

    def __init__(self) -> None:
        from connectors.sage_accounting import Sandbox

        self.sandbox = Sandbox()

    def close_books(self, through: date) -> None:
        self.sandbox.set_lockdown_date(through)

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes in Sage (Sage has no concurrency token: last write wins)."""
        with self.sandbox._lock:
            for business in self.sandbox.businesses.values():
                invoice = business.tables["sales_invoices"].get(external_id)
                if invoice is not None:
                    invoice.update(notes="Edited by the bookkeeper", updated_at="2026-11-29T12:00:00.000000+00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("contacts") if c.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference, total, credit still open) of every live credit note, adjustments included."""
        return [(n.get("reference", ""), n["total_amount"], n["outstanding_amount"])
                for n in self.sandbox.records("sales_credit_notes") if n["status"]["id"] != "VOID"]

    def credit_applications(self) -> int:
        return len(self.sandbox.records("contact_allocations"))

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <resource>", body)."""
        return [(f"{method} {path.strip('/').split('/')[0]}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {p['path'].strip('/').split('/')[0].split('?')[0]}", p["body"]) for p in planned]


# platform -> driver. Porting a connector onto the engine: add its line here.
ON_ENGINE: dict[str, type] = {
    "quickbooks-online": QuickBooksOnlineDriver,
    "sage-accounting": SageAccountingDriver,
}
