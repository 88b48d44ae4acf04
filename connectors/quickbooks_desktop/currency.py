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
List's own ExchangeRate for it (QuickBooks' rate, read when the run starts; none is sent when the list has none,
and QuickBooks then applies its own). A check paying a refund back is in its bank account's currency: it is
written to the currency's customer, without a rate."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from lxml import etree

from connectors.base import PermanentError
from connectors.quickbooks_desktop import mapping
from connectors.quickbooks_desktop.qbxml import el, query, ref
from connectors.rest import is_placeholder
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig

# Where ExchangeRate goes in each request this connector sends for a foreign customer (its predecessor in the
# schema's sequence, among the elements the connector writes).
RATE_AFTER = {"InvoiceAdd": "Other", "InvoiceMod": "Other", "CreditMemoAdd": "Other", "ReceivePaymentAdd": "TotalAmount",
              "ARRefundCreditCardAdd": "Memo"}


def currency_list() -> etree._Element:
    """CurrencyQueryRq of the whole Currency List, inactive currencies too (to say which one to activate)."""
    rq = etree.Element("CurrencyQueryRq")
    el(rq, "ActiveStatus", "All")
    return rq


def multicurrency_preferences() -> etree._Element:
    rq = etree.Element("PreferencesQueryRq")
    el(rq, "IncludeRetElement", "MultiCurrencyPreferences")
    return rq


class Currencies:
    def __init__(self, rets: Callable[[Any], list[dict[str, Any]]]) -> None:
        self._rets = rets  # the connector's: one request asked through the pull driver, its Rets
        # MultiCurrencyPreferences and the home currency's code, read once: the home currency never changes and
        # multicurrency cannot be turned off once on; "off" is read again for an invoice known to be foreign.
        self._prefs: dict[str, Any] | None = None
        self._home: str | None = None
        self._run: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None  # the run's Currency List
        self._twins: dict[tuple[int, str], str] = {}  # (shop customer id, currency) -> ListID

    def prefs(self, fresh: bool = False) -> dict[str, Any]:
        if self._prefs is None or fresh:
            found = self._rets(multicurrency_preferences())
            prefs = (found[0].get("MultiCurrencyPreferences") or {}) if found else {}
            if found:  # a preview's empty answer is not kept
                self._prefs = prefs
            return prefs
        return self._prefs

    def multicurrency(self) -> bool:
        return self.prefs().get("IsMultiCurrencyOn") == "true" or (
            self.prefs(fresh=True).get("IsMultiCurrencyOn") == "true")

    def home(self) -> str | None:
        """The code of ``MultiCurrencyPreferences/HomeCurrencyRef``; None without multicurrency (not known)."""
        if self._home is None:
            home_ref = self.prefs().get("HomeCurrencyRef") or {}
            if self.prefs().get("IsMultiCurrencyOn") != "true" or not home_ref.get("ListID"):
                return None
            found = self._rets(query("Currency", list_id=home_ref["ListID"]))
            self._home = found[0].get("CurrencyCode") if found else None
        return self._home

    def currency(self, event: InvoiceEvent, home: str) -> dict[str, Any]:
        """The Currency List's entry for ``event.currency`` (read once per run); refused before any write when
        multicurrency is off or the currency is not active."""
        if not self.multicurrency():
            raise PermanentError(f"invoice in {event.currency}: this QuickBooks company file books in {home} only "
                                 "(turn on multiple currencies in Edit > Preferences > Multiple Currencies, then "
                                 "retry the dead letter)")
        run = (event.invoice_id, event.version)
        if self._run is None or self._run[0] != run:
            listed = {c.get("CurrencyCode"): c for c in self._rets(currency_list())}
            self._run = (run, listed)
        found = self._run[1].get(event.currency)
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
        customer.find("ListID").text = self.customer(event, currency, config)
        rate = _rate(currency.get("ExchangeRate"))
        if rate is not None and body.tag in RATE_AFTER:
            body.find(RATE_AFTER[body.tag]).addnext(etree.Element("ExchangeRate"))
            body.find("ExchangeRate").text = format(rate, "f")
        return request

    def customer(self, event: InvoiceEvent, currency: dict[str, Any], config: MappingConfig) -> str:
        """The shop customer's QuickBooks customer in ``event.currency``: found by its name, else added."""
        key = (event.customer.id, event.currency)
        if key not in self._twins:
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
            if is_placeholder(found[0]["ListID"]):
                return found[0]["ListID"]  # a preview's: looked up again next time
            self._twins[key] = found[0]["ListID"]
        return self._twins[key]

    def as_memo(self, memo_txn_id: str, request: etree._Element) -> list[dict[str, Any]]:
        """The Rets of a credit application (a 0.00 ReceivePayment) sent on the customer of its credit memo (the
        currency's customer for a memo in another currency)."""
        if self.prefs().get("IsMultiCurrencyOn") == "true":  # else one currency: the engine's customer
            memo = self._rets(query("CreditMemo", txn_id=memo_txn_id))
            owner = ((memo[0].get("CustomerRef") or {}).get("ListID")) if memo else None
            if owner:
                request[0].find("CustomerRef/ListID").text = owner
        return self._rets(request)


class CurrencyOps:
    """The connector's side: ``home_currency()`` as the engine asks it (configured, else the company file's)."""

    mapping: MappingConfig
    currencies: Currencies

    def home_currency(self) -> str | None:
        return self.mapping.home_currency or self.currencies.home()

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
