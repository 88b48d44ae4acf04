"""Odoo's currencies (issue #20): an invoice or credit note carries ``currency_id``, the active ``res.currency``
whose name is the invoice's ISO code. Odoo converts at its own rates (``res.currency.rate`` on the move's date):
no rate is sent. A currency the database has not activated is refused before anything is written (dead-lettered
with the reason). Odoo ties no currency to a partner, so customers are unchanged. The company's currency is read
from ``res.company.currency_id``, so ``mapping.home_currency`` need not be configured."""

from __future__ import annotations

from typing import Any

from connectors.base import PermanentError
from connectors.odoo.client import OdooClient


def currency_vals(client: OdooClient, code: str) -> dict[str, Any]:
    """``{"currency_id": id}`` of the active currency ``code``."""
    found = client.search_read("res.currency", [("name", "=", code), ("active", "=", True)], ["id"], limit=1)
    if not found:
        raise PermanentError(f"invoice in {code}: the currency is not active in this Odoo database (Accounting "
                             f"> Configuration > Currencies: activate {code}, then retry the dead letter)")
    return {"currency_id": found[0]["id"]}


def home_currency(client: OdooClient) -> str | None:
    """The company's currency code (``res.company.currency_id``, a many2one read as [id, name])."""
    company = client.search_read("res.company", [], ["currency_id"], limit=1)
    value = company[0].get("currency_id") if company else None
    return str(value[1]) if isinstance(value, list) and len(value) > 1 else None
