"""Wave's currencies (issue #20). Wave's API: ``invoiceCreate`` takes ``currency`` (a ``CurrencyCode``; "defaults
to business currency") and an optional ``exchangeRate``; ``invoicePaymentCreateManual`` requires ``exchangeRate``;
the business's currency is ``business.currency``. Wave's help ("Foreign currency invoices and bills"): the
currency is chosen on the invoice (not tied to the customer) and Wave fills in its own rate, which the invoice
then holds (``Invoice.exchangeRate``); Wave's API offers no other rate (no exchange-rate query).

So: every invoice (and negative invoice, Wave's credit note) carries the shop's ``currency`` and no
``exchangeRate`` — Wave applies its own; every payment on an invoice (received, reversal, credit application,
refund paid back) carries the rate Wave holds on that invoice (1 in the business currency), read from Wave,
never one of ours. A currency Wave does not take is refused by Wave's schema (``CurrencyCode``) and dead-lettered."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.wave import operations
from connectors.wave.client import WaveClient

ONE = Decimal("1")


class WaveCurrencies:
    def __init__(self, client: WaveClient) -> None:
        self.client = client
        self._home: str | None = None
        self._rates: dict[str, Decimal] = {}  # invoice id -> the rate Wave holds on it (fixed at its creation)

    def home(self) -> str | None:
        """``business.currency.code`` (a business's currency never changes: read once)."""
        if self._home is None:
            self._home = ((self.client.query(operations.BUSINESS_CURRENCY).get("currency") or {}).get("code")) or None
        return self._home

    def held(self, invoice: dict[str, Any]) -> dict[str, Any]:
        """``invoice`` as Wave answered it; its rate remembered for the payments on it."""
        if invoice.get("exchangeRate") is not None and "<new " not in str(invoice.get("id")):
            self._rates[str(invoice["id"])] = Decimal(str(invoice["exchangeRate"]))
        return invoice

    def rate(self, invoice_id: str) -> Decimal:
        """The exchange rate a payment on ``invoice_id`` carries: the one Wave holds on the invoice (a preview's
        placeholder invoice: 1, nothing is sent)."""
        if invoice_id not in self._rates:
            held = self.client.invoice(invoice_id)
            if held is None:
                return ONE
            self.held(held)
        return self._rates.get(invoice_id, ONE)
