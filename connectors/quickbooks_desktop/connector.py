"""The QuickBooks Desktop connector: a pull platform on the delivery engine (issue #12).

``deliver`` queues the newest version of an invoice durably (``connectors.pull_queue``) and returns at once
with status "queued". The QuickBooks Web Connector on the bookkeeper's PC polls ``/qbwc`` (the SOAP service
of QBWebConnectorSvc.wsdl, ``qbwc.py``): each ``sendRequestXML`` gets ONE qbXML request and
``receiveResponseXML`` brings its answer. What to send is the engine's: its pull driver
(``connectors.engine_pull``) runs the same planner, intents and closed-period rules as every push connector,
one request at a time; an unanswered write is looked up by its reference on the next session (InvoiceQuery
RefNumber, ReceivePaymentQuery "LW<id>"/"LWC<id>", CreditMemoQuery "LWR<id>") before anything is added again.

What stays here are QuickBooks' operations: each builds its qbXML request (``mapping``), asks it through the driver
and reads the answer; QuickBooks' status codes become the engine's error classes (3200 stale EditSequence, 3171
closing date, 3180/3175/3176 nothing saved — sent again next session, 3120 on TxnDel / TxnVoid already gone). Invoices
carry an 11-character RefNumber (deterministic short form of the shop's number, collisions taken care of by the
queue's map) and the full number in ``Other``; a refund is a CreditMemoAdd applied to its invoice by a 0.00
ReceivePaymentAdd whose AppliedToTxnAdd carries SetCredit. Currencies: ``currency.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import engine_pull, references
from connectors.base import ExternalRef, RemoteInvoice, StaleTokenError
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.pull_queue import MemoryQueue, PgQueue, PullQueue
from connectors.quickbooks_desktop import check, currency, mapping, numbering, qbwc, qbxml
from connectors.quickbooks_desktop.legacy import from_queue_state
from connectors.quickbooks_desktop.queueing import QueuedDelivery
from connectors.quickbooks_desktop.settings import QbdSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

class QuickBooksDesktopConnector(qbwc.WebConnectorService, QueuedDelivery, currency.CurrencyOps, EngineConnector):
    platform = "quickbooks-desktop"
    settings_model = QbdSettings
    pull_model = True
    capabilities = Capabilities(negative_totals=True, void="void", pull=True, refund_settlement=True, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        self.settings: QbdSettings
        self.mapping, self.currencies = target.mapping, currency.Currencies(self)  # customers per currency
        pool = getattr(runtime, "pg_pool", None)
        self.queue: PullQueue = PgQueue(pool, target.name, "qbd") if pool is not None else MemoryQueue()
        self.entities = engine_pull.QueueEntities(self.queue)
        self.driver = engine_pull.PullDriver(
            self, self.queue, target.name, self.entities, self.settings.lease_s,
            report=lambda event, error: runtime.report_failure(target, event, error), legacy=from_queue_state)
        self._app = None

    def check_mapping(self) -> list[str]:
        return check.check_mapping(self.queue, self.mapping, self.settings)

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        sent: list[dict[str, Any]] = []

        def answer(request: str) -> dict[str, Any]:
            rs, write = qbxml.preview_answer(request)
            if write:
                sent.append({"method": "sendRequestXML", "path": "/qbwc", "body": request})
            return rs

        with engine_pull.answering(answer):
            yield sent

    # -- asking QuickBooks (through the pull driver) --
    def _ask(self, request: Any) -> dict[str, Any]:
        """QuickBooks' answer to one request (its ``…Rs``); a refusal raises the engine's error class."""
        rs = engine_pull.ask(qbxml.document(engine_pull.dialect() or self.spoken_version(), [request]))
        refused = qbxml.refusal(rs, request.tag)
        if refused is not None:
            raise refused
        return rs

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
        current = self._rets(qbxml.query("Customer", list_id=ref.external_id))
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
        found = self._rets(qbxml.query("Item", full_name=spec.name))
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
            return self.queue.ref_number(event.number, numbering.ref_candidates(event.number))
        if kind is DocKind.ADJUSTMENT:
            direction, sequence = references.adjustment_key(key)
            return numbering.adjustment_ref(event, sequence, direction)
        return {DocKind.PAYMENT: references.payment_reference, DocKind.CREDIT_NOTE: numbering.refund_reference,
                DocKind.CREDIT_APPLICATION: numbering.credit_reference,
                DocKind.REFUND_PAYMENT: numbering.settlement_reference}[kind](key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.REFUND_PAYMENT:  # a card refund or a refund check: "<TxnDelType>:<TxnID>"
            return [ExternalRef(external_id=f"{entity}:{ret['TxnID']}", token=ret.get("EditSequence"),
                                amount=Decimal(ret.get("TotalAmount") or ret.get("Amount") or "0"))
                    for entity in ("ARRefundCreditCard", "Check")
                    for ret in self._rets(qbxml.query(entity, ref_number=reference))]
        if kind in (DocKind.PAYMENT, DocKind.CREDIT_APPLICATION):
            request = qbxml.query("ReceivePayment", ref_number=reference, lines=True)
        elif kind is DocKind.CREDIT_NOTE or (kind is DocKind.ADJUSTMENT and reference.startswith("C")):
            request = qbxml.query("CreditMemo", ref_number=reference)
        else:
            request = qbxml.query("Invoice", ref_number=reference, lines=True)
        return [ExternalRef(external_id=ret["TxnID"], token=ret.get("EditSequence"), amount=qbxml.transaction_total(ret))
                for ret in self._rets(request) if not (ret.get("Memo") or "").startswith("VOID:")]

    # -- the invoice --
    def _lines(self, event: InvoiceEvent, posting: Posting) -> list[dict[str, Any]]:
        return mapping.invoice_lines(event, {n: {"list_id": i} for n, i in posting.item_ids.items()}, self.mapping)

    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        lines = self._lines(event, posting)
        request = mapping.invoice_write(event, posting.customer_id, self.reference(DocKind.INVOICE, event), lines,
                                        self.mapping, self.settings.invoice_tax_item, _day(posting.txn_date))
        return self._remote(self._stamped(event, request)[0])

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """The whole invoice again; every line sent as new (TxnLineID -1), so QuickBooks drops the old ones."""
        request = mapping.invoice_write(event, posting.customer_id, self.reference(DocKind.INVOICE, event),
                                        self._lines(event, posting), self.mapping, self.settings.invoice_tax_item,
                                        _day(posting.txn_date), current.external_id, current.token or "")
        return self._remote(self._stamped(event, request)[0])

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        rs = self._ask(qbxml.txn_del("Invoice", current.external_id, "Void"))
        return None if rs["statusCode"] == qbxml.GONE else RemoteInvoice(external_id=current.external_id, status="void")

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self._rets(qbxml.query("Invoice", txn_id=external_id, lines=True))
        return self._remote(found[0]) if found else None

    def _remote(self, ret: dict[str, Any]) -> RemoteInvoice:
        tax_items = {mapping.tax_item(code, self.mapping) for code in self.mapping.tax_codes}
        total, tax = qbxml.invoice_totals(ret, tax_items)
        balance = ret.get("BalanceRemaining")
        return RemoteInvoice(external_id=ret["TxnID"], number=ret.get("RefNumber"), token=ret.get("EditSequence"),
                             status="void" if (ret.get("Memo") or "").startswith("VOID:") else "issued",
                             total=total if "Subtotal" in ret else None, tax_total=tax if "Subtotal" in ret else None,
                             balance=Decimal(balance) if balance else None)

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        request = mapping.payment_add(payment, posting.customer_id, invoice_id, self.mapping, event.number,
                                      _day(posting.txn_date))
        return ExternalRef(external_id=self._stamped(event, request)[0]["TxnID"], amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._ask(qbxml.txn_del("ReceivePayment", ref.external_id))

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        item_id = posting.item_ids.get(refund.line_id or -1) or next(iter(posting.item_ids.values()))
        request = mapping.credit_memo_add(refund, event, posting.customer_id, {"list_id": item_id}, self.mapping,
                                          self.settings.invoice_tax_item, _day(posting.txn_date))
        return ExternalRef(external_id=self._stamped(event, request)[0]["TxnID"], amount=refund.amount+refund.tax_amount)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        request = mapping.credit_application(reference, posting.customer_id, invoice_id, credit.external_id, amount)
        return ExternalRef(external_id=self.currencies.as_memo(credit.external_id, request)[0]["TxnID"], amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._ask(qbxml.txn_del("ReceivePayment", application.external_id))

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back, as QuickBooks' "Issue a Refund" on a credit memo records it: a customer credit
        card refund (ARRefundCreditCardAdd) for a card payment, else a check to the customer applied to the memo,
        out of the account the refunded payment's method maps to."""
        account = references.refund_account(event, refund, self.mapping, "QuickBooks Desktop")
        method = references.refund_method(event, refund)
        request = mapping.refund_settlement(refund, event, posting.customer_id, credit.external_id, amount, account,
                                            method, _day(posting.txn_date))
        return ExternalRef(external_id=f"{mapping.settlement_kind(method)}:{self._stamped(event, request)[0]['TxnID']}",
                           amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        entity, _, txn_id = settlement.external_id.partition(":")
        self._ask(qbxml.txn_del(entity, txn_id))

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        found = self.currencies.noted(self._rets(qbxml.preferences_query()))  # multicurrency too
        closing = (found[0].get("AccountingPreferences") or {}).get("ClosingDate") if found else None
        return date.fromisoformat(closing) if closing else None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        item_id = next(iter(posting.item_ids.values()), None) or posting.item(self.item_for(event.lines[0]))
        code = next((t.code for ln in event.lines for t in ln.taxes), None)
        request = mapping.adjustment_add(adjustment, event, posting.customer_id, {"list_id": item_id},
                                         mapping.tax_item(code, self.mapping) if code else None, _day(posting.txn_date),
                                         self.mapping, self.settings.invoice_tax_item)
        return ExternalRef(external_id=self._stamped(event, request)[0]["TxnID"], amount=adjustment.net + adjustment.tax)


def _day(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _list_ref(ret: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=ret["ListID"], token=ret.get("EditSequence"))
