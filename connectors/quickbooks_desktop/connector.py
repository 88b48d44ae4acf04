"""The QuickBooks Desktop connector: a pull platform on the delivery engine (issue #12).

``deliver`` queues the newest version of an invoice durably (``connectors.pull_queue``) and returns at once
with status "queued". The QuickBooks Web Connector on the bookkeeper's PC polls ``/qbwc`` (the SOAP service
of QBWebConnectorSvc.wsdl, ``qbwc.py``): each ``sendRequestXML`` gets ONE qbXML request and
``receiveResponseXML`` brings its answer. What to send is the engine's: its pull driver
(``connectors.engine_pull``) runs the same planner, intents and closed-period rules as every push connector,
one request at a time; an unanswered write is looked up by its reference on the next session (InvoiceQuery
RefNumber, ReceivePaymentQuery "LW<id>"/"LWC<id>", CreditMemoQuery "LWR<id>") before anything is added again.

What stays here are QuickBooks' operations: each builds its qbXML request (``mapping``), asks it through the
driver and reads the answer; QuickBooks' status codes become the engine's error classes (3200 stale
EditSequence, 3171 closing date, 3180/3175/3176 nothing saved — sent again next session, 3120 on TxnDel /
TxnVoid already gone). Invoices carry an 11-character RefNumber (deterministic short form of the shop's
number, collisions taken care of by the queue's map) and the full number in ``Other``; a refund is a
CreditMemoAdd applied to its invoice by a 0.00 ReceivePaymentAdd whose AppliedToTxnAdd carries SetCredit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

from connectors import engine, engine_pull, references
from connectors.base import (ClosedPeriodError, DocumentState, ExternalRef, RemoteInvoice, RetryableError,
                             StaleTokenError)
from connectors.errors import When, classify_by, facts_of
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.pull_queue import MemoryQueue, PgQueue, PullQueue, ddl
from connectors.quickbooks_desktop import check, mapping, qbwc
from connectors.quickbooks_desktop.settings import QbdSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

log = structlog.get_logger(__name__)

NOT_FOUND = (1, 500)  # 1: a query matched nothing; 500: a TxnID/ListID asked for does not exist
TRANSIENT = (3180, 3175, 3176)  # error saving / object in use: nothing saved, send again
GONE = 3120  # the object of a Mod/Del/Void cannot be found
STALE = 3200  # EditSequence out of date
CLOSED_PERIOD = 3171  # dated on or before the company's closing date (see sandbox.CLOSED_PERIOD)
RULES = (When(StaleTokenError, on={f"code:{STALE}"}), When(ClosedPeriodError, on={f"code:{CLOSED_PERIOD}"}),
         When(RetryableError, on={f"code:{code}" for code in TRANSIENT}))
_REQUEST = re.compile(r"<(\w+?)(Add|Mod|Query|Del|Void)?Rq requestID")


class QuickBooksDesktopConnector(qbwc.WebConnectorService, EngineConnector):
    platform = "quickbooks-desktop"
    settings_model = QbdSettings
    pull_model = True
    capabilities = Capabilities(negative_totals=True, void="void", pull=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        self.settings: QbdSettings
        self.mapping = target.mapping
        pool = getattr(runtime, "pg_pool", None)
        self.queue: PullQueue = PgQueue(pool, target.name, "qbd") if pool is not None else MemoryQueue()
        self.entities = engine_pull.QueueEntities(self.queue)
        self.driver = engine_pull.PullDriver(
            self, self.queue, target.name, self.entities, self.settings.lease_s,
            report=lambda event, error: runtime.report_failure(target, event, error), legacy=_legacy)
        self._app = None

    @classmethod
    def ledger_ddl(cls) -> str:
        return ddl("qbd")

    # -- the push side: queue --
    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx) -> DocumentState:
        self.queue.enqueue(event.invoice_id, event.version, event.model_dump_json())
        work = self.queue.load(event.invoice_id)
        known = self.driver.document(work.state if work else {})
        if work and work.failed_reason:
            known.extra["qbd_last_error"] = work.failed_reason[:500]
        known.status = "queued"
        log.info("qbd_queued", target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        return engine.delivered(event, known)

    def unconfirmed(self) -> int:
        """Invoice versions queued that the Web Connector has not yet brought to QuickBooks (nor dead-lettered)."""
        return self.queue.pending()

    def document(self, invoice_id: int) -> DocumentState | None:
        """What is known at QuickBooks of a queued invoice (the engine's state, newest checkpoint)."""
        work = self.queue.load(invoice_id)
        return self.driver.document(work.state) if work else None

    # -- reads for reconcile/trace: from what QuickBooks last answered (a pull platform cannot be asked now) --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        known = self.document(event.invoice_id)
        return _remote(known) if known and known.external_id else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        work = self.queue.by_txn(external_id)
        return _remote(self.driver.document(work.state)) if work else None

    def check_mapping(self) -> list[str]:
        return check.check_mapping(self.queue, self.mapping, self.settings)

    def preview(self, event: InvoiceEvent, doc: DocumentState, entities=None) -> list[dict[str, Any]]:
        """The qbXML writes the Web Connector would carry for this event, in order (the engine's loop against
        the recorder: queries find nothing new, writes answer "<new …>" ids). Writes nothing."""
        known = self.document(event.invoice_id)
        return engine.preview(self, self.target.name, event, known or doc, self.entities)

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        sent: list[dict[str, Any]] = []

        def answer(request: str) -> dict[str, Any]:
            entity, verb = _REQUEST.search(request).groups()
            rs: dict[str, Any] = {"type": f"{entity}{verb or ''}Rs", "statusCode": 1, "statusMessage": "", "rets": []}
            if verb not in (None, "Query"):
                sent.append({"method": "sendRequestXML", "path": "/qbwc", "body": request})
                new = f"<new {entity.lower()}>"
                rs.update(statusCode=0, rets=[{"TxnID": new, "ListID": new, "EditSequence": "<new>"}])
            return rs

        with engine_pull.answering(answer):
            yield sent

    # -- asking QuickBooks (through the pull driver) --
    def _ask(self, request: Any) -> dict[str, Any]:
        """QuickBooks' answer to one request (its ``…Rs``); a refusal raises the engine's error class."""
        rs = engine_pull.ask(mapping.document(engine_pull.dialect() or self.spoken_version(), [request]))
        code, tag = rs["statusCode"], request.tag
        if code == 0 or (code in NOT_FOUND and tag.endswith("QueryRq")) or (code == GONE and tag.startswith("Txn")):
            return rs
        reason = f"QuickBooks Desktop refused {tag[:-2]}: QuickBooks {code} ({rs['type']}): {rs['statusMessage']}"
        raise classify_by(RULES, reason, facts=facts_of(None, code), code=code)

    def _rets(self, request: Any) -> list[dict[str, Any]]:
        rs = self._ask(request)
        return rs["rets"] if rs["statusCode"] == 0 else []

    # -- customers and items --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_hash(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        """By the shop id every name ends with (" #77"), not by the whole name: after a rename the record still
        has its old name at QuickBooks; the engine then sees the digest differ and modifies it by its ListID."""
        suffix = mapping.customer_suffix(customer)
        found = [ret for ret in self._rets(mapping.customer_by_shop_id(customer))
                 if str(ret.get("Name", "")).endswith(suffix)]
        return _list_ref(found[0]) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _list_ref(self._rets(mapping.customer_write(customer))[0])

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        current = self._rets(mapping.query("Customer", list_id=ref.external_id))
        if not current:
            return None
        try:
            request = mapping.customer_write(customer, ref.external_id, current[0]["EditSequence"])
            return _list_ref(self._rets(request)[0])
        except StaleTokenError:
            return None  # changed at QuickBooks meanwhile: read and modified again next time

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        key, name, _ = mapping.item_key(line, self.mapping)
        return ItemSpec(key=key, name=name, line=line)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        found = self._rets(mapping.query("Item", full_name=spec.name))
        return _list_ref(found[0]) if found else None

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        kind = spec.line.kind
        account = mapping.income_account(kind, self.mapping) or "Sales"
        return _list_ref(self._rets(mapping.item_add(mapping.KIND_ITEM_TYPES[kind], spec.name, account,
                                                     references.LINE_KIND_NAMES[kind]))[0])

    # -- references and look-ups --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        """The framework's, in RefNumbers of 11 characters (an invoice's and an adjustment's are short forms)."""
        if kind is DocKind.INVOICE:
            return self.queue.ref_number(event.number, mapping.ref_candidates(event.number))
        if kind is DocKind.ADJUSTMENT:
            direction, sequence = references.adjustment_key(key)
            return mapping.adjustment_ref(event, sequence, direction)
        return {DocKind.PAYMENT: references.payment_reference, DocKind.CREDIT_NOTE: mapping.refund_reference,
                DocKind.CREDIT_APPLICATION: mapping.credit_reference}[kind](key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.CREDIT_APPLICATION):
            request = mapping.query("ReceivePayment", ref_number=reference, lines=True)
        elif kind is DocKind.CREDIT_NOTE or (kind is DocKind.ADJUSTMENT and reference.startswith("C")):
            request = mapping.query("CreditMemo", ref_number=reference)
        else:
            request = mapping.query("Invoice", ref_number=reference, lines=True)
        return [ExternalRef(external_id=ret["TxnID"], token=ret.get("EditSequence"), amount=_total(ret))
                for ret in self._rets(request) if not (ret.get("Memo") or "").startswith("VOID:")]

    # -- the invoice --
    def _lines(self, event: InvoiceEvent, posting: Posting) -> list[dict[str, Any]]:
        return mapping.invoice_lines(event, {n: {"list_id": i} for n, i in posting.item_ids.items()}, self.mapping)

    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        lines = self._lines(event, posting)
        request = mapping.invoice_write(event, posting.customer_id, self.reference(DocKind.INVOICE, event), lines,
                                        self.mapping, self.settings.invoice_tax_item, _day(posting.txn_date))
        return self._remote(self._rets(request)[0])

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """The whole invoice again; every line sent as new (TxnLineID -1), so QuickBooks drops the old ones."""
        request = mapping.invoice_write(event, posting.customer_id, self.reference(DocKind.INVOICE, event),
                                        self._lines(event, posting), self.mapping, self.settings.invoice_tax_item,
                                        _day(posting.txn_date), current.external_id, current.token or "")
        return self._remote(self._rets(request)[0])

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        rs = self._ask(mapping.txn_del("Invoice", current.external_id, "Void"))
        return None if rs["statusCode"] == GONE else RemoteInvoice(external_id=current.external_id, status="void")

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self._rets(mapping.query("Invoice", txn_id=external_id, lines=True))
        return self._remote(found[0]) if found else None

    def _remote(self, ret: dict[str, Any]) -> RemoteInvoice:
        tax_items = {mapping.tax_item(code, self.mapping) for code in self.mapping.tax_codes}
        total, tax = mapping.invoice_totals(ret, tax_items)
        balance = ret.get("BalanceRemaining")
        return RemoteInvoice(external_id=ret["TxnID"], number=ret.get("RefNumber"), token=ret.get("EditSequence"),
                             status="void" if (ret.get("Memo") or "").startswith("VOID:") else "issued",
                             total=total if "Subtotal" in ret else None, tax_total=tax if "Subtotal" in ret else None,
                             balance=Decimal(balance) if balance else None)

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        request = mapping.payment_add(payment, posting.customer_id, invoice_id, self.mapping, event.number,
                                      _day(posting.txn_date))
        return ExternalRef(external_id=self._rets(request)[0]["TxnID"], amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._ask(mapping.txn_del("ReceivePayment", ref.external_id))

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        item_id = posting.item_ids.get(refund.line_id or -1) or next(iter(posting.item_ids.values()))
        request = mapping.credit_memo_add(refund, event, posting.customer_id, {"list_id": item_id}, self.mapping,
                                          self.settings.invoice_tax_item, _day(posting.txn_date))
        return ExternalRef(external_id=self._rets(request)[0]["TxnID"], amount=refund.amount + refund.tax_amount)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        request = mapping.credit_application(reference, posting.customer_id, invoice_id, credit.external_id, amount)
        return ExternalRef(external_id=self._rets(request)[0]["TxnID"], amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._ask(mapping.txn_del("ReceivePayment", application.external_id))

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        found = self._rets(mapping.preferences_query())
        closing = (found[0].get("AccountingPreferences") or {}).get("ClosingDate") if found else None
        return date.fromisoformat(closing) if closing else None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        item_id = next(iter(posting.item_ids.values()), None) or posting.item(self.item_for(event.lines[0]))
        code = next((t.code for ln in event.lines for t in ln.taxes), None)
        request = mapping.adjustment_add(adjustment, event, posting.customer_id, {"list_id": item_id},
                                         mapping.tax_item(code, self.mapping) if code else None, _day(posting.txn_date),
                                         self.mapping, self.settings.invoice_tax_item)
        return ExternalRef(external_id=self._rets(request)[0]["TxnID"], amount=adjustment.net + adjustment.tax)


def _day(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _list_ref(ret: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=ret["ListID"], token=ret.get("EditSequence"))


def _total(ret: dict[str, Any]) -> Decimal | None:
    """A transaction's total as QuickBooks answers it (an invoice: Subtotal + SalesTaxTotal)."""
    if "Subtotal" in ret and ret["_tag"] == "InvoiceRet":
        return Decimal(ret["Subtotal"]) + Decimal(ret.get("SalesTaxTotal") or "0")
    return Decimal(ret["TotalAmount"]) if ret.get("TotalAmount") else None


def _remote(doc: DocumentState) -> RemoteInvoice:
    return RemoteInvoice(external_id=doc.external_id or "", token=doc.token,
                         status="void" if doc.status == "voided" else "issued",
                         raw={"payments": {k: v.external_id for k, v in doc.payments.items()},
                              "refunds": {k: v.external_id for k, v in doc.refunds.items()}})


def _legacy(state: dict[str, Any]) -> DocumentState:
    """A queue row written before the engine: its state as the engine's legacy document."""
    def refs(kind: str, status: str) -> dict[str, ExternalRef]:
        return {key: ExternalRef(external_id=v["txn_id"], amount=Decimal(v["amount"]), status=status)
                for key, v in (state.get(kind) or {}).items()}

    extra = {f"credit_applied:{key}": f"{v['txn_id']}:{v['amount']}" for key, v in (state.get("credits") or {}).items()}
    if state.get("txn_date"):
        extra["txn_date"] = state["txn_date"]
    return DocumentState(external_id=state.get("txn_id"), token=state.get("edit_seq"),
                         status="voided" if state.get("voided") else "posted" if state.get("txn_id") else "none",
                         delivered_version=1 if state.get("txn_id") else 0, payments=refs("payments", "applied"),
                         refunds=refs("refunds", "open"), extra=extra)
