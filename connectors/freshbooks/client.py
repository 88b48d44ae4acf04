"""FreshBooks' accounting API over ``PlatformHttp``: the account id in every path, the ``{"response":
{"result": …}}`` envelope, ``search[…]`` filters and pages, writes (recorded instead of sent during a
preview), and FreshBooks' error bodies classified."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.rest import sole
from connectors.base import AuthError, DeliveryError, PermanentError, RateLimitedError, RetryableError
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.freshbooks.settings import FreshBooksSettings

JSON = {"Accept": "application/json"}
ME = "/auth/api/v1/users/me"


def classify(response: httpx.Response) -> DeliveryError | None:
    """``{"response": {"errors": [{message, errno, field, object, value}]}}`` (the SDK's Error.ts), the newer
    ``{"code", "message", "details": [ErrorInfo]}``, and the auth server's ``{"error", "error_description"}``."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    errors = (body.get("response") or {}).get("errors") if isinstance(body.get("response"), dict) else None
    if not errors and body.get("details"):
        errors = [{"message": d.get("metadata", {}).get("message"), "errno": d.get("reason"),
                   "field": d.get("metadata", {}).get("field")} for d in body["details"] if isinstance(d, dict)]
    if not errors and (body.get("error") or body.get("message")):
        errors = [{"message": body.get("error_description") or body.get("message"), "errno": body.get("error")}]
    if not errors:
        return None
    status = response.status_code
    reason = "FreshBooks " + "; ".join(f"{e.get('errno', '')}: {e.get('message', '')}"
                                       + (f" ({e['field']})" if e.get("field") else "") for e in errors)
    common = {"status": status, "platform_code": str(errors[0].get("errno") or ""), "detail": errors}
    if status == 401:
        return AuthError(reason, **common)
    if status == 429:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


def _result(response: httpx.Response) -> dict[str, Any]:
    body = jsonmoney.loads(response.content) if response.content else {}
    return (body.get("response") or {}).get("result") or {}


def _single(result: dict[str, Any]) -> dict[str, Any]:
    """The one resource in a result (``{"invoice": {…}}``, the SDK's ``{"credit_notes": {…}}``)."""
    return next((v for v in result.values() if isinstance(v, dict)), {})


class FreshBooksClient:
    def __init__(self, http: PlatformHttp, settings: FreshBooksSettings) -> None:
        self.http, self.settings = http, settings
        self.account_id = settings.account_id
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def account(self) -> str:
        """The account id: configured, else that of the only business the grant reaches (never a guess)."""
        if self.account_id is None:
            body = jsonmoney.loads(self.http.request("GET", ME, headers=JSON).content)
            accounts = {str(m["business"]["account_id"]) for m in body["response"].get("business_memberships") or []
                        if (m.get("business") or {}).get("account_id")}
            self.account_id = sole(accounts, "FreshBooks", "accounts", "account_id")
        return self.account_id

    def path(self, resource: str, key: str | None = None) -> str:
        return f"/accounting/account/{self.account()}/{resource}" + (f"/{key}" if key else "")

    def get(self, resource: str, key: str) -> dict[str, Any] | None:
        """One resource; None when FreshBooks has no such id (or it is a preview's placeholder)."""
        if key.startswith("<new "):
            return None
        try:
            return _single(_result(self.http.request("GET", self.path(resource, key), headers=JSON)))
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, **search: Any) -> list[dict[str, Any]]:
        """Every row matching ``search[<name>]=<value>``, page by page (pages of at most 100)."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {f"search[{k}]": v for k, v in search.items()} | {"page": page, "per_page": self.settings.per_page}
            result = _result(self.http.request("GET", self.path(resource), params=params, headers=JSON))
            rows.extend(next((v for v in result.values() if isinstance(v, list)), []))
            if page >= int(result.get("pages") or 1):
                return rows
            page += 1

    def write(self, method: str, resource: str, key: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """POST / PUT; the answer's resource."""
        path = self.path(resource, key)
        if self.recorder is not None:
            self.recorder.append({"method": method, "path": path, "body": body})
            return {**next(iter(body.values())), "id": key or f"<new {resource}>", "vis_state": 0,
                    "v3_status": "draft", "updated": "<current>"}
        response = self.http.request(method, path, headers=JSON | {"Content-Type": "application/json"},
                                     content=jsonmoney.dumps(body))
        return _single(_result(response))
