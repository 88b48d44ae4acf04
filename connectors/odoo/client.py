"""Odoo's external API (XML-RPC ``/xmlrpc/2/common`` and ``/xmlrpc/2/object``) over ``PlatformHttp``.

The transport is httpx through the framework (limiter, timeouts, metrics, uncertain outcomes of writes);
the wire format is the standard library's XML-RPC marshalling with exact Decimals (``wire``). Odoo answers
errors as XML-RPC Faults inside an HTTP 200, so they are classified here from the fault code and the
Python exception text Odoo puts in ``faultString`` (odoo/service + rpc controller: 1 = any other
exception with its traceback, 2 = UserError/ValidationError/MissingError/RedirectWarning message,
3 = AccessDenied, 4 = AccessError).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import structlog

from connectors.auth import renewing_once
from connectors.base import AuthError, ClosedPeriodError, CredentialSource, DeliveryError, RateLimitedError, RetryableError
from connectors.errors import When, classify_by, facts_of
from connectors.http import PlatformHttp
from connectors.odoo import wire
from connectors.rest import RecordingClient

log = structlog.get_logger(__name__)

READ_METHODS = frozenset({"search_read", "read", "search", "search_count", "fields_get", "name_search"})
FAULT_APPLICATION = 1
FAULT_RULES = (When(AuthError, on={"code:3"}),  # AccessDenied
               When(AuthError, text=("accessdenied",)),
               When(RetryableError, text=("could not serialize access", "serializationfailure", "concurrent update",
                                          "deadlock detected", "lock not available")),
               When(ClosedPeriodError, on={"code:2"},  # a UserError naming the lock date
                    text=("lock date", "locked period", "period is locked", "lock_date")))
# HTTP-level answers (a front proxy's 429/502/503, Odoo.sh rate limiting); faults come as 200.
HTTP_RULES = (When(RateLimitedError, on={"http:429"}), When(RetryableError, on={"http:502", "http:503", "http:504"}))


def fault_message(fault: wire.Fault) -> str:
    """Odoo's own message: for a traceback (code 1), its last line ("module.Error: message")."""
    text = str(fault.faultString or "").strip()
    if fault.faultCode == FAULT_APPLICATION and "Traceback" in text:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else text
    return text


def classify_fault(fault: wire.Fault) -> DeliveryError:
    return classify_by(FAULT_RULES, f"Odoo: {fault_message(fault)}"[:2000], facts=facts_of(None, fault.faultCode),
                       message=str(fault.faultString), code=fault.faultCode,
                       detail={"faultCode": fault.faultCode, "faultString": str(fault.faultString)[:4000]})


def classify_http(response: httpx.Response) -> DeliveryError | None:
    facts = facts_of(response.status_code)
    if not any(rule.matches(facts, "") for rule in HTTP_RULES):
        return None
    reason = "Odoo: too many requests" if response.status_code == 429 else f"Odoo: HTTP {response.status_code}"
    return classify_by(HTTP_RULES, reason, facts=facts, response=response, detail=response.text[:500])


class OdooClient(RecordingClient):
    """``execute_kw`` with the user's uid (from ``authenticate``) and API key (from the credential store)."""

    def __init__(self, http: PlatformHttp, *, target: str, db: str, login: str, credentials: CredentialSource) -> None:
        self.http = http
        self.target = target
        self.db = db
        self.login = login
        self.credentials = credentials
        self._uid: int | None = None
        self._lock = threading.Lock()
        self.authentications = 0

    # -- transport --
    def _call(self, service: str, method: str, params: tuple[Any, ...]) -> Any:
        response = self.http.request("POST", f"/xmlrpc/2/{service}", content=wire.encode_call(method, params),
                                     headers={"Content-Type": "text/xml", "Accept": "text/xml"})
        try:
            result, _ = wire.decode(response.content)
        except wire.Fault as fault:
            error = classify_fault(fault)
            log.info("odoo_fault", target=self.target, service=service, method=method, code=fault.faultCode,
                     error_class=error.error_class.value)
            raise error from None
        except Exception as exc:  # not XML-RPC at all (a proxy's HTML page …)
            raise RetryableError(f"Odoo: unreadable answer ({type(exc).__name__})", status=response.status_code) from exc
        return result[0]

    def _api_key(self) -> str:
        key = self.credentials.get().get("api_key")
        if not key:
            raise AuthError("Odoo: the credential document has no api_key")
        return key

    def uid(self) -> int:
        with self._lock:
            if self._uid is None:
                uid = self._call("common", "authenticate", (self.db, self.login, self._api_key(), {}))
                self.authentications += 1
                if not uid:
                    raise AuthError(f"Odoo: authentication failed for the configured login on database {self.db!r}")
                self._uid = int(uid)
            return self._uid

    def execute(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        # Preview: the execute_kw call (without db/uid/API key) recorded and answered with placeholders.
        if method not in READ_METHODS and self.recorded("POST", "/xmlrpc/2/object", {
                "model": model, "method": method, "args": _wire_shape(args), "kwargs": _wire_shape(kwargs or {})}):
            if method == "create":
                return f"<new {model}>"
            return {"res_id": "<new account.payment>"} if method == "action_create_payments" else True
        # A refused uid: the key may have been replaced in the credential store (or the user re-created), so
        # authenticate again once with what is stored now.
        return renewing_once(lambda: self._call("object", "execute_kw", (
            self.db, self.uid(), self._api_key(), model, method, args, kwargs or {})), self._forget_uid)

    def _forget_uid(self) -> None:
        with self._lock:
            self._uid = None

    # -- helpers --
    def search_read(self, model: str, domain: list, fields: list[str], limit: int | None = None,
                    order: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"fields": fields}
        if limit:
            kwargs["limit"] = limit
        if order:
            kwargs["order"] = order
        return self.execute(model, "search_read", [domain], kwargs)

    def read_one(self, model: str, record_id: int | str, fields: list[str]) -> dict[str, Any] | None:
        if not str(record_id).isdigit():  # a preview's placeholder: not in Odoo yet
            return None
        found = self.search_read(model, [("id", "=", int(record_id))], fields, limit=1)
        return found[0] if found else None


def _wire_shape(value: Any) -> Any:
    """Tuples travel as XML-RPC arrays: recorded as lists, as the wire carries them."""
    if isinstance(value, dict):
        return {k: _wire_shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire_shape(v) for v in value]
    return value
