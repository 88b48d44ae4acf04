"""The conformance suite's driver for NetSuite SuiteTalk SOAP (its sandbox's records, read directly)."""

from __future__ import annotations

from datetime import date
from typing import Any

from tests.conformance.drivers import SandboxDriver

PLATFORM = "netsuite-soap"


class Driver(SandboxDriver):
    platform = PLATFORM
    limits_lifted = True  # NetSuite limits concurrency only: the sandbox's cap is set above the harness's threads

    def make_sandbox(self) -> Any:
        from connectors.netsuite_soap import Sandbox

        return Sandbox(concurrency_limit=8)

    def close_books(self, through: date) -> None:
        self.sandbox.lock_periods(through)

    def expire_tokens(self) -> None:
        raise NotImplementedError("TBA tokens do not expire (capability expiring_credentials is off)")

    def token_refreshes(self) -> int:
        return 0

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper edits the invoice's memo in NetSuite (no concurrency token on update: last write wins)."""
        with self.sandbox._lock:
            self.sandbox.transactions[external_id].update(memo="Edited by the bookkeeper", lastModifiedDate="2026-11-29T12:00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.customers.values() if c.get("companyName") == name)

    def credit_notes(self) -> list[tuple[str, Any, Any]]:
        """(our external id, total, credit still unapplied: neither applied nor refunded) of every credit memo,
        adjustments included."""
        with self.sandbox._lock:
            return [(m.get("externalId") or "", m["total"], self.sandbox.credit_left(internal_id))
                    for internal_id, m in self.sandbox.transactions.items()
                    if m["type"] == "creditMemo" and not m["deleted"]]

    def credit_applications(self) -> int:
        return sum(len(m["applyList"]) for m in self.sandbox.credit_memos())

    def writes(self) -> list[tuple[str, Any]]:
        return list(self.sandbox.requests)

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"], p["body"]) for p in planned]
