"""QuickBooks Online's Faults (a response's, a batch item's) as the engine's errors: classification, not an operation."""

from __future__ import annotations

from typing import Any

import httpx

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, DeliveryError, PermanentError, RateLimitedError,
                             RetryableError, StaleTokenError)
from connectors.errors import When, classify_by, facts_of

# QBO's Fault codes: 3200 token refused, 3001 throttled, 6200 "Account Period Closed" (integrators have seen
# it with code 5010 as well, so it is told apart from a stale SyncToken, 5010, by its text, before that rule).
RULES = (When(AuthError, on={"http:401", "code:3200"}), When(RateLimitedError, on={"http:429", "code:3001"}),
         When(ClosedPeriodError, on={"code:6200"}),
         When(ClosedPeriodError, text=("account period closed", "account period has closed")),
         When(StaleTokenError, on={"code:5010"}), When(RetryableError, on={"http:5xx", "SystemFault"}))


def classify(response: httpx.Response) -> DeliveryError | None:
    """QBO's Fault body (``{"Fault": {"Error": [{"Message", "Detail", "code"}], "type"}}``) by ``RULES``."""
    try:
        fault = jsonmoney.loads(response.content).get("Fault") or {}
    except ValueError:
        return None
    first = (fault.get("Error") or [{}])[0]
    code, text = str(first.get("code", "")), f"{first.get('Message', '')} {first.get('Detail', '')}"
    return classify_by(RULES, f"QBO {code}: {text}".strip(), facts=facts_of(response.status_code, code, fault.get("type")),
                       message=text, response=response, code=code, detail=fault)


def classify_fault(fault: dict[str, Any]) -> DeliveryError:
    """A Fault inside a batch answer, classified like a whole response's."""
    fake = httpx.Response(500 if fault.get("type") == "SystemFault" else 400,
                          content=jsonmoney.dumps({"Fault": fault}))
    return classify(fake) or PermanentError(str(fault))
