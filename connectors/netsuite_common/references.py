"""What both NetSuite transports say alike to the engine: lines post on the items the mapping names (no item is
ever created), every document is found by our external id, which NetSuite keeps unique per record type, and
every transaction goes in its invoice's currency on a customer that takes it (``currency``)."""

from __future__ import annotations

from connectors import references
from connectors.base import ExternalRef, PermanentError
from connectors.engine import EngineConnector, ItemSpec
from connectors.engine_state import DocKind
from connectors.netsuite_common import mapping as records
from connectors.netsuite_common.currency import Currencies
from connectors.netsuite_common.settings import NetSuiteSettings
from daemon.canonical import InvoiceEvent, InvoiceLine


class NetSuiteReferences(EngineConnector):
    """Mixed into ``NetSuiteRestConnector`` and ``NetSuiteSoapConnector`` ahead of their transport code."""

    currencies: Currencies  # the account's currency records, read by the transport

    def home_currency(self) -> str | None:  # configured, else the subsidiary's (OneWorld) or the base currency
        return self.mapping.home_currency or self.currencies.home()

    def settings_in(self, event: InvoiceEvent, customer_id: str) -> NetSuiteSettings:
        """The settings a document of ``event`` is mapped with: its currency's record resolved (a currency the
        account has not set up refused before anything is written), the customer made to take that currency."""
        home = self.home_currency()
        self.currencies.customer_takes(customer_id, event.currency, home, self.customer_currencies,
                                       self.add_customer_currency)
        return self.currencies.settings_for(event.currency, home)

    def customer_currencies(self, customer_id: str) -> set[str]:
        """The currency ids the customer may transact in: its primary currency and its ``currencyList``."""
        raise NotImplementedError

    def add_customer_currency(self, customer_id: str, currency_id: str) -> None:
        raise NotImplementedError

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # lines post on the items ``mapping.items`` names (netsuite_common.mapping.item_ref)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError(f"{self.platform} posts lines on the items mapping.items names; it creates none")

    create_item = find_item

    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return records.invoice_external_id(event)
        if kind is DocKind.ADJUSTMENT:
            adjustment_kind, sequence = references.adjustment_key(key)
            return records.adjustment_external_id(event, adjustment_kind, sequence)
        return super().reference(kind, event, key)
