"""Odoo's price-included sales taxes, for tax-inclusive shop invoices: each mapped (tax-excluded) sales tax has a
price-included twin of the same percentage, and Odoo then takes the tax out of the price itself. Read from
Odoo once per connector."""

from __future__ import annotations

from decimal import Decimal

from connectors.odoo import mapping
from connectors.odoo.client import OdooClient
from daemon.config import MappingConfig


class IncludedTaxes:
    def __init__(self, client: OdooClient, config: MappingConfig) -> None:
        self.client = client
        self.mapping = config
        self._included: dict[int, int] | None = None

    def __call__(self) -> dict[int, int]:
        """Each mapped (tax-excluded) sales tax → the price-included sales tax of the same percentage."""
        if self._included is None:
            mapped = sorted({mapping.record_id(v, f"tax_codes.{k}") for k, v in self.mapping.tax_codes.items()})
            rates = {int(t["id"]): Decimal(str(t["amount"])) for t in self.client.search_read(
                "account.tax", [("id", "in", mapped)], ["id", "amount"])} if mapped else {}
            twins = self.client.search_read("account.tax", [("type_tax_use", "=", "sale"), ("amount_type", "=", "percent"),
                                                            ("price_include", "=", True)], ["id", "amount"], order="id asc")
            by_rate: dict[Decimal, int] = {}
            for t in twins:
                by_rate.setdefault(Decimal(str(t["amount"])), int(t["id"]))
            self._included = {i: by_rate[r] for i, r in rates.items() if r in by_rate}
        return self._included
