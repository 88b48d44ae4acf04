"""The Reckon One (API v2) connector: platform operations for the delivery engine.

Customers (ours carry the shop's id in their notes; found by name, never another shop customer's record),
invoices on ledger accounts (``POST`` creates a Draft, issued by a merge-patch ``PATCH`` of ``status`` to
Approved; update = ``PUT`` of the whole invoice, no concurrency token so the last write wins; void = ``DELETE``:
Reckon has no void), customer receipts allocated to their invoice through ``transactionLinks`` at creation
(removed by ``DELETE``), refunds as credit notes (approved by ``PATCH``) linked to the invoice through the
credit note's ``transactionLinks``, and the book's lock-off date (``settings.lockOffDate``) answered by the
engine's re-dating and adjustments. Every request carries the OAuth bearer token and the API Management
subscription key. The lifecycle, look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from connectors.reckon_one import mapping
from connectors.reckon_one.client import ReckonClient, classify
from connectors.reckon_one.settings import ReckonOneSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.reckon.com/r1/v2"
DRAFT, APPROVED = "Draft", "Approved"
SUBSCRIPTION_HEADER = "Ocp-Apim-Subscription-Key"


def subscription_key(credentials: dict[str, Any]) -> dict[str, str]:
    """API Management's key, kept with the OAuth credentials (a secret: never in the config or the logs)."""
    return {SUBSCRIPTION_HEADER: str(credentials.get("subscription_key") or "")}


class ReckonOneConnector(EngineConnector):
    platform = "reckon-one"
    settings_model = ReckonOneSettings
    # Reckon cannot void: an invoice is deleted (refused while receipts or credit notes are linked to it, which
    # the planner removes first). Invoices and credit notes are created as drafts; receipts name their invoice
    # in transactionLinks; a credit note is linked to its invoice by its own transactionLinks; no batch endpoint.
    capabilities = Capabilities(negative_totals=True, void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                issue_after_create=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: ReckonOneSettings = self.settings
        # Reckon's identity server takes the client's id and secret as HTTP Basic credentials.
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="basic",
                                 credentials=runtime.credentials(target.name), extra_headers=subscription_key)
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=target.base_url or DEFAULT_BASE_URL, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = ReckonClient(self.http, settings)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.customer_marker(customer)  # ours first: a retry after a crash finds what it made
        found = self.client.list("/customers", name=customer.name[:100].replace('"', "'"))
        for record in found:
            if ours in (record.get("notes") or "").splitlines():
                return ExternalRef(external_id=str(record["id"]))
        for record in found:  # a bookkeeper's record: never one that another shop customer's marker claims
            emails = {a.get("address") for a in record.get("electronicAddresses") or []}
            if "Ledgerwire customer " not in (record.get("notes") or "") and (
                    "name" in self.mapping.customer_match
                    or ("email" in self.mapping.customer_match and customer.email in emails)):
                return ExternalRef(external_id=str(record["id"]))
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return ExternalRef(external_id=self.client.write("POST", "/customers", mapping.customer_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        held = self.client.get(f"/customers/{ref.external_id}")
        if held is None:
            return None
        body = mapping.customer_payload(customer)  # a PUT replaces: a bookkeeper's own notes are kept after ours
        kept = [n for n in (held.get("notes") or "").splitlines() if not n.startswith("Ledgerwire customer ")]
        body["notes"] = "\n".join([body["notes"], *kept])[:1000]
        self.client.write("PUT", f"/customers/{ref.external_id}", body)
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # lines post on ledger accounts (accountDetails)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("reckon-one posts lines on ledger accounts, never on items")

    create_item = find_item

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return mapping.credit_note_reference(key)  # a link is found through its credit note
        adjustment_kind, _, sequence = key.partition(":")
        return mapping.adjustment_reference(event, int(sequence), adjustment_kind)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.PAYMENT:
            return [_ref(r) for r in self.client.list("/receipts", reference=reference)]
        if kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and reference.startswith("A")):
            return [_ref(r) for r in self.client.list("/invoices", reference=reference)]
        notes = self.client.list("/creditnotes", reference=reference)  # the list path is lower case in the spec
        if kind is not DocKind.CREDIT_APPLICATION:
            return [_ref(n) for n in notes]
        return [ExternalRef(external_id=f"{note['id']}/{link['linkId']}", amount=Decimal(str(link["transactionAmount"])))
                for note in notes for link in (self.client.get(f"/creditNotes/{note['id']}") or {}).get(
                    "transactionLinks") or [] if link.get("transactionType") == mapping.INVOICE]

    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A credit note an earlier attempt created but never approved (the PATCH lost): approve it now."""
        if kind in (DocKind.CREDIT_NOTE, DocKind.ADJUSTMENT) and ref.status == "draft" and \
                self.client.get(f"/creditNotes/{ref.external_id}") is not None:
            self._approve("creditNotes", ref.external_id)
            return ref.model_copy(update={"status": None})
        return ref

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        created = self.client.write("POST", "/invoices", body)
        return self.read_invoice(created) or RemoteInvoice(external_id=created, number=event.number, status="draft")

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        self.client.write("PUT", f"/invoices/{current.external_id}", body)
        return self.read_invoice(current.external_id) or RemoteInvoice(external_id=current.external_id)

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        if current.status != "draft":
            held = self.read_invoice(current.external_id)
            if held is None or held.status != "draft":
                return
        self._approve("invoices", current.external_id)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        """Reckon One has no void: the invoice is deleted (already gone after a lost answer: done as well)."""
        held = self.read_invoice(current.external_id)
        if held is not None:
            self.client.write("DELETE", f"/invoices/{current.external_id}")
        return (held or RemoteInvoice(external_id=current.external_id)).model_copy(update={"status": "void"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/invoices/{external_id}")
        if not found:
            return None
        # Reckon has no concurrency token: the token is a digest of what it holds (it changes with every edit).
        digest = hashlib.sha256(json.dumps(found, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return RemoteInvoice(external_id=str(found["id"]), number=found.get("reference"), token=digest,
                             status="draft" if found.get("status") == DRAFT else "issued",
                             total=found.get("totalAmount"), tax_total=found.get("totalTaxAmount"),
                             balance=found.get("balance"), raw=found)

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.receipt_payload(payment, invoice_id, posting.customer_id, self.mapping, posting.txn_date)
        return ExternalRef(external_id=self.client.write("POST", "/receipts", body), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        if self.client.get(f"/receipts/{ref.external_id}") is not None:  # already gone: nothing to do
            self.client.write("DELETE", f"/receipts/{ref.external_id}")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, self.mapping, posting.txn_date)
        created = self.client.write("POST", "/creditNotes", body)
        self._approve("creditNotes", created)  # a draft credit note cannot be linked to an invoice
        return ExternalRef(external_id=created, amount=refund.amount + refund.tax_amount)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        link = self.client.write("POST", f"/creditNotes/{credit.external_id}/transactionLinks",
                                 mapping.link_payload(invoice_id, amount))
        return ExternalRef(external_id=f"{credit.external_id}/{link}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        note_id, _, link_id = application.external_id.partition("/")
        held = self.client.get(f"/creditNotes/{note_id}") or {}
        if any(link.get("linkId") == link_id for link in held.get("transactionLinks") or []):
            self.client.write("DELETE", f"/creditNotes/{note_id}/transactionlinks/{link_id}")

    def _approve(self, resource: str, external_id: str) -> None:
        self.client.write("PATCH", f"/{resource}/{external_id}", {"status": APPROVED})

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        # BookSettings.lockOffDate: "Transactions on or before this date cannot be changed."
        lock_off = (self.client.get("/settings") or {}).get("lockOffDate")
        return date.fromisoformat(str(lock_off)[:10]) if lock_off else None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        resource, body = mapping.adjustment_payload(
            event, adjustment.kind, adjustment.sequence, posting.customer_id, adjustment.net, adjustment.tax,
            posting.txn_date or date.today(), adjustment.original_id, adjustment.reason, self.mapping)
        created = self.client.write("POST", f"/{resource}", body)
        if resource == "creditNotes":
            self._approve(resource, created)
        return ExternalRef(external_id=created, amount=adjustment.net + adjustment.tax,
                           status="draft" if resource == "invoices" else None)  # the engine issues an increase


def _ref(row: dict[str, Any]) -> ExternalRef:
    total = row.get("totalAmount")
    return ExternalRef(external_id=str(row["id"]), amount=Decimal(str(total)) if total is not None else None,
                       status="draft" if row.get("status") == DRAFT else None)
