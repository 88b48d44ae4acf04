"""Business Central's OData error body as the engine's errors, and a refused cancel explained: not an operation."""

from __future__ import annotations

from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError, StaleTokenError
from connectors.errors import When, odata_classifier

RULES = (
    When(AuthError, {"http:401"}),
    When(RateLimitedError, {"http:429"}),
    When(StaleTokenError, {"http:412"}),  # Request_EntityChanged: the If-Match ETag is not the record's any more
    When(RetryableError, {"http:5xx"}),
)

classify = odata_classifier("Business Central", RULES)


def credited_cancel_refused(number: str, memos: list[str], refused: PermanentError) -> PermanentError:
    """A posted invoice's cancel refused because the shop's refunds' credit memos are applied to it: what the
    bookkeeper does about it (API v2.0 cannot unapply them)."""
    return PermanentError(
        f"Business Central cannot cancel posted invoice {number}: credit memo(s) {', '.join(memos)} "
        "(the shop's refunds) are applied to it and API v2.0 has no action to unapply them (its credit memo "
        "cancel takes only corrective credit memos). Unapply them in Business Central (Customer Ledger "
        "Entries, Unapply Entries), then replay this dead letter.",
        status=refused.status, platform_code=refused.platform_code, detail=refused.detail)
