"""Business Central's OData error body as the engine's errors, and a refused cancel explained: not an operation."""

from __future__ import annotations

import httpx

from connectors import jsonmoney
from connectors.base import (AuthError, DeliveryError, PermanentError, RateLimitedError, RetryableError,
                             StaleTokenError)
from connectors.http import retry_after_seconds


def classify(response: httpx.Response) -> DeliveryError | None:
    try:
        body = jsonmoney.loads(response.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    status, code = response.status_code, str(error.get("code", ""))
    common = {"status": status, "platform_code": code, "detail": error}
    reason = f"Business Central {code}: {error.get('message', '')}"
    if status == 401:
        return AuthError(reason, **common)
    if status == 429:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response), **common)
    if status == 412:  # Request_EntityChanged: the If-Match ETag is not the record's any more
        return StaleTokenError(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)


def credited_cancel_refused(number: str, memos: list[str], refused: PermanentError) -> PermanentError:
    """A posted invoice's cancel refused because the shop's refunds' credit memos are applied to it: what the
    bookkeeper does about it (API v2.0 cannot unapply them)."""
    return PermanentError(
        f"Business Central cannot cancel posted invoice {number}: credit memo(s) {', '.join(memos)} "
        "(the shop's refunds) are applied to it and API v2.0 has no action to unapply them (its credit memo "
        "cancel takes only corrective credit memos). Unapply them in Business Central (Customer Ledger "
        "Entries, Unapply Entries), then replay this dead letter.",
        status=refused.status, platform_code=refused.platform_code, detail=refused.detail)
