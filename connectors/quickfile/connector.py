"""The QuickFile (JSON API v1.2) connector: platform operations for the delivery engine.

Clients (found by our ``AccountReference`` ``LWC<id>``, then the target's match rules), invoices
(``Invoice_Create``; supplying ``InvoiceID`` updates that invoice, its lines replaced — QuickFile has no
concurrency token, so the last write wins; a void is ``Invoice_Delete``), client payments attributed to the
invoice (``Payment_Create`` PaymentType PAYMENT, removed by ``Payment_Delete``), refunds as credit notes
(``Invoice_Create`` with negative lines and a ``CreditNotes`` block: VOID against what is still owed, HOLD for
an amount already paid, which QuickFile applies to their parent invoice as it creates them; an independent REFUND
note, credit on the client's account, for refunds beyond both; a refund the shop paid back is posted again as REFUND
notes with ``PaidFromAccount``, money out of the refunded payment's bank). Every request is
signed with a fresh ``SubmissionNumber``: a retry is made safe by the engine's look-ups (by the shop's number in
``InvoiceDescription``, our reference in a payment's ``Notes``), never by resending. The lifecycle, look-ups
before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

from connectors import references
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, pick, recording_on
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from connectors.quickfile import mapping
from connectors.quickfile.client import QuickFileClient
from connectors.quickfile.errors import classify
from connectors.quickfile.refunds import ZERO, RefundCredits
from connectors.quickfile.settings import QuickFileSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.quickfile.co.uk"
log = structlog.get_logger(__name__)


class QuickFileConnector(RefundCredits, EngineConnector):
    platform = "quickfile"
    settings_model = QuickFileSettings
    # Invoices are deleted (Invoice_Delete); payments deleted (Payment_Delete) and attributed to the invoice at
    # creation; a credit note names its parent invoice when it is created (no separate application); QuickFile's
    # API exposes no lock date; no batch create; a signed static key, nothing that expires.
    capabilities = Capabilities(multi_currency=True, void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=False, closed_periods=False, batch_create=0,
                                expiring_credentials=False, credit_settled_at_creation=True, refund_settlement=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: QuickFileSettings = self.settings
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, per_day=settings.requests_per_day,
                                  concurrency=settings.concurrency)
        # No auth object: the signature lives in the body's Header (client.signed_header), fresh per request.
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter,
                                 base_url=target.base_url or DEFAULT_BASE_URL, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = QuickFileClient(self.http, runtime.credentials(target.name), settings)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.client_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.client_reference(customer)  # ours first: a retry after a crash finds what it made
        for client in self.client.search("Client_Search", AccountReference=ours):
            if client.get("AccountReference") == ours:
                return ExternalRef(external_id=str(client["ClientID"]))
        for key in self.mapping.customer_match:  # Client_Search filters by company name, email, telephone
            value = {"name": customer.name, "email": customer.email, "phone": customer.phone}[key]
            field = {"name": "CompanyName", "email": "Email", "phone": "Telephone"}[key]
            for client in self.client.search("Client_Search", **{field: value}) if value else []:
                # Never another shop customer's record (ours carry LWC<id>); names are partial matches there.
                if not str(client.get("AccountReference") or "").startswith("LWC") and client.get(field) == value:
                    return ExternalRef(external_id=str(client["ClientID"]))
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        made = self.client.call("Client_Create", mapping.client_payload(customer), write=True)
        return ExternalRef(external_id=str(made["ClientID"]))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        self.client.call("Client_Update", mapping.client_payload(customer, ref.external_id), write=True)
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # QuickFile lines post straight on nominal codes

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("quickfile posts lines on nominal codes, never on items")

    create_item = find_item

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return mapping.description(event.number)
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind is DocKind.CREDIT_NOTE:
            return mapping.credit_note_reference(key)
        if kind is DocKind.REFUND_PAYMENT:  # found through its refund's credit note reference (find)
            return references.settlement_reference(key)
        raise PermanentError(f"quickfile has no {kind.value} documents")  # no applications, no adjustments

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.REFUND_PAYMENT:  # the paid-out parts of the refund's credit note, together
            out = self._paid_out(reference.removeprefix(references.SETTLEMENT_PREFIX))
            return [ExternalRef(external_id=",".join(str(i["InvoiceID"]) for i in out),
                                amount=sum((-Decimal(str(i["GrossAmount"])) for i in out), ZERO))] if out else []
        if kind is DocKind.PAYMENT:
            # Payments cannot be searched by their notes: every allocated payment is read (only after an
            # uncertain write).
            return [ExternalRef(external_id=str(p["PaymentID"]), amount=Decimal(str(p["Amount"])))
                    for p in self.client.search("Payment_Search", Type="ALLOCATED") if p.get("Notes") == reference]
        # QuickFile numbers its invoices itself: ours are told by InvoiceDescription, compared exactly.
        # Deleted invoices are not shown (ShowDeleted defaults to false).
        found = [ExternalRef(external_id=str(i["InvoiceID"]), amount=abs(Decimal(str(i["GrossAmount"]))))
                 for i in self.client.search("Invoice_Search", InvoiceType="INVOICE")
                 if i.get("InvoiceDescription") == reference]
        if kind is DocKind.CREDIT_NOTE and found:  # a refund's VOID and HOLD parts are together its credit note
            return [ExternalRef(external_id=",".join(r.external_id for r in found),
                                amount=sum((r.amount or ZERO for r in found), ZERO))]
        return found

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping)
        return _remote(self.client.call("Invoice_Create", body, write=True), event)

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, current.external_id)
        return _remote(self.client.call("Invoice_Create", body, write=True), event)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None:
            return None  # already deleted
        self.client.call("Invoice_Delete", mapping.delete_invoice_payload(current.external_id), write=True)
        return held.model_copy(update={"status": "deleted", "balance": Decimal("0")})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get("Invoice_Get", {"InvoiceID": external_id if "<" in external_id else int(external_id)})
        details = (found or {}).get("InvoiceDetails")
        if not details or details.get("Status") == "DELETED":
            return None
        return RemoteInvoice(external_id=str(details["InvoiceID"]), number=details.get("InvoiceDescription"),
                             status="issued", total=details.get("GrossAmount"), tax_total=details.get("VatAmount"),
                             balance=details.get("OutstandingAmount"), raw=details)

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.customer_id, event.currency, self.mapping,
                                       self.settings.pay_methods)
        made = self.client.call("Payment_Create", body, write=True)
        return ExternalRef(external_id=str(made["PaymentID"]), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        try:
            self.client.call("Payment_Delete", {"PaymentDetails": {"PaymentID": int(ref.external_id)}}, write=True)
        except PermanentError as exc:
            if "not found" not in exc.reason.lower():  # already gone: nothing to do
                raise

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        gross = refund.amount + refund.tax_amount
        # Posted again after the invoice's payments changed: money already paid back stays out (a fact at the
        # bank, removed only by unsettle_refund), so only the rest is posted (one search, paid-back refunds only).
        kept = self._paid_out(str(refund.id)) if refund.payment_id is not None else []
        out = sum((-Decimal(str(i["GrossAmount"])) for i in kept), ZERO)
        ids = [str(i["InvoiceID"]) for i in kept]
        if out < gross:
            rest_tax = refund.tax_amount - mapping.tax_share(refund.tax_amount, gross, out)
            ids += self._post_credit(event, refund, posting.customer_id, posting.invoice_id, gross - out - rest_tax,
                                     rest_tax, out)
        return ExternalRef(external_id=",".join(ids), amount=gross)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """A refund the shop paid back: QuickFile records money paid back only as a REFUND credit note with
        ``PaidFromAccount`` (the forum post: "Refund a paid amount from an existing fully/partially paid
        invoice"; Payment_Create knows PAYMENT and CREDIT only). So the parts the refund's credit note was posted
        as (VOID off what is owed, HOLD on the client's account, an independent REFUND) are deleted and the whole
        credit posted again as REFUND notes paid out of the bank the refunded payment's method maps to: against
        the invoice up to what was paid on it, alone for the rest. What the customer owes is unchanged (the money
        came back to them, not off their balance). Safe to repeat: a part already deleted is skipped, and what is
        paid out is the refund's whole credit, never what an earlier attempt left."""
        bank = self._refund_bank(event, refund)
        for part_id in filter(None, credit.external_id.split(",")):
            held = self.read_invoice(part_id)
            if held is not None and mapping.PAID_BACK not in str((held.raw or {}).get("Notes") or ""):
                self.client.call("Invoice_Delete", mapping.delete_invoice_payload(part_id), write=True)
        made = self._post_credit(event, refund, posting.customer_id, posting.invoice_id, refund.amount,
                                 refund.tax_amount, paid_from=bank)
        return ExternalRef(external_id=",".join(made), amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        """The money paid back taken back (the refund removed, or no longer paid back): its REFUND notes are
        deleted. A refund kept but no longer paid back has its credit posted again when the invoice's payments
        next change (the engine re-posts credit notes then) or by a resync (README, QuickFile)."""
        for part_id in filter(None, settlement.external_id.split(",")):
            if self.read_invoice(part_id) is not None:
                self.client.call("Invoice_Delete", mapping.delete_invoice_payload(part_id), write=True)

    def finish_for(self, event: InvoiceEvent, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A refund's credit note an earlier attempt made only part of (its first part posted, the answer lost
        before the next): post the rest. Reads only after an uncertain credit note write."""
        if kind is not DocKind.CREDIT_NOTE or ref.amount is None:
            return ref
        first = (self.client.get("Invoice_Get", {"InvoiceID": int(ref.external_id.split(",")[0])}) or {}
                 ).get("InvoiceDetails") or {}
        refund = next((r for r in event.refunds
                       if mapping.credit_note_reference(r.id) == first.get("InvoiceDescription")), None)
        if refund is None or ref.amount >= refund.amount + refund.tax_amount:
            return ref
        parent = pick(self.find(DocKind.INVOICE, mapping.description(event.number)), event.computed.total)
        if parent is None:
            raise PermanentError(f"quickfile: the invoice of refund {refund.id}'s partly posted credit note is gone")
        # The parts already posted hold the first share of the tax (mapping.credit_parts): the rest is left.
        rest_tax = refund.tax_amount - mapping.tax_share(refund.tax_amount, refund.amount + refund.tax_amount,
                                                         ref.amount)
        rest_net = refund.amount + refund.tax_amount - ref.amount - rest_tax
        made = self._post_credit(event, refund, str(first["ClientID"]), parent.external_id, rest_net, rest_tax,
                                 ref.amount)
        log.warning("quickfile_credit_note_completed", target=self.target.name, invoice_id=event.invoice_id,
                    version=event.version, refund_id=refund.id, parts=len(made))
        return ExternalRef(external_id=",".join([ref.external_id, *made]), amount=refund.amount + refund.tax_amount)

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        """Delete every part of the refund's credit note (capability credit_settled_at_creation: it is posted
        again, settled by what the invoice then holds). Safe to repeat: a part already gone is skipped."""
        for part in filter(None, credit.external_id.split(",")):
            held = self.read_invoice(part)
            # Money paid back is not deleted here: it is the refund's settlement, removed by unsettle_refund.
            if held is not None and mapping.PAID_BACK not in str((held.raw or {}).get("Notes") or ""):
                self.client.call("Invoice_Delete", mapping.delete_invoice_payload(part), write=True)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        raise PermanentError("quickfile applies a credit note to its parent invoice when it is created")

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        raise PermanentError("quickfile has no credit applications to release")

    # -- closed periods: QuickFile's API exposes no lock date (capability off) --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("quickfile: no closed-period adjustments (its API exposes no lock date)")

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        with recording_on(self.client) as sent:
            yield sent


def _remote(made: dict[str, Any], event: InvoiceEvent) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(made["InvoiceID"]), number=mapping.description(event.number),
                         token=made.get("SubmissionNumber"), status="issued", raw=made)
