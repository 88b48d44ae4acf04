"""Zoho Books' currencies (issue #20): an invoice or credit note carries ``currency_id``, the id Settings >
Currencies (``GET /settings/currencies``) gives the invoice's ISO code, and, for a currency other than the
organization's base one, ``exchange_rate`` — the spec: "Required when the invoice currency differs from the
organization's base currency". Ledgerwire has no rate of its own: it sends Zoho's latest rate for that currency
(the one Zoho would fill in itself). A currency not set up, or one without a rate, is refused before anything is
written (dead-lettered with the reason). The organization's base currency is ``home_currency()``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import PermanentError
from connectors.zoho_books.client import ZohoClient


def currency_fields(client: ZohoClient, code: str) -> dict[str, Any]:
    """``currency_id`` (and ``exchange_rate`` unless ``code`` is the base currency) for a document in ``code``."""
    found = next((c for c in client.list("/settings/currencies", "currencies") if c.get("currency_code") == code),
                 None)
    if found is None:
        raise PermanentError(f"invoice in {code}: the currency is not set up in Zoho Books (Settings > Currencies: "
                             f"add {code}, then retry the dead letter)")
    if found.get("is_base_currency"):
        return {"currency_id": found["currency_id"]}
    if not found.get("exchange_rate"):
        raise PermanentError(f"invoice in {code}: Zoho Books has no exchange rate for {code} (Settings > "
                             "Currencies: enter one, then retry the dead letter)")
    return {"currency_id": found["currency_id"], "exchange_rate": Decimal(str(found["exchange_rate"]))}


def home_currency(client: ZohoClient) -> str | None:
    """The organization's base currency code."""
    return next((str(c["currency_code"]) for c in client.list("/settings/currencies", "currencies")
                 if c.get("is_base_currency")), None)
