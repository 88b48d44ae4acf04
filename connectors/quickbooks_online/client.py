"""QuickBooks Online Accounting API v3 over ``PlatformHttp``: entity reads, writes, queries, Fault parsing."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (
    AuthError,
    ClosedPeriodError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    StaleTokenError,
)
from connectors.http import PlatformHttp, retry_after_seconds


def classify(response: httpx.Response) -> DeliveryError | None:
    """Map QBO's Fault body (``{"Fault": {"Error": [{"Message", "Detail", "code"}], "type"}}``) to a class."""
    try:
        fault = jsonmoney.loads(response.content).get("Fault") or {}
    except ValueError:
        return None
    errors = fault.get("Error") or [{}]
    first = errors[0]
    code = str(first.get("code", ""))
    reason = f"QBO {code}: {first.get('Message', '')} {first.get('Detail', '')}".strip()
    kind = fault.get("type", "")
    if response.status_code == 401 or code == "3200":
        return AuthError(reason, status=response.status_code, platform_code=code, detail=fault)
    if response.status_code == 429 or code == "3001":
        return RateLimitedError(reason, status=response.status_code, platform_code=code,
                                retry_after=retry_after_seconds(response), detail=fault)
    text = f"{first.get('Message', '')} {first.get('Detail', '')}".lower()
    if code == "6200" or "account period closed" in text or "account period has closed" in text:
        # Books closed for that date. Integrators have seen this with code 5010 as well, so it is told
        # apart from a stale SyncToken by its text, before the 5010 check.
        return ClosedPeriodError(reason, status=response.status_code, platform_code=code, detail=fault)
    if code == "5010":
        return StaleTokenError(reason, status=response.status_code, platform_code=code, detail=fault)
    if response.status_code >= 500 or kind == "SystemFault":
        return RetryableError(reason, status=response.status_code, platform_code=code, detail=fault)
    return PermanentError(reason, status=response.status_code, platform_code=code, detail=fault)


class QboClient:
    def __init__(self, http: PlatformHttp, realm_id: str, minor_version: str) -> None:
        self.http = http
        self.base = f"/v3/company/{realm_id}"
        self.minor_version = minor_version
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def _params(self, **extra: str) -> dict[str, str]:
        return {"minorversion": self.minor_version, **{k: v for k, v in extra.items() if v is not None}}

    def write(self, entity: str, body: dict[str, Any], *, request_id: str, operation: str | None = None
              ) -> dict[str, Any]:
        if self.recorder is not None:
            path = f"{self.base}/{entity.lower()}" + (f"?operation={operation}" if operation else "")
            self.recorder.append({"method": "POST", "path": path, "body": body})
            return {**body, "Id": body.get("Id") or f"<new {entity.lower()}>", "SyncToken": "<current>"}
        params = self._params(requestid=request_id, operation=operation)
        response = self.http.request("POST", f"{self.base}/{entity.lower()}", params=params,
                                     content=jsonmoney.dumps(body),
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        return jsonmoney.loads(response.content)[entity]

    def batch(self, items: list[dict[str, Any]], *, request_id: str) -> dict[str, dict[str, Any]]:
        """One ``/batch`` request (at most 30 items); returns the answer per ``bId`` (entity or Fault)."""
        if self.recorder is not None:
            self.recorder.append({"method": "POST", "path": f"{self.base}/batch", "body": {"BatchItemRequest": items}})
            return {}
        response = self.http.request("POST", f"{self.base}/batch", params=self._params(requestid=request_id),
                                     content=jsonmoney.dumps({"BatchItemRequest": items}),
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        return {a["bId"]: a for a in jsonmoney.loads(response.content).get("BatchItemResponse", [])}

    def read(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        if entity_id.startswith("<"):  # a placeholder of a preview: not at the platform yet
            return None
        try:
            response = self.http.request("GET", f"{self.base}/{entity.lower()}/{entity_id}", params=self._params(),
                                         headers={"Accept": "application/json"})
        except PermanentError as exc:
            if exc.platform_code == "610":
                return None
            raise
        return jsonmoney.loads(response.content)[entity]

    def preferences(self) -> dict[str, Any]:
        response = self.http.request("GET", f"{self.base}/preferences", params=self._params(),
                                     headers={"Accept": "application/json"})
        return jsonmoney.loads(response.content)["Preferences"]

    def query_all(self, entity: str, page: int = 1000) -> list[dict[str, Any]]:
        """Every row of a name list, page by page (QuickBooks answers at most 1000 rows per query)."""
        rows: list[dict[str, Any]] = []
        while True:
            found = self.query(entity, _paging=f" startposition {len(rows) + 1} maxresults {page}")
            rows.extend(found)
            if len(found) < page:
                return rows

    def query(self, entity: str, _paging: str = "", **where: str) -> list[dict[str, Any]]:
        conditions = " and ".join(f"{k} = '{_quote(v)}'" for k, v in where.items())
        text = f"select * from {entity}" + (f" where {conditions}" if conditions else "") + _paging
        response = self.http.request("GET", f"{self.base}/query", params=self._params(query=text),
                                     headers={"Accept": "application/json"})
        return jsonmoney.loads(response.content).get("QueryResponse", {}).get(entity, [])


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def classify_fault(fault: dict[str, Any]) -> DeliveryError:
    """A Fault inside a batch answer, classified like a whole response's."""
    fake = httpx.Response(500 if fault.get("type") == "SystemFault" else 400,
                          content=jsonmoney.dumps({"Fault": fault}))
    return classify(fake) or PermanentError(str(fault))
