"""The QuickBooks Web Connector's side of the conversation (QBWebConnectorSvc.wsdl, SOAP 1.1 via ``soap``): the
pull platform's transport, what a push connector's HTTP client is. QBWC authenticates, then asks
``sendRequestXML`` for one qbXML request at a time and brings QuickBooks' answer in ``receiveResponseXML``;
what to send is the engine pull driver's (``connectors.engine_pull.PullDriver``). The company's lists
(accounts, items, classes) are read at most hourly at the start of a session, for ``check_mapping``.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connectors.quickbooks_desktop import check, qbxml, soap

log = structlog.get_logger(__name__)
LIST_SYNC_S = 3600.0
# The qbXML versions whose Intuit schemas (qbxmlops130/160.xsd) every request is built for and tested against.
SUPPORTED_QBXML = ("13.0", "16.0")


def negotiated(major: str, minor: str, newest: str) -> str | None:
    """The highest qbXML version both sides speak: ours (``SUPPORTED_QBXML``, up to the target's ``newest``) and
    QuickBooks' (``sendRequestXML``'s qbXMLMajorVers/qbXMLMinorVers, what the Web Connector reports); None if none.
    QuickBooks refuses a document of a newer version than its own, and reports "13" for QuickBooks 2014-era files."""
    def key(version: str) -> tuple[int, int]:
        return int(version.split(".")[0]), int(version.split(".")[1])

    try:
        theirs = (int(major), int(minor or 0))
    except ValueError:
        return None
    return next((v for v in reversed(SUPPORTED_QBXML) if key(v) <= min(theirs, key(newest))), None)


class WebConnectorService:
    """Mixed into the connector: needs ``queue``, ``driver``, ``settings``, ``target``, ``runtime``."""

    _app: Starlette | None = None

    def asgi_app(self) -> Starlette:
        if self._app is None:
            self._app = Starlette(routes=[Route("/qbwc", self._soap, methods=["POST", "GET"])])
        return self._app

    async def _soap(self, request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse("Ledgerwire QuickBooks Web Connector service (SOAP 1.1, POST)")
        body = await request.body()
        try:
            operation, params = soap.parse_request(body)
        except Exception:  # noqa: BLE001 - malformed XML is the caller's fault
            return Response(soap.fault("malformed SOAP request"), status_code=500, media_type="text/xml")
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            return Response(soap.fault(f"unknown operation {operation}"), status_code=500, media_type="text/xml")
        result_name, result = await run_in_threadpool(handler, params)
        payload = soap.envelope(f"{operation}Response", [(result_name, result)])
        return Response(payload, media_type="text/xml; charset=utf-8")

    def spoken_version(self) -> str:
        """The qbXML version of the Web Connector's last session (a preview shows what it would carry), else the
        newest the target allows."""
        last = self.queue.entity("qbxml", "version")
        return last["list_id"] if last else self.settings.qbxml_version

    def _op_serverVersion(self, params: dict[str, str]) -> tuple[str, str]:
        return "serverVersionResult", "Ledgerwire QBWC service 1.0"

    def _op_clientVersion(self, params: dict[str, str]) -> tuple[str, str]:
        return "clientVersionResult", ""  # "" = any QBWC version is fine

    def _op_authenticate(self, params: dict[str, str]) -> tuple[str, list[str]]:
        creds = self.runtime.credentials(self.target.name).get()
        # On UTF-8 bytes: compare_digest refuses non-ASCII str (a TypeError would answer HTTP 500).
        matched = soap.credentials_match(params.get("strUserName", ""), params.get("strPassword", ""),
                                         str(creds.get("username", self.settings.username)), str(creds.get("password", "")))
        if not (matched and creds.get("password")):
            log.warning("qbwc_authenticate_refused", target=self.target.name)
            return "authenticateResult", ["", "nvu"]  # not a valid user
        ticket = secrets.token_hex(16)
        # The Web Connector runs one session at a time: a new one means any earlier session died (QBWC or
        # this daemon killed mid-session), so its invoice leases are free again (and its requests unanswered).
        self.queue.release_all()
        lists = self.queue.entity("lists", "names")
        lists_due = lists is None or Decimal(str(lists.get("at", 0))) < Decimal(str(time.time() - LIST_SYNC_S))
        if self.queue.pending() == 0 and not lists_due:
            return "authenticateResult", [ticket, "none"]  # nothing to do this time
        self.queue.put_session(ticket, {"invoice_id": None, "done": 0, "last_error": "", "sync_lists": lists_due,
                                        "lists": False})
        return "authenticateResult", [ticket, self.settings.company_file]

    def _op_sendRequestXML(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session = self.queue.session(ticket)
        if session is None:
            return "sendRequestXMLResult", ""
        theirs = f"{params.get('qbXMLMajorVers', '')}.{params.get('qbXMLMinorVers', '')}"
        version = negotiated(params.get("qbXMLMajorVers", ""), params.get("qbXMLMinorVers", ""),
                             self.settings.qbxml_version)
        if version is None:  # nothing QuickBooks could read: the session ends, saying why; the work stays queued
            session["last_error"] = (f"QuickBooks speaks qbXML {theirs}; Ledgerwire speaks "
                                     f"{', '.join(SUPPORTED_QBXML)}: update QuickBooks Desktop")
            log.warning("qbwc_qbxml_version_unsupported", target=self.target.name, reported=theirs)
            self.queue.put_session(ticket, session)
            return "sendRequestXMLResult", ""
        if (self.queue.entity("qbxml", "version") or {}).get("list_id") != version:
            self.queue.put_entity("qbxml", "version", version)
            log.info("qbwc_qbxml_version", target=self.target.name, reported=theirs, speaking=version)
        if session.get("sync_lists"):
            session["lists"] = True
            self.queue.put_session(ticket, session)
            return "sendRequestXMLResult", qbxml.document(version, check.list_queries())
        found = self.driver.next_request(ticket, session.get("invoice_id"), version)
        session.update(invoice_id=found.invoice_id, done=session.get("done", 0) + found.completed, lists=False)
        if found.request is None:
            session["last_error"] = found.error or "Nothing to send right now"
        self.queue.put_session(ticket, session)
        return "sendRequestXMLResult", found.request or ""

    def _op_receiveResponseXML(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session = self.queue.session(ticket)
        if session is None:
            return "receiveResponseXMLResult", "-1"
        invoice_id = session.get("invoice_id")
        if params.get("hresult"):
            # QuickBooks could not process the request (the company file closed, a COM error): nothing is
            # known of the outcome; the engine looks it up by its reference before anything is sent again.
            if invoice_id is not None and not session.get("lists"):
                self.driver.lost(invoice_id)
            session["last_error"] = f"QuickBooks error {params.get('hresult')}: {params.get('message', '')}"
            self.queue.put_session(ticket, session)
            return "receiveResponseXMLResult", "-1"
        try:
            responses = qbxml.parse_response(params.get("response", ""))
        except Exception:  # noqa: BLE001
            session["last_error"] = "unreadable qbXML response"
            self.queue.put_session(ticket, session)
            return "receiveResponseXMLResult", "-1"
        if session.get("lists"):
            check.store_lists(self.queue, responses)
            session.update(sync_lists=False, lists=False)
        elif invoice_id is not None and responses:
            self.driver.answer(invoice_id, ticket, responses[0])
        self.queue.put_session(ticket, session)
        pending, done = self.queue.pending(), session.get("done", 0)
        if pending == 0 and not session.get("sync_lists"):
            return "receiveResponseXMLResult", "100"
        return "receiveResponseXMLResult", str(max(1, min(99, (100 * done) // max(1, done + pending))))

    def _op_connectionError(self, params: dict[str, str]) -> tuple[str, str]:
        log.warning("qbwc_connection_error", target=self.target.name, hresult=params.get("hresult"))
        self.queue.release(params.get("ticket", ""))
        return "connectionErrorResult", "done"

    def _op_getLastError(self, params: dict[str, str]) -> tuple[str, str]:
        session = self.queue.session(params.get("ticket", "")) or {}
        return "getLastErrorResult", session.get("last_error") or "No error"

    def _op_closeConnection(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session: dict[str, Any] = self.queue.session(ticket) or {}
        self.queue.release(ticket)
        self.queue.drop_session(ticket)
        return "closeConnectionResult", f"OK: {session.get('done', 0)} invoice(s) brought up to date"
