"""NetSuite's currencies (issue #20), the same for both transports.

A transaction (invoice, credit memo, customer payment, customer refund) carries ``currency``, a reference to a
currency record by internal id, and an optional ``exchangeRate`` (SuiteTalk 2023_2 ``tranSales:Invoice`` and
``tranCust:*``; the REST record API's same fields). The currency records (Lists > Accounting > Currencies, the
Multiple Currencies feature) are read from the account: their ``symbol`` is the ISO code, ``isBaseCurrency``
marks the company's base currency; in OneWorld the subsidiary's ``currency`` is the base currency its
transactions book in. ``settings.currency_ids`` overrides the look-up for the codes it names.

No ``exchangeRate`` is sent: NetSuite fills in its own (the Currency Exchange Rates table's rate for the
transaction date), as its UI does. A currency the account has not set up (or has made inactive) is refused before
anything is written, with the reason. An account whose currency records cannot be read (Multiple Currencies off)
gets no ``currency`` field, NetSuite's default, as before — for the home currency only. A customer has one primary
currency and may transact in the currencies of its ``currencyList`` sublist (Multiple Currencies per customer): a
document in another currency is posted on the same customer after adding the currency to that sublist (NetSuite's
own mechanism; never a second customer)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from connectors.base import PermanentError
from connectors.netsuite_common.settings import NetSuiteSettings
from connectors.rest import is_placeholder


class CurrencyRecord(BaseModel):
    """One of the account's currency records."""

    model_config = ConfigDict(frozen=True)
    internal_id: str
    code: str  # the record's ``symbol``: its ISO 4217 code
    base: bool = False  # ``isBaseCurrency``
    inactive: bool = False


class Currencies:
    """The account's currencies, read once (again when an unknown code arrives: the bookkeeper may have added it).

    ``read``: every currency record; ``subsidiary_currency``: a subsidiary's currency internal id."""

    def __init__(self, settings: NetSuiteSettings, read: Callable[[], list[CurrencyRecord]],
                 subsidiary_currency: Callable[[str], str | None]) -> None:
        self.settings, self._read, self._subsidiary_currency = settings, read, subsidiary_currency
        self._records: list[CurrencyRecord] | None = None
        self._home: str | None = None
        self._customers: set[tuple[str, str]] = set()  # (customer id, currency id) known to be taken

    def records(self, fresh: bool = False) -> list[CurrencyRecord]:
        if self._records is None or fresh:
            try:
                self._records = self._read()
            except PermanentError:  # no currency records to read: Multiple Currencies off (or not this role's)
                self._records = []
        return self._records

    def home(self) -> str | None:
        """The currency the target's transactions book in: the subsidiary's (OneWorld), else the base currency."""
        if self._home is None:
            internal_id = self._subsidiary_currency(self.settings.subsidiary_id) if self.settings.subsidiary_id else None
            self._home = next((c.code for c in self.records()
                               if (c.internal_id == internal_id if internal_id else c.base)), None)
        return self._home

    def internal_id(self, code: str, home: str | None = None) -> str | None:
        """The currency record of ``code``; a ``PermanentError`` naming it when the account has none active. None:
        no currency records to read, and ``code`` is the ``home`` currency (or that is not known either)."""
        if code in self.settings.currency_ids:
            return self.settings.currency_ids[code]
        if not self.records() and code == (home or code):
            return None
        for fresh in (False, True):
            found = next((c for c in self.records(fresh) if c.code == code and not c.inactive), None)
            if found is not None:
                return found.internal_id
        raise PermanentError(f"invoice in {code}: the currency is not set up in NetSuite (with Multiple Currencies "
                             f"on, Lists > Accounting > Currencies: add {code} with ISO code {code}, or reactivate it, "
                             "then retry the dead letter)")

    def settings_for(self, code: str, home: str | None = None) -> NetSuiteSettings:
        """The target's settings with ``code``'s currency record resolved (what the shared mapping reads)."""
        currency_id = self.internal_id(code, home)
        if currency_id is None:
            return self.settings
        return self.settings.model_copy(update={"currency_ids": {**self.settings.currency_ids, code: currency_id}})

    def customer_takes(self, customer_id: str, code: str, home: str | None, held: Callable[[str], set[str]],
                       add: Callable[[str, str], None]) -> None:
        """The customer may transact in ``code``: its primary currency or one of its ``currencyList``, else the
        currency is added to that sublist. ``held``: the customer's currency ids; ``add``: add one to its list."""
        currency_id = self.internal_id(code, home)
        if currency_id is None or (customer_id, currency_id) in self._customers or is_placeholder(customer_id):
            return  # no currency to send, already known, or a preview's new customer
        if currency_id not in held(customer_id):
            add(customer_id, currency_id)
        self._customers.add((customer_id, currency_id))
