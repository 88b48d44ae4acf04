"""FreeAgent API v2 over ``PlatformHttp``: resource URIs, paged lists (``page``/``per_page``, ``Link`` header),
writes (recorded instead of sent during a preview), and FreeAgent's error body classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (
    AuthError,
    ClosedPeriodError,
    DeliveryError,
    NumberInUseError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.freeagent.settings import FreeAgentSettings

JSON = {"Accept": "application/json"}


def messages(body: Any) -> list[str]:
    """FreeAgent answers errors as ``{"errors": {"error": {"message": …}}}`` (one) or
    ``{"errors": [{"message": …}, …]}`` (several)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):
        errors = [errors.get("error")]
    return [str(e["message"]) for e in errors or [] if isinstance(e, dict) and e.get("message")]


def classify(response: httpx.Response) -> DeliveryError | None:
    try:
        found = messages(jsonmoney.loads(response.content))
    except ValueError:
        return None
    if not found:
        return None
    status, reason = response.status_code, "FreeAgent: " + "; ".join(found)
    common = {"status": status, "platform_code": str(status), "detail": found}
    if status == 401:
        return AuthError(reason, **common)
    if status == 429:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **common)
    if "locked period" in reason.lower():  # an account lock: the books are closed for that date
        return ClosedPeriodError(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    if "already in use by another" in reason.lower():  # a live invoice holds the reference (issue #20)
        return NumberInUseError(reason, **common)
    return PermanentError(reason, **common)


class FreeAgentClient:
    def __init__(self, http: PlatformHttp, settings: FreeAgentSettings, base_url: str) -> None:
        self.http, self.settings, self.base_url = http, settings, base_url.rstrip("/")
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def uri(self, resource: str, key: str) -> str:
        """FreeAgent refers to resources by their full URI."""
        return f"{self.base_url}/{resource}/{key}"

    @staticmethod
    def key(uri: str) -> str:
        return uri.rstrip("/").rsplit("/", 1)[-1]

    def _json(self, response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, path: str, **params: Any) -> dict[str, Any] | None:
        """One resource (the envelope's content); None when FreeAgent no longer has it (or it is a preview's)."""
        if "<new " in path:
            return None
        try:
            answer = self._json(self.http.request("GET", path, params=params, headers=JSON))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        return next(iter(answer.values())) if answer else None

    def list(self, resource: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page, while the ``Link`` header names a next page."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            response = self.http.request("GET", f"/{resource}", headers=JSON,
                                         params=params | {"page": page, "per_page": self.settings.per_page})
            rows.extend(self._json(response).get(resource) or [])
            if "next" not in response.links:
                return rows
            page += 1

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST / PUT / DELETE; the answer's resource (``{}`` for an empty answer)."""
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": path, "body": body})
            inner = next(iter(body.values())) if body else {}
            resource = path.strip("/").split("/")[0]
            return {**inner, "url": self.uri(resource, f"<new {resource}>"), "updated_at": "<current>"}
        response = self.http.request(method, path, headers=JSON | (
            {"Content-Type": "application/json"} if body is not None else {}),
            content=jsonmoney.dumps(body) if body is not None else None)
        answer = self._json(response)
        return next(iter(answer.values())) if answer else {}
