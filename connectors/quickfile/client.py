"""QuickFile JSON API v1.2 over ``PlatformHttp``: one ``POST /1_2/<area>/<method>`` per call with the
``{"payload": {"Header", "Body"}}`` envelope, a fresh ``SubmissionNumber`` signed into the header's MD5 on every
request (QuickFile refuses a reused one: it is anti-replay, never an idempotency key), writes recorded instead of
sent during a preview, and QuickFile's ``{"Errors": [...]}`` body classified (it can come with HTTP 200 too)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from connectors import jsonmoney
from connectors.auth import reauthorisation_required
from connectors.base import (
    CredentialSource,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from connectors.http import PlatformHttp, retry_after_seconds
from connectors.quickfile import mapping
from connectors.quickfile.settings import QuickFileSettings

JSON = {"Accept": "application/json", "Content-Type": "application/json"}


def path(method: str) -> str:
    """``Invoice_Create`` → ``/1_2/invoice/create`` (QuickFile's endpoint per method)."""
    area, _, name = method.partition("_")
    return f"/1_2/{area.lower()}/{name.lower()}"


def signed_header(cred: dict[str, Any], submission: str) -> dict[str, Any]:
    """The request header: MD5Value = md5(AccNumber + APIKey + SubmissionNumber)."""
    account, key, application = (str(cred.get(k) or "") for k in ("account_number", "api_key", "application_id"))
    if not (account and key and application):
        raise reauthorisation_required("QuickFile needs account_number, api_key and application_id; run "
                                       "`ledgerwire credentials set`")
    md5 = hashlib.md5((account + key + submission).encode()).hexdigest()
    return {"MessageType": "Request", "SubmissionNumber": submission,
            "Authentication": {"AccNumber": account, "MD5Value": md5, "ApplicationID": application}}


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


class QuickFileClient:
    def __init__(self, http: PlatformHttp, credentials: CredentialSource, settings: QuickFileSettings) -> None:
        self.http, self.credentials, self.settings = http, credentials, settings
        # Preview: writes are appended here and answered with placeholders instead of being sent.
        self.recorder: list[dict[str, Any]] | None = None

    def call(self, method: str, body: dict[str, Any] | None, write: bool = False) -> dict[str, Any]:
        """One method call; its response ``Body``."""
        if write and self.recorder is not None:
            self.recorder.append({"method": "POST", "path": path(method), "body": body})
            return {"InvoiceID": "<new invoice>", "PaymentID": "<new payment>", "ClientID": "<new client>",
                    "SubmissionNumber": "<preview>"}
        submission = uuid.uuid4().hex  # unique per request, retries included
        envelope = {"payload": {"Header": signed_header(self.credentials.get(), submission)} | (
            {"Body": body} if body is not None else {})}
        response = self.http.request("POST", path(method), headers=JSON, content=jsonmoney.dumps(envelope))
        answer = jsonmoney.loads(response.content) if response.content else {}
        if errors_of(answer):  # QuickFile may refuse with HTTP 200: nothing was applied
            raise classify(response) or PermanentError("QuickFile refused the request")
        result = ((answer.get(method) or {}).get("Body") or {}) if isinstance(answer, dict) else {}
        # The submission that made a write: QuickFile has no concurrency token; the ledger keeps this instead.
        return result | {"SubmissionNumber": submission} if write else result

    def get(self, method: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """One record; None when QuickFile has no such record (or it is a preview's placeholder)."""
        if b"<new " in jsonmoney.dumps(body):
            return None
        try:
            return self.call(method, body)
        except PermanentError as exc:
            if "not found" in exc.reason.lower():
                return None
            raise

    def search(self, method: str, **criteria: Any) -> list[dict[str, Any]]:
        """Every ``Record`` a search finds, page by page (ReturnCount ≤ 200, Offset, RecordsetCount)."""
        rows: list[dict[str, Any]] = []
        while True:
            body = mapping.search_payload(method, self.settings.return_count, len(rows), **criteria)
            answer = self.call(method, body)
            page = answer.get("Record") or []
            rows.extend(page if isinstance(page, list) else [page])
            if not page or len(rows) >= int(answer.get("RecordsetCount") or 0):
                return rows
