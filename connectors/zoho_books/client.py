"""Zoho Books API v3 over ``PlatformHttp``: organisation-scoped calls, the Zoho-oauthtoken header, the
classification of Zoho's error body ``{"code": <non-zero>, "message": "…"}`` (a lock refusal names the lock
date), and the recorder the engine's preview uses."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, DeliveryError, NumberInUseError, PermanentError, RateLimitedError,
                             RetryableError)
from connectors.errors import When, classify_by, facts_of
from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, RecordingClient, is_placeholder, unless_gone

# Zoho's codes (errors page https://www.zoho.com/books/api/v3/errors/ and the codes Zoho answers with):
CODE_NOT_FOUND = {1002, 1003}  # "Invoice does not exist." and the like
_LOCK_DATE = re.compile(r"before (\d{4}-\d{2}-\d{2})")  # "… dated before 2026-12-01 …": the first open day
RULES = (When(AuthError, on={"http:401", "code:14", "code:57"}),  # invalid / expired OAuth token, not authorised
         When(RateLimitedError, on={"http:429", "code:44", "code:45", "code:1070"}),  # per minute / per day
         When(ClosedPeriodError, on={"code:4086"}),  # transaction locking: the date falls in a locked period
         When(ClosedPeriodError, text=(re.compile(r"transaction(s)? (are |is )?lock|locked"),)),
         When(RetryableError, on={"http:5xx"}),
         # 1001 "Invoice … already exists": a document holds the number (a live one of another shop invoice
         # whose void has not arrived yet, or a voided one: the connector frees that; issue #20)
         When(NumberInUseError, on={"code:1001"}, text=(re.compile(r'^(invoice|credit note) ".*" already exists'),)))
# Preview: a write to these collections is answered with a placeholder document (key, id field, placeholder).
_PLACEHOLDERS = {"invoices": ("invoice", "<new invoice>"), "customerpayments": ("payment", "<new payment>"),
                 "creditnotes": ("creditnote", "<new credit note>"), "contacts": ("contact", "<new customer>"),
                 "items": ("item", "<new item>")}


def classify(response: httpx.Response) -> DeliveryError | None:
    """Zoho's body ``{"code": <non-zero>, "message": "…"}`` by ``RULES``. Zoho's API has no read of the lock
    date: its refusal names it, and without it the engine could not re-plan."""
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code, message = body.get("code"), str(body.get("message", ""))
    found = _LOCK_DATE.search(message)
    return classify_by(RULES, f"Zoho {code}: {message}", facts=facts_of(response.status_code, code), message=message,
                       response=response, code=str(code), detail=body,
                       closed_through=date.fromisoformat(found.group(1)) - timedelta(days=1) if found else None)


class ZohoClient(RecordingClient):
    def __init__(self, http: PlatformHttp, organization_id: str) -> None:
        self.http = http
        self.organization_id = organization_id

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        if method != "GET" and self.recorded(method, path, body, params):
            segments = path.strip("/").split("/")
            key, placeholder = _PLACEHOLDERS.get(segments[0], ("answer", "<new>"))
            return {key: {**(body or {}), "status": "draft",
                          f"{key}_id": segments[1] if len(segments) > 1 else placeholder}}
        query = {"organization_id": self.organization_id, **{k: v for k, v in params.items() if v is not None}}
        headers = dict(ACCEPT_JSON)
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = jsonmoney.dumps(body)
        response = self.http.request(method, path, **kwargs)
        return jsonmoney.loads(response.content)

    def get(self, path: str, key: str, **params: Any) -> dict[str, Any] | None:
        """One document, or None when Zoho says it does not exist (or it is a preview's placeholder)."""
        found = None if is_placeholder(path) else unless_gone(lambda: self.call("GET", path, **params), missing)
        return found[key] if found is not None else None

    def list(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        return [] if is_placeholder(path) else self.call("GET", path, **params).get(key, [])

    def delete(self, path: str) -> None:
        """Delete; nothing when it is already gone."""
        unless_gone(lambda: self.call("DELETE", path), missing)


def missing(exc: PermanentError) -> bool:
    return exc.status == 404 or (exc.platform_code or "").isdigit() and int(exc.platform_code or 0) in CODE_NOT_FOUND
