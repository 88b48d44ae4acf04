"""Sage Business Cloud Accounting API v3.1 over ``PlatformHttp``: the business (``X-Business``), paged lists,
writes (recorded instead of sent during a preview), and Sage's error body classified."""

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
)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.sage_accounting.settings import SageSettings

JSON = {"Accept": "application/json"}


def classify(response: httpx.Response) -> DeliveryError | None:
    """Sage answers errors with an array of ``{"$severity", "$dataCode", "$message", "$source"}``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    errors = [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []
    if not errors:
        return None
    first, status = errors[0], response.status_code
    code = str(first.get("$dataCode", ""))
    reason = "Sage " + "; ".join(f"{e.get('$dataCode', '')}: {e.get('$message', '')}"
                                 + (f" ({e['$source']})" if e.get("$source") else "") for e in errors)
    common = {"status": status, "platform_code": code, "detail": errors}
    if status == 401:
        return AuthError(reason, **common)
    if status == 429:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **common)
    if "lockdown" in reason.lower():  # the business's year end lockdown date: the books are closed there
        return ClosedPeriodError(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


class SageClient:
    def __init__(self, http: PlatformHttp, settings: SageSettings) -> None:
        self.http, self.settings = http, settings
        self.business_id = settings.business_id
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def business(self) -> str:
        """``X-Business``: configured, else the only business the grant reaches (never a guess among several)."""
        if self.business_id is None:
            found = self._json(self.http.request("GET", "/businesses", headers=JSON))
            if len(found) != 1:
                raise PermanentError(f"the Sage grant reaches {len(found)} businesses: set settings.business_id")
            self.business_id = str(found[0]["id"])
        return self.business_id

    def _headers(self) -> dict[str, str]:
        return JSON | {"X-Business": self.business()}

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, path: str, **params: Any) -> dict[str, Any] | None:
        """One resource; None when Sage no longer has it (or it is a preview's placeholder)."""
        if "<new " in path:
            return None
        try:
            return self._json(self.http.request("GET", path, params=params, headers=self._headers()))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page (``$items``, until ``$next`` is null)."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._json(self.http.request("GET", path, headers=self._headers(), params=params | {
                "items_per_page": self.settings.items_per_page, "page": page}))
            rows.extend(answer.get("$items") or [])
            if not answer.get("$next"):
                return rows
            page += 1

    def write(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """POST / PUT / DELETE; the answer's resource (``{}`` for a DELETE's empty answer)."""
        if self.recorder is not None:
            query = "&".join(f"{k}={v}" for k, v in params.items())
            self.recorder.append({"method": method, "path": path + (f"?{query}" if query else ""), "body": body})
            inner = next(iter(body.values())) if body else {}
            return {**inner, "id": f"<new {path.strip('/').split('/')[0]}>", "updated_at": "<current>"}
        response = self.http.request(method, path, params=params or None, headers=self._headers() | (
            {"Content-Type": "application/json"} if body is not None else {}),
            content=jsonmoney.dumps(body) if body is not None else None)
        return self._json(response)
