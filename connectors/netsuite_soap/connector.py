"""The NetSuite SuiteTalk SOAP (2023_2) connector: platform operations for the delivery engine.

The records are the shared NetSuite mapping's (``connectors.netsuite_common.mapping``: the same documents the REST
connector posts), rendered as SuiteTalk XML (``mapping``). Every record we create carries our external id and is
created by ``upsert``, so a create sent twice makes one record; every look-up is a ``search`` by external id
(TransactionSearchBasic / CustomerSearchBasic). Invoices are updated sparsely (``update``, item lines replaced; no
concurrency token: the last write wins) and deleted for a void (SuiteTalk has no void operation); customer
payments and credit memos are applied to the invoice through their ``applyList`` (a credit memo's application is
an ``update`` of it, released with ``apply`` false); a refund the shop paid back is a ``CustomerRefund`` (upserted by
external id ``LWP<refund id>``) whose ``applyList`` names its credit memo, out of the refunded payment's account,
deleted when the refund is taken back; A/R-locked accounting periods are the closed books. The
lifecycle, look-ups before re-creating, checkpoints and preview are the engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, Posting
from connectors.engine_state import DocKind
from connectors.netsuite_common import mapping as records
from connectors.netsuite_common.currency import Currencies, CurrencyRecord
from connectors.netsuite_common.references import NetSuiteReferences
from connectors.netsuite_common.settings import realm
from connectors.netsuite_soap import mapping
from connectors.netsuite_soap.client import SuiteTalkClient, classify, many, money
from connectors.netsuite_soap.settings import NetSuiteSoapSettings, endpoint
from connectors.rest import is_placeholder, unless_gone
from daemon.canonical import Customer, InvoiceEvent, Payment, Refund


def gone(exc: PermanentError) -> bool:
    """NetSuite's way of saying a record is not there (deleted, or never made)."""
    return exc.platform_code == "INVALID_KEY_OR_REF"


class NetSuiteSoapConnector(NetSuiteReferences):
    platform = "netsuite-soap"
    settings_model = NetSuiteSoapSettings
    # SuiteTalk deletes invoices (no void operation) and payments; payments name their invoice in applyList; credit
    # memos are applied by updating their applyList; a paid-back refund is a CustomerRefund applied to its credit
    # memo; A/R-locked periods close the books; TBA tokens never expire.
    capabilities = Capabilities(void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=True, batch_create=0,
                                refund_settlement=True, expiring_credentials=False, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: NetSuiteSoapSettings = self.settings
        http = self.platform_http(base_url=target.base_url or endpoint(settings.account_id), classify=classify)
        self.client = SuiteTalkClient(http, settings.wsdl, realm(settings.account_id), runtime.credentials(target.name),
                                      page_size=settings.page_size)
        self.mapping = target.mapping
        self.currencies = Currencies(settings, self._currency_records, self._subsidiary_currency)

    # -- currencies (netsuite_common.currency): getAll of the currency records, a subsidiary's currency --
    def _currency_records(self) -> list[CurrencyRecord]:
        answer = self.client.call("getAll", record=self.client.type("core", "GetAllRecord")(recordType="currency"))
        return [CurrencyRecord(internal_id=r["internalId"], code=r.get("symbol") or "", base=_true(r.get("isBaseCurrency")),
                               inactive=_true(r.get("isInactive"))) for r in many((answer.get("recordList") or {}).get("record"))]

    def _subsidiary_currency(self, subsidiary_id: str) -> str | None:
        return ((self._get("subsidiary", subsidiary_id) or {}).get("currency") or {}).get("internalId")

    def customer_currencies(self, customer_id: str) -> set[str]:
        held = self._get("customer", customer_id) or {}
        lines = many((held.get("currencyList") or {}).get("currency"))
        return {c["internalId"] for c in [held.get("currency") or {}, *(ln.get("currency") or {} for ln in lines)]
                if c.get("internalId")}

    def add_customer_currency(self, customer_id: str, currency_id: str) -> None:
        self._update(records.customer_currency(currency_id), customer_id)

    # -- SuiteTalk calls --
    def _record(self, record: Any, **options: Any) -> Any:
        namespace, name = mapping.RECORD_TYPES[mapping.record_type(record)]
        return self.client.type(namespace, name)(**mapping.fields(record, **options))

    def _upsert(self, record: Any, **options: Any) -> str:
        return self.client.write("upsert", record=self._record(record, **options))["baseRef"]["internalId"]

    def _update(self, record: Any, internal_id: str, **options: Any) -> None:
        self.client.write("update", record=self._record(record, internal_id=internal_id, **options))

    def _delete(self, kind: str, internal_id: str) -> None:
        if not is_placeholder(internal_id):
            unless_gone(lambda: self.client.write("delete", baseRef=self.client.type("core", "RecordRef")(
                internalId=internal_id, type=kind)), gone)

    def _get(self, kind: str, internal_id: str) -> dict[str, Any] | None:
        if is_placeholder(internal_id):
            return None
        found = unless_gone(lambda: self.client.call("get", baseRef=self.client.type("core", "RecordRef")(
            internalId=internal_id, type=kind)), gone)
        return found["record"] if found else None

    def _search(self, search: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        kind, criteria = search  # the *SearchBasic types live in platformCommon
        answer = self.client.call("search", searchRecord=self.client.type("common", kind)(**criteria))
        return many((answer.get("recordList") or {}).get("record"))

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return records.customer_digest(customer, self.settings, self.mapping)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = self._search(mapping.search_customers("externalId", records.customer_external_id(customer)))
        if ours:
            return ExternalRef(external_id=ours[0]["internalId"])

        def owner(row: dict[str, Any]) -> str | None:  # another shop customer's record is never ours
            external_id = str(row.get("externalId") or "")
            return external_id.removeprefix("LWC") if external_id.startswith("LWC") else None

        found = references.match_customer(customer, self.mapping.customer_match,
                                          lambda key, text: self._search(mapping.search_customers(key, text)), owner)
        return ExternalRef(external_id=found["internalId"]) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return ExternalRef(external_id=self._upsert(records.customer_record(customer, self.settings, self.mapping)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if self._get("customer", ref.external_id) is None:
            return None
        self._update(records.customer_record(customer, self.settings, self.mapping), ref.external_id)
        return ref

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        record_kind = {DocKind.INVOICE: "invoice", DocKind.PAYMENT: "customerPayment",
                       DocKind.REFUND_PAYMENT: "customerRefund"}.get(kind, "creditMemo")
        if kind is DocKind.ADJUSTMENT and references.is_increase(reference):
            record_kind = "invoice"
        found = sorted(self._search(mapping.search_transactions(record_kind, reference)), key=lambda r: int(r["internalId"]))
        if kind is not DocKind.CREDIT_APPLICATION:
            return [_ref(row) for row in found]
        return [ExternalRef(external_id=f"{row['internalId']}/{line['doc']}", amount=money(line.get("amount")))
                for row in found for line in many((row.get("applyList") or {}).get("apply"))]

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        record = records.invoice_record(event, posting.customer_id, self.settings_in(event, posting.customer_id),
                                        self.mapping, posting.txn_date, posting.item_ids)
        internal_id = self._upsert(record, line_taxes=mapping.invoice_line_taxes(event))
        return self.read_invoice(internal_id) or RemoteInvoice(external_id=internal_id, number=event.number)

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        record = records.invoice_record(event, posting.customer_id, self.settings_in(event, posting.customer_id),
                                        self.mapping, posting.txn_date, posting.item_ids)
        self._update(record, current.external_id, line_taxes=mapping.invoice_line_taxes(event))
        return self.read_invoice(current.external_id) or RemoteInvoice(external_id=current.external_id)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None:
            return None  # already deleted
        self._delete("invoice", current.external_id)
        return held.model_copy(update={"status": "deleted"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self._get("invoice", external_id)
        return _remote(found) if found else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        record = records.payment_record(event, payment, invoice_id, posting.customer_id,
                                        self.settings_in(event, posting.customer_id), self.mapping, posting.txn_date)
        return ExternalRef(external_id=self._upsert(record), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        self._delete("customerPayment", ref.external_id)  # already gone: nothing to do

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        record = records.credit_memo_record(event, refund, posting.customer_id,
                                            self.settings_in(event, posting.customer_id), self.mapping, posting.txn_date)
        internal_id = self._upsert(record, line_taxes=mapping.money_line_taxes(record, refund.tax_amount))
        return ExternalRef(external_id=internal_id, amount=refund.amount + refund.tax_amount)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: a CustomerRefund applied to the credit memo (nothing left open on it)."""
        record = records.customer_refund_record(event, refund, credit.external_id, amount, reference,
                                                posting.customer_id, self.settings_in(event, posting.customer_id),
                                                self.mapping, posting.txn_date)
        return ExternalRef(external_id=self._upsert(record), amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self._delete("customerRefund", settlement.external_id)  # already gone: nothing to do

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        self._update(records.credit_application(invoice_id, amount), credit.external_id)
        return ExternalRef(external_id=f"{credit.external_id}/{invoice_id}", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        credit_id, _, invoice_id = application.external_id.partition("/")
        held = self._get("creditMemo", credit_id)
        applied = {str(line["doc"]): money(line.get("amount"))
                   for line in many(((held or {}).get("applyList") or {}).get("apply"))}
        if invoice_id in applied:  # else already released (or the credit memo is gone)
            self._update(records.credit_application(invoice_id, applied[invoice_id] or Decimal("0"), applied=False),
                         credit_id)

    # -- closed periods: accounting periods locked for A/R --
    def books_closed_through(self) -> date | None:
        ends = [date.fromisoformat(str(p["endDate"])[:10]) for p in self._search(mapping.search_locked_periods())]
        return max(ends, default=None)

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        record = records.adjustment_record(event, adjustment.kind, adjustment.sequence, posting.customer_id,
                                           adjustment.net, adjustment.tax, posting.txn_date or date.today(),
                                           adjustment.original_id, adjustment.reason,
                                           self.settings_in(event, posting.customer_id), self.mapping)
        internal_id = self._upsert(record, line_taxes=mapping.money_line_taxes(record, adjustment.tax))
        return ExternalRef(external_id=internal_id, amount=adjustment.net + adjustment.tax, status="issued")


def _true(flag: Any) -> bool:
    return str(flag).lower() == "true"


def _ref(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=row["internalId"], token=row.get("lastModifiedDate"),
                       amount=money(row.get("total") or row.get("payment")))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    """No concurrency token in SuiteTalk: ``lastModifiedDate`` is recorded as the token (a change shows)."""
    return RemoteInvoice(external_id=invoice["internalId"], number=invoice.get("tranId"),
                         token=invoice.get("lastModifiedDate"), status="issued", total=money(invoice.get("total")),
                         tax_total=money(invoice.get("taxTotal")), balance=money(invoice.get("amountRemaining")),
                         raw=invoice)
