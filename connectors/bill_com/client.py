"""Bill.com API v3 over ``PlatformHttp``: paged lists (``results`` / ``nextPage``), writes (recorded instead of
sent during a preview), and BILL's error body classified."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import AuthError, DeliveryError, PermanentError, RateLimitedError, RetryableError
from connectors.http import PlatformHttp, retry_after_seconds

JSON = {"Accept": "application/json"}


def _seconds_to_next_hour() -> float:
    now = datetime.now(timezone.utc)
    return float(3600 - (now.minute * 60 + now.second)) or 1.0


def classify(response: httpx.Response) -> DeliveryError | None:
    """BILL v3 answers errors with ``[{"timestamp", "code": "BDC_…", "severity", "category", "message"}]``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    errors = [e for e in body if isinstance(e, dict) and e.get("code")] if isinstance(body, list) else []
    if not errors:
        return None
    codes = {str(e["code"]) for e in errors}
    status = response.status_code
    reason = "Bill.com " + "; ".join(f"{e['code']}: {e.get('message', '')}" for e in errors)
    common = {"status": status, "platform_code": str(errors[0]["code"]), "detail": errors}
    if "BDC_1144" in codes:  # the hour's requests are spent: "wait until the beginning of the next hour"
        return RateLimitedError(reason, retry_after=retry_after_seconds(response) or _seconds_to_next_hour(), **common)
    if "BDC_1322" in codes:  # 3 concurrent requests per developer key per organisation: one must finish
        return RateLimitedError(reason, retry_after=retry_after_seconds(response) or 1.0, **common)
    if codes & {"BDC_1109", "BDC_1101", "BDC_1102"} or status == 401:
        return AuthError(reason, **common)
    if status >= 500 or "BDC_1001" in codes:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


class BillComClient:
    def __init__(self, http: PlatformHttp, page_size: int) -> None:
        self.http, self.page_size = http, page_size
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return jsonmoney.loads(response.content) if response.content else {}

    def get(self, path: str) -> dict[str, Any] | None:
        """One resource; None when BILL does not have it (or it is a preview's placeholder)."""
        if "<new " in path:
            return None
        try:
            return self._json(self.http.request("GET", path, headers=JSON))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, *filters: str) -> list[dict[str, Any]]:
        """Every result, page by page (``nextPage`` is the next page's token). ``filters``: ``field:op:value``."""
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"max": self.page_size}
        if filters:
            params["filters"] = ",".join(filters)
        while True:
            answer = self._json(self.http.request("GET", path, params=params, headers=JSON))
            rows.extend(answer.get("results") or [])
            if not answer.get("nextPage"):
                return rows
            params["page"] = answer["nextPage"]

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": path, "body": body})
            return {**(body or {}), "id": f"<new {path.strip('/').split('/')[1]}>", "updatedTime": "<current>"}
        response = self.http.request(method, path, headers=JSON | {"Content-Type": "application/json"},
                                     content=jsonmoney.dumps(body if body is not None else {}))
        return self._json(response)
