"""Odoo's external API (XML-RPC ``/xmlrpc/2/common`` and ``/xmlrpc/2/object``) over ``PlatformHttp``.

The transport is httpx through the framework (limiter, timeouts, metrics, uncertain outcomes of writes);
the wire format is the standard library's XML-RPC marshalling with exact Decimals (``wire``). Odoo answers
errors as XML-RPC Faults inside an HTTP 200, classified by ``faults``.
"""

from __future__ import annotations

from typing import Any

import structlog

from connectors.auth import renewing_once
from connectors.base import CredentialSource, RetryableError
from connectors.http import PlatformHttp
from connectors.odoo import wire
from connectors.odoo.faults import classify_fault
from connectors.odoo.login import OdooLogin
from connectors.rest import RecordingClient, present

log = structlog.get_logger(__name__)

READ_METHODS = frozenset({"search_read", "read", "search", "search_count", "fields_get", "name_search"})
class OdooClient(RecordingClient):
    """``execute_kw`` with the user's uid (from ``authenticate``) and API key (from the credential store)."""

    def __init__(self, http: PlatformHttp, *, target: str, db: str, login: str, credentials: CredentialSource) -> None:
        self.http = http
        self.target = target
        self.db = db
        self.session = OdooLogin(lambda *params: self._call("common", "authenticate", params), db, login, credentials)

    @property
    def authentications(self) -> int:
        return self.session.authentications

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

    def execute(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        # Preview: the execute_kw call (without db/uid/API key) recorded and answered with placeholders.
        if method not in READ_METHODS and self.recorded("POST", "/xmlrpc/2/object", {
                "model": model, "method": method, "args": wire.shape(args), "kwargs": wire.shape(kwargs or {})}):
            if method == "create":
                return f"<new {model}>"
            return {"res_id": "<new account.payment>"} if method == "action_create_payments" else True
        # A refused uid: the key may have been replaced in the credential store (or the user re-created), so
        # authenticate again once with what is stored now.
        return renewing_once(lambda: self._call("object", "execute_kw", (
            self.db, self.session.uid(), self.session.api_key(), model, method, args, kwargs or {})), self.session.forget)

    # -- helpers --
    def search_read(self, model: str, domain: list, fields: list[str], limit: int | None = None,
                    order: str | None = None) -> list[dict[str, Any]]:
        kwargs = {"fields": fields, **present({"limit": limit or None, "order": order or None})}
        return self.execute(model, "search_read", [domain], kwargs)

    def read_one(self, model: str, record_id: int | str, fields: list[str]) -> dict[str, Any] | None:
        if not str(record_id).isdigit():  # a preview's placeholder: not in Odoo yet
            return None
        found = self.search_read(model, [("id", "=", int(record_id))], fields, limit=1)
        return found[0] if found else None
