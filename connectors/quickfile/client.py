"""QuickFile JSON API v1.2 over ``PlatformHttp``: one ``POST /1_2/<area>/<method>`` per call with the
``{"payload": {"Header", "Body"}}`` envelope, a fresh ``SubmissionNumber`` signed into the header's MD5 on every
request (QuickFile refuses a reused one: it is anti-replay, never an idempotency key), writes recorded instead of
sent during a preview, and QuickFile's ``{"Errors": [...]}`` body raised even with HTTP 200 (``errors.py``)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from connectors import jsonmoney
from connectors.auth import reauthorisation_required
from connectors.base import CredentialSource, PermanentError
from connectors.http import PlatformHttp
from connectors.quickfile import mapping
from connectors.quickfile.errors import classify, errors_of
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
