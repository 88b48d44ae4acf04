"""Conformance driver for NetSuite over SuiteTalk REST web services (its sandbox account's records, read directly)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from tests.conformance.drivers import SandboxDriver

PLATFORM = "netsuite-rest"
KEY = re.compile(r"/(\d+|<[^>]*>)(?=/|$)")  # an internal id (or a preview's placeholder) in a path


class Driver(SandboxDriver):
    platform = PLATFORM
    limits_lifted = True  # NetSuite limits concurrency only: governance off so the sweeps run at full speed

    def make_sandbox(self) -> Any:
        from connectors.netsuite_rest import Sandbox

        return Sandbox(concurrency_limit=None)

    def close_books(self, through: date) -> None:
        self.sandbox.close_periods(through)

    def expire_tokens(self) -> None:
        raise AssertionError("netsuite-rest: TBA tokens do not expire (capability expiring_credentials is off)")

    def token_refreshes(self) -> int:
        return 0

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's memo in NetSuite (no concurrency token: the last write wins)."""
        self.sandbox.touch("invoice", external_id, memo="Edited by the bookkeeper")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("customer") if c.get("companyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(our external id, total, credit still unapplied) of every credit memo, voids and adjustments included."""
        return [(m.get("externalId") or "", m["total"], m["unapplied"]) for m in self.sandbox.records("creditMemo")]

    def credit_applications(self) -> int:
        return sum(1 for m in self.sandbox.records("creditMemo") if not m.get("createdFrom")
                   for line in m.get("apply", {}).get("items", []) if line.get("apply"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{method} {KEY.sub('/()', path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {KEY.sub('/()', p['path'].split('?')[0].removeprefix('/record/v1'))}", p["body"])
                for p in planned]
