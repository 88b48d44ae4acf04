"""The FreshBooks connector: platform operations for the delivery engine.

Clients (found by our ``LWC<customer id>`` leading their note, then the target's match rules), invoices
(created as drafts, issued by ``action_mark_as_sent``; update = ``PUT`` of the whole invoice, FreshBooks has no
concurrency token so the last write wins; FreshBooks has no void: an invoice is deleted, ``vis_state`` 1),
payments on their invoice (removed by ``vis_state`` 1), refunds as credit notes applied to the invoice by a
payment of type ``Credit`` (paid out of the client's credit). FreshBooks exposes no closing date: no closed
periods. The lifecycle, look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, recording_on
from connectors.engine_state import DocKind
from connectors.freshbooks import mapping
from connectors.freshbooks.client import FreshBooksClient, classify
from connectors.freshbooks.settings import FreshBooksSettings
from connectors.http import PlatformHttp
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.freshbooks.com"
INVOICES, PAYMENTS, CREDIT_NOTES, CLIENTS = "invoices/invoices", "payments/payments", "credit_notes/credit_notes", \
    "users/clients"
DELETED = 1  # vis_state: 0 active, 1 deleted, 2 archived


class FreshBooksConnector(EngineConnector):
    platform = "freshbooks"
    settings_model = FreshBooksSettings
    # No void (an invoice is deleted); payments deleted by vis_state; a payment always names its invoice;
    # credit notes applied through Credit payments; invoices start as drafts (mark as sent = issue); no
    # closing date to respect; no batch endpoint; invoice numbers are not refused when reused; the credit note of
    # a refund taken back is deleted (``vis_state`` 1, the SDK's delete) once its Credit payment is removed.
    capabilities = Capabilities(multi_currency=True, negative_totals=True, void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=False,
                                batch_create=0, issue_after_create=True, void_credit_notes=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: FreshBooksSettings = self.settings
        # FreshBooks' token endpoint takes the client's id and secret in the body; refresh tokens are single use.
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="body",
                                 credentials=runtime.credentials(target.name))
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=target.base_url or DEFAULT_BASE_URL, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = FreshBooksClient(self.http, settings)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.client_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.client_reference(customer)
        # Always by name too (ours carry it as organization), so a retry after a crash finds what it made.
        searches = [("organization_like", customer.name)] + [("email", customer.email) for key in
                                                             self.mapping.customer_match if key == "email" and customer.email]
        for name, value in searches:
            for client in self.client.list(CLIENTS, **{name: value}):
                note = str(client.get("note") or "")
                if note.split(" ")[0] == ours:
                    return _ref(client)
                # Never another shop customer's client: ours lead their note with LWC<shop customer id>.
                if not note.startswith("LWC") and (
                        (name == "email" and client.get("email") == customer.email)
                        or ("name" in self.mapping.customer_match and client.get("organization") == customer.name)):
                    return _ref(client)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _ref(self.client.write("POST", CLIENTS, None, mapping.client_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        held = self.client.get(CLIENTS, ref.external_id)
        if held is None or held.get("vis_state") == DELETED:
            return None
        return _ref(self.client.write("PUT", CLIENTS, ref.external_id, mapping.client_payload(customer)))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # FreshBooks lines carry their own name and unit cost: items are optional

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("freshbooks lines carry their own name and unit cost, never an item")

    create_item = find_item

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind is DocKind.CREDIT_NOTE:
            return mapping.credit_note_reference(key)
        if kind is DocKind.CREDIT_APPLICATION:
            return mapping.application_reference(key)
        raise PermanentError("freshbooks has no closed periods: no adjustments")

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.CREDIT_APPLICATION):
            rows = [p for p in self.client.list(PAYMENTS, notes=reference)
                    if str(p.get("note") or "").split(" ")[0] == reference]
        elif kind is DocKind.INVOICE:
            rows = [i for i in self.client.list(INVOICES, invoice_number=reference) if i.get("invoice_number") == reference]
        elif kind is DocKind.CREDIT_NOTE:
            rows = [c for c in self.client.list(CREDIT_NOTES, credit_number=reference)
                    if c.get("credit_number") == reference]
        else:
            return []
        return [_ref(r) for r in sorted(rows, key=lambda r: int(r["id"])) if r.get("vis_state", 0) != DELETED]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self.client.write("POST", INVOICES, None, body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self.client.write("PUT", INVOICES, current.external_id, body))

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        if current.status is None:  # not known whether an earlier attempt went through: FreshBooks says
            held = self.read_invoice(current.external_id)
            if held is None or held.status != "draft":
                return
        self.client.write("PUT", INVOICES, current.external_id, {"invoice": {"action_mark_as_sent": True}})

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None or held.status == "deleted":
            return held
        return _remote(self.client.write("PUT", INVOICES, current.external_id, {"invoice": {"vis_state": DELETED}}))

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(INVOICES, external_id)
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.txn_date)
        return _ref(self.client.write("POST", PAYMENTS, None, body))

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete(PAYMENTS, ref.external_id, "payment")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, self.mapping, posting.txn_date)
        return _ref(self.client.write("POST", CREDIT_NOTES, None, body))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        body = mapping.credit_payment_payload(reference.removeprefix("LWA"), invoice_id, amount, date.today())
        return _ref(self.client.write("POST", PAYMENTS, None, body))

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._delete(PAYMENTS, application.external_id, "payment")

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        self._delete(CREDIT_NOTES, credit.external_id, "credit_notes")

    def _delete(self, resource: str, key: str, envelope: str) -> None:
        held = self.client.get(resource, key)
        if held is not None and held.get("vis_state") != DELETED:  # already gone: nothing to do
            self.client.write("PUT", resource, key, {envelope: {"vis_state": DELETED}})

    # -- closed periods: FreshBooks exposes no closing date --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("freshbooks has no closed periods: no adjustments")

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        with recording_on(self.client) as sent:
            yield sent


def _amount(value: Any) -> Decimal | None:
    return Decimal(str(value["amount"])) if isinstance(value, dict) and value.get("amount") is not None else None


def _ref(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["id"]), token=row.get("updated"), amount=_amount(row.get("amount")))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    total = _amount(invoice.get("amount"))
    lines = [_amount(ln.get("amount")) for ln in invoice.get("lines") or []]
    # FreshBooks reports no tax total: the invoice's amount less its lines' (pre-tax) amounts.
    tax = total - sum(lines, Decimal("0")) if total is not None and lines and None not in lines else None
    status = "deleted" if invoice.get("vis_state") == DELETED else \
        "draft" if invoice.get("v3_status", invoice.get("status")) == "draft" else "issued"
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("invoice_number"),
                         token=invoice.get("updated"), status=status, total=total, tax_total=tax,
                         balance=_amount(invoice.get("outstanding")), raw=invoice)
