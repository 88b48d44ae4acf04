"""Xero Accounting API 2.0 over ``PlatformHttp``: the tenant (``tenant.py``), unitdp=4, Idempotency-Key on
writes; Xero's error bodies are classified in ``errors.py``."""

from __future__ import annotations

from typing import Any

from connectors import jsonmoney
from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, SEND_JSON, RecordingClient, is_placeholder, json_of, present, unless_gone
from connectors.xero.tenant import Tenant

IDEMPOTENCY_KEY_MAX = 128  # Xero: "128 character max"
UNITDP = 4  # unit prices carry 4 decimal places
# Preview placeholders: the id field of each collection a write answers with.
ID_FIELDS = {"Invoices": "InvoiceID", "Payments": "PaymentID", "CreditNotes": "CreditNoteID",
             "Allocations": "AllocationID", "Contacts": "ContactID", "Items": "ItemID"}


class XeroClient(RecordingClient):
    def __init__(self, http: PlatformHttp, tenant: Tenant | None = None) -> None:
        self.http = http
        self.tenant = tenant  # the tenant header needs the organisation known first

    def ensure_tenant(self) -> None:
        if self.tenant is not None:
            self.tenant.ensure(self.http)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.ensure_tenant()
        return json_of(self.http.request("GET", path, params=present(params), headers=ACCEPT_JSON))

    def rows(self, collection: str, **params: Any) -> list[dict[str, Any]]:
        """A collection's documents matching ``params`` (``where``, ``InvoiceNumbers``…)."""
        return self.get(f"/{collection}", **params).get(collection) or []

    def document(self, collection: str, external_id: str) -> dict[str, Any] | None:
        """An invoice or credit note by id, amounts at 4 dp; None when Xero has none."""
        return self.read(f"/{collection}/{external_id}", collection, unitdp=UNITDP)

    def put(self, collection: str, document: dict[str, Any], *, key: str, **params: Any) -> dict[str, Any]:
        """Create one document (``PUT /<collection>``); Xero's answer for it."""
        return self.write("PUT", f"/{collection}", {collection: [document]}, key=key, **params)[collection][0]

    def read(self, path: str, collection: str, **params: Any) -> dict[str, Any] | None:
        """One document by id, or None when Xero answers 404 (or the id is a preview's placeholder)."""
        found = None if is_placeholder(path) else unless_gone(lambda: self.get(path, **params))
        return (found.get(collection) or [None])[0] if found is not None else None

    def write(self, method: str, path: str, body: dict[str, Any] | None, *, key: str, **params: Any
              ) -> dict[str, Any]:
        if self.recorded(method, path, body):
            return {name: [{**item, field: item.get(field) or f"<new {name[:-1].lower()}>"} for item in body[name]]
                    for name, field in ID_FIELDS.items() if body and name in body}
        self.ensure_tenant()
        headers = {**SEND_JSON, "Idempotency-Key": key[:IDEMPOTENCY_KEY_MAX]}
        return json_of(self.http.request(method, path, params=present(params), headers=headers,
                                         content=jsonmoney.dumps(body) if body is not None else None))


def quote(value: str) -> str:
    """A string literal for Xero's ``where`` filter."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
