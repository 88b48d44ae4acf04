"""Xero Accounting API 2.0 over ``PlatformHttp``: tenant header, unitdp=4, Idempotency-Key on writes,
and classification of Xero's own error bodies."""

from __future__ import annotations

import re
from typing import Any

import httpx
import structlog

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, DeliveryError, NumberInUseError, PermanentError, RateLimitedError,
                             RetryableError)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.rest import ACCEPT_JSON, SEND_JSON, RecordingClient, is_placeholder, json_of, present, sole, unless_gone

log = structlog.get_logger(__name__)
IDEMPOTENCY_KEY_MAX = 128  # Xero: "128 character max"
UNITDP = 4  # unit prices carry 4 decimal places


class AllocatedError(PermanentError):
    """Xero refuses to edit or void a document that has payments or credit notes allocated to it."""


def validation_messages(body: Any) -> list[str]:
    """Every ``ValidationErrors[].Message`` in Xero's ValidationException body (or one item of it)."""
    if not isinstance(body, dict):
        return []
    messages = [e.get("Message", "") for e in body.get("ValidationErrors") or [] if isinstance(e, dict)]
    for element in body.get("Elements") or []:
        messages += validation_messages(element)
    return [m for m in messages if m]


def error_for_messages(messages: list[str], *, status: int | None = None, detail: Any = None) -> DeliveryError:
    text = "; ".join(messages) or "A validation exception occurred"
    reason = f"Xero: {text}"
    lowered = text.lower()
    if "lock date" in lowered:
        return ClosedPeriodError(reason, status=status, platform_code="lock_date", detail=detail)
    if "payment or credit note allocated" in lowered or "has payments allocated" in lowered:
        return AllocatedError(reason, status=status, platform_code="allocated", detail=detail)
    if re.search(r"(invoice|credit note) # must be unique", lowered):
        return NumberInUseError(reason, status=status, platform_code="ValidationException", detail=detail)
    return PermanentError(reason, status=status, platform_code="ValidationException", detail=detail)


def classify(response: httpx.Response) -> DeliveryError | None:
    """Xero's answers: 400 ValidationException {ErrorNumber 10, Elements[].ValidationErrors[]}, 401/403
    problem bodies {Title, Detail}, 404, 429 with Retry-After and X-Rate-Limit-Problem, 5xx."""
    status = response.status_code
    try:
        body = jsonmoney.loads(response.content) if response.content else {}
    except ValueError:
        body = {"text": response.text[:500]}
    if status == 429:
        problem = response.headers.get("X-Rate-Limit-Problem", "")
        return RateLimitedError(f"Xero rate limit reached ({problem or 'unknown'} limit)", status=status,
                                platform_code=problem or None, retry_after=retry_after_seconds(response), detail=body)
    if status == 401:
        return AuthError(f"Xero: {body.get('Title', 'Unauthorized')} {body.get('Detail', '')}".strip(),
                         status=status, platform_code="401", detail=body)
    if status == 403:
        # The tenant is not connected to this app (or the user lost access): a person must re-connect it.
        return PermanentError(f"Xero: {body.get('Title', 'Forbidden')} {body.get('Detail', '')}; re-connect the "
                              "organisation to the app".strip(), status=status, platform_code="403", detail=body)
    if status >= 500:
        return RetryableError(f"Xero server error {status}: {body.get('Message') or body.get('Title') or ''}".strip(),
                              status=status, detail=body)
    if status == 404:
        return PermanentError("Xero: resource not found", status=status, platform_code="404", detail=body)
    if isinstance(body, dict) and (body.get("Type") == "ValidationException" or body.get("Elements")):
        return error_for_messages(validation_messages(body), status=status, detail=body)
    if isinstance(body, dict) and body.get("Message"):
        return PermanentError(f"Xero {body.get('Type', '')}: {body['Message']}", status=status,
                              platform_code=str(body.get("ErrorNumber", status)), detail=body)
    return None


# Preview placeholders: the id field of each collection a write answers with.
ID_FIELDS = {"Invoices": "InvoiceID", "Payments": "PaymentID", "CreditNotes": "CreditNoteID",
             "Allocations": "AllocationID", "Contacts": "ContactID", "Items": "ItemID"}


class Tenant:
    """The organisation every call names (header ``xero-tenant-id``): the configured one, else the one stored
    with the credentials, else the only organisation the app is connected to (``GET /connections``, asked
    once and stored)."""

    def __init__(self, target: str, configured: str | None, credentials: Any, connections_url: str) -> None:
        self.target, self.id, self.credentials, self.connections_url = target, configured, credentials, connections_url

    def header(self, cred: dict[str, Any]) -> dict[str, str]:
        tenant = self.id or cred.get("tenant_id")
        return {"xero-tenant-id": tenant} if tenant else {}

    def ensure(self, http: PlatformHttp) -> None:
        self.id = self.id or self.credentials.get().get("tenant_id")
        if self.id:
            return
        connections = json_of(http.request("GET", self.connections_url, headers=ACCEPT_JSON))
        self.id = sole([c for c in connections if c.get("tenantType", "ORGANISATION") == "ORGANISATION"], "Xero",
                       "organisations", "tenant_id")["tenantId"]
        self.credentials.update({"tenant_id": self.id})
        log.info("xero_tenant_selected", target=self.target, tenant_id=self.id)


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
