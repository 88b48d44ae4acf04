"""The Sage Business Cloud Accounting (API v3.1) connector: platform operations for the delivery engine.

Contacts (found by our unique contact reference, then the target's match rules), sales invoices (create; update
= ``PUT`` of the whole invoice, Sage has no concurrency token so the last write wins; void = ``DELETE`` with a
``void_reason``), customer receipts (``contact_payments``) allocated to their invoice at creation, refunds as
sales credit notes allocated to the invoice by a ``contact_allocation`` (or, paid back to the customer, settled by a
customer refund — a ``contact_payment`` of type ``CUSTOMER_REFUND`` allocated to the credit note), and the business's year end lockdown
date (``financial_settings.year_end_lockdown_date``) answered by the engine's re-dating and adjustments. Every
request carries ``X-Business``. An invoice in another currency than the business's goes with its documents on the
customer's contact for that currency, with Sage's own exchange rate (currency.py). The lifecycle, look-ups
before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, first_open_day
from connectors.engine_state import DocKind
from connectors.sage_accounting import mapping
from connectors.sage_accounting.client import SageClient, classify
from connectors.sage_accounting.currency import SageCurrencies
from connectors.sage_accounting.settings import SageSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.accounting.sage.com/v3.1"
VOID = "VOID"


class SageAccountingConnector(EngineConnector):
    platform = "sage-accounting"
    settings_model = SageSettings
    # Receipts are deleted (DELETE /contact_payments/{key}); a receipt names its invoice in allocated_artefacts;
    # credit notes are allocated to their invoice by a separate contact_allocation; no batch endpoint.
    capabilities = Capabilities(negative_totals=True, void="void", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                refund_settlement=True, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: SageSettings = self.settings
        # Sage's token endpoint takes the client's id and secret in the form body.
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="body",
                                 credentials=runtime.credentials(target.name))
        self.client = SageClient(self.platform_http(base_url=target.base_url or DEFAULT_BASE_URL, classify=classify,
                                                    auth=auth), settings)
        self.mapping = target.mapping
        self.currencies = SageCurrencies(self.client)
        self.closed_through: date | None = None  # as last read

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.contact_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.contact_reference(customer)  # ours first: a retry after a crash finds what it made
        # Sage filters contacts by name / reference (``search``) and email, not by phone: "phone" is not matched.
        searches = [{"search": ours}] + [{"email": customer.email} if key == "email" else {"search": customer.name}
                                         for key in self.mapping.customer_match
                                         if key == "name" or (key == "email" and customer.email)]
        for params in searches:
            for contact in self.client.list("/contacts", contact_type_id="CUSTOMER", **params):
                reference = str(contact.get("reference") or "")
                if reference == ours:
                    return _ref(contact)
                # Never another shop customer's record: ours carry the shop's id in their unique reference.
                if not reference.startswith("LWC") and ("email" in params or contact.get("name") == customer.name):
                    return _ref(contact)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _ref(self.client.write("POST", "/contacts", mapping.contact_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if self.client.get(f"/contacts/{ref.external_id}") is None:
            return None
        body = mapping.contact_payload(customer)
        return _ref(self.client.write("PUT", f"/contacts/{ref.external_id}", body))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # Sage lines post straight on ledger accounts

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("sage-accounting posts lines on ledger accounts, never on items")

    create_item = find_item

    # -- references: the framework's, but an adjustment is ``A<n>-``/``C<n>-`` + the shop's number --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.ADJUSTMENT:
            adjustment_kind, sequence = references.adjustment_key(key)
            return mapping.adjustment_reference(event, sequence, adjustment_kind)
        return super().reference(kind, event, key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):
            # Receipts and refunds cannot be searched by reference: every one of the type is read, page by page.
            kind_id = mapping.CUSTOMER_RECEIPT if kind is DocKind.PAYMENT else mapping.CUSTOMER_REFUND
            return [_ref(p) for p in self.client.list("/contact_payments", transaction_type_id=kind_id,
                                                      attributes="reference,total_amount", sort="created_at")
                    if p.get("reference") == reference]
        invoices = kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and reference.startswith("A"))
        resource = "/sales_invoices" if invoices else "/sales_credit_notes"
        documents = [d for d in self.client.list(resource, search=reference, sort="created_at",
                                                 attributes="reference,total_amount,status")
                     if d.get("reference") == reference and _status(d) != VOID]
        if kind is not DocKind.CREDIT_APPLICATION:
            return [_ref(d) for d in documents]
        allocations = []
        for credit_note in documents:
            held = self.client.get(f"/sales_credit_notes/{credit_note['id']}", show_payments_allocations="true") or {}
            allocations += [ExternalRef(external_id=str(a["contact_allocation"]["id"]), amount=abs(Decimal(str(a["amount"]))))
                            for a in held.get("payments_allocations") or [] if a.get("contact_allocation")]
        return allocations

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self.client.write("POST", "/sales_invoices", self._in_currency(event, body)))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self.client.write("PUT", f"/sales_invoices/{current.external_id}",
                                         self.currencies.stamp(event, body, self.mapping, new=False)))

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None or held.status == "void":
            return held
        self.client.write("DELETE", f"/sales_invoices/{current.external_id}", void_reason=self.settings.void_reason)
        return self.read_invoice(current.external_id) or held.model_copy(update={"status": "void"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/sales_invoices/{external_id}")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.customer_id, self.mapping, posting.txn_date)
        return _ref(self.client.write("POST", "/contact_payments", self._in_currency(event, body)))

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete(f"/contact_payments/{ref.external_id}")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, self.mapping, posting.txn_date)
        return _ref(self.client.write("POST", "/sales_credit_notes", self._in_currency(event, body)))

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """A customer refund allocated to the credit note, dated the day the shop paid it back (the first open day
        when the books are locked there)."""
        day = refund.created_at.date()
        if self.closed_through is not None and day <= self.closed_through:
            day = first_open_day(self.closed_through)
        body = mapping.refund_payment_payload(event, refund, credit.external_id, posting.customer_id, amount,
                                              reference, self.mapping, day)
        return _ref(self.client.write("POST", "/contact_payments", self._in_currency(event, body)))

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._delete(f"/contact_payments/{settlement.external_id}")

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        # Today, on or after both documents' dates; never in locked books (the engine read the lockdown date
        # before this delivery's first write).
        day = max(date.today(), first_open_day(self.closed_through))
        body = mapping.allocation_payload(posting.customer_id, invoice_id, credit.external_id, amount, day)
        return _ref(self.client.write("POST", "/contact_allocations", self.currencies.like_credit_note(
            credit.external_id, body)))

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._delete(f"/contact_allocations/{application.external_id}")

    def _delete(self, path: str) -> None:
        if self.client.get(path) is not None:  # already gone: nothing to do
            self.client.write("DELETE", path)

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        # Sage: no transaction can be created or edited dated on or before the lockdown date.
        lockdown = (self.client.get("/financial_settings") or {}).get("year_end_lockdown_date")
        self.closed_through = date.fromisoformat(str(lockdown)) if lockdown else None
        return self.closed_through

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        resource, body = mapping.adjustment_payload(
            event, adjustment.kind, adjustment.sequence, posting.customer_id, adjustment.net, adjustment.tax,
            posting.txn_date or date.today(), adjustment.original_id, adjustment.reason, self.mapping)
        return _ref(self.client.write("POST", f"/{resource}", self._in_currency(event, body)))

    # -- currency --
    def home_currency(self) -> str | None:
        return self.mapping.home_currency or self.currencies.home()

    def _in_currency(self, event: InvoiceEvent, body: dict[str, Any]) -> dict[str, Any]:
        return self.currencies.stamp(event, body, self.mapping)


def _status(document: dict[str, Any]) -> str:
    return str((document.get("status") or {}).get("id", ""))


def _ref(row: dict[str, Any]) -> ExternalRef:
    total = row.get("total_amount")
    return ExternalRef(external_id=str(row["id"]), token=row.get("updated_at"),
                       amount=Decimal(str(total)) if total is not None else None)


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("reference"), token=invoice.get("updated_at"),
                         status="void" if _status(invoice) == VOID else "issued", total=invoice.get("total_amount"),
                         tax_total=invoice.get("tax_amount"), balance=invoice.get("outstanding_amount"), raw=invoice)
