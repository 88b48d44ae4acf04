"""The Xero connector: platform operations for the delivery engine (connectors/engine.py).

Contacts, items per part number, invoices (``PUT /Invoices`` of up to 50 with ``summarizeErrors=false``,
edit, void), payments applied to the invoice they pay, refunds as credit notes allocated to it, lock dates
answered by the engine's re-dating and adjustments (an invoice ``<number>-A<n>`` or a credit note
``<number>-C<n>``). Every write carries an ``Idempotency-Key`` and amounts go at ``unitdp=4`` with explicit
per-line tax. Xero has no concurrency token; its rule instead is that a document with payments or credit
allocated cannot be edited or voided: the engine takes them off first (``update_detaches_money``). Refresh
tokens rotate (``OAuth2RefreshAuth`` persists the new one before using it); every call names the tenant.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

from connectors import adjustments, jsonmoney, references
from connectors.base import (ClosedPeriodError, DeliveryContext, DeliveryError, DocumentState, ExternalRef,
                             PermanentError, RemoteInvoice)
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.rest import unless_gone
from connectors.oauth import OAuth2RefreshAuth
from connectors.xero import lock_dates, mapping
from connectors.xero.check import check_mapping, find_contact
from connectors.xero.legacy import from_legacy
from connectors.xero.client import ID_FIELDS, UNITDP, XeroClient, quote
from connectors.xero.errors import classify, error_for_messages, validation_messages
from connectors.xero.tenant import Tenant
from connectors.xero.settings import XeroSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.xero.com/api.xro/2.0"
ZERO = Decimal("0.00")
GONE = ("VOIDED", "DELETED")
COLLECTION = {"increase": "Invoices", "decrease": "CreditNotes"}  # an adjustment's document


class XeroConnector(EngineConnector):
    platform = "xero"
    settings_model = XeroSettings
    supports_batch = True
    capabilities = Capabilities(multi_currency=True, negative_totals=True, batch_create=50, update_detaches_money=True, void_credit_notes=True, unique_numbers=True,
                                refund_settlement=True)
    mapping_check = staticmethod(check_mapping)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: XeroSettings = self.settings
        self.batch_size = settings.batch_size
        self.capabilities = self.capabilities.model_copy(update={"batch_create": settings.batch_size})
        self.credentials = runtime.credentials(target.name)
        tenant = Tenant(target.name, settings.tenant_id, self.credentials, settings.connections_url)
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, credentials=self.credentials,
                                 extra_headers=tenant.header, client_auth="basic")
        http = self.platform_http(base_url=target.base_url or DEFAULT_BASE_URL, classify=classify, auth=auth)
        self.client = XeroClient(http, tenant)
        self.mapping = target.mapping

    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        return super().deliver(event, from_legacy(doc), ctx)

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.contact_hash(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        found = find_contact(self.client, customer, self.mapping.customer_match)
        return ExternalRef(external_id=found["ContactID"]) if found else None  # its details unknown: updated

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return ExternalRef(external_id=self.client.put("Contacts", mapping.contact_payload(customer), key=request_id)["ContactID"])

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        self.client.write("POST", f"/Contacts/{ref.external_id}",
                          {"Contacts": [{**mapping.contact_payload(customer), "ContactID": ref.external_id}]}, key=request_id)
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        """``item_mode: per_part_number``: every part number has its Item (lines carry its code); otherwise
        lines carry the codes the mapping names, nothing to create."""
        if self.mapping.item_mode != "per_part_number" or not line.part_number:
            return None
        return ItemSpec(f"part:{line.part_number}", mapping.part_item_code(line.part_number), line)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        found = self.client.rows("Items", where=f"Code=={quote(spec.name)}")
        return ExternalRef(external_id=found[0]["ItemID"], status=spec.name) if found else None

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        item = self.client.put("Items", mapping.item_payload(spec.line, self.mapping), key=request_id, unitdp=UNITDP)
        return ExternalRef(external_id=item["ItemID"], status=spec.name)

    # -- references: the framework's, but a credit note is numbered ``LW-CN-<refund id>`` --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):  # an allocation is found on its note
            return f"{mapping.CREDIT_NOTE_PREFIX}{key}"
        return super().reference(kind, event, key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):  # one shop payment may be split: its parts, as one
            parts = _live(self.client.rows("Payments", where=f"Reference=={quote(reference)}"))
            return [_payment_ref(parts)] if parts else []
        if kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and references.is_increase(reference)):
            found = _live(self.client.rows("Invoices", InvoiceNumbers=reference, unitdp=UNITDP))
            return [_ref(i, "InvoiceID") for i in found if i.get("Type") == "ACCREC"]
        notes = _live(self.client.rows("CreditNotes", where=f"CreditNoteNumber=={quote(reference)}"))
        if kind is DocKind.CREDIT_APPLICATION:
            return [ExternalRef(external_id=f"{c['CreditNoteID']}/{a['AllocationID']}", amount=a.get("Amount"))
                    for c in notes for a in c.get("Allocations") or []]
        return [_ref(c, "CreditNoteID") for c in notes]

    # -- the invoice --
    def _invoice_payload(self, event: InvoiceEvent, posting: Posting) -> dict[str, Any]:
        payload = mapping.invoice_payload(event, posting.customer_id, self.mapping)
        return posting.dated(payload, "Date", due_field="DueDate")  # re-dated: kept there on every edit

    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        return _remote(self.client.put("Invoices", self._invoice_payload(event, posting), key=posting.request_id,
                                       unitdp=UNITDP))

    def create_invoices(self, batch: list[tuple[InvoiceEvent, Posting]]) -> list[RemoteInvoice | DeliveryError]:
        """One ``PUT /Invoices?summarizeErrors=false``: each item answers on its own (``HasErrors`` +
        ``ValidationErrors``), so one bad invoice fails alone."""
        key = hashlib.sha256(":".join(p.request_id for _, p in batch).encode()).hexdigest()[:32]
        answer = self.client.write("PUT", "/Invoices", {"Invoices": [self._invoice_payload(e, p) for e, p in batch]},
                                   key=key, unitdp=UNITDP, summarizeErrors="false")
        items = answer.get("Invoices") or []
        return [error_for_messages(validation_messages(item) or ["no answer"], status=400, detail=item)
                if item.get("HasErrors") or item.get("ValidationErrors") or "InvoiceID" not in item else _remote(item)
                for item in items + [{}] * (len(batch) - len(items))]

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = {"Invoices": [{**self._invoice_payload(event, posting), "InvoiceID": current.external_id}]}
        answer = self.client.write("POST", f"/Invoices/{current.external_id}", body, key=posting.request_id,
                                   unitdp=UNITDP)
        return _remote(answer["Invoices"][0])

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        body = {"Invoices": [{"InvoiceID": current.external_id, "Status": "VOIDED"}]}
        try:
            answer = unless_gone(lambda: self.client.write("POST", f"/Invoices/{current.external_id}", body, key=request_id))
            return _remote(answer["Invoices"][0]) if answer is not None else None
        except PermanentError:
            held = self.read_invoice(current.external_id)
            if held is not None and held.status == "void":  # voided already (an earlier attempt)
                return held
            raise

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.document("Invoices", external_id)
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        """One Xero payment on the invoice, referenced ``LW<id>``. When Xero refuses it as more than the
        invoice's AmountDue, it is split across the invoice and its adjustments and refund reversals
        (``lock_dates.payment_parts``), every part referenced ``LW<id>``, in one request."""
        day = (posting.txn_date or payment.received_at.date()).isoformat()
        body = {**mapping.payment_payload(payment, invoice_id, self.mapping), "Date": day}
        try:
            return _payment_ref(self.client.write("PUT", "/Payments", {"Payments": [body]}, key=posting.request_id)["Payments"])
        except PermanentError as exc:
            if "exceeds the amount outstanding" not in exc.reason:
                raise
            parts = lock_dates.payment_parts(self.client, event.number, invoice_id, body, payment.amount)
            if not parts:
                raise  # more than everything due, or nothing else to pay: Xero's own refusal stands
        answer = self.client.write("PUT", "/Payments", {"Payments": parts}, key=posting.request_id + ":split")
        return _payment_ref(answer["Payments"])

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        for part in ref.external_id.split():
            unless_gone(lambda: self.client.write("POST", f"/Payments/{part}", {"Status": "DELETED"},
                                                  key=f"{request_id}:{part}"),
                        lambda exc: exc.status == 404 or "already been deleted" in exc.reason)

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = posting.dated(mapping.credit_note_payload(refund, event, posting.customer_id, self.mapping), "Date")
        return _ref(self.client.put("CreditNotes", body, key=posting.request_id, unitdp=UNITDP), "CreditNoteID")

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: a payment on the credit note (ARCREDITPAYMENT) from the refunded payment's
        account, so the credit note is left with nothing to allocate."""
        body = mapping.credit_refund_payload(event, refund, credit.external_id, amount, reference, self.mapping)
        answer = self.client.write("PUT", "/Payments", {"Payments": [posting.dated(body, "Date")]}, key=posting.request_id)
        return _payment_ref(answer["Payments"])

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self.delete_payment(settlement, request_id)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        day = max(date.today(), date.fromisoformat(credit.token[:10]) if credit.token else date.today())
        body = mapping.allocation_payload(invoice_id, amount, day.isoformat())
        answer = self.client.write("PUT", f"/CreditNotes/{credit.external_id}/Allocations", body, key=posting.request_id)
        return ExternalRef(external_id=f"{credit.external_id}/{answer['Allocations'][0]['AllocationID']}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        credit_id, _, allocation_ids = application.external_id.partition("/")
        try:
            for allocation_id in allocation_ids.split():  # one (several for a pre-engine document's)
                self.client.write("DELETE", f"/CreditNotes/{credit_id}/Allocations/{allocation_id}", None,
                                  key=f"{request_id}:{allocation_id}")
        except ClosedPeriodError as exc:
            # Dated on or before the lock date: Xero keeps it where it is, and so do the books. A removed
            # refund's locked credit note is then reversed (``void_credit_note``); a payment needing the room
            # goes to what else is due or is refused by Xero with its own message.
            log.warning("xero_locked_allocation_kept", target=self.target.name, reason=exc.reason[:200])
        except PermanentError as exc:
            if exc.status != 404:
                raise

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        """Void the credit note of a refund no longer wanted. When Xero refuses (dated on or before the lock
        date) the note stays and is reversed by an invoice it pays (``lock_dates.reverse_kept_credit_note``)."""
        body = {"CreditNotes": [{"CreditNoteID": credit.external_id, "Status": "VOIDED"}]}
        try:
            self.client.write("POST", f"/CreditNotes/{credit.external_id}", body, key=posting.request_id)
            return
        except ClosedPeriodError as exc:
            log.warning("xero_locked_credit_note_reversed", target=self.target.name, invoice_id=event.invoice_id,
                        reason=exc.reason[:200])
        except PermanentError as exc:
            if exc.status == 404 or "not of valid status" in exc.reason:
                return
            raise
        lock_dates.reverse_kept_credit_note(self.client, self.mapping, event, credit.external_id, posting,
                                            lambda number: self.find(DocKind.INVOICE, number),
                                            lambda: adjustments.first_open_day(self.books_closed_through()))

    # -- closed periods: Xero's period lock date and end-of-year lock date --
    def books_closed_through(self) -> date | None:
        organisation = (self.client.get("/Organisation").get("Organisations") or [{}])[0]
        locks = [jsonmoney.day(organisation.get(k)) for k in ("PeriodLockDate", "EndOfYearLockDate")]
        return max((d for d in locks if d is not None), default=None)

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        """The difference per account and tax rate between what Xero holds (the original as read now plus
        every adjustment posted) and the shop's version (nothing, when voided), as an ACCREC invoice
        (increase) or an ACCRECCREDIT credit note (decrease) referencing the original."""
        (_, original), *posted = [(sign, self.client.document(COLLECTION[kind], external_id) or {}) for sign, kind,
                                  external_id in adjustments.held_documents(adjustment.original_id, posting.adjustments)]
        live = [(1, original)] if original.get("Status") not in GONE else []  # a voided original holds nothing
        held = adjustments.combine(*(mapping.document_groups(document, sign) for sign, document in live + posted))
        wanted = {} if event.status.value in ("void", "deleted") else mapping.event_groups(event, self.mapping)
        lines = adjustments.signed(adjustments.difference(held, wanted), adjustment.kind)
        body = mapping.adjustment_payload(event, adjustment.kind, adjustment.sequence, posting.customer_id, lines,
                                          posting.txn_date or date.today(), self.mapping, adjustment.reason)
        collection = COLLECTION[adjustment.kind]
        return _ref(self.client.put(collection, body, key=posting.request_id, unitdp=UNITDP), ID_FIELDS[collection])



def _ref(document: dict[str, Any], id_field: str) -> ExternalRef:
    # The token carries the document's date: an allocation is never dated before its credit note.
    return ExternalRef(external_id=document[id_field], amount=document.get("Total"),
                       token=str(jsonmoney.day(document.get("DateString") or document.get("Date")) or "") or None)


def _live(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d.get("Status") not in GONE]


def _payment_ref(parts: list[dict[str, Any]]) -> ExternalRef:
    """A shop payment posted as one or more Xero payments: their ids, space separated, and their sum."""
    return ExternalRef(external_id=" ".join(p["PaymentID"] for p in parts),
                       amount=sum((Decimal(str(p.get("Amount") or 0)) for p in parts), ZERO))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    status = {"AUTHORISED": "issued", "PAID": "issued", "SUBMITTED": "issued", "DRAFT": "draft",
              "VOIDED": "void", "DELETED": "deleted"}.get(str(invoice.get("Status")), invoice.get("Status"))
    return RemoteInvoice(external_id=invoice["InvoiceID"], number=invoice.get("InvoiceNumber"),
                         token=invoice.get("UpdatedDateUTC"), status=status, total=invoice.get("Total"),
                         tax_total=invoice.get("TotalTax"), balance=invoice.get("AmountDue"), raw=invoice)
