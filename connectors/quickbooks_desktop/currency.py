"""QuickBooks Desktop's currencies (issue #20), from qbxmlops130/160.xsd: ``PreferencesQuery`` answers
``MultiCurrencyPreferences`` (``IsMultiCurrencyOn``, ``HomeCurrencyRef``); ``CurrencyQuery`` the Currency List
(``CurrencyCode``, ``IsActive``, the list's ``ExchangeRate``); a customer has a ``CurrencyRef`` (CustomerAdd's
last element), fixed once it has transactions; a transaction has no currency of its own — it is in its customer's
— and takes an optional ``ExchangeRate`` (InvoiceAdd/Mod and CreditMemoAdd after ``Other``, ReceivePaymentAdd
after ``TotalAmount``, ARRefundCreditCardAdd after ``CreditCardTxnInfo``: the same at 13.0 and 16.0).

The rule Ledgerwire keeps, QuickBooks Online's: an invoice in the home currency goes as before (the customer the
engine keeps, no ExchangeRate). An invoice in another currency needs multicurrency on and the currency active in
the Currency List (else it is dead-lettered before anything is written, with the reason), and goes, with its
payments, credit memos, refunds paid back and adjustments, to the shop customer's QuickBooks customer *for that
currency* ("<name> #77 [CAD]", added with that CurrencyRef the first time), each transaction with the Currency
List's own ExchangeRate for it (QuickBooks' rate, read once per run; none is sent when the list has none, and
QuickBooks then applies its own). A check paying a refund back is in its bank account's currency: it is written to
the currency's customer, without a rate.

A pull run is replayed from its answer log, in another daemon process too: what the currency needs is read in the
run (MultiCurrencyPreferences with the closing date, in the one PreferencesQuery every run makes before its first
write; the Currency List for a foreign invoice) or kept in the target's durable entity store (the home currency's
code, the customers per currency), never in a process's memory alone, so every process asks the same requests."""

from __future__ import annotations

from contextvars import ContextVar
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from connectors.base import ExternalRef, PermanentError
from connectors.quickbooks_desktop import mapping
from connectors.quickbooks_desktop.qbxml import el, query, ref
from connectors.rest import is_placeholder
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig

# Where ExchangeRate goes in each request this connector sends for a foreign customer (its predecessor in the
# schema's sequence, among the elements the connector writes).
RATE_AFTER = {"InvoiceAdd": "Other", "InvoiceMod": "Other", "CreditMemoAdd": "Other", "ReceivePaymentAdd": "TotalAmount",
              "ARRefundCreditCardAdd": "Memo"}


# What the run in progress read (its MultiCurrencyPreferences, its Currency List): per thread of execution, so a
# preview or another target's run in another thread never sees it.
_RUN: ContextVar[dict[str, Any] | None] = ContextVar("qbd_currency_run", default=None)


def currency_list() -> etree._Element:
    """CurrencyQueryRq of the whole Currency List, inactive currencies too (to say which one to activate)."""
    rq = etree.Element("CurrencyQueryRq")
    el(rq, "ActiveStatus", "All")
    return rq


class Currencies:
    def __init__(self, connector: Any) -> None:
        self.connector = connector  # its ``_rets`` (a request through the pull driver) and durable ``entities``

    @property
    def _prefs(self) -> dict[str, Any]:
        """MultiCurrencyPreferences, as the run's PreferencesQuery answered."""
        return (_RUN.get() or {}).get("prefs") or {}

    def _rets(self, request: etree._Element) -> list[dict[str, Any]]:
        return self.connector._rets(request)

    def noted(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The run's PreferencesRet (``qbxml.preferences_query``): its MultiCurrencyPreferences kept for the run."""
        # QuickBooks always answers a PreferencesRet: none is a preview's answer, where nothing is known.
        _RUN.set({"prefs": (found[0].get("MultiCurrencyPreferences") or {}) if found else {}, "preview": not found})
        return found

    def multicurrency(self) -> bool:
        return self._prefs.get("IsMultiCurrencyOn") == "true"

    def home(self, ask: bool = True) -> str | None:
        """The code of ``MultiCurrencyPreferences/HomeCurrencyRef``, kept in the entity store once read (multiple
        currencies, once on, cannot be turned off, and the home currency never changes); None without
        multicurrency (QuickBooks then has no home currency to read)."""
        held = self.connector.entities.get("currency", "home")
        if held is not None:
            return held.status
        list_id = (self._prefs.get("HomeCurrencyRef") or {}).get("ListID")
        if not ask or not self.multicurrency() or not list_id or is_placeholder(list_id):
            return None
        found = self._rets(query("Currency", list_id=list_id))
        if not found:
            return None
        code = str(found[0].get("CurrencyCode"))
        self.connector.entities.put("currency", "home", ExternalRef(external_id=list_id, status=code))
        return code

    def currency(self, event: InvoiceEvent, home: str) -> dict[str, Any]:
        """The Currency List's entry for ``event.currency`` (read once per run); refused before any write when
        multicurrency is off or the currency is not active."""
        read = _RUN.get() or {}
        if read.get("preview"):  # what would be sent, the currency's ListID and rate unknown until QuickBooks answers
            return {"ListID": f"<{event.currency} in the Currency List>"}
        if not self.multicurrency():
            raise PermanentError(f"invoice in {event.currency}: this QuickBooks company file books in {home} only "
                                 "(turn on multiple currencies in Edit > Preferences > Multiple Currencies, then "
                                 "retry the dead letter)")
        if "listed" not in read:
            read["listed"] = {c.get("CurrencyCode"): c for c in self._rets(currency_list())}
        found = read["listed"].get(event.currency)
        if found is None or found.get("IsActive") == "false":
            state = "is not active in" if found else "is not in"
            raise PermanentError(f"invoice in {event.currency}: {event.currency} {state} this QuickBooks company "
                                 f"file's Currency List (make it active in Lists > Currency List, then retry)")
        return found

    def stamp(self, event: InvoiceEvent, request: etree._Element, config: MappingConfig) -> etree._Element:
        """``request`` (a write of ``event``'s) in the event's currency: on the customer for that currency, with
        the Currency List's rate where the transaction is in that currency; as it is for the home currency."""
        home = config.home_currency or self.home()
        if home is None or event.currency == home:
            return request
        currency = self.currency(event, home)
        body = request[0]
        customer = body.find("PayeeEntityRef" if body.tag == "CheckAdd" else "CustomerRef")
        customer.find("ListID").text = self.customer(event, currency)
        rate = _rate(currency.get("ExchangeRate"))
        if rate is not None and body.tag in RATE_AFTER:
            body.find(RATE_AFTER[body.tag]).addnext(etree.Element("ExchangeRate"))
            body.find("ExchangeRate").text = format(rate, "f")
        return request

    def customer(self, event: InvoiceEvent, currency: dict[str, Any]) -> str:
        """The shop customer's QuickBooks customer in ``event.currency``: found by its name, else added."""
        key = f"{event.customer.id}:{event.currency}"
        held = self.connector.entities.get("customer-currency", key)
        if held is not None:
            return held.external_id
        suffix = f"{mapping.customer_suffix(event.customer)} [{event.currency}]"
        rq = etree.Element("CustomerQueryRq")
        name_filter = el(rq, "NameFilter")
        el(name_filter, "MatchCriterion", "EndsWith")
        el(name_filter, "Name", suffix.strip())
        found = [c for c in self._rets(rq) if str(c.get("Name", "")).endswith(suffix)]
        if not found:
            add = mapping.customer_write(event.customer)
            add[0].find("Name").text = event.customer.name[:mapping.NAME_MAX - len(suffix)].strip() + suffix
            ref(add[0], "CurrencyRef", list_id=currency["ListID"])  # CustomerAdd's last element
            found = self._rets(add)
        if not is_placeholder(found[0]["ListID"]):  # a preview's is looked up again next time
            self.connector.entities.put("customer-currency", key, ExternalRef(external_id=found[0]["ListID"]))
        return found[0]["ListID"]

    def as_memo(self, memo_txn_id: str, request: etree._Element) -> list[dict[str, Any]]:
        """The Rets of a credit application (a 0.00 ReceivePayment) sent on the customer of its credit memo (the
        currency's customer for a memo in another currency)."""
        if self.multicurrency():  # else one currency: the engine's customer
            memo = self._rets(query("CreditMemo", txn_id=memo_txn_id))
            owner = ((memo[0].get("CustomerRef") or {}).get("ListID")) if memo else None
            if owner:
                request[0].find("CustomerRef/ListID").text = owner
        return self._rets(request)


class CurrencyOps:
    """The connector's side: ``home_currency()`` as the engine asks it (configured, else the company file's as
    last read: the engine only checks it for connectors that do not send currencies)."""

    mapping: MappingConfig
    currencies: Currencies

    def home_currency(self) -> str | None:
        return self.mapping.home_currency or self.currencies.home(ask=False)

    def _stamped(self, event: InvoiceEvent, request: etree._Element) -> list[dict[str, Any]]:
        """The Rets of ``request``, a write of ``event``'s, sent in the event's currency (``Currencies.stamp``)."""
        return self._rets(self.currencies.stamp(event, request, self.mapping))  # type: ignore[attr-defined]


def _rate(text: str | None) -> Decimal | None:
    """The Currency List's ExchangeRate (FLOATTYPE: a decimal, or empty when the list has none)."""
    try:
        rate = Decimal(text) if text else None
    except InvalidOperation:
        return None
    return rate if rate is not None and rate > 0 else None
