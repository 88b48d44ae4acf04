"""Zoho Books API v3 over ``PlatformHttp``: organisation-scoped calls, the Zoho-oauthtoken header, and the
classification of Zoho's error body ``{"code": <non-zero>, "message": "…"}``."""

from __future__ import annotations

import re
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
        return ClosedPeriodError(reason, **kwargs)
    if status >= 500:
        return RetryableError(reason, **kwargs)
    return PermanentError(reason, **kwargs)


class ZohoClient:
    def __init__(self, http: PlatformHttp, organization_id: str) -> None:
        self.http = http
        self.organization_id = organization_id

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        query = {"organization_id": self.organization_id, **{k: v for k, v in params.items() if v is not None}}
        headers = {"Accept": "application/json"}
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = jsonmoney.dumps(body)
        response = self.http.request(method, path, **kwargs)
        return jsonmoney.loads(response.content)

    def get(self, path: str, key: str, **params: Any) -> dict[str, Any] | None:
        """One document, or None when Zoho says it does not exist."""
        try:
            return self.call("GET", path, **params)[key]
        except PermanentError as exc:
            if exc.status == 404 or (exc.platform_code or "").isdigit() and int(exc.platform_code) in CODE_NOT_FOUND:
                return None
            raise

    def list(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        return self.call("GET", path, **params).get(key, [])
