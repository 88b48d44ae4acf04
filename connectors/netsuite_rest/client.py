"""SuiteTalk REST web services over ``PlatformHttp``: records (``/record/v1``: GET expanded, PUT upsert by
``eid:``, PATCH sparse, DELETE, POST transforms with ``X-NetSuite-Idempotency-Key``), SuiteQL look-ups
(``/query/v1/suiteql`` with ``Prefer: transient``), writes recorded instead of sent during a preview, and
NetSuite's error body (``{"type", "title", "status", "o:errorDetails": [{"detail", "o:errorCode"}]}``)
classified."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, DeliveryError, RateLimitedError, RetryableError,
                             UncertainOutcomeError)
from connectors.errors import When, classify_by, facts_of
from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, SEND_JSON, RecordingClient, is_placeholder, json_of, unless_gone

RECORDS, SUITEQL = "/record/v1", "/query/v1/suiteql"
# Unknown field names refused (NetSuite's default only warns), so a misspelt field never silently drops.
STRICT = {"X-NetSuite-PropertyNameValidation": "Error", "X-NetSuite-PropertyValueValidation": "Error"}
RULES = (When(AuthError, on={"http:401", "code:INVALID_LOGIN"}),
         When(RateLimitedError, on={"http:429", "code:CONCURRENCY_LIMIT_EXCEEDED"}),
         When(UncertainOutcomeError, on={"code:IDEMPOTENCY_ERROR"}),  # done before: the look-up finds it
         When(ClosedPeriodError, text=("period is closed", "period is locked")),
         When(RetryableError, on={"http:5xx"}))


def classify(response: httpx.Response) -> DeliveryError | None:
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    details = [d for d in body.get("o:errorDetails") or [] if isinstance(d, dict)] if isinstance(body, dict) else []
    if not details:
        return None
    reason = "NetSuite " + "; ".join(f"{d.get('o:errorCode', '')}: {d.get('detail', '')}"
                                     + (f" ({d['o:errorPath']})" if d.get("o:errorPath") else "") for d in details)
    code = str(details[0].get("o:errorCode") or "")
    return classify_by(RULES, reason, facts=facts_of(response.status_code, code), message=reason, response=response,
                       code=code, detail=details)


def sql_text(value: str) -> str:
    """A SuiteQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class NetSuiteRestClient(RecordingClient):
    def __init__(self, http: PlatformHttp, page_size: int = 1000) -> None:
        self.http, self.page_size = http, page_size

    def get(self, record: str, key: str) -> dict[str, Any] | None:
        """One record with its sublists (``key``: internal id or ``eid:<external id>``); None when gone."""
        if is_placeholder(key):
            return None
        return unless_gone(lambda: json_of(self.http.request("GET", f"{RECORDS}/{record}/{key}", headers=ACCEPT_JSON,
                                                             params={"expandSubResources": "true"})))

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Every row of a SuiteQL query, page by page."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = json_of(self.http.request(
                "POST", SUITEQL, params={"limit": self.page_size, "offset": offset},
                headers=SEND_JSON | {"Prefer": "transient"}, content=jsonmoney.dumps({"q": sql})))
            rows.extend(answer.get("items") or [])
            if not answer.get("hasMore"):
                return rows
            offset += self.page_size

    def write(self, method: str, path: str, body: dict[str, Any] | None = None, *, request_id: str | None = None,
              **params: Any) -> str | None:
        """PUT / PATCH / DELETE / POST under ``/record/v1``; the internal id the answer's ``Location`` names
        (NetSuite answers a write 204 without a body)."""
        if self.recorded(method, RECORDS + path, body, params):
            return f"<new {path.strip('/').split('/')[0]}>"
        headers = SEND_JSON | STRICT if body is not None else dict(ACCEPT_JSON)
        if request_id and method == "POST":
            headers["X-NetSuite-Idempotency-Key"] = str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))  # a UUID
        response = self.http.request(method, RECORDS + path, params=params or None, headers=headers,
                                     content=jsonmoney.dumps(body) if body is not None else None)
        location = response.headers.get("Location") or ""
        return location.rstrip("/").rsplit("/", 1)[-1] or None
