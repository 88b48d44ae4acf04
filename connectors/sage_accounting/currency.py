"""Sage Business Cloud Accounting's currencies (issue #20), from Sage's Swagger v3.1: a sales invoice, sales credit
note and contact payment take ``currency_id`` (Sage's currency ids are the ISO codes, ``GET /currencies``) and
``exchange_rate``; ``GET /financial_settings`` gives the business's ``base_currency`` and whether
``multi_currency_enabled``; ``GET /exchange_rates`` the rate Sage applies to each foreign currency (its live rate,
or the business's own where it set one). A contact has a ``currency`` ("the currency that the contact trades in"),
and Sage's guide "How to invoice in another currency": after a contact's first invoice "Sage Accounting locks the
contact currency. Create a new contact to invoice the same customer in a different currency."

The rule Ledgerwire keeps (QuickBooks Online's): an invoice in the base currency goes as before (no currency
field, the contact the engine keeps). An invoice in another currency needs multi-currency on (else it is
dead-lettered before anything is written, with the reason) and goes, with its receipts, credit notes, customer
refunds and adjustments, to the shop customer's Sage contact *for that currency* (``<name> [CAD]``, reference
``LWC<id>-CAD``, created with ``currency_id`` CAD the first time), each document carrying ``currency_id`` and
Sage's own ``exchange_rate`` read from ``GET /exchange_rates`` (never a rate of ours). A currency Sage has no rate
for is refused before anything is written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import PermanentError
from connectors.rest import CurrencyCustomers
from connectors.sage_accounting import mapping
from connectors.sage_accounting.client import SageClient
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig


class SageCurrencies:
    def __init__(self, client: SageClient) -> None:
        self.client = client
        # financial_settings, read once for the base currency (it never changes); "multi-currency off" is read
        # again when an invoice in another currency arrives (the bookkeeper may have turned it on).
        self._settings: dict[str, Any] | None = None
        self._contacts = CurrencyCustomers()

    def settings(self, fresh: bool = False) -> dict[str, Any]:
        if self._settings is None or fresh:
            self._settings = self.client.get("/financial_settings") or {}
        return self._settings

    def home(self) -> str | None:
        """``financial_settings.base_currency``: the business's currency."""
        return (self.settings().get("base_currency") or {}).get("id")

    def foreign(self, event: InvoiceEvent, config: MappingConfig) -> bool:
        home = config.home_currency or self.home()
        return home is not None and event.currency != home

    def stamp(self, event: InvoiceEvent, body: dict[str, Any], config: MappingConfig, new: bool = True
              ) -> dict[str, Any]:
        """``body`` (``{"sales_invoice" | "sales_credit_note" | "contact_payment": {...}}`` of ``event``) in the
        event's currency, on the contact for that currency; as it is for the base currency. An edit (``new``
        False) sends no rate: the invoice keeps the one it was booked at."""
        if not self.foreign(event, config):
            return body
        enabled = "multi_currency_enabled"
        if not (self.settings().get(enabled) or self.settings(fresh=True).get(enabled)):
            raise PermanentError(f"invoice in {event.currency}: this Sage business books in {self.home()} only "
                                 "(turn on multi-currency in Settings > Financial Settings, then retry the dead letter)")
        rate = {"exchange_rate": self.rate(event.currency)} if new else {}
        (envelope, fields), = body.items()
        return {envelope: {**fields, "contact_id": self.contact(event, config), "currency_id": event.currency, **rate}}

    def rate(self, code: str) -> Decimal:
        """Sage's exchange rate for ``code`` (what Sage itself would fill in)."""
        found = next((r for r in self.client.list("/exchange_rates")
                      if (r.get("currency") or {}).get("id") == code and r.get("rate")), None)
        if found is None:
            raise PermanentError(f"invoice in {code}: Sage has no exchange rate for {code} (Settings > Currencies "
                                 f"and exchange rates: add {code}, then retry the dead letter)")
        return Decimal(str(found["rate"]))

    def contact(self, event: InvoiceEvent, config: MappingConfig) -> str:
        """The shop customer's Sage contact in ``event.currency``: found by its reference, else created; kept up to
        date with the shop's customer (name, email, phone) as the home contact is; its currency is locked."""
        twin = event.customer.model_copy(update={"name": f"{event.customer.name} [{event.currency}]"})
        reference = f"{mapping.contact_reference(event.customer)}-{event.currency}"
        body = mapping.contact_payload(twin)
        body["contact"]["reference"] = reference

        def find() -> dict[str, Any] | None:
            found = [c for c in self.client.list("/contacts", contact_type_id="CUSTOMER", search=reference)
                     if c.get("reference") == reference]
            return found[0] if found else None

        return self._contacts.get(
            event.customer.id, event.currency, body, find=find, id_of=lambda c: c["id"],
            create=lambda: self.client.write("POST", "/contacts", {"contact": {**body["contact"],
                                                                               "currency_id": event.currency}}),
            stale=lambda current: _stale(current, body["contact"]),
            update=lambda current: self.client.write("PUT", f"/contacts/{current['id']}", body))

    def like_credit_note(self, credit_note_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A contact allocation on the contact of its credit note (a foreign one is on the currency's contact)."""
        if not self.settings().get("multi_currency_enabled"):
            return body  # one currency: the engine's contact
        note = self.client.get(f"/sales_credit_notes/{credit_note_id}") or {}
        contact = (note.get("contact") or {}).get("id")
        return {"contact_allocation": {**body["contact_allocation"], "contact_id": contact}} if contact else body


def _stale(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the contact Sage holds differs from ours in what the shop can change."""
    person, held = wanted.get("main_contact_person") or {}, current.get("main_contact_person") or {}
    return current.get("name") != wanted["name"] or any(held.get(k) != v for k, v in person.items()
                                                       if k in ("email", "telephone"))
