"""MYOB AccountRight API v2 over ``PlatformHttp``: the company file's resources, OData look-ups page by page,
writes with ``returnBody=true`` (recorded instead of sent during a preview), and MYOB's error body classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.auth import reauthorisation_required
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
from connectors.myob_accountright.settings import MyobSettings

JSON = {"Accept": "application/json"}
# MYOB sends no Retry-After: the per-second limit clears within a second; for the daily one we wait an hour.
PER_SECOND_WAIT_S, DAILY_WAIT_S = 1.0, 3600.0


def classify(response: httpx.Response) -> DeliveryError | None:
    """MYOB answers errors with ``{"Errors": [{"Name", "Message", "AdditionalDetails", "ErrorCode", "Severity",
    "LearnMore"}]}``; both rate limits and a missing or inactive API key are 403s, told apart by ``Name``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    errors = [e for e in body.get("Errors") or [] if isinstance(e, dict)] if isinstance(body, dict) else []
    if not errors:
        return None
    first, status = errors[0], response.status_code
    name = str(first.get("Name", ""))
    reason = "MYOB " + "; ".join(f"{e.get('Name', '')}: {e.get('Message', '')}"
                                 + (f" ({e['AdditionalDetails']})" if e.get("AdditionalDetails") else "") for e in errors)
    common = {"status": status, "platform_code": name, "detail": errors}
    if name == "RateLimitError":
        daily = "daily" in str(first.get("Message", "")).lower()
        return RateLimitedError(reason, retry_after=retry_after_seconds(response) or (
            DAILY_WAIT_S if daily else PER_SECOND_WAIT_S), **common)
    if name == "DeveloperInactive" or (status == 401 and "CompanyFile" in name):
        return reauthorisation_required(reason, **common)  # the API key or the company file's user: a person acts
    if status == 401:
        return AuthError(reason, **common)
    if status == 409:
        return StaleTokenError(reason, **common)
    if "LockPeriod" in name:  # e.g. BusinessEvent_DateOccured_InLockPeriod
        return ClosedPeriodError(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


class MyobClient:
    def __init__(self, http: PlatformHttp, settings: MyobSettings) -> None:
        self.http, self.settings = http, settings
        self.prefix = f"/{settings.company_file_id}"
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, path: str) -> dict[str, Any] | None:
        """One resource; None when MYOB no longer has it (or it is a preview's placeholder)."""
        if "<new " in path:
            return None
        try:
            return self._json(self.http.request("GET", self.prefix + path, headers=JSON))
        except PermanentError as exc:
            if exc.status in (404, 410):
                return None
            raise

    def list(self, path: str, **equal: str) -> list[dict[str, Any]]:
        """Every row whose fields equal ``equal`` (an OData ``$filter``), page by page (``$top``/``$skip``)."""
        clauses = " and ".join(f"{field.replace('__', '/')} eq '{value.replace(chr(39), chr(39) * 2)}'"
                               for field, value in equal.items())
        rows: list[dict[str, Any]] = []
        while True:
            params = {"$top": self.settings.page_size, "$skip": len(rows)} | ({"$filter": clauses} if clauses else {})
            answer = self._json(self.http.request("GET", self.prefix + path, params=params, headers=JSON))
            rows.extend(answer.get("Items") or [])
            if not answer.get("NextPageLink") or not answer.get("Items"):
                return rows

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST / PUT (answered with the stored resource: ``returnBody=true``) or DELETE (``{}``)."""
        params = {"returnBody": "true"} if method != "DELETE" else {}
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": path + ("?returnBody=true" if params else ""), "body": body})
            return {"UID": f"<new {path.strip('/').split('/')[-1]}>", "RowVersion": "<current>"} | (body or {})
        response = self.http.request(method, self.prefix + path, params=params or None, headers=JSON | (
            {"Content-Type": "application/json"} if body is not None else {}),
            content=jsonmoney.dumps(body) if body is not None else None)
        return self._json(response)
