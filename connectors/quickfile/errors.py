"""QuickFile's Errors body (HTTP 200 included) as the engine's errors: classification, not an operation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.auth import reauthorisation_required
from connectors.base import DeliveryError, PermanentError, RateLimitedError, RetryableError
from connectors.http import retry_after_seconds


def _until_midnight_utc() -> float:
    now = datetime.now(timezone.utc)
    return ((now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0) - now).total_seconds()


def errors_of(body: Any) -> list[dict[str, Any]]:
    errors = body.get("Errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):  # {"Errors": {"Error": [...]}} as the XML-shaped JSON has it
        errors = errors.get("Error")
    if isinstance(errors, dict):
        errors = [errors]
    return [e for e in errors or [] if isinstance(e, dict)]


def classify(response: httpx.Response) -> DeliveryError | None:
    """``{"Errors": [{"ErrorCode", "ErrorMessage"}]}``: authentication (a person must fix the key or the
    application id; a refused SubmissionNumber only needs a new one), the daily call limit, validation."""
    try:
        errors = errors_of(jsonmoney.loads(response.content))
    except ValueError:
        return None
    if not errors:
        return None
    status = response.status_code
    reason = "QuickFile " + "; ".join(f"{e.get('ErrorCode', '')}: {e.get('ErrorMessage', '')}" for e in errors)
    common = {"status": status, "platform_code": str(errors[0].get("ErrorCode", "")), "detail": errors}
    text = reason.lower()
    if status == 429 or "limit" in text:
        return RateLimitedError(reason, retry_after=retry_after_seconds(response) or _until_midnight_utc(), **common)
    if "submissionnumber" in text or "submission number" in text:
        return RetryableError(reason, **common)  # refused before it was applied: a new number next time
    if status in (401, 403) or "authentication" in text or "md5" in text or "applicationid" in text:
        return reauthorisation_required(reason, **common)
    if status >= 500:
        return RetryableError(reason, **common)
    return PermanentError(reason, **common)
