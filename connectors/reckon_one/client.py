"""Reckon One API v2 over ``PlatformHttp``: the book (every path starts with its id), filtered paged lists,
writes (recorded instead of sent during a preview), and Reckon's and API Management's error bodies classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.rest import sole
from connectors.base import (
    AuthError,
    ClosedPeriodError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    ReauthorizationRequired,
    RetryableError,
)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.reckon_one.settings import ReckonOneSettings

JSON = {"Accept": "application/json"}
MERGE_PATCH = "application/merge-patch+json"  # the only type Reckon's PATCH accepts (else 415)


def classify(response: httpx.Response) -> DeliveryError | None:
    """Reckon answers ``{"code", "message", "errors": [{"location", "message"}]}``; its API Management
    gateway (subscription key, throttling) answers ``{"statusCode", "message"}``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict) or not body.get("message"):
        return None
    status = response.status_code
    details = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    reason = "Reckon One " + str(body["message"]) + "".join(
        f"; {e.get('location', '')}: {e.get('message', '')}" for e in details)
    common = {"status": status, "platform_code": str(body.get("code", body.get("statusCode", status))),
              "detail": body}
    if status == 401 and "subscription key" in reason.lower():
        return ReauthorizationRequired(reason + " (set the target's subscription_key credential)", **common)
    if status == 403:  # the Reckon user lacks a permission: only a person can grant it
        return ReauthorizationRequired(reason, **common)
    if status == 401:
        return AuthError(reason, **common)
    if status == 429:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **common)
    if "lock off date" in reason.lower():  # BookSettings.lockOffDate: on or before it nothing changes
        return ClosedPeriodError(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


class ReckonClient:
    def __init__(self, http: PlatformHttp, settings: ReckonOneSettings) -> None:
        self.http, self.settings = http, settings
        self.book_id = settings.book_id
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def book(self) -> str:
        """The book: configured, else the only one the grant reaches (never a guess among several)."""
        if self.book_id is None:
            books = self._json(self.http.request("GET", "/books", headers=JSON)).get("list") or []
            self.book_id = str(sole(books, "Reckon One", "books", "book_id")["id"])
        return self.book_id

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, path: str) -> dict[str, Any] | None:
        """One resource of the book; None when Reckon no longer has it (or it is a preview's placeholder)."""
        if "<new " in path:
            return None
        try:
            return self._json(self.http.request("GET", f"/{self.book()}{path}", headers=JSON))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, **filters: str) -> list[dict[str, Any]]:
        """Every row matching ``field eq "value"`` for each filter, page by page (a short page is the last)."""
        query = " and ".join(f'{name} eq "{value}"' for name, value in filters.items())
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, Any] = {"page": page, "perPage": self.settings.per_page}
            if query:
                params["filter"] = query
            found = self._json(self.http.request("GET", f"/{self.book()}{path}", params=params, headers=JSON))
            batch = found.get("list") or []
            rows.extend(batch)
            if len(batch) < self.settings.per_page:
                return rows
            page += 1

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> str:
        """POST / PUT / PATCH / DELETE; the id a POST answers (Reckon answers ``{"id"}``), else ""."""
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": path, "body": body})
            return f"<new {path.strip('/').split('/')[0]}>" if method == "POST" else ""
        content_type = MERGE_PATCH if method == "PATCH" else "application/json"
        response = self.http.request(method, f"/{self.book()}{path}", headers=JSON | (
            {"Content-Type": content_type} if body is not None else {}),
            content=jsonmoney.dumps(body) if body is not None else None)
        return str(self._json(response).get("id", "")) if method == "POST" else ""
