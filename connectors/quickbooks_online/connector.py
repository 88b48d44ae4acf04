"""The QuickBooks Online connector: platform operations for the delivery engine (connectors/engine.py).

Customers, items, invoices (create, sparse update with SyncToken, void), payments linked to their invoice,
refunds as CreditMemos applied by a zero-total Payment, closed books (QuickBooks' "Account Period Closed",
``Preferences.AccountingInfoPrefs.BookCloseDate``) answered by the engine's re-dating and adjustments (an
Invoice or a CreditMemo), new invoices in ``/batch`` requests of 30; ``check_mapping``. The lifecycle, the
look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import DeliveryError, ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.oauth import OAuth2RefreshAuth
from connectors.quickbooks_online import mapping
from connectors.quickbooks_online.currency import Currencies
from connectors.quickbooks_online.check import check_mapping
from connectors.quickbooks_online.client import QboClient
from connectors.quickbooks_online.customers import CustomerLookups
from connectors.quickbooks_online.errors import classify, classify_fault
from connectors.quickbooks_online.settings import QboSettings
from connectors.quickbooks_online.settlement import RefundSettlement, derived_key, has_link, settlement_ref
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund

DEFAULT_BASE_URL = "https://quickbooks.api.intuit.com"
# What each natural reference is searched by: (entity, field).
SEARCH = {DocKind.INVOICE: ("Invoice", "DocNumber"), DocKind.PAYMENT: ("Payment", "PaymentRefNum"),
          DocKind.CREDIT_NOTE: ("CreditMemo", "DocNumber"), DocKind.CREDIT_APPLICATION: ("Payment", "PaymentRefNum"),
          DocKind.REFUND_PAYMENT: ("Payment", "PaymentRefNum")}


class QuickBooksOnlineConnector(CustomerLookups, RefundSettlement, EngineConnector):
    platform = "quickbooks-online"
    settings_model = QboSettings
    supports_batch = True
    batch_size = 30  # Intuit's limit per batch request
    capabilities = Capabilities(multi_currency=True, negative_totals=True, batch_create=batch_size,
                                refund_settlement=True)
    mapping_check = staticmethod(check_mapping)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: QboSettings = self.settings
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url,
                                 credentials=runtime.credentials(target.name))
        # Batch requests have their own documented limit (40 per minute per company), which a target's
        # rate_limit (the request limit) does not change.
        self.batch_limiter = runtime.limiter(target, per_minute=settings.batch_requests_per_minute,
                                             concurrency=settings.concurrency, overridable=False)
        http = self.platform_http(base_url=target.base_url or DEFAULT_BASE_URL, classify=classify, auth=auth)
        self.client = QboClient(http, settings.realm_id, settings.minor_version)
        self.mapping, self.currencies = target.mapping, Currencies(self.client)  # currency.py: CurrencyRef, customers

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_hash(customer, self.mapping)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        # Ours first: the DisplayName we give carries the shop id; then the bookkeeper's match rules, if any,
        # never another shop customer's record (same name or email): ours carry the shop's id.
        ours = self.client.query("Customer", DisplayName=mapping.customer_display_name(customer))
        found = ours[0] if ours else references.match_customer(
            customer, self.mapping.customer_match, lambda key, value: self._customers_by(key, value, customer),
            lambda row: references.claimed_by(row.get("DisplayName")))
        return _ref(found) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _ref(self.client.write("Customer", mapping.customer_payload(customer, self.mapping),
                                      request_id=request_id))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        current = self.client.read("Customer", ref.external_id)
        if current is None:
            return None
        body = {**mapping.customer_payload(customer, self.mapping), "Id": ref.external_id,
                "SyncToken": current["SyncToken"], "sparse": True}
        return _ref(self.client.write("Customer", body, request_id=request_id))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        if self._on_discount_account(line):
            return None  # posted on the discount account: no item
        key, name = mapping.item_key(line, self.mapping)
        configured = self.mapping.items.get(line.kind)
        return ItemSpec(key, name, line, configured if configured and key.startswith("kind:") else None)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        found = self.client.query("Item", Name=spec.name)
        return _ref(found[0]) if found else None

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        if spec.line is not None:
            body = mapping.item_payload(spec.name, spec.line, self.mapping)
        else:  # the engine's own items: refunds without a line, adjustments
            account = self.mapping.income_accounts.get(LineKind.PART) or "1"
            body = {"Name": spec.name, "Type": "Service", "IncomeAccountRef": {"value": account}}
        return _ref(self.client.write("Item", body, request_id=request_id))

    def _on_discount_account(self, line: InvoiceLine) -> bool:
        return (line.kind == LineKind.DISCOUNT and self.mapping.discount_posting == "discount_account"
                and bool(self.mapping.discount_account))

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        """The framework's, but DocNumber holds 21 characters: the invoice's and an adjustment's are cut."""
        if kind is DocKind.INVOICE:
            return mapping.doc_number(event)
        if kind is DocKind.ADJUSTMENT:
            adjustment_kind, sequence = references.adjustment_key(key)
            return mapping.adjustment_doc_number(event, sequence, adjustment_kind)
        return super().reference(kind, event, key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        entity, field = SEARCH.get(kind) or ("Invoice" if reference.startswith("A") else "CreditMemo", "DocNumber")
        live = [row for row in self.client.query(entity, **{field: reference}) if not _voided(row)]
        if kind is DocKind.CREDIT_APPLICATION or kind is DocKind.PAYMENT:
            live = [row for row in live if (Decimal(str(row.get("TotalAmt", 0))) == 0) == (kind is DocKind.CREDIT_APPLICATION)]
        if kind is DocKind.REFUND_PAYMENT:  # the zero Payment linking the money paid back and the credit memo
            return [settlement_ref(row) for row in live if has_link(row, "Expense")]
        return [_ref(row) for row in live]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = posting.dated(self._invoice_payload(event, posting), "TxnDate", note_field="PrivateNote")
        return _remote(self.client.write("Invoice", body, request_id=posting.request_id))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = {**posting.dated(self._invoice_payload(event, posting), "TxnDate"), "Id": current.external_id,
                "SyncToken": current.token, "sparse": True}
        return _remote(self.client.write("Invoice", body, request_id=posting.request_id))

    def _invoice_payload(self, event: InvoiceEvent, posting: Posting) -> dict[str, Any]:
        return self.currencies.stamp(event, mapping.invoice_payload(event, posting.customer_id, posting.item_ids, self.mapping), self.mapping)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.client.read("Invoice", current.external_id)  # voiding needs the current SyncToken
        if held is None:
            return None
        return _remote(self.client.write("Invoice", {"Id": current.external_id, "SyncToken": held["SyncToken"]},
                                         request_id=request_id, operation="void"))

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.read("Invoice", external_id)
        return _remote(found) if found else None

    def create_invoices(self, batch: list[tuple[InvoiceEvent, Posting]]) -> list[RemoteInvoice | DeliveryError]:
        items = [{"bId": str(n), "operation": "create", "Invoice": self._invoice_payload(event, posting)}
                 for n, (event, posting) in enumerate(batch)]
        key = hashlib.sha256(":".join(p.request_id for _, p in batch).encode()).hexdigest()[:32]
        answers = self.client.batch(items, request_id=key)
        out: list[RemoteInvoice | DeliveryError] = []
        for n in range(len(batch)):
            answer = answers.get(str(n), {})
            out.append(_remote(answer["Invoice"]) if "Invoice" in answer else
                       classify_fault(answer.get("Fault") or {"Error": [{"Message": "no answer"}]}))
        return out

    @contextmanager
    def batch_slot(self) -> Iterator[bool]:
        with self.batch_limiter.slot_if_free() as free:
            yield free

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = self.currencies.stamp(event, mapping.payment_payload(payment, invoice_id, posting.customer_id, self.mapping), self.mapping)
        return _ref(self.client.write("Payment", posting.dated(body, "TxnDate"), request_id=posting.request_id))

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        existing = self.client.read("Payment", ref.external_id)
        if existing is not None:
            self.client.write("Payment", {"Id": ref.external_id, "SyncToken": existing["SyncToken"]},
                              request_id=request_id, operation="delete")

    release_credit = delete_payment  # a credit application is a zero-total Payment

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
        item_id = posting.item_ids.get(line.id) if line is not None else None
        item_id = item_id or posting.item(ItemSpec("kind:refund", "Refunds"))
        body = self.currencies.stamp(event, mapping.credit_memo_payload(event, refund, posting.customer_id, item_id, self.mapping), self.mapping)
        body = posting.dated(body, "TxnDate", note_field="PrivateNote")
        return _ref(self.client.write("CreditMemo", body, request_id=posting.request_id))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        body = mapping.credit_application_payload(posting.customer_id, invoice_id, credit.external_id, amount,
                                                  date.today(), reference)
        return _ref(self.client.write("Payment", self.currencies.like_credit_memo(credit.external_id, body), request_id=posting.request_id))

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back, as QuickBooks refunds a customer credit: an expense to the customer out of the
        refunded payment's account on Accounts Receivable, then a zero Payment linking it and the credit memo,
        which leaves the memo nothing to apply. A retry finds the expense by its DocNumber (never a second)."""
        memo = self.client.read("CreditMemo", credit.external_id) or {}
        customer = memo.get("CustomerRef") or {"value": posting.customer_id}
        expense = next((row for row in self.client.query("Purchase", DocNumber=reference)), None)
        if expense is None:
            account = self.client.read("Account", references.refund_account(
                event, refund, self.mapping, "QuickBooks"))
            if account is None:
                raise PermanentError(f"refund {refund.id}: the payment account of method "
                                     f"{references.refund_method(event, refund)!r} is not in QuickBooks")
            body = mapping.refund_expense_payload(event, refund, customer, account, self._receivable_account(),
                                                  amount, reference)
            if memo.get("CurrencyRef"):
                body["CurrencyRef"] = memo["CurrencyRef"]
            expense = self.client.write("Purchase", posting.dated(body, "TxnDate"),
                                        request_id=derived_key(posting.request_id, "expense"))
        link = mapping.refund_link_payload(customer, credit.external_id, str(expense["Id"]), amount,
                                           refund.created_at.date(), reference)
        if memo.get("CurrencyRef"):
            link["CurrencyRef"] = memo["CurrencyRef"]
        return settlement_ref(self.client.write("Payment", posting.dated(link, "TxnDate"), request_id=posting.request_id))

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        """The link first (the expense cannot be deleted while a payment links it), then the expense."""
        link = self.client.read("Payment", settlement.external_id)
        expenses = [linked["TxnId"] for line in (link or {}).get("Line", []) for linked in line.get("LinkedTxn", [])
                    if linked.get("TxnType") == "Expense"]
        self.delete_payment(settlement, request_id)
        for expense_id in expenses:
            held = self.client.read("Purchase", expense_id)
            if held is not None:
                self.client.write("Purchase", {"Id": expense_id, "SyncToken": held["SyncToken"]},
                                  request_id=derived_key(request_id, "expense"), operation="delete")

    def home_currency(self) -> str | None:  # configured, else Preferences.CurrencyPrefs.HomeCurrency
        return self.mapping.home_currency or self.currencies.home()

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        close = (self.client.preferences().get("AccountingInfoPrefs") or {}).get("BookCloseDate")
        return date.fromisoformat(str(close)) if close else None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        item_id = posting.item(ItemSpec("kind:adjustment", "Invoice adjustment"))
        body = mapping.adjustment_payload(event, adjustment.kind, adjustment.sequence, posting.customer_id, item_id,
                                          adjustment.net, adjustment.tax, posting.txn_date or date.today(),
                                          adjustment.original_id, self.mapping, adjustment.reason)
        body = self.currencies.stamp(event, body, self.mapping)
        entity = "Invoice" if adjustment.kind == "increase" else "CreditMemo"
        return _ref(self.client.write(entity, body, request_id=posting.request_id))


def _voided(row: dict[str, Any]) -> bool:
    return str(row.get("PrivateNote", "")).startswith("Voided")


def _ref(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["Id"]), token=row.get("SyncToken"), amount=row.get("TotalAmt"))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=invoice["Id"], number=invoice.get("DocNumber"), token=invoice.get("SyncToken"),
                         status="void" if _voided(invoice) else "issued",
                         total=invoice.get("TotalAmt"), tax_total=(invoice.get("TxnTaxDetail") or {}).get("TotalTax"),
                         balance=invoice.get("Balance"), raw=invoice)
