"""The tax rounding line that keeps the shop's total, made and read back as tax: shared by every document."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from connectors.business_central import mapping
from connectors.business_central.adjusted import CREDIT_MEMOS, INVOICES, LINES

log = structlog.get_logger(__name__)


class TaxRounding:
    """Mixed into the connector: uses its ``client``, ``settings``, ``target`` and ``mapping``."""

    def _round(self, resource: str, made: dict[str, Any], shop_total: Decimal, number: str) -> dict[str, Any]:
        total = made.get("totalAmountIncludingTax")
        difference = shop_total - Decimal(str(total)) if total is not None and self.client.recorder is None else 0
        if not difference:
            return made
        account = self.settings.tax_rounding_account
        log.warning("business_central_tax_rounding", target=self.target.name, document=number,
                    difference=str(difference), rounding_line=account is not None)
        if account is None:
            return made
        self.client.write("POST", f"{resource}({made['id']})/{LINES[resource]}",
                          mapping.rounding_line(difference, account, self.mapping))
        return self.client.get(f"{resource}({made['id']})") or made

    def _rounding(self, document: dict[str, Any]) -> Decimal:
        """The tax rounding lines of a document (on ``settings.tax_rounding_account``): tax, in the books."""
        account = self.settings.tax_rounding_account
        return sum((Decimal(str(ln.get("amountExcludingTax") or 0))
                    for ln in document.get(LINES[INVOICES]) or document.get(LINES[CREDIT_MEMOS]) or []
                    if account and ln.get("lineObjectNumber") == account), Decimal("0"))
