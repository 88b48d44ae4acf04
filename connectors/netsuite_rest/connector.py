"""The NetSuite connector over SuiteTalk REST web services (record API v1): platform operations for the engine.

Token-based auth (OAuth 1.0a, HMAC-SHA256, ``realm`` = the account id). Every record we create carries our
external id and is written by ``PUT /record/v1/<type>/eid:<external id>`` (insert or update), so a retry of
a create whose answer was lost updates what it made instead of duplicating it; look-ups are SuiteQL
(``transaction`` by external id, ``customer`` by external id then the target's match rules). Updates are sparse
``PATCH`` (``?replace=item`` replaces the lines). Payments are customer payments applied to their invoice at
creation, removed by ``DELETE``; refunds are credit memos applied by a ``PATCH`` of their ``apply`` sublist, and
a refund the shop paid back is a ``customerRefund`` (``PUT /customerRefund/eid:LWP<refund id>``) applied to its
credit memo, out of the refunded payment's account, removed by ``DELETE`` when the refund is taken back. A
void is the REST way NetSuite documents (the record API has no void operation): the invoice transformed into a
credit memo (``POST /invoice/{id}/!transform/creditMemo``, external id ``<invoice's>-V``) that credits what is
left open on it. Closed periods: SuiteQL's ``accountingperiod`` (closed or A/R locked). The lifecycle,
look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import OAuth1TokenAuth
from connectors.base import ExternalRef, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, Posting
from connectors.engine_state import DocKind
from connectors.netsuite_common import mapping as records
from connectors.netsuite_common.currency import Currencies, CurrencyRecord
from connectors.netsuite_common.references import NetSuiteReferences
from connectors.netsuite_common.settings import realm, suitetalk_host
from connectors.netsuite_rest.client import NetSuiteRestClient, classify, sql_text
from connectors.netsuite_rest.mapping import render
from connectors.netsuite_rest.settings import NetSuiteRestSettings
from daemon.canonical import Customer, InvoiceEvent, Payment, Refund

TYPES = {DocKind.INVOICE: "CustInvc", DocKind.PAYMENT: "CustPymt", DocKind.CREDIT_NOTE: "CustCred",
         DocKind.REFUND_PAYMENT: "CustRfnd"}
VOID_SUFFIX = "-V"


class NetSuiteRestConnector(NetSuiteReferences):
    platform = "netsuite-rest"
    settings_model = NetSuiteRestSettings
    # TBA tokens never expire (revoked only); payments are deleted and name their invoice in ``apply``; credit
    # memos are applied by a PATCH of their ``apply`` sublist; a paid-back refund is a customer refund applied to
    # its credit memo; async batches are not used (one record a request).
    capabilities = Capabilities(void="void", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                refund_settlement=True, expiring_credentials=False, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: NetSuiteRestSettings = self.settings
        auth = OAuth1TokenAuth(credentials=runtime.credentials(target.name), realm=realm(settings.account_id))
        base_url = target.base_url or f"{suitetalk_host(settings.account_id)}/services/rest"
        self.client = NetSuiteRestClient(self.platform_http(base_url=base_url, classify=classify, auth=auth),
                                         settings.page_size)
        self.mapping = target.mapping
        self.currencies = Currencies(settings, self._currency_records, self._subsidiary_currency)

    # -- currencies (netsuite_common.currency) --
    def _currency_records(self) -> list[CurrencyRecord]:
        rows = self.client.query("SELECT id, symbol, isbasecurrency, isinactive FROM currency ORDER BY id")
        return [CurrencyRecord(internal_id=str(r["id"]), code=str(r.get("symbol") or ""),
                               base=r.get("isbasecurrency") == "T", inactive=r.get("isinactive") == "T") for r in rows]

    def _subsidiary_currency(self, subsidiary_id: str) -> str | None:
        rows = self.client.query(f"SELECT id, currency FROM subsidiary WHERE id = {sql_text(subsidiary_id)}")
        return str(rows[0]["currency"]) if rows and rows[0].get("currency") else None

    def customer_currencies(self, customer_id: str) -> set[str]:
        held = self.client.get("customer", customer_id) or {}
        return {str(c["id"]) for c in [held.get("currency") or {}, *(ln.get("currency") or {} for ln in
                                                                       _items(held, "currencyList"))] if c.get("id")}

    def add_customer_currency(self, customer_id: str, currency_id: str) -> None:
        self.client.write("PATCH", f"/customer/{customer_id}", render(records.customer_currency(currency_id)))

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return records.customer_digest(customer, self.settings, self.mapping)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        columns = "SELECT id, externalid, lastmodifieddate FROM customer WHERE "
        ours = self.client.query(columns + f"externalid = {sql_text(records.customer_external_id(customer))}")
        if ours:  # ours first: a retry after a crash finds what it made
            return _ref(ours[0])
        fields = {"email": "email", "phone": "phone", "name": "companyname"}
        found = references.match_customer(
            customer, self.mapping.customer_match,
            lambda key, value: self.client.query(columns + f"{fields[key]} = {sql_text(value)} ORDER BY id"),
            lambda row: _claimed(row.get("externalid")))
        return _ref(found) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        record = records.customer_record(customer, self.settings, self.mapping)
        return ExternalRef(external_id=self._upsert("customer", record))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if self.client.get("customer", ref.external_id) is None:
            return None
        self.client.write("PATCH", f"/customer/{ref.external_id}",
                          render(records.customer_record(customer, self.settings, self.mapping)))
        return ExternalRef(external_id=ref.external_id)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.CREDIT_APPLICATION:
            memo = self.client.get("creditMemo", f"eid:{reference}") or {}
            return [ExternalRef(external_id=f"{memo['id']}:{line['doc']['id']}", amount=Decimal(str(line["amount"])))
                    for line in _items(memo, "apply") if line.get("apply")]
        invoice = kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and references.is_increase(reference))
        type_ = TYPES.get(kind) or ("CustInvc" if invoice else "CustCred")
        rows = self.client.query("SELECT id, externalid, foreigntotal, lastmodifieddate FROM transaction WHERE "
                                 f"type = '{type_}' AND externalid = {sql_text(reference)} AND voided = 'F' ORDER BY id")
        if kind is DocKind.INVOICE and rows and self._void_memo(reference) is not None:
            return []  # credited in full by its void: not live
        return [_ref(row) for row in rows]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        record = records.invoice_record(event, posting.customer_id, self.settings_in(event, posting.customer_id),
                                        self.mapping, posting.txn_date, posting.item_ids)
        return self._read_back("invoice", self._upsert("invoice", record), record)

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        record = records.invoice_record(event, posting.customer_id, self.settings_in(event, posting.customer_id),
                                        self.mapping, posting.txn_date, posting.item_ids)
        self.client.write("PATCH", f"/invoice/{current.external_id}", render(record), replace="item")
        return self._read_back("invoice", current.external_id, record)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None or held.status == "void":
            return held
        external_id = (held.raw or {}).get("externalId") or f"LWX{current.external_id}"
        body = {"externalId": external_id + VOID_SUFFIX, "tranDate": date.today().isoformat(),
                "memo": f"Void of invoice {held.number}: cancelled in the shop"}
        self.client.write("POST", f"/invoice/{current.external_id}/!transform/creditMemo", body, request_id=request_id)
        return self.read_invoice(current.external_id) or held.model_copy(update={"status": "void"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get("invoice", external_id)
        if found is None:
            return None
        voided = bool(found.get("externalId")) and self._void_memo(found["externalId"]) is not None
        return _remote(found, voided)

    def _void_memo(self, invoice_external_id: str) -> dict[str, Any] | None:
        return self.client.get("creditMemo", f"eid:{invoice_external_id}{VOID_SUFFIX}")

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        record = records.payment_record(event, payment, invoice_id, posting.customer_id,
                                        self.settings_in(event, posting.customer_id), self.mapping, posting.txn_date)
        return ExternalRef(external_id=self._upsert("customerPayment", record), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete("customerPayment", ref.external_id)

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        record = records.credit_memo_record(event, refund, posting.customer_id,
                                            self.settings_in(event, posting.customer_id), self.mapping, posting.txn_date)
        memo_id = self._upsert("creditMemo", record)
        held = self.client.get("creditMemo", memo_id) or {}
        return ExternalRef(external_id=memo_id, amount=_money(held.get("total")))

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: a customer refund applied to the credit memo (nothing left open on it)."""
        record = records.customer_refund_record(event, refund, credit.external_id, amount, reference,
                                                posting.customer_id, self.settings_in(event, posting.customer_id),
                                                self.mapping, posting.txn_date)
        return ExternalRef(external_id=self._upsert("customerRefund", record), amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._delete("customerRefund", settlement.external_id)  # the credit memo's amount is open again

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        self.client.write("PATCH", f"/creditMemo/{credit.external_id}", render(records.credit_application(invoice_id, amount)))
        return ExternalRef(external_id=f"{credit.external_id}:{invoice_id}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        memo_id, _, invoice_id = application.external_id.partition(":")
        memo = self.client.get("creditMemo", memo_id)
        applied = [ln for ln in _items(memo or {}, "apply") if ln["doc"]["id"] == invoice_id and ln.get("apply")]
        if applied:  # already released (or the memo gone): nothing to do
            body = render(records.credit_application(invoice_id, Decimal(str(applied[0]["amount"])), applied=False))
            self.client.write("PATCH", f"/creditMemo/{memo_id}", body)

    def _delete(self, record: str, internal_id: str) -> None:
        if self.client.get(record, internal_id) is not None:  # already gone: nothing to do
            self.client.write("DELETE", f"/{record}/{internal_id}")

    # -- closed periods --
    def books_closed_through(self) -> date | None:
        periods = self.client.query("SELECT id, TO_CHAR(enddate, 'YYYY-MM-DD') AS enddate, closed, arlocked FROM "
                                    "accountingperiod WHERE isyear = 'F' AND isquarter = 'F' ORDER BY enddate")
        closed = [date.fromisoformat(p["enddate"]) for p in periods if "T" in (p.get("closed"), p.get("arlocked"))]
        return max(closed, default=None)

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        record = records.adjustment_record(event, adjustment.kind, adjustment.sequence, posting.customer_id,
                                           adjustment.net, adjustment.tax, posting.txn_date or date.today(),
                                           adjustment.original_id, adjustment.reason,
                                           self.settings_in(event, posting.customer_id), self.mapping)
        return ExternalRef(external_id=self._upsert(record.record_type, record))

    # -- writes --
    def _upsert(self, record_type: str, record: Any) -> str:
        """Insert or update by our external id (``PUT .../eid:<external id>``); the record's internal id."""
        found = self.client.write("PUT", f"/{record_type}/eid:{record.externalId}", render(record))
        return found or (self.client.get(record_type, f"eid:{record.externalId}") or {})["id"]

    def _read_back(self, record_type: str, internal_id: str, record: Any) -> RemoteInvoice:
        held = self.client.get(record_type, internal_id)
        if held is None:  # a preview: what was recorded
            return RemoteInvoice(external_id=internal_id, number=record.tranId, status="issued", raw={})
        return _remote(held, voided=False)


def _items(record: dict[str, Any], sublist: str) -> list[dict[str, Any]]:
    return list((record.get(sublist) or {}).get("items") or [])


def _money(value: Any) -> Decimal | None:
    return abs(Decimal(str(value))) if value is not None else None


def _claimed(external_id: object) -> str | None:
    text = str(external_id or "")
    return text[3:] if text.startswith("LWC") else None


def _ref(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["id"]), token=row.get("lastmodifieddate"), amount=_money(row.get("foreigntotal")))


def _remote(invoice: dict[str, Any], voided: bool) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("tranId"),
                         token=invoice.get("lastModifiedDate"), status="void" if voided else "issued",
                         total=invoice.get("total"), tax_total=invoice.get("taxTotal"),
                         balance=invoice.get("amountRemaining"), raw=invoice)
