"""Oracle Fusion REST (ADF) over ``PlatformHttp``: ``REST-Framework-Version`` on every request, ``q=`` finders
with ``limit``/``offset``/``hasMore`` pages, writes (recorded instead of sent during a preview), and ADF's
error answers classified: a JSON body ``{"title", "status", "o:errorDetails": [{"detail", "o:errorCode"}]}``
(framework version 4 and later) or plain text (earlier versions)."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import AuthError, DeliveryError, RateLimitedError, RetryableError, StaleTokenError
from connectors.errors import When, classify_by, facts_of
from connectors.http import PlatformHttp
from connectors.rest import RecordingClient, is_placeholder, json_of, unless_gone

ITEM = "application/vnd.oracle.adf.resourceitem+json"
ACTION = "application/vnd.oracle.adf.action+json"
RULES = (When(AuthError, on={"http:401"}), When(RateLimitedError, on={"http:429"}),
         When(StaleTokenError, on={"http:412"}), When(RetryableError, on={"http:5xx"}))


def classify(response: httpx.Response) -> DeliveryError | None:
    if response.status_code < 400:
        return None
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        details = [d for d in body.get("o:errorDetails") or [] if isinstance(d, dict)]
        message = "; ".join(str(d.get("detail", "")) for d in details) or str(body.get("detail") or body.get("title"))
        code = next((d.get("o:errorCode") for d in details if d.get("o:errorCode")), None)
        detail: Any = body
    else:  # ADF before framework version 4 answers with the message as plain text
        message, code, detail = response.text[:500], None, None
    return classify_by(RULES, f"Oracle {response.status_code}: {message}", facts=facts_of(response.status_code, code),
                       message=message, response=response, code=code, detail=detail)


def quoted(value: str) -> str:
    """A string literal of an ADF ``q`` finder (a quote is doubled)."""
    return "'" + value.replace("'", "''") + "'"


class OracleClient(RecordingClient):
    def __init__(self, http: PlatformHttp, framework_version: str, page_size: int) -> None:
        self.http, self.page_size = http, page_size
        self.headers = {"REST-Framework-Version": framework_version, "Accept": "application/json"}

    def get(self, path: str) -> dict[str, Any] | None:
        """One item; None when Oracle no longer has it (or it is a preview's placeholder)."""
        if is_placeholder(path):
            return None
        return unless_gone(lambda: _item(self.http.request("GET", path, headers=self.headers,
                                                           params={"onlyData": "true"})))

    def list(self, resource: str, **equal: str) -> list[dict[str, Any]]:
        """Every item whose fields equal ``equal`` (an ADF ``q`` finder), page by page."""
        q = ";".join(f"{field}={quoted(value)}" for field, value in equal.items())
        rows: list[dict[str, Any]] = []
        while True:
            answer = json_of(self.http.request("GET", resource, headers=self.headers, params={
                "q": q, "onlyData": "true", "limit": self.page_size, "offset": len(rows)}))
            rows.extend(answer.get("items") or [])
            if not answer.get("hasMore") or not answer.get("items"):
                return rows

    def write(self, method: str, path: str, body: dict[str, Any] | None = None, *, action: bool = False,
              etag: str | None = None) -> dict[str, Any]:
        """POST / PATCH / DELETE, or a custom action (``.../action/<name>``); the answer's item."""
        if self.recorded(method, path, body):
            return {**(body or {}), "CustomerTrxId": f"<new {path.split('/')[0]}>",
                    "StandardReceiptId": "<new receipt>", "CustomerTransactionId": f"<new {path.split('/')[0]}>"}
        headers = self.headers | ({"Content-Type": ACTION if action else ITEM} if body is not None else {}) | (
            {"If-Match": etag} if etag else {})
        return _item(self.http.request(method, path, headers=headers,
                                       content=jsonmoney.dumps(body) if body is not None else None))


def _item(response: httpx.Response) -> dict[str, Any]:
    """An item with its concurrency token (ADF answers an item's ``ETag`` in the header) as ``"@etag"``."""
    item = json_of(response)
    if isinstance(item, dict) and response.headers.get("etag"):
        item["@etag"] = response.headers["etag"]
    return item
