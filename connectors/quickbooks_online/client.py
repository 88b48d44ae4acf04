"""QuickBooks Online Accounting API v3 over ``PlatformHttp``: entity reads, writes, queries (Faults: ``errors.py``)."""

from __future__ import annotations

from typing import Any

from connectors import jsonmoney
from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, SEND_JSON, RecordingClient, is_placeholder, unless_gone

class QboClient(RecordingClient):
    def __init__(self, http: PlatformHttp, realm_id: str, minor_version: str) -> None:
        self.http = http
        self.base = f"/v3/company/{realm_id}"
        self.minor_version = minor_version

    def _params(self, **extra: str) -> dict[str, str]:
        return {"minorversion": self.minor_version, **{k: v for k, v in extra.items() if v is not None}}

    def write(self, entity: str, body: dict[str, Any], *, request_id: str, operation: str | None = None
              ) -> dict[str, Any]:
        if self.recorded("POST", f"{self.base}/{entity.lower()}", body, {"operation": operation}):
            return {**body, "Id": body.get("Id") or f"<new {entity.lower()}>", "SyncToken": "<current>"}
        params = self._params(requestid=request_id, operation=operation)
        response = self.http.request("POST", f"{self.base}/{entity.lower()}", params=params,
                                     content=jsonmoney.dumps(body), headers=SEND_JSON)
        return jsonmoney.loads(response.content)[entity]

    def batch(self, items: list[dict[str, Any]], *, request_id: str) -> dict[str, dict[str, Any]]:
        """One ``/batch`` request (at most 30 items); returns the answer per ``bId`` (entity or Fault)."""
        if self.recorded("POST", f"{self.base}/batch", {"BatchItemRequest": items}):
            return {}
        response = self.http.request("POST", f"{self.base}/batch", params=self._params(requestid=request_id),
                                     content=jsonmoney.dumps({"BatchItemRequest": items}), headers=SEND_JSON)
        return {a["bId"]: a for a in jsonmoney.loads(response.content).get("BatchItemResponse", [])}

    def read(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """The entity, or None when QuickBooks has it no more (Fault 610) or it is a preview's placeholder."""
        if is_placeholder(entity_id):
            return None
        response = unless_gone(lambda: self.http.request("GET", f"{self.base}/{entity.lower()}/{entity_id}",
                                                         params=self._params(), headers=ACCEPT_JSON),
                               gone=lambda exc: exc.platform_code == "610")
        return jsonmoney.loads(response.content)[entity] if response is not None else None

    def preferences(self) -> dict[str, Any]:
        response = self.http.request("GET", f"{self.base}/preferences", params=self._params(),
                                     headers=ACCEPT_JSON)
        return jsonmoney.loads(response.content)["Preferences"]

    def query_all(self, entity: str, page: int = 1000) -> list[dict[str, Any]]:
        """Every row of a name list, page by page (QuickBooks answers at most 1000 rows per query)."""
        rows: list[dict[str, Any]] = []
        while True:
            found = self.query(entity, _paging=f" startposition {len(rows) + 1} maxresults {page}")
            rows.extend(found)
            if len(found) < page:
                return rows

    def query(self, entity: str, _paging: str = "", _like: dict[str, str] | None = None,
              **where: str) -> list[dict[str, Any]]:
        """Rows where each field equals its value and, for ``_like``, matches its pattern (``%``, the only wildcard
        Intuit's query language has)."""
        conditions = " and ".join([f"{k} = '{_quote(v)}'" for k, v in where.items()]
                                  + [f"{k} LIKE '{_quote(v)}'" for k, v in (_like or {}).items()])
        text = f"select * from {entity}" + (f" where {conditions}" if conditions else "") + _paging
        response = self.http.request("GET", f"{self.base}/query", params=self._params(query=text),
                                     headers=ACCEPT_JSON)
        return jsonmoney.loads(response.content).get("QueryResponse", {}).get(entity, [])


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
