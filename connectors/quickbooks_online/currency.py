"""QuickBooks Online's currencies (issue #20), from Finance.xsd: every transaction has ``CurrencyRef`` ("the
Currency in which all amounts on the associated transaction are expressed") and an optional ``ExchangeRate``;
a customer's ``CurrencyRef`` is "the currency for all the business transactions created for or received from
the customer" and cannot change once set; ``Preferences.CurrencyPrefs`` says whether the company has
``MultiCurrencyEnabled`` and its ``HomeCurrency``.

The rule Ledgerwire keeps: an invoice in the home currency goes as before (no CurrencyRef, the customer the
engine keeps). An invoice in another currency needs multicurrency on (else it is dead-lettered before anything is
written, with the reason) and goes, with its payments, credit memos and adjustments, to the shop customer's
QuickBooks customer *for that currency*: ``<name> [CAD] (#<shop id>)``, created with ``CurrencyRef`` CAD the first
time (QuickBooks refuses a CAD invoice on a USD customer, and a customer's currency is fixed). No
``ExchangeRate`` is sent: QuickBooks applies its own rate for the transaction date. A currency the company has
not added is refused by QuickBooks and dead-lettered with its message."""

from __future__ import annotations

import hashlib
from typing import Any

from connectors.base import PermanentError
from connectors import references
from connectors.quickbooks_online import mapping
from connectors.quickbooks_online.client import QboClient
from connectors.rest import CurrencyCustomers
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig


class Currencies:
    def __init__(self, client: QboClient) -> None:
        self.client = client
        # CurrencyPrefs, read once: the home currency never changes and multicurrency, once on, cannot be turned
        # off; "off" is read again when an invoice in another currency arrives (the bookkeeper may have turned it on).
        self._prefs: dict[str, Any] | None = None
        self._twins = CurrencyCustomers()

    def prefs(self, fresh: bool = False) -> dict[str, Any]:
        if self._prefs is None or fresh:
            self._prefs = self.client.preferences().get("CurrencyPrefs") or {}
        return self._prefs

    def multicurrency(self) -> bool:
        return bool(self.prefs().get("MultiCurrencyEnabled") or self.prefs(fresh=True).get("MultiCurrencyEnabled"))

    def home(self) -> str | None:
        """``CurrencyPrefs.HomeCurrency``: the company's currency."""
        return (self.prefs().get("HomeCurrency") or {}).get("value")

    def stamp(self, event: InvoiceEvent, body: dict[str, Any], config: MappingConfig) -> dict[str, Any]:
        """``body`` (an Invoice, Payment or CreditMemo of ``event``) in the event's currency, on the customer for
        that currency; as it is for the home currency."""
        home = config.home_currency or self.home()
        if home is None or event.currency == home:
            return body
        if not self.multicurrency():
            raise PermanentError(f"invoice in {event.currency}: this QuickBooks company books in {home} only "
                                 "(turn on Multicurrency in Account and settings > Advanced, then retry the dead letter)")
        customer = self.customer(event, config)
        return {**body, "CustomerRef": {"value": customer}, "CurrencyRef": {"value": event.currency}}

    def customer(self, event: InvoiceEvent, config: MappingConfig) -> str:
        """The shop customer's QuickBooks customer in ``event.currency``: found by its name, else by the part of
        its name the shop cannot change (``[CAD] (#<shop id>)``: the shop renamed the customer), and kept up to
        date; else created."""
        twin = event.customer.model_copy(update={"name": f"{event.customer.name} [{event.currency}]"})
        wanted = {**mapping.customer_payload(twin, config), "CurrencyRef": {"value": event.currency}}
        request_id = hashlib.sha256(f"customer:{twin.id}:{event.currency}".encode()).hexdigest()[:32]

        def find() -> dict[str, Any] | None:
            found = self.client.query("Customer", DisplayName=wanted["DisplayName"]) or self.client.query(
                "Customer", _like={"DisplayName": f"% [{event.currency}] (#{twin.id})"})
            return found[0] if found else None

        def update(current: dict[str, Any]) -> dict[str, Any]:  # its CurrencyRef is fixed at creation
            body = {k: v for k, v in wanted.items() if k != "CurrencyRef"}
            body.update(Id=current["Id"], SyncToken=current["SyncToken"], sparse=True)
            changed = hashlib.sha256(f"{request_id}:{references.payload_digest(wanted)}".encode()).hexdigest()[:32]
            return self.client.write("Customer", body, request_id=changed)

        return self._twins.get(twin.id, event.currency, wanted, find=find, id_of=lambda c: c["Id"], update=update,
                               create=lambda: self.client.write("Customer", wanted, request_id=request_id),
                               stale=lambda current: any(current.get(k) != wanted.get(k) for k in
                                                         ("DisplayName", "PrimaryEmailAddr", "PrimaryPhone")))

    def like_credit_memo(self, credit_memo_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A credit application (a zero Payment) on the customer and in the currency of its credit memo."""
        if not self.prefs().get("MultiCurrencyEnabled"):
            return body  # one currency: the engine's customer
        memo = self.client.read("CreditMemo", credit_memo_id) or {}
        if (memo.get("CurrencyRef") or {}).get("value") in (None, self.home()):
            return body
        return {**body, "CustomerRef": memo["CustomerRef"], "CurrencyRef": memo["CurrencyRef"]}

