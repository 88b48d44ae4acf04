"""MYOB AccountRight in the conformance suite: its sandbox's lock period, tokens, RowVersions and books."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

PLATFORM = "myob-accountright"


class Driver:
    platform = PLATFORM

    def __init__(self) -> None:
        from connectors.myob_accountright import Sandbox

        self.sandbox = Sandbox(per_second_limit=200)  # MYOB's 8/s would make the sweeps wait

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_period(through + timedelta(days=1))  # MYOB locks what is dated *prior to* its date

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's comment in AccountRight: its RowVersion moves on."""
        with self.sandbox._lock:
            for cf in self.sandbox.files.values():
                invoice = cf.tables["Sale/Invoice/Item"].get(external_id)
                if invoice is not None:
                    invoice["Comment"] = "Edited by the bookkeeper"
                    invoice["RowVersion"] = cf.row_version()

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("Contact/Customer") if c.get("CompanyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(number, total, credit still open) of every credit (a negative service invoice), adjustments included."""
        from connectors.myob_accountright.currency import foreign_amount  # a foreign credit's own amounts

        return [(n.get("CustomerPurchaseOrderNumber") or n["Number"], -foreign_amount(n, "TotalAmount"),
                 -foreign_amount(n, "BalanceDueAmount"))
                for n in self.sandbox.records("Sale/Invoice/Service") if n["TotalAmount"] < 0]

    def credit_applications(self) -> int:
        return len(self.sandbox.records("Sale/CreditSettlement"))

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <resource>", body)."""
        return [(f"{method} {_resource(path)}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {_resource(p['path'].split('?')[0])}", p["body"]) for p in planned]


def _resource(path: str) -> str:
    """``Sale/Invoice/Item/<uid>`` → ``Sale/Invoice/Item`` (an id, or a preview's placeholder, dropped)."""
    parts = path.strip("/").split("/")
    return "/".join(p for p in parts if not (p.startswith("<") or len(p) == 36 and p.count("-") == 4))
