"""SAP Business One Service Layer (OData v3) over ``PlatformHttp``: reads (``$filter``, ``odata.nextLink``
pages), writes and bound actions (recorded instead of sent during a preview), and SAP's error body
``{"error": {"code": <int>, "message": {"lang", "value"}}}`` classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError
from connectors.errors import When, odata_classifier
from connectors.http import PlatformHttp

JSON = {"Accept": "application/json"}


RULES = (
    When(AuthError, {"http:401"}),  # 301 "Invalid session": the session login already tried once more
    When(RateLimitedError, {"http:429"}),
    When(RetryableError, {"http:5xx"}),
)


classify = odata_classifier("SAP Business One", RULES)


def quoted(value: str) -> str:
    """An OData string literal (a quote is doubled)."""
    return "'" + value.replace("'", "''") + "'"


class SapBusinessOneClient:
    def __init__(self, http: PlatformHttp, page_size: int) -> None:
        self.http, self.page_size = http, page_size
        self.recorder: list[dict[str, Any]] | None = None  # preview: writes recorded, answered with placeholders

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, resource: str) -> dict[str, Any] | None:
        """One entity; None when Business One does not have it (or it is a preview's placeholder)."""
        if "<new " in resource:
            return None
        try:
            return self._json(self.http.request("GET", resource, headers=JSON))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, odata_filter: str) -> list[dict[str, Any]]:
        """Every entity matching the filter (following ``odata.nextLink``)."""
        headers = JSON | {"Prefer": f"odata.maxpagesize={self.page_size}"}
        answer = self._json(self.http.request("GET", resource, params={"$filter": odata_filter}, headers=headers))
        rows = list(answer.get("value") or [])
        while answer.get("odata.nextLink"):
            answer = self._json(self.http.request("GET", answer["odata.nextLink"], headers=headers))
            rows.extend(answer.get("value") or [])
        return rows

    def write(self, method: str, resource: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST / PATCH / a bound action (``Invoices(1)/Cancel``); the answer's entity (``{}`` for a 204)."""
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": resource, "body": body})
            return {**(body or {}), "DocEntry": f"<new {resource.split('(')[0]}>"}
        headers = JSON | ({"Content-Type": "application/json"} if body is not None else {})
        response = self.http.request(method, resource, headers=headers,
                                     content=jsonmoney.dumps(body) if body is not None else None)
        return self._json(response)
