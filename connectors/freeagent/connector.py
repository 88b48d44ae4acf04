"""The FreeAgent (API v2) connector: platform operations for the delivery engine.

Contacts (ours carry the shop's customer id in their name; a bookkeeper's own contact is matched by the target's
rules), invoices (created as drafts and issued by the ``mark_as_sent`` transition — the engine's issue step;
update = ``PUT`` of the whole invoice, the old items named with ``_destroy``; FreeAgent has no concurrency token,
the last write wins; void = the ``mark_as_cancelled`` transition), payments as bank transaction explanations of
money in that name the invoice (``paid_invoice``; FreeAgent has no payment object), refunds as credit notes
(issued by ``mark_as_sent``) reconciled with the invoice by a ``credit_note_reconciliation`` (or, paid back to the
customer, settled by money out explained as the credit note's refund), and the account
locks (``GET /account_locks``) answered by the engine's re-dating and adjustments. The lifecycle, look-ups
before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, first_open_day
from connectors.engine_state import DocKind
from connectors.freeagent import mapping
from connectors.freeagent.client import FreeAgentClient, classify
from connectors.freeagent.settings import FreeAgentSettings
from connectors.http import PlatformHttp
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.freeagent.com/v2"
DRAFT, CANCELLED = "Draft", "Cancelled"
OURS = re.compile(r" \(#\d+\)$")  # a contact this connector made for a shop customer
DRAFT_NOTE = "draft credit note"  # ``find``'s status for a credit note an attempt left unissued


class FreeAgentConnector(EngineConnector):
    platform = "freeagent"
    settings_model = FreeAgentSettings
    # Payments are bank transaction explanations naming the invoice (deleted to remove them); drafts are issued
    # by mark_as_sent before money applies; credit notes are reconciled with the invoice separately; invoice
    # references are unique (not confirmed by a FreeAgent page: the sandbox refuses a second live one).
    capabilities = Capabilities(multi_currency=True, negative_totals=True, void="void", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                bank_transaction_payments=True, issue_after_create=True, unique_numbers=True,
                                refund_settlement=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: FreeAgentSettings = self.settings
        # FreeAgent's token endpoint authenticates the client by HTTP Basic.
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="basic",
                                 credentials=runtime.credentials(target.name))
        # 3,600/hour is 60/minute sustained: a minute pace within both windows (the limiter has no hour bucket).
        limiter = runtime.limiter(target, per_minute=min(settings.requests_per_minute, settings.requests_per_hour / 60),
                                  concurrency=settings.concurrency)
        base_url = target.base_url or DEFAULT_BASE_URL
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=base_url, classify=classify, timeout_s=target.request_timeout_s,
                                 headers={"User-Agent": settings.user_agent})
        self.client = FreeAgentClient(self.http, settings, base_url)
        self.mapping = target.mapping
        self.closed_through: date | None = None  # as last read

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.contact_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        contacts = self.client.list("contacts", view="all", sort="created_at")
        ours = mapping.contact_name(customer)  # ours first: a retry after a crash finds what it made
        found = next((c for c in contacts if c.get("organisation_name") == ours), None)
        for key in self.mapping.customer_match:
            # FreeAgent cannot filter contacts: they are read once and matched here. Never another shop
            # customer's contact (ours end in "(#<id>)").
            found = found or next((c for c in contacts if not OURS.search(_name(c)) and (
                (key == "email" and customer.email and c.get("email") == customer.email)
                or (key == "name" and _name(c) == customer.name)
                or (key == "phone" and customer.phone and c.get("phone_number") == customer.phone))), None)
        return self._ref(found) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return self._ref(self.client.write("POST", "/contacts", mapping.contact_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if self.client.get(f"/contacts/{ref.external_id}") is None:
            return None
        return self._ref(self.client.write("PUT", f"/contacts/{ref.external_id}", mapping.contact_payload(customer)))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # FreeAgent invoice items need no price list item: they carry their own category

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("freeagent posts invoice items on income categories, never on price list items")

    create_item = find_item

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return mapping.credit_note_reference(event, key)  # a reconciliation is found through its credit note
        if kind is DocKind.REFUND_PAYMENT:
            return references.settlement_reference(key)
        adjustment_kind, _, sequence = key.partition(":")
        return mapping.adjustment_reference(event, int(sequence), adjustment_kind)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):
            # Explanations cannot be searched: those of every bank account payments go to (and come from) are read.
            return [self._ref(e, "gross_value") for bank in sorted(set(self.mapping.payment_accounts.values()))
                    for e in self.client.list("bank_transaction_explanations",
                                              bank_account=self.client.uri("bank_accounts", bank))
                    if str(e.get("description", "")).startswith(f"{reference} ")]
        invoices = kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and re.search(r"-A\d+$", reference))
        resource = "invoices" if invoices else "credit_notes"
        documents = [d for d in self.client.list(resource, view="all", sort="created_at")
                     if d.get("reference") == reference and d.get("status") != CANCELLED]
        if kind is not DocKind.CREDIT_APPLICATION:
            return [self._ref(d, draft="draft" if invoices else DRAFT_NOTE) for d in documents]
        notes = {d["url"] for d in documents}
        return [self._ref(r, "gross_value") for r in self.client.list("credit_note_reconciliations")
                if r.get("credit_note") in notes]

    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A credit note an earlier attempt created and never issued is issued now."""
        if ref.status == DRAFT_NOTE:
            self.client.write("PUT", f"/credit_notes/{ref.external_id}/transitions/mark_as_sent")
            return ref.model_copy(update={"status": None})
        return ref

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, self.client.uri, posting.txn_date)
        return _remote(self.client.write("POST", "/invoices", body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        held = self.client.get(f"/invoices/{current.external_id}") or {}
        replaced = [item["url"] for item in held.get("invoice_items") or []]
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, self.client.uri, posting.txn_date,
                                       replaced)
        return _remote(self.client.write("PUT", f"/invoices/{current.external_id}", body))

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        if current.status != "draft":
            held = self.read_invoice(current.external_id)
            if held is None or held.status != "draft":
                return
        self.client.write("PUT", f"/invoices/{current.external_id}/transitions/mark_as_sent")

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None or held.status == "void":
            return held
        if held.status == "draft":  # a draft is issued first (it keeps its number in the books, cancelled)
            self.issue_invoice(current.model_copy(update={"status": "draft"}), request_id)
        answer = self.client.write("PUT", f"/invoices/{current.external_id}/transitions/mark_as_cancelled")
        return _remote(answer) if answer.get("url") else held.model_copy(update={"status": "void"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/invoices/{external_id}")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.explanation_payload(payment, invoice_id, self.mapping, self.client.uri, posting.txn_date)
        return self._ref(self.client.write("POST", "/bank_transaction_explanations", body), "gross_value")

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete(f"/bank_transaction_explanations/{ref.external_id}")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, self.mapping, self.client.uri,
                                           posting.txn_date)
        return self._credit_note(body)

    def _credit_note(self, body: dict[str, Any]) -> ExternalRef:
        """Created (a draft), then issued: only a sent credit note can be reconciled with an invoice."""
        note = self._ref(self.client.write("POST", "/credit_notes", body))
        self.client.write("PUT", f"/credit_notes/{note.external_id}/transitions/mark_as_sent")
        return note

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """Money out on the refunded payment's bank account, explained as the credit note's refund, dated the day
        the shop paid it back (the first open day when that is locked)."""
        day = refund.created_at.date()
        if self.closed_through is not None and day <= self.closed_through:
            day = first_open_day(self.closed_through)
        body = mapping.refund_explanation_payload(event, refund, credit.external_id, amount, reference, self.mapping,
                                                  self.client.uri, day)
        return self._ref(self.client.write("POST", "/bank_transaction_explanations", body), "gross_value")

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._delete(f"/bank_transaction_explanations/{settlement.external_id}")

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        # Today, never in locked books (the engine read the account locks before this delivery's first write).
        day = max(date.today(), first_open_day(self.closed_through))
        body = mapping.reconciliation_payload(invoice_id, credit.external_id, amount, day, self.client.uri)
        return self._ref(self.client.write("POST", "/credit_note_reconciliations", body), "gross_value")

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._delete(f"/credit_note_reconciliations/{application.external_id}")

    def _delete(self, path: str) -> None:
        if self.client.get(path) is not None:  # already gone: nothing to do
            self.client.write("DELETE", path)

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        # FreeAgent: nothing dated on or before an account lock's locked_to_date can be created or changed.
        locks = self.client.get("/account_locks") or []
        dates = [date.fromisoformat(str(lock["locked_to_date"])) for lock in locks if lock.get("locked_to_date")]
        self.closed_through = max(dates) if dates else None
        return self.closed_through

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        resource, body = mapping.adjustment_payload(
            event, adjustment.kind, adjustment.sequence, posting.customer_id, adjustment.net, adjustment.tax,
            posting.txn_date or date.today(), adjustment.original_id, adjustment.reason, self.mapping, self.client.uri)
        if resource == "credit_notes":
            return self._credit_note(body)
        return self._ref(self.client.write("POST", "/invoices", body), draft="draft")  # issued by the engine

    def _ref(self, row: dict[str, Any], amount: str = "total_value", draft: str | None = None) -> ExternalRef:
        value = row.get(amount)
        return ExternalRef(external_id=self.client.key(str(row["url"])), token=row.get("updated_at"),
                           amount=abs(Decimal(str(value))) if value is not None else None,
                           status=draft if draft and row.get("status") == DRAFT else None)


def _name(contact: dict[str, Any]) -> str:
    return str(contact.get("organisation_name") or " ".join(
        filter(None, (contact.get("first_name"), contact.get("last_name")))))


def _money(invoice: dict[str, Any], *fields: str) -> Decimal | None:
    values = [invoice.get(f) for f in fields if invoice.get(f) is not None]
    return sum((Decimal(str(v)) for v in values), Decimal("0")) if values else None


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    status = invoice.get("status")
    return RemoteInvoice(
        external_id=FreeAgentClient.key(str(invoice["url"])), number=invoice.get("reference"),
        token=invoice.get("updated_at"),
        status="void" if status == CANCELLED else "draft" if status == DRAFT else "issued",
        total=_money(invoice, "total_value"), tax_total=_money(invoice, "sales_tax_value", "second_sales_tax_value"),
        balance=_money(invoice, "due_value"), raw=invoice)
