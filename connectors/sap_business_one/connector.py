"""The SAP Business One Service Layer connector: platform operations for the delivery engine.

A session from ``POST /b1s/v1/Login`` (``SessionLoginAuth`` with ``sap_b1_session``: ``B1SESSION`` and
``ROUTEID`` cookies on every request, a new login before the 30-minute idle timeout and once on a 401), business
partners (ours keyed ``CardCode`` = ``LWC<shop id>``; else the target's match rules), A/R invoices (service
type, lines on G/L accounts). Business One has no idempotency key: every document carries our reference
(``NumAtCard`` for invoices and credit memos, ``Remarks`` for incoming payments) and look-ups filter on it. A
posted document is never deleted and its amounts cannot change: an edit cancels the invoice (``Cancel``: a
cancellation document) and posts a replacement with the same ``NumAtCard`` (``update_replaces``); a void is the
cancel. Payments are incoming payments applied to the invoice (``PaymentInvoices``), removed by their
``Cancel``; refunds are A/R credit memos copied from the invoice's line (``BaseType`` 13), which reconciles them
with it (an invoice cannot be cancelled while they are: a void or an edit cancels them first, ``CreditNotes(n)/Cancel``,
and an edit copies them again from the replacement; a change of the invoice's payments cancels them too and copies
them again after the payments, so a payment never finds its invoice taken by a memo). A refund the shop paid back is
a credit memo of its own (not copied from the invoice, which it must not reduce) closed by an outgoing payment to the
customer (``VendorPayments``, ``DocType`` rCustomer, ``PaymentInvoices`` ``it_CredItnote``), cancelled when the
refund is taken back (and before its memo is). The lifecycle, look-ups before re-creating, checkpoints and
preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors.auth import SessionLoginAuth, sap_b1_session
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, pick
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from connectors.sap_business_one import mapping
from connectors.sap_business_one.client import SapBusinessOneClient, classify, quoted
from connectors.sap_business_one.settings import SapBusinessOneSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

LIVE = "CancelStatus eq 'csNo'"  # neither cancelled nor a cancellation document


class SapBusinessOneConnector(EngineConnector):
    platform = "sap-business-one"
    settings_model = SapBusinessOneSettings
    # Payments are cancelled (delete_payment); a credit memo copied from its invoice is reconciled with it on
    # creation, so there is no separate application write, and the invoice cannot be cancelled while it is there:
    # a void or an edit cancels the refunds' credit memos first (void_credit_notes, update_voids_credit_notes) and
    # an edit copies them again from the replacement; posting periods are not modelled (closed_periods off).
    # A copied memo takes what is open on the invoice as it is made, and a payment is applied only up to what is
    # open: before the invoice's payments change the engine cancels its refunds' memos and copies them again after
    # (credit_settled_at_creation), so the shop's payments come first whatever the order they arrive in and the
    # memo keeps only what they leave open (the rest is the customer's open credit, as elsewhere). A refund paid
    # back is a memo of its own closed by an outgoing payment (refund_settlement).
    capabilities = Capabilities(multi_currency=True, void="void", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=False, closed_periods=False,
                                update_detaches_money=True, update_replaces=True, void_credit_notes=True,
                                update_voids_credit_notes=True, credit_settled_at_creation=True,
                                refund_settlement=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: SapBusinessOneSettings = self.settings
        if not target.base_url:
            raise PermanentError("sap-business-one needs base_url: https://<server>:50000/b1s/v1")
        base_url = target.base_url.rstrip("/")
        auth = SessionLoginAuth(target=target.name, credentials=runtime.credentials(target.name),
                                login=sap_b1_session(base_url))
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=base_url + "/", classify=classify, timeout_s=target.request_timeout_s)
        self.auth = auth
        self.client = SapBusinessOneClient(self.http, settings.page_size)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.card_code(customer)  # ours first: a retry after a crash finds what it made
        fields = {"email": ("EmailAddress", customer.email), "phone": ("Phone1", customer.phone),
                  "name": ("CardName", customer.name)}
        searches = [("CardCode", ours)] + [fields[key] for key in self.mapping.customer_match if fields[key][1]]
        for field, value in searches:
            for row in self.client.list("BusinessPartners", f"{field} eq {quoted(value)} and CardType eq 'cCustomer'"):
                code = str(row.get("CardCode") or "")
                # Never another shop customer's record: ours carry the shop's id in their CardCode.
                if code == ours or (field != "CardCode" and not code.startswith("LWC")):
                    return ExternalRef(external_id=code)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return ExternalRef(external_id=str(self.client.write("POST", "BusinessPartners",
                                                             mapping.customer_payload(customer))["CardCode"]))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        path = f"BusinessPartners({quoted(ref.external_id)})"
        if self.client.get(path) is None:
            return None
        body = {k: v for k, v in mapping.customer_payload(customer).items() if k not in ("CardCode", "CardType")}
        self.client.write("PATCH", path, body)  # 204: the key stays
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # service-type documents: lines post on G/L accounts

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("sap-business-one posts service lines on G/L accounts, never on items")

    create_item = find_item

    # -- references and look-ups --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number[:100]
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(event, key)
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return mapping.credit_note_reference(key)
        if kind is DocKind.REFUND_PAYMENT:
            return mapping.refund_payment_reference(event, key)
        raise PermanentError("sap-business-one posts no closed-period adjustments")

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):
            resource = "IncomingPayments" if kind is DocKind.PAYMENT else "VendorPayments"
            return [_ref(p) for p in self.client.list(resource, f"Remarks eq {quoted(reference)} and Cancelled eq 'tNO'")]
        if kind not in (DocKind.INVOICE, DocKind.CREDIT_NOTE):
            return []
        resource = "Invoices" if kind is DocKind.INVOICE else "CreditNotes"
        return [_ref(d) for d in self.client.list(resource, f"NumAtCard eq {quoted(reference)} and {LIVE}")]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self.client.write("POST", "Invoices", body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """Cancel the invoice and post its replacement; an earlier attempt's replacement (the same number and
        amount) is taken instead of a second one."""
        self._cancel(current)
        found = [r for r in self.find(DocKind.INVOICE, self.reference(DocKind.INVOICE, event))
                 if r.external_id != current.external_id]
        replacement = pick(found, event.computed.total, exact=True)
        if replacement is not None:
            return self.read_invoice(replacement.external_id) or RemoteInvoice(external_id=replacement.external_id)
        return self.create_invoice(event, posting)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        self._cancel(current)
        return self.read_invoice(current.external_id)

    def _cancel(self, current: ExternalRef) -> None:
        held = self.client.get(f"Invoices({current.external_id})")
        if held is None or held.get("CancelStatus") != "csNo":
            return
        try:
            self.client.write("POST", f"Invoices({current.external_id})/Cancel")
        except PermanentError as refused:
            memos = [str(m["DocNum"]) for m in self.client.list("CreditNotes", LIVE)
                     if any(ln.get("BaseType") == mapping.INVOICE_OBJECT and str(ln.get("BaseEntry")) ==
                            current.external_id for ln in m.get("DocumentLines") or [])]
            if not memos:
                raise
            raise PermanentError(
                f"SAP Business One cannot cancel A/R invoice {held.get('DocNum')}: A/R credit memo(s) "
                f"{', '.join(memos)} (the shop's refunds) were copied from it. Cancel them in Business One, then "
                "replay this dead letter.", status=refused.status, platform_code=refused.platform_code,
                detail=refused.detail) from refused

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"Invoices({external_id})")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        held = self.client.get(f"Invoices({invoice_id})")
        still_open = held["DocTotal"] - held["PaidToDate"] if held and "DocTotal" in held else None
        body = mapping.payment_payload(event, payment, invoice_id, posting.customer_id, self.settings.transfer_account,
                                       still_open, posting.txn_date)
        return _ref(self.client.write("POST", "IncomingPayments", body))

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._cancel_payment("IncomingPayments", ref.external_id)

    def _cancel_payment(self, resource: str, doc_entry: str) -> None:
        held = self.client.get(f"{resource}({doc_entry})")
        if held is not None and held.get("Cancelled") != "tYES":  # already cancelled: nothing to do
            self.client.write("POST", f"{resource}({doc_entry})/Cancel")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, posting.invoice_id, self.mapping,
                                           posting.txn_date)
        return _ref(self.client.write("POST", "CreditNotes", body))

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        """Cancel the A/R credit memo (a cancellation document; its invoice's reconciled amount opens again);
        nothing when it is already cancelled."""
        held = self.client.get(f"CreditNotes({credit.external_id})")
        if held is not None and held.get("CancelStatus") == "csNo":
            self.client.write("POST", f"CreditNotes({credit.external_id})/Cancel")

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: an outgoing payment to the customer from the account the shop's payments are
        received on, paying the credit memo, which is left with nothing open."""
        body = mapping.refund_payment_payload(event, refund, credit.external_id, amount, reference, posting.customer_id,
                                              self.settings.transfer_account, posting.txn_date)
        return _ref(self.client.write("POST", "VendorPayments", body))

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._cancel_payment("VendorPayments", settlement.external_id)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        raise PermanentError("sap-business-one reconciles a credit memo with the invoice it is copied from")

    release_credit = apply_credit

    # -- closed periods (posting periods not modelled: capability off) --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("sap-business-one posts no closed-period adjustments")


def _status(row: dict[str, Any]) -> str | None:
    status = row.get("CancelStatus", row.get("Cancelled"))
    return None if status is None else "void" if status in ("csYes", "csCancellation", "tYES") else "issued"


def _ref(row: dict[str, Any]) -> ExternalRef:
    amount = row.get("DocTotal", row.get("TransferSum"))
    return ExternalRef(external_id=str(row["DocEntry"]), amount=Decimal(str(amount)) if amount is not None else None,
                       status=_status(row))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    total = invoice.get("DocTotal")
    balance = total - invoice.get("PaidToDate", 0) if isinstance(total, (int, Decimal)) else None
    stamp = f"{invoice['UpdateDate']}T{invoice.get('UpdateTime')}" if invoice.get("UpdateDate") else None
    return RemoteInvoice(external_id=str(invoice["DocEntry"]), number=invoice.get("NumAtCard"), token=stamp,
                         status=_status(invoice), total=total, tax_total=invoice.get("VatSum"),
                         balance=balance, raw=invoice)
