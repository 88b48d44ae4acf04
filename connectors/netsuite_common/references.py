"""What both NetSuite transports say alike to the engine: lines post on the items the mapping names (no item is
ever created), and every document is found by our external id, which NetSuite keeps unique per record type."""

from __future__ import annotations

from connectors import references
from connectors.base import ExternalRef, PermanentError
from connectors.engine import EngineConnector, ItemSpec
from connectors.engine_state import DocKind
from connectors.netsuite_common import mapping as records
from daemon.canonical import InvoiceEvent, InvoiceLine


class NetSuiteReferences(EngineConnector):
    """Mixed into ``NetSuiteRestConnector`` and ``NetSuiteSoapConnector`` ahead of their transport code."""

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
