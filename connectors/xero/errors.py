"""Xero's error answers as the engine's error classes: 400 ValidationException (its messages tell a lock date,
an allocation that blocks an edit or void, a number already used), 401/403 problem bodies, 404, 429 with
Retry-After and X-Rate-Limit-Problem, 5xx."""

from __future__ import annotations

import re
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, DeliveryError, NumberInUseError, PermanentError, RateLimitedError,
                             RetryableError)
from connectors.http import retry_after_seconds


class AllocatedError(PermanentError):
    """Xero refuses to edit or void a document that has payments or credit notes allocated to it."""


def validation_messages(body: Any) -> list[str]:
    """Every ``ValidationErrors[].Message`` in Xero's ValidationException body (or one item of it)."""
    if not isinstance(body, dict):
        return []
    messages = [e.get("Message", "") for e in body.get("ValidationErrors") or [] if isinstance(e, dict)]
    for element in body.get("Elements") or []:
        messages += validation_messages(element)
    return [m for m in messages if m]


def error_for_messages(messages: list[str], *, status: int | None = None, detail: Any = None) -> DeliveryError:
    text = "; ".join(messages) or "A validation exception occurred"
    reason = f"Xero: {text}"
    lowered = text.lower()
    if "lock date" in lowered:
        return ClosedPeriodError(reason, status=status, platform_code="lock_date", detail=detail)
    if "payment or credit note allocated" in lowered or "has payments allocated" in lowered:
        return AllocatedError(reason, status=status, platform_code="allocated", detail=detail)
    if re.search(r"(invoice|credit note) # must be unique", lowered):
        return NumberInUseError(reason, status=status, platform_code="ValidationException", detail=detail)
    return PermanentError(reason, status=status, platform_code="ValidationException", detail=detail)


def classify(response: httpx.Response) -> DeliveryError | None:
    """Xero's answers: 400 ValidationException {ErrorNumber 10, Elements[].ValidationErrors[]}, 401/403
    problem bodies {Title, Detail}, 404, 429 with Retry-After and X-Rate-Limit-Problem, 5xx."""
    status = response.status_code
    try:
        body = jsonmoney.loads(response.content) if response.content else {}
    except ValueError:
        body = {"text": response.text[:500]}
    if status == 429:
        problem = response.headers.get("X-Rate-Limit-Problem", "")
        return RateLimitedError(f"Xero rate limit reached ({problem or 'unknown'} limit)", status=status,
                                platform_code=problem or None, retry_after=retry_after_seconds(response), detail=body)
    if status == 401:
        return AuthError(f"Xero: {body.get('Title', 'Unauthorized')} {body.get('Detail', '')}".strip(),
                         status=status, platform_code="401", detail=body)
    if status == 403:
        # The tenant is not connected to this app (or the user lost access): a person must re-connect it.
        return PermanentError(f"Xero: {body.get('Title', 'Forbidden')} {body.get('Detail', '')}; re-connect the "
                              "organisation to the app".strip(), status=status, platform_code="403", detail=body)
    if status >= 500:
        return RetryableError(f"Xero server error {status}: {body.get('Message') or body.get('Title') or ''}".strip(),
                              status=status, detail=body)
    if status == 404:
        return PermanentError("Xero: resource not found", status=status, platform_code="404", detail=body)
    if isinstance(body, dict) and (body.get("Type") == "ValidationException" or body.get("Elements")):
        return error_for_messages(validation_messages(body), status=status, detail=body)
    if isinstance(body, dict) and body.get("Message"):
        return PermanentError(f"Xero {body.get('Type', '')}: {body['Message']}", status=status,
                              platform_code=str(body.get("ErrorNumber", status)), detail=body)
    return None
