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
from connectors.rest import is_placeholder
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig


class Currencies:
    def __init__(self, client: QboClient) -> None:
        self.client = client
        # CurrencyPrefs, read once: the home currency never changes and multicurrency, once on, cannot be turned
        # off; "off" is read again when an invoice in another currency arrives (the bookkeeper may have turned it on).
        self._prefs: dict[str, Any] | None = None
        # (shop customer id, currency, digest of what we want it to hold) -> QuickBooks customer id
        self._twins: dict[tuple[int, str, str], str] = {}

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
        its name the shop cannot change (``[CAD] (#<shop id>)``: the shop renamed the customer), and then brought
        up to date; else created. Kept per shop customer, currency and content for the process."""
        twin = event.customer.model_copy(update={"name": f"{event.customer.name} [{event.currency}]"})
        wanted = {**mapping.customer_payload(twin, config), "CurrencyRef": {"value": event.currency}}
        key = (event.customer.id, event.currency, references.payload_digest(wanted))
        if key not in self._twins or is_placeholder(self._twins[key]):
            found = self.client.query("Customer", DisplayName=wanted["DisplayName"]) or self.client.query(
                "Customer", _like={"DisplayName": f"% [{event.currency}] (#{twin.id})"})
            if not found:
                request_id = hashlib.sha256(f"customer:{twin.id}:{event.currency}".encode()).hexdigest()[:32]
                found = [self.client.write("Customer", wanted, request_id=request_id)]
            elif _stale(found[0], wanted):  # renamed, or a new email or phone: QuickBooks' record follows the shop
                request_id = hashlib.sha256(f"customer:{twin.id}:{event.currency}:{key[2]}".encode()).hexdigest()[:32]
                body = {**wanted, "Id": found[0]["Id"], "SyncToken": found[0]["SyncToken"], "sparse": True}
                body.pop("CurrencyRef")  # fixed at creation
                found = [self.client.write("Customer", body, request_id=request_id)]
            self._twins[key] = str(found[0]["Id"])  # a preview's placeholder is looked up again next time
        return self._twins[key]

    def like_credit_memo(self, credit_memo_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A credit application (a zero Payment) on the customer and in the currency of its credit memo."""
        if not self.prefs().get("MultiCurrencyEnabled"):
            return body  # one currency: the engine's customer
        memo = self.client.read("CreditMemo", credit_memo_id) or {}
        if (memo.get("CurrencyRef") or {}).get("value") in (None, self.home()):
            return body
        return {**body, "CustomerRef": memo["CustomerRef"], "CurrencyRef": memo["CurrencyRef"]}


def _stale(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the customer QuickBooks holds differs from ours in what the shop can change."""
    return any(current.get(name) != wanted.get(name) for name in ("DisplayName", "PrimaryEmailAddr", "PrimaryPhone"))
