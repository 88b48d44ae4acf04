"""Business Central API v2.0 over ``PlatformHttp``: the company, OData reads (``$filter``, ``@odata.nextLink``
pages) and writes with ``If-Match`` (recorded instead of sent during a preview); its error body is classified
in ``errors.py``."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import PermanentError
from connectors.http import PlatformHttp

JSON = {"Accept": "application/json"}


def quoted(value: str) -> str:
    """An OData string literal (a quote is doubled)."""
    return "'" + value.replace("'", "''") + "'"


class BusinessCentralClient:
    def __init__(self, http: PlatformHttp, company_id: str | None) -> None:
        self.http, self.company_id = http, company_id
        self.recorder: list[dict[str, Any]] | None = None  # preview: writes recorded, answered with placeholders

    def company(self) -> str:
        if self.company_id is None:
            found = self._json(self.http.request("GET", "companies", headers=JSON)).get("value") or []
            if len(found) != 1:
                raise PermanentError(f"the Business Central environment has {len(found)} companies: set "
                                     "settings.company_id")
            self.company_id = str(found[0]["id"])
        return self.company_id

    def path(self, resource: str) -> str:
        return f"companies({self.company()})/{resource}"

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, resource: str, **params: Any) -> dict[str, Any] | None:
        """One entity; None when Business Central no longer has it (or it is a preview's placeholder)."""
        if "<new " in resource:
            return None
        try:
            return self._json(self.http.request("GET", self.path(resource), params=params or None, headers=JSON))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, odata_filter: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every entity of a collection (following ``@odata.nextLink``); ``params``: more query options."""
        params = ({"$filter": odata_filter} if odata_filter else {}) | params or None
        answer = self._json(self.http.request("GET", self.path(resource), params=params, headers=JSON))
        rows = list(answer.get("value") or [])
        while answer.get("@odata.nextLink"):
            answer = self._json(self.http.request("GET", answer["@odata.nextLink"], headers=JSON))
            rows.extend(answer.get("value") or [])
        return rows

    def write(self, method: str, resource: str, body: dict[str, Any] | None = None, etag: str | None = None
              ) -> dict[str, Any]:
        """POST / PATCH / DELETE / a bound action; the answer's entity (``{}`` for a 204)."""
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": resource, "body": body})
            kind = resource.split("(")[0].split("/")[-1]
            return {**(body or {}), "id": f"<new {kind}>", "@odata.etag": "<current>", "status": "Draft"}
        headers = JSON | ({"Content-Type": "application/json"} if body is not None else {}) | (
            {"If-Match": etag} if etag else {})
        response = self.http.request(method, self.path(resource), headers=headers,
                                     content=jsonmoney.dumps(body) if body is not None else None)
        return self._json(response)
