"""Zoho Books API v3 over ``PlatformHttp``: organisation-scoped calls, the Zoho-oauthtoken header, the
classification of Zoho's error body ``{"code": <non-zero>, "message": "…"}`` (a lock refusal names the lock
date), and the recorder the engine's preview uses."""

from __future__ import annotations

import re
from datetime import date, timedelta
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

# Zoho's codes (errors page https://www.zoho.com/books/api/v3/errors/ and the codes Zoho answers with):
CODE_NOT_FOUND = {1002, 1003}  # "Invoice does not exist." and the like
CODE_AUTH = {14, 57}  # invalid / expired OAuth token, not authorised
CODE_RATE = {44, 45, 1070}  # too many requests per minute / per day
CODE_LOCKED = 4086  # transaction locking: the date falls in a locked period
_LOCKED_TEXT = re.compile(r"transaction(s)? (are |is )?lock|locked", re.IGNORECASE)
_LOCK_DATE = re.compile(r"before (\d{4}-\d{2}-\d{2})")  # "… dated before 2026-12-01 …": the first open day
# Preview: a write to these collections is answered with a placeholder document (key, id field, placeholder).
_PLACEHOLDERS = {"invoices": ("invoice", "<new invoice>"), "customerpayments": ("payment", "<new payment>"),
                 "creditnotes": ("creditnote", "<new credit note>"), "contacts": ("contact", "<new customer>"),
                 "items": ("item", "<new item>")}


def classify(response: httpx.Response) -> DeliveryError | None:
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    message = str(body.get("message", ""))
    reason = f"Zoho {code}: {message}"
    status = response.status_code
    kwargs: dict[str, Any] = {"status": status, "platform_code": str(code), "detail": body}
    if status == 401 or code in CODE_AUTH:
        return AuthError(reason, **kwargs)
    if status == 429 or code in CODE_RATE:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **kwargs)
    if code == CODE_LOCKED or _LOCKED_TEXT.search(message):
        # Zoho's API has no read of the lock date; its refusal names it (without it, the engine cannot re-plan).
        found = _LOCK_DATE.search(message)
        closed = date.fromisoformat(found.group(1)) - timedelta(days=1) if found else None
        return ClosedPeriodError(reason, closed_through=closed, **kwargs)
    if status >= 500:
        return RetryableError(reason, **kwargs)
    return PermanentError(reason, **kwargs)


class ZohoClient:
    def __init__(self, http: PlatformHttp, organization_id: str) -> None:
        self.http = http
        self.organization_id = organization_id
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        if method != "GET" and self.recorder is not None:
            query = "&".join(f"{k}={v}" for k, v in params.items())
            self.recorder.append({"method": method, "path": path + (f"?{query}" if query else ""), "body": body})
            segments = path.strip("/").split("/")
            key, placeholder = _PLACEHOLDERS.get(segments[0], ("answer", "<new>"))
            return {key: {**(body or {}), "status": "draft",
                          f"{key}_id": segments[1] if len(segments) > 1 else placeholder}}
        query = {"organization_id": self.organization_id, **{k: v for k, v in params.items() if v is not None}}
        headers = {"Accept": "application/json"}
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = jsonmoney.dumps(body)
        response = self.http.request(method, path, **kwargs)
        return jsonmoney.loads(response.content)

    def get(self, path: str, key: str, **params: Any) -> dict[str, Any] | None:
        """One document, or None when Zoho says it does not exist (or it is a preview's placeholder)."""
        if "<" in path:
            return None
        try:
            return self.call("GET", path, **params)[key]
        except PermanentError as exc:
            if missing(exc):
                return None
            raise

    def list(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        return [] if "<" in path else self.call("GET", path, **params).get(key, [])

    def delete(self, path: str) -> None:
        """Delete; nothing when it is already gone."""
        try:
            self.call("DELETE", path)
        except PermanentError as exc:
            if not missing(exc):
                raise


def missing(exc: PermanentError) -> bool:
    return exc.status == 404 or (exc.platform_code or "").isdigit() and int(exc.platform_code or 0) in CODE_NOT_FOUND
