"""MYOB AccountRight's currencies (issue #20), from MYOB's SDK contracts (Version2) and its support article
"Multi-currency Sale Endpoints": a sale, a customer payment and a credit refund carry ``ForeignCurrency`` (a link
to a ``/GeneralLedger/Currency`` resource: ``Code``, ``CurrencyName``, ``CurrencyRate``) and
``CurrencyExchangeRate`` ("the exchange rate (to local) of ForeignCurrency"); a credit settlement carries
``ForeignCurrency`` only. On such a record MYOB reads the foreign amounts and ignores the local ones (sent as well,
equal: the SDK's are not nullable): ``TotalForeign`` and ``UnitPriceForeign`` on lines, ``AmountReceivedForeign``
and ``AmountAppliedForeign`` on a payment; it answers the document's amounts in ``TotalAmountForeign``,
``BalanceDueAmountForeign``… A card (customer) has one ``ForeignCurrency``, fixed: its sales are in that currency.

The rule Ledgerwire keeps: an invoice in the company file's own currency (``mapping.home_currency``: MYOB's API
does not say which currency is local) goes as before, no currency field. One in another currency goes, with its
payments, credits, settlements, refunds and adjustments, to the shop customer's card *for that currency*:
``<name> [CAD]``, card id ``LWC<code><shop id>``, created with ``ForeignCurrency`` the first time (found by its
card id after) — QuickBooks Online's rule, a card per currency. ``CurrencyExchangeRate`` is MYOB's own
``CurrencyRate`` for that currency, read from the file (never a rate of ours). A currency the file does not hold
is refused before anything is written."""

from __future__ import annotations

from typing import Any, Literal

from connectors.base import PermanentError
from connectors.myob_accountright import mapping
from connectors.myob_accountright.client import MyobClient
from connectors.rest import CurrencyCustomers
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig

CURRENCIES, CUSTOMERS = "/GeneralLedger/Currency", "/Contact/Customer"
Kind = Literal["sale", "payment", "settlement", "refund"]
NAME_MAX = 50  # a card's CompanyName


def foreign_amount(row: dict[str, Any], name: str) -> Any:
    """``name`` of a resource MYOB read back, in the document's own currency (``<name>Foreign`` when foreign)."""
    return row.get(f"{name}Foreign", row.get(name)) if row.get("ForeignCurrency") else row.get(name)


class Currencies:
    def __init__(self, client: MyobClient) -> None:
        self.client = client
        self._currencies: dict[str, dict[str, Any]] = {}  # code -> /GeneralLedger/Currency resource
        self._cards = CurrencyCustomers()  # the shop customer's card per currency

    def is_foreign(self, event: InvoiceEvent, config: MappingConfig) -> bool:
        return bool(config.home_currency) and event.currency != config.home_currency

    def currency(self, code: str) -> dict[str, Any]:
        """The file's currency ``code`` (read again while unknown: the bookkeeper may add it)."""
        if code not in self._currencies:
            found = self.client.list(CURRENCIES, Code=code)
            if not found:
                raise PermanentError(f"invoice in {code}: the MYOB company file has no currency {code} (turn on "
                                     f"multi-currency and add {code} in Lists > Currencies, then retry the dead letter)")
            self._currencies[code] = found[0]
        return self._currencies[code]

    def stamp(self, event: InvoiceEvent, body: dict[str, Any], kind: Kind, config: MappingConfig) -> dict[str, Any]:
        """``body`` (a ``kind`` of ``event``) in the event's currency, on the customer's card for it; as it is
        for the home currency."""
        if not self.is_foreign(event, config):
            return body
        currency = self.currency(event.currency)
        out = body | {"ForeignCurrency": mapping.link(currency["UID"]), "Customer": mapping.link(self.card(event, config))}
        if kind != "settlement":  # a settlement moves credit within one card's currency: no rate
            out["CurrencyExchangeRate"] = currency["CurrencyRate"]
        if kind == "sale":
            out["Lines"] = [_foreign(ln, "Total", "UnitPrice") for ln in body["Lines"]]
        elif kind == "payment":
            out = _foreign(out, "AmountReceived")
            out["Invoices"] = [_foreign(ln, "AmountApplied") for ln in body["Invoices"]]
        return out

    def like_credit(self, credit_uid: str, body: dict[str, Any], config: MappingConfig) -> dict[str, Any]:
        """A credit settlement on the card and in the currency of its credit (a foreign one is on its twin card)."""
        held = (self.client.get(f"/Sale/Invoice/Service/{credit_uid}") or {}) if config.home_currency else {}
        if not held.get("ForeignCurrency"):
            return body
        return body | {"Customer": mapping.link(held["Customer"]["UID"]),
                       "ForeignCurrency": mapping.link(held["ForeignCurrency"]["UID"])}

    def card(self, event: InvoiceEvent, config: MappingConfig) -> str:
        """The shop customer's card in ``event.currency``: found by its card id, else created; kept up to date with
        the shop's customer (name, email, phone) as the home card is; its currency is fixed."""
        display_id = f"LWC{event.currency}{event.customer.id}"[:15]
        twin = event.customer.model_copy(update={"name": f"{event.customer.name[:NAME_MAX - 6]} [{event.currency}]"})
        wanted = mapping.customer_payload(twin, config) | {"DisplayID": display_id}

        def find() -> dict[str, Any] | None:
            found = self.client.list(CUSTOMERS, DisplayID=display_id)
            return found[0] if found else None

        def create() -> dict[str, Any]:
            currency = mapping.link(self.currency(event.currency)["UID"])
            return self.client.write("POST", CUSTOMERS, wanted | {"ForeignCurrency": currency})

        def update(current: dict[str, Any]) -> dict[str, Any]:
            body = wanted | {"UID": current["UID"], "RowVersion": current["RowVersion"],
                             "ForeignCurrency": current.get("ForeignCurrency")}
            return self.client.write("PUT", f"{CUSTOMERS}/{current['UID']}", body)

        return self._cards.get(event.customer.id, event.currency, wanted, find=find, create=create, update=update,
                               id_of=lambda c: c["UID"], stale=lambda current: any(
                                   current.get(k) != wanted[k] for k in ("CompanyName", "Addresses")))


def _foreign(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """``row`` with its amounts ``names`` also as their foreign twins, which MYOB reads on a foreign record (it
    ignores the local ones there; the SDK always sends them: they are not nullable)."""
    return row | {f"{name}Foreign": row[name] for name in names if row.get(name) is not None}
