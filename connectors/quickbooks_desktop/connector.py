"""The QuickBooks Desktop connector: a pull platform.

``deliver`` queues the newest version of an invoice (durably, in the connector's tables) and returns at
once with status "queued". The QuickBooks Web Connector on the bookkeeper's PC polls ``/qbwc`` (the SOAP
service of QBWebConnectorSvc.wsdl): each ``sendRequestXML`` gets ONE qbXML request, computed afresh from the
invoice's newest event and what is known of QuickBooks (a reconcile loop), and ``receiveResponseXML`` records
the answer. Exactly once: before an Add is sent a "pending" marker is stored; if its answer never comes
(QBWC crash, daemon SIGKILL), the next session first queries by the reference (InvoiceQuery RefNumber,
ReceivePaymentQuery "LW<id>", CreditMemoQuery, CustomerQuery/ItemQuery by name) and adopts what it finds.
Mods carry the EditSequence; 3200 (out of date) re-reads the invoice and sends the Mod again. Deleting a
payment that is already gone (3120) counts as done.

Refunds: each is a CreditMemoAdd, then applied to THIS invoice by a ReceivePaymentAdd of 0.00 whose
AppliedToTxnAdd carries SetCredit (CreditTxnID, AppliedAmount) — never more than the invoice's open balance
the shop leaves (total − the shop's live payments); when a later payment or a lower total needs the room, the
application is deleted first (TxnDel ReceivePayment) and what fits is applied again afterwards.

Closed books (the company's closing date, statusCode 3171): the first open day is read with PreferencesQuery
(AccountingPreferences/ClosingDate + 1 day). A new invoice, payment, refund or credit application dated on or
before it is posted whole, dated the first open day (the invoice's later Mods keep that date; a "redated"
entry is recorded). An InvoiceMod refused for the closing date freezes the invoice: from then on the
difference between what QuickBooks holds (the invoice as last posted + the adjustments already posted, per
item and tax item; connectors.adjustments) and the shop's version posts as an adjustment dated the first open
day — an InvoiceAdd for an increase, a CreditMemoAdd for a decrease (a TxnVoid refused: a credit memo for
everything held) — linked by Other ("A1-<invoice number>"/"C2-…") and Memo (the original's TxnID), recorded
in doc.extra["adjustments"], found again by its RefNumber when an answer was lost (never posted twice), and a
refusal that keeps coming back ends as a dead letter (never retried forever).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import date
from decimal import Decimal
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connectors import adjustments
from connectors.base import (ClosedPeriodError, Connector, invoice_memo, DeliveryContext, DocumentState,
                             PermanentError, RemoteInvoice)
from connectors.quickbooks_desktop import mapping, soap
from connectors.quickbooks_desktop.settings import QbdSettings
from connectors.quickbooks_desktop.store import DDL, MemoryStore, PgStore, QbdStore
from daemon.canonical import InvoiceEvent, PaymentStatus

log = structlog.get_logger(__name__)

NOT_FOUND = (1, 500)  # 1: a query matched nothing; 500: a FullName/TxnID/ListID asked for does not exist
TRANSIENT = (3180, 3175, 3176)  # error saving / object in use: nothing saved, send again
CLOSED_PERIOD = 3171  # dated on or before the company's closing date (see sandbox.CLOSED_PERIOD)
MAX_CLOSED_REFUSALS = 5  # closing-date refusals in a row before the invoice becomes a dead letter
WRITES = ("invoice_add", "invoice_mod", "payment_add", "refund_add", "credit_add", "adjust_add", "void",
          "payment_del", "credit_del")
LIST_SYNC_S = 3600.0


class Step:
    def __init__(self, op: str, key: str, element: Any, **data: Any) -> None:
        self.op, self.key, self.element, self.data = op, key, element, data


class _Entities:
    """Store-backed customers/items; in dry runs (preview) writes go to an overlay only."""

    def __init__(self, store: QbdStore, dry: bool) -> None:
        self.store, self.dry, self.overlay = store, dry, {}

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if (kind, key) in self.overlay:
            return self.overlay[(kind, key)]
        return self.store.entity(kind, key)

    def put(self, kind: str, key: str, list_id: str, **extra: Any) -> None:
        if self.dry:
            self.overlay[(kind, key)] = {"list_id": list_id, **extra}
        else:
            self.store.put_entity(kind, key, list_id, extra)


class QuickBooksDesktopConnector(Connector):
    platform = "quickbooks-desktop"
    settings_model = QbdSettings
    pull_model = True

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        self.settings: QbdSettings
        self.mapping = target.mapping
        pool = getattr(runtime, "pg_pool", None)
        self.store: QbdStore = PgStore(pool, target.name) if pool is not None else MemoryStore()
        self._app: Starlette | None = None

    @classmethod
    def ledger_ddl(cls) -> str:
        return DDL

    # -- the push side: queue --
    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        doc = doc.model_copy(deep=True)
        self.store.enqueue(event.invoice_id, event.version, event.model_dump_json())
        work = self.store.load(event.invoice_id)
        state = work.state if work else {}
        if state.get("txn_id"):
            doc.external_id, doc.token = state["txn_id"], state.get("edit_seq")
        for key in ("tax_difference", "total_difference"):
            if key in state:
                doc.extra[key] = state[key]
        if (state.get("extra") or {}).get(adjustments.KEY):
            doc.extra[adjustments.KEY] = state["extra"][adjustments.KEY]
        if work and work.failed_reason:
            doc.extra["qbd_last_error"] = work.failed_reason[:500]
        doc.status = "queued"
        doc.delivered_version = event.version
        doc.payload_hash = event.content_hash()
        log.info("qbd_queued", target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        return doc

    # -- reads (from what QuickBooks last answered) --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        work = self.store.load(event.invoice_id)
        return _remote(work.state) if work and work.state.get("txn_id") else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        work = self.store.by_txn(external_id)
        return _remote(work.state) if work else None

    # -- issue #5 --
    def check_mapping(self) -> list[str]:
        """Resolved against the lists QuickBooks last sent (AccountQuery/ItemQuery/ClassQuery, refreshed at
        most hourly at the start of a Web Connector session): a pull platform cannot be asked on demand."""
        lists = self.store.entity("lists", "names")
        if lists is None:
            return ["lists not synced yet: the Web Connector has not run a session since Ledgerwire started"]
        accounts, items, classes = set(lists.get("accounts", [])), set(lists.get("items", [])), set(lists.get("classes", []))
        tax_items = set(lists.get("tax_items", []))
        problems = []
        for kind, name in self.mapping.income_accounts.items():
            if name not in accounts:
                problems.append(f"income_accounts.{kind.value}: account {name!r} not found")
        if self.mapping.core_account and self.mapping.core_account not in accounts:
            problems.append(f"core_account: account {self.mapping.core_account!r} not found")
        for method, name in self.mapping.payment_accounts.items():
            if name not in accounts:
                problems.append(f"payment_accounts.{method}: account {name!r} not found")
        for code, name in self.mapping.tax_codes.items():
            if name not in tax_items:
                problems.append(f"tax_codes.{code}: sales-tax item {name!r} not found")
        if self.settings.invoice_tax_item not in tax_items:
            problems.append(f"settings.invoice_tax_item: sales-tax item {self.settings.invoice_tax_item!r} not found")
        for kind, name in self.mapping.items.items():
            if name not in items:
                problems.append(f"items.{kind.value}: item {name!r} not found")
        for code, name in self.mapping.location_tracking.items():
            if name not in classes:
                problems.append(f"location_tracking.{code}: class {name!r} not found")
        return problems

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        """The qbXML requests the Web Connector would carry for this event, in order, as if every query found
        nothing new and every write succeeded; new ids appear as "<new …>" placeholders. Writes nothing."""
        work = self.store.load(event.invoice_id)
        state = dict(work.state) if work else {}
        entities = _Entities(self.store, dry=True)
        out: list[dict[str, Any]] = []
        for _ in range(200):
            step = self._plan(event, state, entities, dry=True)
            if step is None:
                break
            out.append({"method": "sendRequestXML", "path": "/qbwc",
                        "body": mapping.document(self.settings.qbxml_version, [step.element])})
            self._apply(step, _simulated(step, event), state, event, entities)
        return out

    # -- the pull side: the SOAP service QBWC calls --
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

    def _op_serverVersion(self, params: dict[str, str]) -> tuple[str, str]:
        return "serverVersionResult", "Ledgerwire QBWC service 1.0"

    def _op_clientVersion(self, params: dict[str, str]) -> tuple[str, str]:
        return "clientVersionResult", ""  # "" = any QBWC version is fine

    def _op_authenticate(self, params: dict[str, str]) -> tuple[str, list[str]]:
        creds = self.runtime.credentials(self.target.name).get()
        user_ok = hmac.compare_digest(params.get("strUserName", ""), str(creds.get("username", self.settings.username)))
        password_ok = hmac.compare_digest(params.get("strPassword", ""), str(creds.get("password", "")))
        if not (user_ok and password_ok and creds.get("password")):
            log.warning("qbwc_authenticate_refused", target=self.target.name)
            return "authenticateResult", ["", "nvu"]  # not a valid user
        ticket = secrets.token_hex(16)
        # The Web Connector runs one session at a time: a new one means any earlier session died (QBWC or
        # this daemon killed mid-session), so its invoice leases are free again.
        self.store.release_all()
        lists = self.store.entity("lists", "names")
        lists_due = lists is None or Decimal(str(lists.get("at", 0))) < Decimal(str(_now() - LIST_SYNC_S))
        if self.store.pending() == 0 and not lists_due:
            return "authenticateResult", [ticket, "none"]  # nothing to do this time
        self.store.put_session(ticket, {"invoice_id": None, "step": None, "done": 0, "last_error": "",
                                        "sync_lists": lists_due})
        return "authenticateResult", [ticket, self.settings.company_file]

    def _op_sendRequestXML(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session = self.store.session(ticket)
        if session is None:
            return "sendRequestXMLResult", ""
        if session.get("sync_lists"):
            session["step"] = {"op": "lists", "key": "", "data": {}}
            self.store.put_session(ticket, session)
            return "sendRequestXMLResult", mapping.document(self.settings.qbxml_version, [
                _names_query("AccountQueryRq"), _names_query("ItemQueryRq"), _names_query("ClassQueryRq")])
        entities = _Entities(self.store, dry=False)
        for _ in range(100):
            invoice_id = session.get("invoice_id")
            if invoice_id is None or not self.store.renew(ticket, invoice_id, self.settings.lease_s):
                invoice_id = self.store.claim(ticket, self.settings.lease_s)
                if invoice_id is None:
                    session.update(invoice_id=None, step=None, last_error="Nothing to send right now")
                    self.store.put_session(ticket, session)
                    return "sendRequestXMLResult", ""
                session["invoice_id"] = invoice_id
            work = self.store.load(invoice_id)
            if work is None or work.queued_version <= max(work.done_version, work.failed_version):
                session["invoice_id"] = None
                continue
            event = InvoiceEvent.model_validate_json(work.event)
            state = work.state
            step = self._plan(event, state, entities, dry=False)
            if step is None:
                self.store.complete(invoice_id, work.queued_version, state)
                session["done"] = session.get("done", 0) + 1
                session["invoice_id"] = None
                log.info("qbd_invoice_in_step", target=self.target.name, invoice_id=invoice_id,
                         version=work.queued_version, txn_id=state.get("txn_id"))
                continue
            self.store.save_state(invoice_id, state)  # the pending marker is durable before the request leaves
            session["step"] = {"op": step.op, "key": step.key, "data": step.data, "version": work.queued_version}
            self.store.put_session(ticket, session)
            log.debug("qbd_request", target=self.target.name, invoice_id=invoice_id, op=step.op)
            return "sendRequestXMLResult", mapping.document(self.settings.qbxml_version, [step.element])
        self.store.put_session(ticket, session)
        return "sendRequestXMLResult", ""

    def _op_receiveResponseXML(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session = self.store.session(ticket)
        if session is None:
            return "receiveResponseXMLResult", "-1"
        step_data = session.get("step")
        session["step"] = None
        if params.get("hresult"):
            # QuickBooks could not process the request (the company file closed, a COM error): nothing is
            # known of the outcome; pending markers make the next session look before re-adding.
            session["last_error"] = f"QuickBooks error {params.get('hresult')}: {params.get('message', '')}"
            self.store.put_session(ticket, session)
            return "receiveResponseXMLResult", "-1"
        try:
            responses = mapping.parse_response(params.get("response", ""))
        except Exception:  # noqa: BLE001
            session["last_error"] = "unreadable qbXML response"
            self.store.put_session(ticket, session)
            return "receiveResponseXMLResult", "-1"
        if step_data and step_data["op"] == "lists":
            self._apply_lists(responses)
            session["sync_lists"] = False
        elif step_data and session.get("invoice_id") is not None and responses:
            invoice_id = session["invoice_id"]
            work = self.store.load(invoice_id)
            if work is not None:
                event = InvoiceEvent.model_validate_json(work.event)
                step = Step(step_data["op"], step_data["key"], None, **step_data.get("data", {}))
                state = work.state
                error = self._apply(step, responses[0], state, event, _Entities(self.store, dry=False))
                if error:
                    session["last_error"] = error
                    self.store.fail(invoice_id, work.queued_version, error, state)
                    # QuickBooks refused it after deliver() had queued it: a dead letter, never a silent stop.
                    error_class = ClosedPeriodError if responses[0]["statusCode"] == CLOSED_PERIOD else PermanentError
                    self.runtime.report_failure(self.target, event, error_class(
                        f"QuickBooks Desktop refused {step.op}: {error}", platform_code=str(responses[0]["statusCode"])))
                    session["invoice_id"] = None
                    log.warning("qbd_request_failed", target=self.target.name, invoice_id=invoice_id, op=step.op,
                                code=responses[0]["statusCode"], message=responses[0]["statusMessage"][:300])
                else:
                    self.store.save_state(invoice_id, state)
                    if responses[0]["statusCode"] in TRANSIENT:  # QuickBooks is busy: end, retry next session
                        session["last_error"] = _error(responses[0])
                        self.store.put_session(ticket, session)
                        return "receiveResponseXMLResult", "-1"
        self.store.put_session(ticket, session)
        pending = self.store.pending()
        done = session.get("done", 0)
        if pending == 0 and not session.get("sync_lists"):
            return "receiveResponseXMLResult", "100"
        return "receiveResponseXMLResult", str(max(1, min(99, (100 * done) // max(1, done + pending))))

    def _op_connectionError(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        log.warning("qbwc_connection_error", target=self.target.name, hresult=params.get("hresult"))
        self.store.release(ticket)
        return "connectionErrorResult", "done"

    def _op_getLastError(self, params: dict[str, str]) -> tuple[str, str]:
        session = self.store.session(params.get("ticket", "")) or {}
        return "getLastErrorResult", session.get("last_error") or "No error"

    def _op_closeConnection(self, params: dict[str, str]) -> tuple[str, str]:
        ticket = params.get("ticket", "")
        session = self.store.session(ticket) or {}
        self.store.release(ticket)
        self.store.drop_session(ticket)
        return "closeConnectionResult", f"OK: {session.get('done', 0)} invoice(s) brought up to date"

    def _apply_lists(self, responses: list[dict[str, Any]]) -> None:
        names: dict[str, Any] = {"accounts": [], "items": [], "tax_items": [], "classes": [], "at": _now()}
        for rs in responses:
            for ret in rs["rets"]:
                name = ret.get("FullName") or ret.get("Name")
                if not name:
                    continue
                if rs["type"] == "AccountQueryRs":
                    names["accounts"].append(name)
                elif rs["type"] == "ClassQueryRs":
                    names["classes"].append(name)
                else:
                    names["items"].append(name)
                    if ret["_tag"] in ("ItemSalesTaxRet", "ItemSalesTaxGroupRet"):
                        names["tax_items"].append(name)
        self.store.put_entity("lists", "names", "-", names)

    # -- the reconcile loop: the next request for this invoice, or None when QuickBooks matches --
    def _plan(self, event: InvoiceEvent, state: dict[str, Any], entities: _Entities, dry: bool) -> Step | None:
        pending = state.get("pending")
        if pending:  # an Add whose answer never came: look before adding again
            kind, key, ref = pending["op"], pending["key"], pending["ref"]
            lookups = {"customer_add": lambda: mapping.customer_query(ref), "item_add": lambda: mapping.item_query(ref),
                       "invoice_add": lambda: mapping.invoice_query(ref_number=ref),
                       "payment_add": lambda: mapping.payment_query(ref),
                       "credit_add": lambda: mapping.payment_query(ref),
                       "refund_add": lambda: mapping.credit_memo_query(ref),
                       "adjust_add": lambda: (mapping.invoice_query(ref_number=ref)
                                              if pending["data"]["kind"] == "increase"
                                              else mapping.credit_memo_query(ref))}
            return Step(kind.replace("_add", "_recover"), key, lookups[kind](), **pending.get("data", {}))
        txn_id = state.get("txn_id")
        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        if event.status.value in ("void", "deleted"):
            if not txn_id or state.get("voided"):
                return None
            if state.get("void_closed"):  # TxnVoid refused (closed books): credit everything QuickBooks holds
                customer = entities.get("customer", str(event.customer.id))
                step = self._adjust_step(event, state, entities, customer, {}, "voided after the books were closed")
                if step is None:
                    state["voided"] = True
                return step
            for rid, ref in sorted(state.get("credits", {}).items()):
                return Step("credit_del", rid, mapping.txn_del("ReceivePayment", ref["txn_id"]))
            for pid, ref in sorted(state.get("payments", {}).items()):
                return Step("payment_del", pid, mapping.txn_del("ReceivePayment", ref["txn_id"]))
            return Step("void", "", mapping.txn_void("Invoice", txn_id))
        if event.status.value == "draft" and not txn_id:
            return None  # a draft is not in the books until issued
        missed = set(state.get("missed", []))
        # The customer: known ListID, else CustomerQuery by name, else CustomerAdd.
        ckey = str(event.customer.id)
        customer = entities.get("customer", ckey)
        name = mapping.customer_name(event.customer)
        if customer is None:
            if f"customer:{ckey}" not in missed:
                return Step("customer_lookup", ckey, mapping.customer_query(name))
            state["pending"] = {"op": "customer_add", "key": ckey, "ref": name}
            return Step("customer_add", ckey, mapping.customer_add(event.customer))
        chash = mapping.customer_hash(event.customer)
        if customer.get("hash") != chash:  # the shop changed the customer (phone, email)
            if not state.get("customer_fresh"):
                return Step("customer_refresh", ckey, mapping.customer_query(name))
            return Step("customer_mod", ckey, mapping.customer_mod(customer["list_id"], customer["edit_seq"],
                                                                   event.customer), hash=chash)
        # Items: one per line kind (or part number), found by name or created with the mapped income account.
        item_refs: dict[int, dict[str, str]] = {}
        for line in event.lines:
            key, item_name, item_type = mapping.item_key(line, self.mapping)
            if key.startswith("kind:") and self.mapping.items.get(line.kind):
                item_refs[line.id] = {"full_name": item_name}
                continue
            item = entities.get("item", key)
            if item is None:
                if f"item:{key}" not in missed:
                    return Step("item_lookup", key, mapping.item_query(item_name))
                account = mapping.income_account(line.kind, self.mapping) or "Sales"
                state["pending"] = {"op": "item_add", "key": key, "ref": item_name}
                return Step("item_add", key, mapping.item_add(item_type, item_name, account,
                                                              mapping.KIND_ITEM_NAMES[line.kind]))
            item_refs[line.id] = {"list_id": item["list_id"]}
        # Payments no longer wanted (reversed, changed) go before the invoice changes.
        for pid, ref in sorted(state.get("payments", {}).items()):
            current = wanted.get(pid)
            if current is None or Decimal(ref["amount"]) != current.amount:
                return Step("payment_del", pid, mapping.txn_del("ReceivePayment", ref["txn_id"]))
        # Credit applications give way to what the shop's payments and total need (applied again below).
        room = self._room(event, state, wanted)
        applied_credit = sum((Decimal(c["amount"]) for c in state.get("credits", {}).values()), Decimal("0"))
        if applied_credit > max(room, Decimal("0")):
            for rid, ref in sorted(state.get("credits", {}).items()):
                return Step("credit_del", rid, mapping.txn_del("ReceivePayment", ref["txn_id"]))
        ref_number = state.get("ref_number")
        if ref_number is None:
            if dry:
                ref_number = next(mapping.ref_candidates(event.number))
            else:
                ref_number = self.store.ref_number(event.number, mapping.ref_candidates(event.number))
            state["ref_number"] = ref_number
        lines = mapping.invoice_lines(event, item_refs, self.mapping)
        keys = [ln["key"] for ln in lines]
        tax_items = sorted({ln["item"]["full_name"] for ln in lines if ln["key"].startswith("tax:")})
        shop = {"total": str(event.computed.total), "tax": str(event.computed.tax_total), "tax_items": tax_items}
        digest = mapping.digest(customer["list_id"], ref_number, [(ln["key"], ln["item"], ln["desc"], str(ln["quantity"]),
                                str(ln["rate"]), str(ln["amount"]), ln["taxable"]) for ln in lines],
                                invoice_memo(event, 4095), str(event.issue_date), str(event.due_date),
                                self.mapping.location_tracking.get(event.location.code), self.settings.invoice_tax_item)
        groups = adjustments.encode(mapping.posting_groups(event, self.mapping))
        if not txn_id:
            txn_date = None
            if "invoice" in state.get("redate", []):  # dated in the closed period: posted whole, first open day
                if not state.get("open_day"):
                    return Step("closing_date", "", mapping.preferences_query())
                txn_date = state["open_day"]
            data = {"keys": keys, "hash": digest, "groups": groups, "txn_date": txn_date, **shop}
            state["pending"] = {"op": "invoice_add", "key": "", "ref": ref_number, "data": data}
            return Step("invoice_add", "", mapping.invoice_add(event, customer["list_id"], ref_number, lines,
                                                               self.mapping, self.settings.invoice_tax_item, txn_date),
                        **data)
        if state.get("voided"):
            return None  # QuickBooks keeps a voided invoice voided; the shop re-issuing it is not posted again
        if state.get("hash") != digest:
            if state.get("frozen"):  # the books closed over it: post the difference as an adjustment
                step = self._adjust_step(event, state, entities, customer, mapping.posting_groups(event, self.mapping),
                                         "changed after the books were closed")
                if step is not None:
                    return step
                state["hash"] = digest
            else:
                if state.get("stale"):
                    return Step("invoice_refresh", "", mapping.invoice_query(txn_id=txn_id))
                element = mapping.invoice_mod(event, txn_id, state["edit_seq"], customer["list_id"], ref_number,
                                              lines, state.get("line_ids", {}), self.mapping,
                                              self.settings.invoice_tax_item, state.get("txn_date"))
                return Step("invoice_mod", "", element, keys=keys, hash=digest, groups=groups, **shop)
        for pid, payment in sorted(wanted.items()):
            if pid not in state.get("payments", {}):
                ref = mapping.payment_reference(payment)
                txn_date = None
                if f"payment:{pid}" in state.get("redate", []):
                    if not state.get("open_day"):
                        return Step("closing_date", "", mapping.preferences_query())
                    txn_date = state["open_day"]
                state["pending"] = {"op": "payment_add", "key": pid, "ref": ref, "data": {"amount": str(payment.amount)}}
                return Step("payment_add", pid, mapping.payment_add(payment, customer["list_id"], txn_id, self.mapping,
                                                                    event.number, txn_date), amount=str(payment.amount))
        for refund in event.refunds:
            rid = str(refund.id)
            if rid not in state.get("refunds", {}):
                line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
                item = item_refs.get(line.id) if line is not None else next(iter(item_refs.values()), None)
                if item is None:
                    continue
                ref = mapping.refund_reference(refund)
                txn_date = None
                if f"refund:{rid}" in state.get("redate", []):
                    if not state.get("open_day"):
                        return Step("closing_date", "", mapping.preferences_query())
                    txn_date = state["open_day"]
                state["pending"] = {"op": "refund_add", "key": rid, "ref": ref,
                                    "data": {"amount": str(refund.amount + refund.tax_amount)}}
                return Step("refund_add", rid, mapping.credit_memo_add(refund, event, customer["list_id"], item,
                                                                       self.mapping, self.settings.invoice_tax_item,
                                                                       txn_id, txn_date),
                            amount=str(refund.amount + refund.tax_amount))
        # Each credit memo applied to THIS invoice, up to what the shop leaves unpaid.
        room -= sum((Decimal(c["amount"]) for c in state.get("credits", {}).values()), Decimal("0"))
        for refund in event.refunds:
            rid = str(refund.id)
            memo = state.get("refunds", {}).get(rid)
            if memo is None or rid in state.get("credits", {}) or room <= 0:
                continue
            amount = min(Decimal(memo["amount"]), room)
            if amount <= 0:
                continue
            txn_date = refund.created_at.date().isoformat()
            if f"credit:{rid}" in state.get("redate", []):
                if not state.get("open_day"):
                    return Step("closing_date", "", mapping.preferences_query())
                txn_date = state["open_day"]
            ref = mapping.credit_reference(rid)
            state["pending"] = {"op": "credit_add", "key": rid, "ref": ref, "data": {"amount": str(amount)}}
            return Step("credit_add", rid, mapping.credit_application(rid, customer["list_id"], txn_id, memo["txn_id"],
                                                                      amount, txn_date, event.number),
                        amount=str(amount))
        return None

    def _room(self, event: InvoiceEvent, state: dict[str, Any], wanted: dict[str, Any]) -> Decimal:
        """What the shop leaves unpaid on the invoice QuickBooks holds (the original's total once frozen)."""
        total = event.computed.total
        if state.get("frozen") and state.get("held"):
            total = sum((Decimal(n) + Decimal(t) for n, t in state["held"].values()), Decimal("0"))
        return total - sum((p.amount for p in wanted.values()), Decimal("0"))

    def _adjust_step(self, event: InvoiceEvent, state: dict[str, Any], entities: _Entities,
                     customer: dict[str, Any] | None, wanted: adjustments.Groups, reason: str) -> Step | None:
        """The next closed-period adjustment: the difference between what QuickBooks holds and ``wanted``
        (None when they match)."""
        extra = state.setdefault("extra", {})
        entries = adjustments.load(extra)
        original = {k: (Decimal(n), Decimal(t)) for k, (n, t) in (state.get("held") or {}).items()}
        held = adjustments.combine(original, adjustments.effect_of(entries))
        diff = adjustments.difference(held, wanted)
        if not diff:
            return None
        if not state.get("open_day"):
            return Step("closing_date", "", mapping.preferences_query())
        kind = adjustments.direction(diff)
        seq = adjustments.next_sequence(entries)
        ref, other = mapping.adjustment_refs(event, seq, kind)
        lines = []
        for key, (net, tax) in sorted(adjustments.signed(diff, kind).items()):
            what, name = key.split("|", 1)
            if what == "tax":
                lines.append({"item": {"full_name": mapping.tax_item(name, self.mapping)}, "desc": "Tax adjustment",
                              "amount": tax, "taxable": None})
                continue
            item = entities.get("item", name)
            kind_name = name.split(":", 1)[1]
            configured = self.mapping.items.get(kind_name) if name.startswith("kind:") else None
            ref_item = ({"full_name": configured} if configured else {"list_id": item["list_id"]} if item
                        else {"full_name": kind_name[:mapping.ITEM_NAME_MAX]})
            lines.append({"item": ref_item, "desc": f"Adjustment ({reason})", "amount": net, "taxable": None})
        net, tax = adjustments.totals(diff)
        data = {"kind": kind, "seq": seq, "ref": ref, "other": other, "date": state["open_day"],
                "effect": adjustments.encode(diff), "total": str(abs(net + tax)), "tax": str(abs(tax)),
                "reason": reason, "refusal": state.get("closed_reason", "")[:200], "version": event.version}
        state["pending"] = {"op": "adjust_add", "key": str(seq), "ref": ref, "data": data}
        if customer is None:
            customer = {"list_id": state.get("customer_list_id", "")}
        return Step("adjust_add", str(seq), mapping.adjustment_add(
            kind, event, customer["list_id"], ref, other, lines, state["open_day"], self.mapping,
            self.settings.invoice_tax_item, state["txn_id"], reason), **data)

    def _apply(self, step: Step, rs: dict[str, Any], state: dict[str, Any], event: InvoiceEvent,
               entities: _Entities) -> str | None:
        """Record QuickBooks' answer to ``step``; return an error message when the invoice must stop."""
        code, ret = rs["statusCode"], (rs["rets"][0] if rs["rets"] else {})
        op, key = step.op, step.key
        missed = set(state.get("missed", []))
        if code in TRANSIENT:
            state.pop("pending", None)  # nothing was saved: send it again
            state["transient"] = state.get("transient", 0) + 1
            return None if state["transient"] <= 20 else f"QuickBooks {code}: {rs['statusMessage']}"
        state.pop("transient", None)
        if code == 0 and op in WRITES:
            state.pop("closed_count", None)  # the cap is on refusals in a row, not over the invoice's life
        if code == CLOSED_PERIOD:
            return self._closed(step, rs, state, event)
        if op == "closing_date":
            prefs = ret.get("AccountingPreferences") or {}
            closing = prefs.get("ClosingDate") if isinstance(prefs, dict) else None
            state["open_day"] = adjustments.first_open_day(date.fromisoformat(closing) if closing else None).isoformat()
            return None
        if op.endswith("_recover"):
            kind = op[: -len("_recover")]
            state.pop("pending", None)
            if code in NOT_FOUND or not ret:
                missed.add(f"{kind}:{key}") if kind in ("customer", "item") else None
                state["missed"] = sorted(missed)
                return None  # never arrived: the plan adds it again
            op, code = f"{kind}_add", 0  # it was created: adopt it as if the answer had come
        if op == "customer_lookup" or op == "customer_refresh":
            if code in NOT_FOUND or not ret:
                missed.add(f"customer:{key}")
                state["missed"] = sorted(missed)
                return None
            same = (ret.get("Phone") or None) == event.customer.phone and (ret.get("Email") or None) == event.customer.email
            entities.put("customer", key, ret["ListID"], edit_seq=ret.get("EditSequence", ""),
                         hash=mapping.customer_hash(event.customer) if same else "")
            if op == "customer_refresh":
                state["customer_fresh"] = True
            return None
        if op == "customer_add":
            state.pop("pending", None)
            if code == 3100:  # the name exists (someone else created it): look it up
                missed.discard(f"customer:{key}")
                state["missed"] = sorted(missed)
                return None
            if code != 0:
                return _error(rs)
            entities.put("customer", key, ret["ListID"], edit_seq=ret.get("EditSequence", ""),
                         hash=mapping.customer_hash(event.customer))
            missed.discard(f"customer:{key}")
            state["missed"] = sorted(missed)
            return None
        if op == "customer_mod":
            state.pop("customer_fresh", None)
            if code == 3200:
                return None  # re-read it, then modify again
            if code != 0:
                return _error(rs)
            entities.put("customer", key, ret["ListID"], edit_seq=ret.get("EditSequence", ""), hash=step.data["hash"])
            return None
        if op == "item_lookup":
            if code in NOT_FOUND or not ret:
                missed.add(f"item:{key}")
            else:
                entities.put("item", key, ret["ListID"])
            state["missed"] = sorted(missed)
            return None
        if op == "item_add":
            state.pop("pending", None)
            missed.discard(f"item:{key}")
            state["missed"] = sorted(missed)
            if code == 3100:
                return None
            if code != 0:
                return _error(rs)
            entities.put("item", key, ret["ListID"])
            return None
        if op == "payment_del":
            if code not in (0, 3120):  # 3120: already gone (an earlier answer was lost)
                return _error(rs)
            state.get("payments", {}).pop(key, None)
            return None
        if op == "void":
            if code not in (0,):
                return _error(rs)
            state["voided"] = True
            return None
        if op == "credit_del":
            if code not in (0, 3120):
                return _error(rs)
            state.get("credits", {}).pop(key, None)
            return None
        if op == "credit_add":
            state.pop("pending", None)
            if code != 0:
                return _error(rs)
            state.setdefault("credits", {})[key] = {"txn_id": ret["TxnID"], "amount": step.data["amount"]}
            return None
        if op == "adjust_add":
            state.pop("pending", None)
            if code != 0 or not ret:
                return _error(rs)
            data = step.data
            entry = {"kind": data["kind"], "entity": "Invoice" if data["kind"] == "increase" else "CreditMemo",
                     "id": ret.get("TxnID"), "ref_number": data["ref"], "number": data["other"], "date": data["date"],
                     "total": data["total"], "tax": data["tax"], "effect": data["effect"],
                     "version": str(data["version"]), "reason": f"{data['reason']}: {data['refusal']}"[:300]}
            adjustments.record(state.setdefault("extra", {}), entry)
            log.warning("qbd_closed_period_adjustment", target=self.target.name, invoice_id=event.invoice_id,
                        kind=entry["kind"], txn_id=entry["id"], number=entry["number"], date=entry["date"],
                        total=entry["total"])
            return None
        if op in ("invoice_add", "invoice_mod", "invoice_refresh"):
            if op == "invoice_add":
                state.pop("pending", None)
            if code == 3200 and op == "invoice_mod":
                state["stale"] = True  # EditSequence out of date: re-read, then send the Mod again
                return None
            if code != 0 or not ret:
                return _error(rs)
            lines = ret.get("InvoiceLineRet", [])
            keys = step.data.get("keys") if op != "invoice_refresh" else state.get("line_keys")
            state.update(txn_id=ret.get("TxnID", state.get("txn_id")), edit_seq=ret.get("EditSequence", ""))
            state["line_ids"] = ({k: ln.get("TxnLineID") for k, ln in zip(keys, lines)}
                                 if keys and len(keys) == len(lines) else {})
            state["line_keys"] = keys if keys and len(keys) == len(lines) else []
            if op == "invoice_refresh":
                state.pop("stale", None)
                return None
            state["hash"] = step.data.get("hash")
            if step.data.get("groups") is not None:
                state["held"] = step.data["groups"]  # what the invoice itself now posts, per item / tax item
            if op == "invoice_add" and step.data.get("txn_date"):
                state["txn_date"] = step.data["txn_date"]
                entry = {"kind": "redated", "entity": "Invoice", "id": state["txn_id"],
                         "number": event.number, "date": step.data["txn_date"], "total": step.data.get("total"),
                         "tax": step.data.get("tax"), "version": str(event.version),
                         "reason": f"dated in a closed period: {state.get('closed_reason', '')}"[:300]}
                adjustments.record(state.setdefault("extra", {}), entry)
                log.warning("qbd_closed_period_redated", target=self.target.name, invoice_id=event.invoice_id,
                            txn_id=state["txn_id"], date=step.data["txn_date"])
            if "Subtotal" in ret:
                self._check_totals(ret, step.data, state, event)
            return None
        if op == "payment_add":
            state.pop("pending", None)
            if code != 0:
                return _error(rs)
            state.setdefault("payments", {})[key] = {"txn_id": ret["TxnID"], "amount": step.data["amount"]}
            return None
        if op == "refund_add":
            state.pop("pending", None)
            if code != 0:
                return _error(rs)
            state.setdefault("refunds", {})[key] = {"txn_id": ret["TxnID"], "amount": step.data["amount"]}
            return None
        return f"unexpected answer to {op}"

    def _closed(self, step: Step, rs: dict[str, Any], state: dict[str, Any], event: InvoiceEvent) -> str | None:
        """QuickBooks refused ``step`` for the company's closing date: nothing was saved. Decide how the plan
        goes on (re-dated, adjusted), and read the closing date again; too many refusals → a dead letter."""
        state.pop("pending", None)
        state["closed_count"] = state.get("closed_count", 0) + 1
        state["closed_reason"] = rs["statusMessage"][:300]
        state.pop("open_day", None)  # read the closing date (again): it may have moved
        if state["closed_count"] > MAX_CLOSED_REFUSALS:
            return _error(rs)
        redate = set(state.get("redate", []))
        op, key = step.op, step.key
        if op == "invoice_add":
            redate.add("invoice")
        elif op in ("payment_add", "refund_add", "credit_add"):
            redate.add(f"{op[:-4]}:{key}")
        elif op in ("invoice_mod", "void") and state.get("held") is None:
            return _error(rs)  # posted before per-item amounts were kept: no safe base for an adjustment
        elif op == "invoice_mod":
            state["frozen"] = True
        elif op == "void":
            state["void_closed"] = True
        elif op != "adjust_add":  # a payment or credit application dated in the closed period cannot be removed
            return _error(rs)
        state["redate"] = sorted(redate)
        log.warning("qbd_closed_period", target=self.target.name, invoice_id=event.invoice_id, op=op,
                    message=rs["statusMessage"][:200])
        return None

    def _check_totals(self, ret: dict[str, Any], sent: dict[str, Any], state: dict[str, Any],
                      event: InvoiceEvent) -> None:
        total, tax = mapping.invoice_totals(ret, set(sent.get("tax_items", [])))
        state["qb_total"], state["qb_tax"] = str(total), str(tax)
        state["qb_balance"] = ret.get("BalanceRemaining")
        shop_total, shop_tax = Decimal(sent["total"]), Decimal(sent["tax"])
        state.pop("tax_difference", None)
        state.pop("total_difference", None)
        if tax != shop_tax or total != shop_total:
            state["tax_difference"] = str(tax - shop_tax)
            state["total_difference"] = str(total - shop_total)
            log.warning("qbd_tax_difference", target=self.target.name, invoice_id=event.invoice_id,
                        platform_tax=str(tax), shop_tax=str(shop_tax), platform_total=str(total),
                        shop_total=str(shop_total))


def _error(rs: dict[str, Any]) -> str:
    return f"QuickBooks {rs['statusCode']} ({rs['type']}): {rs['statusMessage']}"


def _names_query(request: str) -> Any:
    from lxml import etree

    rq = etree.Element(request)
    if request != "ClassQueryRq":
        etree.SubElement(rq, "ActiveStatus").text = "All"
    if request == "AccountQueryRq" or request == "ClassQueryRq":
        etree.SubElement(rq, "IncludeRetElement").text = "FullName"
    else:
        etree.SubElement(rq, "IncludeRetElement").text = "Name"
        etree.SubElement(rq, "IncludeRetElement").text = "FullName"
    return rq


def _simulated(step: Step, event: InvoiceEvent) -> dict[str, Any]:
    """The answer preview assumes: queries find nothing, writes succeed with placeholder ids."""
    rs: dict[str, Any] = {"type": step.op, "statusCode": 0, "statusMessage": "", "rets": []}
    if step.op.endswith("_lookup") or step.op.endswith("_recover") or step.op.endswith("_refresh"):
        rs["statusCode"] = 1
    elif step.op == "customer_add":
        rs["rets"] = [{"ListID": "<new customer>", "EditSequence": "<new>"}]
    elif step.op == "customer_mod":
        rs["rets"] = [{"ListID": "<customer>", "EditSequence": "<new>"}]
    elif step.op == "item_add":
        rs["rets"] = [{"ListID": f"<new item {step.key}>"}]
    elif step.op in ("invoice_add", "invoice_mod"):
        rs["rets"] = [{"TxnID": "<new invoice>" if step.op == "invoice_add" else None, "EditSequence": "<new>",
                       "InvoiceLineRet": [{"TxnLineID": f"<new line {k}>"} for k in step.data.get("keys", [])]}]
        if step.op == "invoice_mod":
            rs["rets"][0].pop("TxnID")
    elif step.op in ("payment_add", "refund_add", "credit_add", "adjust_add"):
        rs["rets"] = [{"TxnID": f"<new {step.op[:-4]} {step.key}>"}]
    return rs


def _remote(state: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=state["txn_id"], number=state.get("ref_number"), token=state.get("edit_seq"),
                         status="void" if state.get("voided") else "issued",
                         total=Decimal(state["qb_total"]) if state.get("qb_total") else None,
                         tax_total=Decimal(state["qb_tax"]) if state.get("qb_tax") else None,
                         balance=Decimal(state["qb_balance"]) if state.get("qb_balance") else None,
                         raw={k: v for k, v in state.items() if k in ("ref_number", "payments", "refunds", "voided")})


def _now() -> float:
    import time

    return time.time()
