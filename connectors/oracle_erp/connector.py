"""The Oracle Fusion Cloud Receivables connector: platform operations for the delivery engine.

Customer accounts (ours numbered ``LWC<shop id>``; else by name), invoices (``receivablesInvoices``: created
complete, with manual tax lines carrying the shop's tax), receipts (``standardReceipts``) applied to their
invoice, refunds as on-account credit memos (``receivablesCreditMemos``) applied to the invoice; a refund the shop
paid back is refunded out of its credit memo (``action/refundOnAccountCreditMemo``, after Oracle's On-Account Credit
Memo Refund service), taken back by the memo's unapplication. An invoice's
lines are fixed once created (Oracle lets only InvoiceStatus, PaymentTerms and TransactionDate change), so an
update replaces it (``update_replaces``): the old invoice is reversed by a credit memo (``RV<its id>``) applied
to it in full — or deleted while still incomplete — and a new invoice with the shop's number is created; a
void is the reversal. Receipts are reversed, never deleted. The lifecycle, look-ups before re-creating,
checkpoints and preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import BasicAuth, OAuth2ClientCredentialsAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, pick
from connectors.engine_state import DocKind
from connectors.oracle_erp import mapping
from connectors.oracle_erp.client import OracleClient, classify
from connectors.oracle_erp.settings import OracleErpSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

API_PATH = "/fscmRestApi/resources/11.13.18.05"
INVOICES, MEMOS, RECEIPTS, ACCOUNTS = "receivablesInvoices", "receivablesCreditMemos", "standardReceipts", \
    "customerAccounts"
INCOMPLETE, REVERSED = "Incomplete", "Reversed"
ZERO = Decimal("0")


class OracleErpConnector(EngineConnector):
    platform = "oracle-erp"
    settings_model = OracleErpSettings
    # Receipts are reversed (delete_payments False) and applied by the connector right after creation; credit
    # memos are on-account and applied separately (a paid-back refund's refunded out of it instead); accounting
    # periods are not read (closed_periods False).
    capabilities = Capabilities(multi_currency=True, negative_totals=True, void="void", delete_payments=False, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=False,
                                update_detaches_money=True, update_replaces=True, refund_settlement=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: OracleErpSettings = self.settings
        credentials = runtime.credentials(target.name)
        if settings.auth == "oauth":
            if not settings.token_url:
                raise PermanentError("oracle-erp: settings.token_url is required with auth: oauth")
            auth: Any = OAuth2ClientCredentialsAuth(target=target.name, token_url=settings.token_url,
                                                    scope=settings.scope, credentials=credentials)
        else:
            auth = BasicAuth(credentials=credentials)
        if not target.base_url:
            raise PermanentError("oracle-erp: base_url (https://<pod host>) is required")
        base = target.base_url.rstrip("/")
        base = base if base.endswith(API_PATH) else base + API_PATH
        self.client = OracleClient(self.platform_http(base_url=base + "/", classify=classify, auth=auth),
                                   settings.rest_framework_version, settings.page_size)
        self.mapping = target.mapping

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.account_number(customer)  # ours first: a retry after a crash finds what it made
        if found := self.client.list(ACCOUNTS, AccountNumber=ours):
            return _account(found[0])
        if "name" in self.mapping.customer_match:  # accounts hold no email or phone: matched by name only
            for row in self.client.list(ACCOUNTS, AccountName=customer.name):
                if not str(row.get("AccountNumber", "")).startswith("LWC"):  # never another shop customer's
                    return _account(row)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _account(self.client.write("POST", ACCOUNTS, mapping.customer_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        held = self.client.list(ACCOUNTS, AccountNumber=ref.external_id)
        if not held:
            return None
        body = {"AccountName": mapping.customer_payload(customer)["AccountName"]}  # the number stays
        return _account(self.client.write("PATCH", f"{ACCOUNTS}/{held[0]['CustomerAccountId']}", body))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # free-text lines; revenue accounts come from Oracle's AutoAccounting

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("oracle-erp posts free-text lines, never items")

    create_item = find_item

    # -- look-ups --
    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.PAYMENT:
            return [_receipt(r) for r in self.client.list(RECEIPTS, ReceiptNumber=reference)
                    if r.get("ReceiptStatus") != REVERSED]
        if kind is DocKind.REFUND_PAYMENT:
            return self._refunded(reference)
        if kind is DocKind.INVOICE:
            return [_ref(i) for i in self.client.list(INVOICES, TransactionNumber=reference)
                    if not self._reversed(str(i["CustomerTransactionId"]))]
        memos = self.client.list(MEMOS, TransactionNumber=reference)
        if kind is DocKind.CREDIT_NOTE:
            return [_ref(m) for m in memos]
        if kind is DocKind.CREDIT_APPLICATION:
            return [ExternalRef(external_id=str(m["CustomerTransactionId"]), amount=_dec(m.get("AppliedAmount")))
                    for m in memos if _dec(m.get("AppliedAmount"))]
        return []

    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.REFUND_PAYMENT:  # found on its credit memo: the memo's number
            return references.refund_reference(key)
        return super().reference(kind, event, key)

    def _refunded(self, memo_number: str) -> list[ExternalRef]:
        """The money paid back out of a refund's credit memo (its id, the amount refunded)."""
        return [ExternalRef(external_id=str(m["CustomerTransactionId"]), amount=_dec(m.get("RefundedAmount")))
                for m in self.client.list(MEMOS, TransactionNumber=memo_number) if _dec(m.get("RefundedAmount"))]

    def _reversed(self, invoice_id: str) -> bool:
        return any(_dec(m.get("AppliedAmount")) for m in self.client.list(
            MEMOS, TransactionNumber=mapping.reversal_number(invoice_id)))

    def finish_for(self, event: InvoiceEvent, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A receipt an earlier attempt created and never applied is applied now."""
        if kind is DocKind.PAYMENT and ref.status == "unapplied":
            invoice = pick(self.find(DocKind.INVOICE, event.number), event.computed.total)
            if invoice is not None:
                self._apply(RECEIPTS, ref.external_id, invoice.external_id, ref.amount or ZERO, "applyReceipt")
                return ref.model_copy(update={"status": "applied"})
        return ref

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.settings, self.mapping, posting.txn_date)
        return _remote(self.client.write("POST", INVOICES, body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """Withdraw the invoice and create its replacement; an earlier attempt's replacement (the same number
        and amount) is taken instead of a second one."""
        self._withdraw(current.external_id)
        found = [r for r in self.find(DocKind.INVOICE, event.number) if r.external_id != current.external_id]
        replacement = pick(found, event.computed.total, exact=True)
        if replacement is not None:
            return self.read_invoice(replacement.external_id) or RemoteInvoice(external_id=replacement.external_id)
        return self.create_invoice(event, posting)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        self._withdraw(current.external_id)
        return self.read_invoice(current.external_id) or RemoteInvoice(external_id=current.external_id,
                                                                       status="void")

    def _withdraw(self, invoice_id: str) -> None:
        """An incomplete invoice is deleted (Oracle allows it); a complete one is reversed by a credit memo
        applied to its whole balance (its lines cannot change)."""
        held = self.client.get(f"{INVOICES}/{invoice_id}")
        if held is None:
            return
        if held.get("InvoiceStatus") == INCOMPLETE:
            self.client.write("DELETE", f"{INVOICES}/{invoice_id}", etag=held.get("@etag"))
            return
        number = mapping.reversal_number(invoice_id)
        memos = self.client.list(MEMOS, TransactionNumber=number)
        if any(_dec(m.get("AppliedAmount")) for m in memos):
            return  # reversed already
        balance = _dec(held.get("InvoiceBalanceAmount"))
        total, tax = _dec(held.get("EnteredAmount")), _dec(held.get("TaxAmount"))
        if balance != total:
            raise PermanentError(
                f"Oracle invoice {held.get('TransactionNumber')} has {total - balance} applied to it that the "
                "shop no longer shows (applied outside Ledgerwire): unapply it in Receivables, then replay this "
                "dead letter, so the reversal credit memo can take the whole invoice off")
        if not memos:
            rate = next((t.get("TaxRateCode") for ln in held.get("receivablesInvoiceLines") or []
                         for t in ln.get("receivablesInvoiceLineTaxLines") or []), None)
            memos = [self.client.write("POST", MEMOS, mapping.reversal_payload(
                invoice_id, str(held.get("TransactionNumber")), str(held.get("BillToCustomerNumber")), total - tax,
                tax, str(held.get("InvoiceCurrencyCode")), self.settings, self.mapping, rate))]
        self._apply(MEMOS, str(memos[0]["CustomerTransactionId"]), invoice_id, total, "applyOnAccountCreditMemo")

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"{INVOICES}/{external_id}")
        if not found:
            return None
        reversed_ = self.client.recorder is None and self._reversed(external_id)
        return _remote(found, void=reversed_)

    # -- money --
    def _apply(self, resource: str, key: str, invoice_id: str, amount: Decimal, action: str) -> dict[str, Any]:
        return self.client.write("POST", f"{resource}/{key}/action/{action}",
                                 mapping.application_payload(invoice_id, amount, date.today()), action=True)

    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.receipt_payload(payment, posting.customer_id, event.currency, self.settings, self.mapping,
                                       posting.txn_date)
        receipt = _receipt(self.client.write("POST", RECEIPTS, body))
        self._apply(RECEIPTS, receipt.external_id, invoice_id, payment.amount, "applyReceipt")
        return receipt.model_copy(update={"status": "applied"})

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        held = self.client.get(f"{RECEIPTS}/{ref.external_id}")
        if held is not None and held.get("ReceiptStatus") != REVERSED:  # reversed already: nothing to do
            self.client.write("POST", f"{RECEIPTS}/{ref.external_id}/action/reverseReceipt", {
                "ReversalDate": date.today().isoformat(), "ReversalCategory": "REV",
                "ReversalReason": "PAYMENT REVERSAL"}, action=True)

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        return _ref(self.client.write("POST", MEMOS, mapping.refund_payload(
            event, refund, posting.customer_id, self.settings, self.mapping)))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        self._apply(MEMOS, credit.external_id, invoice_id, amount, "applyOnAccountCreditMemo")
        return ExternalRef(external_id=credit.external_id, amount=amount)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: refunded out of the on-account credit memo (Oracle pays it through Payables),
        leaving nothing open on it."""
        day = posting.txn_date or refund.created_at.date()
        self.client.write("POST", f"{MEMOS}/{credit.external_id}/action/refundOnAccountCreditMemo",
                          mapping.refund_application_payload(event, refund, amount, reference, day), action=True)
        return ExternalRef(external_id=credit.external_id, amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        held = self.client.get(f"{MEMOS}/{settlement.external_id}")
        if held is not None and _dec(held.get("RefundedAmount")):  # already taken back: nothing to do
            self.release_credit(settlement, request_id)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self.client.write("POST", f"{MEMOS}/{application.external_id}/action/unapplyOnAccountCreditMemo", {
            "UnapplyDate": date.today().isoformat()}, action=True)

    # -- closed periods (accounting period statuses are not read: capability off) --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("oracle-erp posts no closed-period adjustments")


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else ZERO


def _account(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["AccountNumber"]))  # invoices and receipts name the account number


def _ref(row: dict[str, Any]) -> ExternalRef:
    total = row.get("EnteredAmount")
    return ExternalRef(external_id=str(row["CustomerTransactionId"]), token=row.get("@etag"), amount=abs(_dec(total)) if total is not None
                       else None, status="draft" if row.get("InvoiceStatus") == INCOMPLETE else None)


def _receipt(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["StandardReceiptId"]), amount=_dec(row.get("Amount")),
                       status="unapplied" if not _dec(row.get("AppliedAmount")) else "applied")


def _remote(invoice: dict[str, Any], void: bool = False) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["CustomerTransactionId"]), number=invoice.get("TransactionNumber"),
                         token=invoice.get("@etag"),
                         status="void" if void else "draft" if invoice.get("InvoiceStatus") == INCOMPLETE
                         else "issued", total=invoice.get("EnteredAmount"), tax_total=invoice.get("TaxAmount"),
                         balance=invoice.get("InvoiceBalanceAmount"), raw=invoice)
