"""The Zoho Books connector: platform operations for the delivery engine (connectors/engine.py).

Contacts, items per part number, invoices (created with the shop's number, full update, marked sent — the
engine's issue step, as Zoho creates API invoices as drafts — and voided), customer payments applied to the
invoice they pay, refunds as credit notes credited to the invoice, Zoho's transaction lock answered by the
engine's re-dating and adjustments (an invoice or a credit note with the lines that differ). The lifecycle,
the look-ups before re-creating, checkpoints and preview are the engine's.

Zoho has no concurrency token (the last write wins), no request-id replay and no read of its lock date: a
retry finds what an interrupted attempt made by its references (the invoice by ``invoice_number``, payments
by ``reference_number`` "LW<payment id>", credit notes by "LWR<refund id>"), and the lock date comes from the
lock refusal itself (``client.classify``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import jsonmoney, references
from connectors.base import ExternalRef, NumberInUseError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.oauth import OAuth2RefreshAuth
from connectors.zoho_books import closed_period, currency, mapping
from connectors.zoho_books.check import check_mapping
from connectors.zoho_books.client import ZohoClient, classify
from connectors.zoho_books.numbers import free_voided_number
from connectors.zoho_books.settings import ZohoSettings
from connectors.zoho_books.taxes import ZohoTaxes
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

# What each natural reference is searched by: (list path, answer key, field, id field).
SEARCH = {DocKind.INVOICE: ("/invoices", "invoices", "invoice_number", "invoice_id"),
          DocKind.PAYMENT: ("/customerpayments", "customerpayments", "reference_number", "payment_id"),
          DocKind.CREDIT_NOTE: ("/creditnotes", "creditnotes", "reference_number", "creditnote_id")}


class ZohoBooksConnector(EngineConnector):
    platform = "zoho-books"
    settings_model = ZohoSettings
    capabilities = Capabilities(multi_currency=True, negative_totals=True, issue_after_create=True, unique_numbers=True, refund_settlement=True)
    mapping_check = staticmethod(check_mapping)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: ZohoSettings = self.settings
        oauth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_endpoint(),
                                  credentials=runtime.credentials(target.name), client_auth="body",
                                  scheme="Zoho-oauthtoken")
        http = self.platform_http(base_url=settings.api_root(target.base_url), classify=classify, auth=oauth)
        self.client = ZohoClient(http, settings.organization_id)
        self.mapping = target.mapping
        self.taxes = ZohoTaxes(self.client, self.mapping)

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.contact_hash(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        suffix = mapping.contact_suffix(customer)  # ours first: "<name> (#<shop id>)", what a retry made
        found = next((r for r in self.client.list("/contacts", "contacts", contact_name_contains=suffix)
                      if str(r.get("contact_name", "")).endswith(suffix)), None) or references.match_customer(
            customer, self.mapping.customer_match, self._contacts, lambda r: references.claimed_by(r.get("contact_name")))
        return ExternalRef(external_id=str(found["contact_id"])) if found else None

    def _contacts(self, key: str, value: str) -> list[dict[str, Any]]:
        return [r for r in self.client.list("/contacts", "contacts", **{"contact_name" if key == "name" else key: value})
                if r.get("contact_type", "customer") == "customer"]

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        created = self.client.call("POST", "/contacts", mapping.contact_payload(customer))["contact"]
        return ExternalRef(external_id=str(created["contact_id"]))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        self.client.call("PUT", f"/contacts/{ref.external_id}", mapping.contact_payload(customer))
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        # item_mode "per_part_number": a part number has its own item; otherwise mapping.items per line kind
        if not mapping.per_part_number(line, self.mapping):
            return None
        name = mapping.item_name(line)
        return ItemSpec(f"part:{name}", name, line)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        rows = [i for i in self.client.list("/items", "items", name=spec.name) if i.get("name") == spec.name]
        return ExternalRef(external_id=str(rows[0]["item_id"])) if rows else None

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        assert spec.line is not None  # the engine asks for extra items only through ``Posting.item``, unused here
        created = self.client.call("POST", "/items", mapping.item_payload(spec.line, self.mapping))["item"]
        return ExternalRef(external_id=str(created["item_id"]))

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        """The framework's; Zoho's invoice numbers and references hold 100 characters."""
        if kind is DocKind.ADJUSTMENT:
            adjustment_kind, sequence = references.adjustment_key(key)
            return closed_period.adjustment_number(event.number, sequence, adjustment_kind)
        return super().reference(kind, event, key)[:100]

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.CREDIT_APPLICATION:
            return [ExternalRef(external_id=f"{note.external_id}:{row['invoice_id']}",
                                amount=Decimal(str(row["amount_applied"])))
                    for note in self.find(DocKind.CREDIT_NOTE, reference)
                    for row in self.client.list(f"/creditnotes/{note.external_id}/invoices", "invoices_credited")]
        if kind is DocKind.REFUND_PAYMENT:  # on the refund's credit note (``LWR<id>``), by its reference ``LWP<id>``
            note_reference = references.refund_reference(reference.removeprefix(references.SETTLEMENT_PREFIX))
            return [ExternalRef(external_id=f"{note.external_id}:{row['creditnote_refund_id']}",
                                amount=Decimal(str(row["amount"])))
                    for note in self.find(DocKind.CREDIT_NOTE, note_reference)
                    for row in self.client.list(f"/creditnotes/{note.external_id}/refunds", "creditnote_refunds")
                    if row.get("reference_number") == reference]
        if kind is DocKind.ADJUSTMENT:  # an increase is an invoice numbered …-A<n>, a decrease a credit note …-C<n>
            kind = DocKind.INVOICE if references.is_increase(reference) else DocKind.CREDIT_NOTE
        path, key, field, id_field = SEARCH[kind]
        rows = [r for r in self.client.list(path, key, **{field: reference})
                if r.get(field) == reference and r.get("status") != "void"]
        return [ExternalRef(external_id=str(r[id_field]), token=r.get("last_modified_time"),
                            amount=Decimal(str(r.get("total", r.get("amount")))),
                            status="draft" if r.get("status") == "draft" else None)
                for r in sorted(rows, key=lambda r: int(r[id_field]))]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = posting.dated(self._invoice_payload(event, posting), "date", due_field="due_date", note_field="notes",
                             note_max=5000)
        try:
            return _remote(self.client.call("POST", "/invoices", body, ignore_auto_number_generation="true")["invoice"])
        except NumberInUseError:
            # A voided invoice keeps its number in Zoho (1001 "already exists"): the shop deleted that invoice
            # and reused its number, so the voided one is renamed (Zoho's way: mark as draft, rename, void
            # again) and the create sent once more. A live holder stays: retried until its void arrives.
            if not free_voided_number(self.client, body["invoice_number"]):
                raise
            return _remote(self.client.call("POST", "/invoices", body, ignore_auto_number_generation="true")["invoice"])

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = posting.dated(self._invoice_payload(event, posting), "date", due_field="due_date")
        return _remote(self.client.call("PUT", f"/invoices/{current.external_id}", body)["invoice"])

    def _invoice_payload(self, event: InvoiceEvent, posting: Posting) -> dict[str, Any]:
        return mapping.invoice_payload(event, posting.customer_id, self.taxes.for_lines(event), self.mapping,
                                       posting.item_ids) | currency.currency_fields(self.client, event.currency)

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        """Zoho's "mark as sent" (without emailing): payments and credits only apply to sent invoices."""
        if current.status != "draft":
            held = self.client.get(f"/invoices/{current.external_id}", "invoice")
            if held is None or held.get("status") != "draft":
                return
        self.client.call("POST", f"/invoices/{current.external_id}/status/sent")

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is not None and held.status != "void":
            self.client.call("POST", f"/invoices/{current.external_id}/status/void")
        return held

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/invoices/{external_id}", "invoice")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.customer_id, event, self.mapping)
        body = posting.dated(body, "date")
        created = self.client.call("POST", "/customerpayments", body)["payment"]
        return ExternalRef(external_id=str(created["payment_id"]), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self.client.delete(f"/customerpayments/{ref.external_id}")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        line = next((ln for ln in event.lines if ln.id == refund.line_id), None) or references.main_taxed_line(
            event, refund)
        tax_id = self.taxes.tax_id(tuple(t.code for t in line.taxes)) if line is not None else None
        body = mapping.creditnote_payload(refund, event, posting.customer_id, tax_id, self.mapping) | (
            currency.currency_fields(self.client, event.currency))
        note = self.client.call("POST", "/creditnotes", posting.dated(body, "date", due_field="due_date"))["creditnote"]
        return ExternalRef(external_id=str(note["creditnote_id"]), amount=note.get("total"))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        self.client.call("POST", f"/creditnotes/{credit.external_id}/invoices",
                         {"invoices": [{"invoice_id": invoice_id, "amount_applied": amount}]})
        # Zoho's answer names no application id: "<credit note>:<invoice>" finds them (release_credit)
        return ExternalRef(external_id=f"{credit.external_id}:{invoice_id}", amount=amount)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """Zoho's "Refund credit note": the money paid back, from the refunded payment's account."""
        body = posting.dated(mapping.credit_refund_payload(event, refund, amount, reference, self.mapping), "date")
        answer = self.client.call("POST", f"/creditnotes/{credit.external_id}/refunds", body)["creditnote_refund"]
        return ExternalRef(external_id=f"{credit.external_id}:{answer['creditnote_refund_id']}", amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        creditnote_id, _, refund_id = settlement.external_id.partition(":")
        self.client.delete(f"/creditnotes/{creditnote_id}/refunds/{refund_id}")

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        creditnote_id, _, invoice_id = application.external_id.partition(":")
        for row in self.client.list(f"/creditnotes/{creditnote_id}/invoices", "invoices_credited"):
            if row.get("invoice_id") == invoice_id:
                self.client.delete(f"/creditnotes/{creditnote_id}/invoices/{row['creditnote_invoice_id']}")

    def home_currency(self) -> str | None:  # configured, else the organization's base currency (currency.py)
        return self.mapping.home_currency or currency.home_currency(self.client)

    # -- closed periods: Zoho's transaction lock --
    def books_closed_through(self) -> date | None:
        return None  # not readable through Zoho's API: a lock refusal names it (ClosedPeriodError.closed_through)

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        """The lines that differ between what Zoho holds (the original and every earlier adjustment, read back)
        and the shop's version, as an invoice (increase) or a credit note (decrease)."""
        wanted = [] if event.status.value in ("void", "deleted") else self._invoice_payload(event, posting)["line_items"]
        lines = closed_period.lines_to_post(self.client, adjustment, posting.adjustments, wanted)
        body = closed_period.adjustment_payload(event, adjustment.kind, adjustment.sequence, posting.customer_id,
                                                lines, posting.txn_date or date.today(), self.mapping,
                                                adjustment.original_id, adjustment.reason)
        body |= currency.currency_fields(self.client, event.currency)
        if adjustment.kind == "decrease":
            note = self.client.call("POST", "/creditnotes", body)["creditnote"]
            return ExternalRef(external_id=str(note["creditnote_id"]), amount=note.get("total"))
        posted = self.client.call("POST", "/invoices", body, ignore_auto_number_generation="true")["invoice"]
        return ExternalRef(external_id=str(posted["invoice_id"]), amount=posted.get("total"),
                           status=posted.get("status"))  # a draft: the engine issues it (mark as sent)



def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    total, sub_total = jsonmoney.amount(invoice.get("total")), jsonmoney.amount(invoice.get("sub_total"))
    status = {"void": "void", "draft": "draft"}.get(invoice.get("status", ""), "issued")
    return RemoteInvoice(external_id=str(invoice["invoice_id"]), number=invoice.get("invoice_number"),
                         token=invoice.get("last_modified_time"), status=status, total=total,
                         tax_total=total - sub_total if total is not None and sub_total is not None else None,
                         balance=jsonmoney.amount(invoice.get("balance")), raw=invoice)
