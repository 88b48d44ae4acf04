"""The MYOB AccountRight (API v2) connector: platform operations for the delivery engine.

Customer cards (found by our card id ``LWC<id>``, then the target's match rules), one *Item* invoice per shop
invoice (``Sale/Invoice/Item``; update = ``PUT`` of the whole invoice with ``UID`` + ``RowVersion``, a stale
one answered 409; a void is MYOB's ``DELETE``), customer payments applied to the invoice (``Sale/
CustomerPayment``, removed by ``DELETE``), refunds as service invoices with negative lines (credits) applied by a
``Sale/CreditSettlement`` (or, paid back to the customer, refunded by a ``Sale/CreditRefund``), and the lock period (``Company/Preferences`` ``System.LockPeriodPriorTo``) answered by
the engine's re-dating and adjustments. Every request carries ``x-myobapi-key``, ``x-myobapi-version: v2`` and,
when the company file has its own user, ``x-myobapi-cftoken``. The lifecycle, look-ups before re-creating,
checkpoints and preview are the engine's."""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.auth import OAuth2RefreshAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, first_open_day
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from connectors.myob_accountright import mapping
from connectors.myob_accountright.client import MyobClient, classify
from connectors.myob_accountright.currency import Currencies, foreign_amount
from connectors.myob_accountright.settings import MyobSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://api.myob.com/accountright"
ITEM_INVOICES, SERVICE_INVOICES = "/Sale/Invoice/Item", "/Sale/Invoice/Service"
PAYMENTS, SETTLEMENTS, CUSTOMERS = "/Sale/CustomerPayment", "/Sale/CreditSettlement", "/Contact/Customer"
REFUNDS = "/Sale/CreditRefund"  # money paid back on a credit


def myob_headers(cred: dict[str, Any]) -> dict[str, str]:
    """MYOB's headers beside the bearer token: the API key (the OAuth client id), the API version, and the
    company file's own user (base64 ``user:password``) where the file has one (files on MYOB single sign-on
    need none)."""
    headers = {"x-myobapi-key": str(cred.get("client_id", "")), "x-myobapi-version": "v2"}
    if cred.get("company_file_username"):
        user = f"{cred['company_file_username']}:{cred.get('company_file_password') or ''}"
        headers["x-myobapi-cftoken"] = base64.b64encode(user.encode()).decode()
    return headers


class MyobAccountRightConnector(EngineConnector):
    platform = "myob-accountright"
    settings_model = MyobSettings
    # Invoices are deleted (MYOB has no void); payments are deleted; a payment names its invoice at creation;
    # credits are applied by a separate credit settlement; no batch endpoint; another currency than
    # ``mapping.home_currency`` goes on the customer's card for it (currency.py).
    capabilities = Capabilities(negative_totals=True, void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                refund_settlement=True, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: MyobSettings = self.settings
        # MYOB's token endpoint takes the client's id and secret in the form body (the SDK's RenewOAuthTokens).
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, client_auth="body",
                                 credentials=runtime.credentials(target.name), extra_headers=myob_headers)
        limiter = runtime.limiter(target, per_second=settings.requests_per_second, per_day=settings.requests_per_day,
                                  concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=target.base_url or DEFAULT_BASE_URL, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = MyobClient(self.http, settings)
        self.mapping = target.mapping
        self.currencies = Currencies(self.client)
        self.closed_through: date | None = None  # as last read

    def check_mapping(self) -> list[str]:
        """Every UID the mapping names, read from the company file (items must be sold items)."""
        m, problems = self.mapping, []
        named = [(f"items.{k.value}", "/Inventory/Item", uid) for k, uid in m.items.items()]
        named += [(f"income_accounts.{k.value}", "/GeneralLedger/Account", uid) for k, uid in m.income_accounts.items()]
        named += [(f"payment_accounts.{k}", "/GeneralLedger/Account", uid) for k, uid in m.payment_accounts.items()]
        named += [(name, "/GeneralLedger/Account", uid) for name, uid in (
            ("core_account", m.core_account), ("discount_account", m.discount_account)) if uid]
        named += [(f"tax_codes.{k}", "/GeneralLedger/TaxCode", uid) for k, uid in m.tax_codes.items()]
        for name, resource, uid in named:
            found = self.client.get(f"{resource}/{uid}")
            if found is None:
                problems.append(f"{name}: {resource.rsplit('/', 1)[1]} {uid!r} not found")
            elif resource == "/Inventory/Item" and not found.get("IsSold"):
                problems.append(f"{name}: item {uid!r} is not an item MYOB sells")
        return problems

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer, self.mapping)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.card_id(customer)  # ours first: a retry after a crash finds what it made
        for card in self.client.list(CUSTOMERS, DisplayID=ours):
            return _ref(card)
        # MYOB filters cards on their own fields; email and phone live in the Addresses collection: not matched.
        if "name" in self.mapping.customer_match:
            for card in self.client.list(CUSTOMERS, CompanyName=customer.name[:50]):
                if not str(card.get("DisplayID") or "").startswith("LWC"):  # never another shop customer's card
                    return _ref(card)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _ref(self.client.write("POST", CUSTOMERS, mapping.customer_payload(customer, self.mapping)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        held = self.client.get(f"{CUSTOMERS}/{ref.external_id}")
        if held is None:
            return None
        body = mapping.customer_payload(customer, self.mapping) | {"UID": held["UID"], "RowVersion": held["RowVersion"]}
        return _ref(self.client.write("PUT", f"{CUSTOMERS}/{ref.external_id}", body))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        uid = mapping.item_uid(line.kind, self.mapping)  # the bookkeeper's non-inventoried item per line kind
        return ItemSpec(key=f"kind:{line.kind.value}", name=line.kind.value, line=line, external_id=uid)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("myob-accountright posts lines on the items mapping.items names, never on new ones")

    create_item = find_item

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind is DocKind.CREDIT_NOTE:
            return mapping.credit_note_reference(key)
        if kind is DocKind.CREDIT_APPLICATION:
            return mapping.settlement_reference(key)
        if kind is DocKind.REFUND_PAYMENT:
            return mapping.refund_payment_reference(key)
        adjustment_kind, _, sequence = key.partition(":")
        return mapping.adjustment_reference(event, int(sequence), adjustment_kind)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.PAYMENT:
            return [_ref(p, "AmountReceived") for p in self.client.list(PAYMENTS, Memo=reference)]
        if kind is DocKind.CREDIT_APPLICATION:
            return [_ref(s, "CreditAmount") for s in self.client.list(SETTLEMENTS, Memo=reference)]
        if kind is DocKind.REFUND_PAYMENT:
            return [_ref(r, "Amount") for r in self.client.list(REFUNDS, Memo=reference)]
        resource = ITEM_INVOICES if kind is DocKind.INVOICE else SERVICE_INVOICES
        # The whole reference is the document's CustomerPurchaseOrderNumber (Number holds 13 characters).
        # MYOB deletes: everything found is live.
        return [_ref(d) for d in self.client.list(resource, CustomerPurchaseOrderNumber=reference)]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, posting.item_ids, self.mapping, posting.txn_date)
        body = self.currencies.stamp(event, body, "sale", self.mapping)
        return _remote(self.client.write("POST", ITEM_INVOICES, body))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, posting.item_ids, self.mapping, posting.txn_date)
        body = self.currencies.stamp(event, body, "sale", self.mapping)
        body |= {"UID": current.external_id, "RowVersion": current.token}  # stale: 409, the engine re-reads
        return _remote(self.client.write("PUT", f"{ITEM_INVOICES}/{current.external_id}", body))

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None:
            return None  # already deleted
        self.client.write("DELETE", f"{ITEM_INVOICES}/{current.external_id}")
        return held.model_copy(update={"status": "void", "balance": Decimal("0")})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"{ITEM_INVOICES}/{external_id}")
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(payment, invoice_id, posting.customer_id, self.mapping, posting.txn_date)
        body = self.currencies.stamp(event, body, "payment", self.mapping)
        return _ref(self.client.write("POST", PAYMENTS, body), "AmountReceived")

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete(f"{PAYMENTS}/{ref.external_id}")

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_note_payload(event, refund, posting.customer_id, self.mapping, posting.txn_date)
        body = self.currencies.stamp(event, body, "sale", self.mapping)
        return _ref(self.client.write("POST", SERVICE_INVOICES, body))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        # Today, never in locked books (the engine read the lock date before this delivery's first write).
        day = max(date.today(), first_open_day(self.closed_through))
        body = mapping.settlement_payload(credit.external_id, invoice_id, posting.customer_id, amount, day, reference)
        body = self.currencies.like_credit(credit.external_id, body, self.mapping)
        return _ref(self.client.write("POST", SETTLEMENTS, body), "CreditAmount")

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self._delete(f"{SETTLEMENTS}/{application.external_id}")

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """MYOB's credit refund: the money paid back on the credit, dated the day the shop paid it (the first open
        day when that is locked)."""
        day = refund.created_at.date()
        if self.closed_through is not None and day <= self.closed_through:
            day = first_open_day(self.closed_through)
        body = mapping.credit_refund_payload(event, refund, credit.external_id, posting.customer_id, amount, day,
                                             reference, self.mapping)
        body = self.currencies.stamp(event, body, "refund", self.mapping)
        return _ref(self.client.write("POST", REFUNDS, body), "Amount")

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._delete(f"{REFUNDS}/{settlement.external_id}")

    def _delete(self, path: str) -> None:
        if self.client.get(path) is not None:  # already gone: nothing to do
            self.client.write("DELETE", path)

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        # AccountRight's lock: nothing dated *prior to* LockPeriodPriorTo is created, changed or deleted.
        system = (self.client.get("/Company/Preferences") or {}).get("System") or {}
        lock = system.get("LockPeriodPriorTo")
        self.closed_through = datetime.fromisoformat(str(lock)).date() - timedelta(days=1) if lock else None
        return self.closed_through

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        body = mapping.adjustment_payload(
            event, adjustment.kind, adjustment.sequence, posting.customer_id, adjustment.net, adjustment.tax,
            posting.txn_date or date.today(), adjustment.original_id, adjustment.reason, self.mapping)
        body = self.currencies.stamp(event, body, "sale", self.mapping)
        return _ref(self.client.write("POST", SERVICE_INVOICES, body))


def _ref(row: dict[str, Any], amount_field: str = "TotalAmount") -> ExternalRef:
    amount = foreign_amount(row, amount_field)  # a foreign document's own amounts (currency.py)
    return ExternalRef(external_id=str(row["UID"]), token=row.get("RowVersion"),
                       amount=abs(Decimal(str(amount))) if amount is not None else None)


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["UID"]), number=invoice.get("Number"), token=invoice.get("RowVersion"),
                         status="issued", total=foreign_amount(invoice, "TotalAmount"),
                         tax_total=foreign_amount(invoice, "TotalTax"), balance=foreign_amount(invoice, "BalanceDueAmount"),
                         raw=invoice)
