"""KashFlow's currencies (issue #20), from KashFlow's WSDL: an invoice (``Invoice_TypeDefined``, a credit note
too: KashFlow's credit notes are invoices with negative lines) carries its own ``CurrencyCode`` and
``ExchangeRate`` (a decimal the .asmx always serialises: 0 when none is sent); a payment (``Payment``) has neither:
it is in the currency of the invoice it pays (``PayInvoice``). ``GetCurrencies`` lists the currencies set up in
the account (Settings > Currencies): ``CurrencyCode``, KashFlow's ``ExchangeRate`` for it (kept up to date daily
from the ECB when the bookkeeper ticks it) and ``isDefault`` for the account's own currency. A customer has a
``CurrencyID`` too (``SetCustomerCurrency``), but the WSDL gives the invoice its own currency and rate, so the
shop customer stays one KashFlow customer in every currency and its currency is left as the bookkeeper set it
(nothing in the WSDL or KashFlow's pages found says an invoice must be in its customer's currency).

The rule Ledgerwire keeps: an invoice in the home currency goes as before (no ``CurrencyCode``). An invoice in
another currency, and its credit notes, carry ``CurrencyCode`` and KashFlow's own ``ExchangeRate`` for it, read
from ``GetCurrencies`` when the document is written (never a rate of Ledgerwire's); its payments and refunds paid
back follow their document. A currency not set up, or one without a rate, is refused before the invoice is
written (dead-lettered with the reason)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import PermanentError
from connectors.kashflow.client import KashFlowClient
from daemon.canonical import InvoiceEvent


class Currencies:
    def __init__(self, client: KashFlowClient) -> None:
        self.client = client
        self._home: str | None = None  # the account's own currency never changes: read once

    def listed(self) -> list[dict[str, Any]]:
        return (self.client.call("GetCurrencies") or {}).get("Currencies") or []

    def home(self) -> str | None:
        """``GetCurrencies``' default currency (``isDefault``)."""
        if self._home is None:
            self._home = next((str(c["CurrencyCode"]) for c in self.listed() if c.get("isDefault")), None)
        return self._home

    def fields(self, event: InvoiceEvent, home: str | None) -> dict[str, Any]:
        """``CurrencyCode`` and ``ExchangeRate`` for a document of ``event``; nothing in the home currency."""
        if home is None or event.currency == home:
            return {}
        found = next((c for c in self.listed() if c.get("CurrencyCode") == event.currency), None)
        if found is None:
            raise PermanentError(f"invoice in {event.currency}: the currency is not set up in this KashFlow account, "
                                 f"which books in {home} (Settings > Currencies: add {event.currency}, then retry "
                                 "the dead letter)")
        rate = Decimal(str(found.get("ExchangeRate") or 0))
        if rate <= 0:
            raise PermanentError(f"invoice in {event.currency}: KashFlow has no exchange rate for {event.currency} "
                                 "(Settings > Currencies: enter one, then retry the dead letter)")
        return {"CurrencyCode": event.currency, "ExchangeRate": rate}
