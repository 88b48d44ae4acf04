"""Sage Business Cloud Accounting API v3.1 over ``PlatformHttp``: the business (``X-Business``), paged lists,
writes (recorded instead of sent during a preview), and Sage's error body classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import AuthError, ClosedPeriodError, DeliveryError, PermanentError, RateLimitedError, RetryableError
from connectors.errors import When, classify_by, facts_of
from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, RecordingClient, is_placeholder, json_of, sole, unless_gone
from connectors.sage_accounting.settings import SageSettings

# The business's year end lockdown date refuses a change ("lockdown" in the message): the books are closed there.
RULES = (When(AuthError, on={"http:401"}), When(RateLimitedError, on={"http:429"}),
         When(ClosedPeriodError, text=("lockdown",)), When(RetryableError, on={"http:5xx"}))


def classify(response: httpx.Response) -> DeliveryError | None:
    """Sage answers errors with an array of ``{"$severity", "$dataCode", "$message", "$source"}``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    errors = [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []
    if not errors:
        return None
    reason = "Sage " + "; ".join(f"{e.get('$dataCode', '')}: {e.get('$message', '')}"
                                 + (f" ({e['$source']})" if e.get("$source") else "") for e in errors)
    code = str(errors[0].get("$dataCode", ""))
    return classify_by(RULES, reason, facts=facts_of(response.status_code), message=reason, response=response,
                       code=code, detail=errors)


class SageClient(RecordingClient):
    def __init__(self, http: PlatformHttp, settings: SageSettings) -> None:
        self.http, self.settings = http, settings
        self.business_id = settings.business_id

    def business(self) -> str:
        """``X-Business``: configured, else the only business the grant reaches (never a guess among several)."""
        if self.business_id is None:
            found = json_of(self.http.request("GET", "/businesses", headers=ACCEPT_JSON))
            self.business_id = str(sole(found, "Sage", "businesses", "business_id")["id"])
        return self.business_id

    def _headers(self) -> dict[str, str]:
        return ACCEPT_JSON | {"X-Business": self.business()}

    def get(self, path: str, **params: Any) -> dict[str, Any] | None:
        """One resource; None when Sage no longer has it (or it is a preview's placeholder)."""
        if is_placeholder(path):
            return None
        return unless_gone(lambda: json_of(self.http.request("GET", path, params=params, headers=self._headers())))

    def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page (``$items``, until ``$next`` is null)."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = json_of(self.http.request("GET", path, headers=self._headers(), params=params | {
                "items_per_page": self.settings.items_per_page, "page": page}))
            rows.extend(answer.get("$items") or [])
            if not answer.get("$next"):
                return rows
            page += 1

    def write(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """POST / PUT / DELETE; the answer's resource (``{}`` for a DELETE's empty answer)."""
        if self.recorded(method, path, body, params):
            inner = next(iter(body.values())) if body else {}
            return {**inner, "id": f"<new {path.strip('/').split('/')[0]}>", "updated_at": "<current>"}
        response = self.http.request(method, path, params=params or None, headers=self._headers() | (
            {"Content-Type": "application/json"} if body is not None else {}),
            content=jsonmoney.dumps(body) if body is not None else None)
        return json_of(response)
