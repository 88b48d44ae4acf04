"""The Wave connector (public GraphQL API): platform operations for the delivery engine.

Customers (ours marked in ``internalNotes``, then the target's match rules), one product per line kind or part
number (every Wave line names a product), invoices (``invoiceCreate`` as SAVED; update = ``invoicePatch`` with
the whole item list, no concurrency token so the last write wins; a void = ``invoiceDelete`` — Wave has no
void — after the engine has reversed what is on it), payments recorded manually on their invoice
(``invoicePaymentCreateManual``; Wave publishes no way to delete one, so a removal is a reversing payment),
refunds as negative invoices (Wave has no credit note) whose credit is applied to the invoice by a pair of
payments through the customer credit account. Invoices carry the shop's currency, payments the rate Wave holds on
their invoice (currency.py). Wave has no lock date in its API: no closed periods. Every write
names ``businessId``; the lifecycle, look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from connectors.wave import mapping, operations as ops
from connectors.wave.client import WaveClient, classify
from connectors.wave.currency import WaveCurrencies
from connectors.wave.settings import WaveSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund

DEFAULT_URL = "https://gql.waveapps.com/graphql/public"


class WaveConnector(EngineConnector):
    platform = "wave"
    settings_model = WaveSettings
    # void = delete (Wave has no void); payments are reversed, not deleted; refunds are negative invoices
    # applied by payments through the customer credit account, deleted when the shop takes the refund back (or
    # voids the invoice); Wave exposes no closing date.
    capabilities = Capabilities(negative_totals=True, void="delete", delete_payments=False, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=False, batch_create=0,
                                void_credit_notes=True, refund_settlement=True, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: WaveSettings = self.settings
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="body",
                                 credentials=runtime.credentials(target.name))
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=target.base_url or DEFAULT_URL, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = WaveClient(self.http, settings, target.base_url or DEFAULT_URL)
        self.mapping = target.mapping
        self.currencies = WaveCurrencies(self.client)

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours, look_alike = mapping.customer_marker(customer), None
        for found in self.client.pages(ops.CUSTOMERS, "customers"):
            notes = str(found.get("internalNotes") or "")
            if notes == ours:
                return ExternalRef(external_id=str(found["id"]))
            # Never another shop customer's record: ours carry the shop's id in their notes.
            if look_alike is None and not notes.startswith("LWC") and any(
                    (key == "name" and found.get("name") == customer.name)
                    or (key == "email" and customer.email and found.get("email") == customer.email)
                    for key in self.mapping.customer_match):
                look_alike = ExternalRef(external_id=str(found["id"]))
        return look_alike

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        fields = {"businessId": self.client.business()} | mapping.customer_input(customer)
        return _ref(self.client.mutate("customerCreate", ops.CUSTOMER_CREATE, fields, "customer"))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        fields = {"id": ref.external_id} | mapping.customer_input(customer)
        return _ref(self.client.mutate("customerPatch", ops.CUSTOMER_PATCH, fields, "customer"))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        key, name = mapping.product_key(line, self.mapping)
        return ItemSpec(key=key, name=name, line=line, external_id=self.mapping.items.get(line.kind))

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        return next((ExternalRef(external_id=str(p["id"])) for p in self.client.pages(ops.PRODUCTS, "products")
                     if p.get("name") == spec.name and not p.get("isArchived")), None)

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        kind = spec.line.kind if spec.line else LineKind.PART
        fields = {"businessId": self.client.business()} | mapping.product_input(spec.name, kind, self.mapping)
        return _ref(self.client.mutate("productCreate", ops.PRODUCT_CREATE, fields, "product"))

    # -- references and look-ups --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(event, key)
        if kind is DocKind.CREDIT_NOTE:
            return mapping.credit_note_number(event, key)
        if kind is DocKind.CREDIT_APPLICATION:
            return mapping.application_reference(event, key)
        if kind is DocKind.REFUND_PAYMENT:
            return mapping.settlement_reference(event, key)
        raise PermanentError("wave: no closed periods, so no adjustments")

    def _invoices(self, number: str) -> list[dict[str, Any]]:
        """Live invoices numbered exactly ``number`` (Wave's filter matches a part of the number)."""
        return [i for i in self.client.pages(ops.INVOICES, "invoices", number=number) if i["invoiceNumber"] == number]

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.INVOICE, DocKind.CREDIT_NOTE):
            return [_ref(i, amount=abs(Decimal(str(i["total"]["value"])))) for i in self._invoices(reference)]
        payments = [_payment_ref(i, p) for i in self._invoices(mapping.invoice_number_of(reference))
                    for p in _live_payments(i) if p.get("memo") == reference]
        if kind is DocKind.REFUND_PAYMENT:  # money out on the negative invoice: its amount is negative there
            return [ref.model_copy(update={"amount": -(ref.amount or Decimal("0"))}) for ref in payments]
        if kind is DocKind.PAYMENT or not payments:
            return payments
        # A credit application: its half on the negative invoice, if it was made (``finish`` makes it if not).
        credit_notes = self._invoices(mapping.credit_note_number_of(reference))
        other = next((_payment_ref(i, p).external_id for i in credit_notes for p in _live_payments(i)
                      if p.get("memo") == reference), f"{credit_notes[0]['id']}/" if credit_notes else "/")
        return [ref.model_copy(update={"external_id": f"{ref.external_id}+{other}"}) for ref in payments[:1]]

    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A credit application cut short between its two payments: the negative invoice's half is made now."""
        if kind is not DocKind.CREDIT_APPLICATION or not ref.external_id.endswith("/"):
            return ref
        (invoice_id, payment_id), (credit_id, _) = (part.split("/") for part in ref.external_id.split("+"))
        first = next((p for p in _live_payments(self.client.invoice(invoice_id) or {}) if p["id"] == payment_id), None)
        if first is None or not credit_id:
            raise PermanentError(f"wave: credit application {ref.external_id} cannot be completed: a half is gone")
        second = self._pay(credit_id, -Decimal(str(first["amount"])), first["memo"], date.today())
        return ref.model_copy(update={"external_id": f"{invoice_id}/{payment_id}+{credit_id}/{second['id']}"})

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        fields = mapping.invoice_create_input(event, self.client.business(), posting.customer_id, posting.item_ids,
                                              self.mapping)
        return _remote(self.currencies.held(self.client.mutate("invoiceCreate", ops.INVOICE_CREATE, fields, "invoice")))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        fields = {"id": current.external_id} | mapping.invoice_fields(event, posting.customer_id, posting.item_ids,
                                                                      self.mapping)
        return _remote(self.currencies.held(self.client.mutate("invoicePatch", ops.INVOICE_PATCH, fields, "invoice")))

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        """Wave has no void: the invoice is deleted (the engine reversed its payments and credits first)."""
        held = self.read_invoice(current.external_id)
        if held is None:
            return None
        self.client.mutate("invoiceDelete", ops.INVOICE_DELETE, {"invoiceId": current.external_id})
        return held.model_copy(update={"status": "deleted", "balance": Decimal("0")})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.invoice(external_id)
        return _remote(self.currencies.held(found)) if found else None

    # -- money --
    def _pay(self, invoice_id: str, amount: Decimal, memo: str, day: date, account: str | None = None,
             method: str = "OTHER") -> dict[str, Any]:
        fields = mapping.payment_input(invoice_id, account or self.settings.customer_credit_account_id, amount, day,
                                       method, memo, self.currencies.rate(invoice_id))
        return self.client.mutate("invoicePaymentCreateManual", ops.PAYMENT_CREATE, fields, "invoicePayment")

    def _reverse(self, part: str) -> None:
        """A reversing payment (Wave publishes no payment delete); nothing when already reversed or gone."""
        invoice_id, payment_id = part.split("/")
        invoice = self.currencies.held(self.client.invoice(invoice_id) or {}) if payment_id else None
        paid = next((p for p in _live_payments(invoice or {}) if p["id"] == payment_id), None)
        if paid is not None:
            self._pay(invoice_id, -Decimal(str(paid["amount"])), mapping.REVERSAL + payment_id, date.today(),
                      paid["paymentAccount"]["id"])

    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        fields = mapping.received_payment_input(event, payment, invoice_id, self.mapping,
                                                self.currencies.rate(invoice_id))
        paid = self.client.mutate("invoicePaymentCreateManual", ops.PAYMENT_CREATE, fields, "invoicePayment")
        return ExternalRef(external_id=f"{invoice_id}/{paid['id']}", amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._reverse(ref.external_id)

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        product = posting.item_ids.get(refund.line_id or -1) or posting.item(ItemSpec(key="kind:part", name="Parts"))
        fields = mapping.credit_note_input(event, refund, self.client.business(), posting.customer_id, product,
                                           self.mapping)
        created = self.currencies.held(self.client.mutate("invoiceCreate", ops.INVOICE_CREATE, fields, "invoice"))
        total = created.get("total")
        return _ref(created, amount=abs(Decimal(str(total["value"]))) if total else refund.amount + refund.tax_amount)

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        """A refund taken back: its negative invoice is deleted (the engine released its application first)."""
        self.void_invoice(credit, posting.request_id)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        """The invoice is paid ``amount`` from the customer credit account and the negative invoice pays the
        same back into it: the account nets to zero and both balances move."""
        first = self._pay(invoice_id, amount, reference, date.today())
        second = self._pay(credit.external_id, -amount, reference, date.today())
        return ExternalRef(external_id=f"{invoice_id}/{first['id']}+{credit.external_id}/{second['id']}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        for part in application.external_id.split("+"):
            self._reverse(part)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: a negative payment on the refund's negative invoice out of the account the
        refunded payment's method maps to — Wave's "Refund Sent for an Invoice in Wave" (money out, recorded
        against the invoice), which leaves the negative invoice nothing due."""
        account = references.refund_account(event, refund, self.mapping, "Wave")
        method = mapping.PAYMENT_METHODS.get(references.refund_method(event, refund) or "", "OTHER")
        paid = self._pay(credit.external_id, -amount, reference, refund.created_at.date(), account, method)
        return ExternalRef(external_id=f"{credit.external_id}/{paid['id']}", amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._reverse(settlement.external_id)

    def home_currency(self) -> str | None:
        return self.mapping.home_currency or self.currencies.home()

    # -- closed periods: Wave's API exposes no lock date --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("wave: no closed periods, so no adjustments")


def _live_payments(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    """Payments neither reversed nor reversals themselves."""
    payments = invoice.get("payments") or []
    reversed_ids = {str(p.get("memo") or "").removeprefix(mapping.REVERSAL) for p in payments
                    if str(p.get("memo") or "").startswith(mapping.REVERSAL)}
    return [p for p in payments if p["id"] not in reversed_ids and not str(p.get("memo") or "").startswith(mapping.REVERSAL)]


def _payment_ref(invoice: dict[str, Any], paid: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=f"{invoice['id']}/{paid['id']}", amount=Decimal(str(paid["amount"])))


def _ref(row: dict[str, Any], amount: Decimal | None = None) -> ExternalRef:
    return ExternalRef(external_id=str(row["id"]), token=row.get("modifiedAt"), amount=amount)


def _money(invoice: dict[str, Any], name: str) -> Decimal | None:
    value = (invoice.get(name) or {}).get("value")
    return Decimal(str(value)) if value is not None else None


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("invoiceNumber"),
                         token=invoice.get("modifiedAt"), status="issued" if invoice.get("status") != "DRAFT" else "draft",
                         total=_money(invoice, "total"), tax_total=_money(invoice, "taxTotal"),
                         balance=_money(invoice, "amountDue"), raw=invoice)
