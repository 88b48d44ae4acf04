"""The Bill.com (API v3, accounts receivable) connector: platform operations for the delivery engine.

A session from ``POST /v3/login`` (``SessionLoginAuth`` with ``bill_com_session``: headers ``devKey`` and
``sessionId``, a new login once on ``BDC_1109``), customers (ours marked by ``accountNumber``), invoices (create;
update = ``PUT`` of the whole invoice, which removes every line whose id it omits, so the lines BILL holds are
read and named; void = archive), offline payments by ``record-payment`` applied to their invoice (BILL publishes
no void of one: a payment is reversed by a negative one), refunds as credit memos applied through the invoice's
``creditAmount`` up to what the invoice owes, the rest left as customer credit (archived when the shop takes the
refund back; a refund paid back stays an open memo: BILL publishes no API to pay money back against one, README).
BILL exposes no closing date. The lifecycle,
look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.auth import SessionLoginAuth, bill_com_session, bill_com_session_expired
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.bill_com import mapping
from connectors.bill_com.client import BillComClient, classify
from connectors.bill_com.settings import BillComSettings
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://gateway.prod.bill.com/connect"
ZERO = Decimal("0")


class BillComConnector(EngineConnector):
    platform = "bill-com"
    settings_model = BillComSettings
    # void = archive; payments reversed (no void of a recorded AR payment in v3); credit memos applied through
    # the invoice's creditAmount and archived when taken back; no closing date; no batch create.
    capabilities = Capabilities(negative_totals=True, void="void", delete_payments=False, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=False, batch_create=0,
                                void_credit_notes=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: BillComSettings = self.settings
        base_url = (target.base_url or DEFAULT_BASE_URL).rstrip("/")
        auth = SessionLoginAuth(target=target.name, credentials=runtime.credentials(target.name),
                                login=bill_com_session(base_url, settings.session_idle_minutes * 60.0),
                                session_expired=bill_com_session_expired)
        limiter = runtime.limiter(target, per_minute=settings.requests_per_hour / 60.0,
                                  concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=base_url, classify=classify, timeout_s=target.request_timeout_s)
        self.auth = auth
        self.client = BillComClient(self.http, settings.page_size)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours, look_alike = mapping.customer_marker(customer), None
        for found in self.client.list("/v3/customers", "archived:eq:false"):
            marker = str(found.get("accountNumber") or "")
            if marker == ours:
                return ExternalRef(external_id=str(found["id"]))
            # Never another shop customer's record: ours carry the shop's id in accountNumber.
            if look_alike is None and not marker.startswith("LWC") and any(
                    (key == "name" and found.get("name") == customer.name)
                    or (key == "email" and customer.email and found.get("email") == customer.email)
                    for key in self.mapping.customer_match):
                look_alike = ExternalRef(external_id=str(found["id"]))
        return look_alike

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        body = mapping.customer_payload(customer, self.settings.fallback_email)
        return ExternalRef(external_id=str(self.client.write("POST", "/v3/customers", body)["id"]))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if self.client.get(f"/v3/customers/{ref.external_id}") is None:
            return None
        body = mapping.customer_payload(customer, self.settings.fallback_email)
        return ExternalRef(external_id=str(self.client.write("PATCH", f"/v3/customers/{ref.external_id}", body)["id"]))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # BILL invoice lines need no item

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("bill-com posts lines without items")

    create_item = find_item

    # -- references and look-ups --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:  # shop payment ids repeat across invoices: the number makes it unique
            return f"{mapping.payment_reference(key)} {event.number}"
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return mapping.credit_memo_reference(event, key)  # an application is found through its memo
        raise PermanentError("bill-com: no closed periods, so no adjustments")

    def _invoices(self, number: str) -> list[dict[str, Any]]:
        return [i for i in self.client.list("/v3/invoices", f'invoiceNumber:eq:"{number}"', "archived:eq:false")
                if i.get("invoiceNumber") == number]

    def _memos(self, reference: str) -> list[dict[str, Any]]:
        return [m for m in self.client.list("/v3/credit-memos", f'referenceNumber:eq:"{reference}"', "archived:eq:false")
                if m.get("referenceNumber") == reference]

    def _live_payments(self) -> list[dict[str, Any]]:
        """Recorded payments neither reversed nor reversals themselves."""
        payments = self.client.list("/v3/receivable-payments")
        reversed_ids = {str(p.get("description") or "").removeprefix(mapping.REVERSAL).split(" ")[0] for p in payments
                        if str(p.get("description") or "").startswith(mapping.REVERSAL)}
        return [p for p in payments
                if p["id"] not in reversed_ids and not str(p.get("description") or "").startswith(mapping.REVERSAL)]

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.INVOICE:
            return [_ref(i, "totalAmount") for i in self._invoices(reference)]
        if kind is DocKind.PAYMENT:
            return [_ref(p, "amount") for p in self._live_payments() if p.get("description") == reference]
        memos = self._memos(reference)
        if kind is DocKind.CREDIT_NOTE:
            return [_ref(m, "totalAmount") for m in memos]
        invoices = self._invoices(reference.split("-", 1)[1])
        return [ExternalRef(external_id=f"{invoices[0]['id']}/{m['id']}", amount=Decimal(str(m["appliedAmount"])))
                for m in memos if invoices and Decimal(str(m.get("appliedAmount") or 0)) > 0]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id)
        return _remote(self.client.write("POST", "/v3/invoices", body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        held = self.client.get(f"/v3/invoices/{current.external_id}") or {}
        line_ids = [str(ln["id"]) for ln in held.get("invoiceLineItems") or []]
        credit = Decimal(str(held.get("creditAmount") or 0))
        body = mapping.invoice_payload(event, posting.customer_id, line_ids, credit)
        return _remote(self.client.write("PUT", f"/v3/invoices/{current.external_id}", body))

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        """Archived: BILL's void (restorable). The engine reversed its payments and credits first."""
        held = self.read_invoice(current.external_id)
        if held is None or held.status == "void":
            return held
        return _remote(self.client.write("POST", f"/v3/invoices/{current.external_id}/archive"))

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/v3/invoices/{external_id}")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.customer_id)
        body["description"] = self.reference(DocKind.PAYMENT, event, str(payment.id))
        return _ref(self.client.write("POST", "/v3/invoices/record-payment", body), "amount")

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        received = next((p for p in self._live_payments() if p["id"] == ref.external_id), None)
        if received is not None:  # already reversed (or gone): nothing to do
            self.client.write("POST", "/v3/invoices/record-payment", mapping.reversal_payload(received))

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_memo_payload(event, refund, posting.customer_id)
        return _ref(self.client.write("POST", "/v3/credit-memos", body), "totalAmount")

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        held = self.client.get(f"/v3/credit-memos/{credit.external_id}")
        if held is not None and not held.get("archived"):
            self.client.write("POST", f"/v3/credit-memos/{credit.external_id}/archive")

    def _credit(self, invoice_id: str, change: Decimal) -> None:
        """The invoice's ``creditAmount`` (credit memo amounts applied to it) moved by ``change``."""
        held = self.client.get(f"/v3/invoices/{invoice_id}")
        if held is None:
            raise PermanentError(f"bill-com: invoice {invoice_id} is gone")
        total = max(ZERO, Decimal(str(held.get("creditAmount") or 0)) + change)
        self.client.write("PATCH", f"/v3/invoices/{invoice_id}", {"creditAmount": total})

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        self._credit(invoice_id, amount)
        return ExternalRef(external_id=f"{invoice_id}/{credit.external_id}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        invoice_id, memo_id = application.external_id.split("/")
        memo = self.client.get(f"/v3/credit-memos/{memo_id}") or {}
        applied = Decimal(str(memo.get("appliedAmount") or 0))
        if applied > 0:  # nothing applied any more: already released
            self._credit(invoice_id, -min(applied, application.amount or applied))

    # -- closed periods: BILL's API exposes no closing date --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("bill-com: no closed periods, so no adjustments")

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        self.client.recorder = sent = []
        try:
            yield sent
        finally:
            self.client.recorder = None


def _ref(row: dict[str, Any], amount_field: str) -> ExternalRef:
    amount = row.get(amount_field)
    return ExternalRef(external_id=str(row["id"]), token=row.get("updatedTime"),
                       amount=abs(Decimal(str(amount))) if amount is not None else None)


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    tax = sum((Decimal(str(ln.get("amount") or 0)) for ln in invoice.get("invoiceLineItems") or []
               if str(ln.get("description") or "").startswith(mapping.TAX_LINE)), ZERO)
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("invoiceNumber"),
                         token=invoice.get("updatedTime"), status="void" if invoice.get("archived") else "issued",
                         total=invoice.get("totalAmount"), tax_total=tax, balance=invoice.get("dueAmount"), raw=invoice)
