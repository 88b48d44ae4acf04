"""The KashFlow connector (SOAP API): platform operations for the delivery engine.

Customers (found by our unique customer code, then the target's match rules), invoices (``InsertInvoice_TypeDefined``;
KashFlow numbers them itself, the shop's number is the ``CustomerReference`` every look-up matches on; update =
``UpdateInvoice_TypeDefined`` of the whole invoice, no concurrency token: the last write wins; void = delete, as
KashFlow has no void), payments (``InsertInvoicePayment`` on the invoice, ``DeleteInvoicePayment``), refunds as
credit notes (invoices with negative lines) applied by ``applyCreditNoteToInvoice``. The SOAP API exposes no lock
date, so closed periods are not handled here. The lifecycle, look-ups before re-creating, checkpoints and preview
are the engine's."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.kashflow import mapping
from connectors.kashflow.currency import Currencies
from connectors.kashflow.client import KashFlowClient, classify, complete
from connectors.kashflow.mapping import as_id, when
from connectors.kashflow.settings import KashFlowSettings
from connectors.rest import is_placeholder
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

DEFAULT_BASE_URL = "https://securedwebapp.com/api/service.asmx"
APPLIED_PREFIX = "Credit note "  # the PayNote KashFlow's sandbox gives the payment an applied credit note makes


def check(client: KashFlowClient, mapping_config: Any) -> list[str]:
    """The mapping's VAT rates must be rates the KashFlow account has (``GetVATRates``)."""
    rates = {Decimal(str(r["Value"])) for r in (client.call("GetVATRates") or {}).get("BasicDataset") or []}
    return [f"mapping.tax_codes[{code!r}] = {rate}: no such VAT rate in this KashFlow account"
            for code, rate in mapping_config.tax_codes.items() if Decimal(rate) not in rates]


class KashFlowConnector(EngineConnector):
    platform = "kashflow"
    settings_model = KashFlowSettings
    mapping_check = staticmethod(check)
    # Invoices are deleted (no void); payments deleted; credit notes applied by their own call; no lock date in
    # the SOAP API; no batch operation.
    capabilities = Capabilities(negative_totals=True, void="delete", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=True, closed_periods=False, batch_create=0,
                                refund_settlement=True, multi_currency=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: KashFlowSettings = self.settings
        http = self.platform_http(base_url=target.base_url or DEFAULT_BASE_URL, classify=classify)
        self.client = KashFlowClient(http, settings.wsdl, runtime.credentials(target.name))
        self.mapping, self.currencies = target.mapping, Currencies(self.client)  # currency.py: code and rate

    def _typed(self, type_name: str, values: dict[str, Any]) -> dict[str, Any]:
        if "Lines" in values:
            lines = [complete(self.client.soap, "InvoiceLine", ln) for ln in values["Lines"]["InvoiceLine"]]
            values = {**values, "Lines": {"InvoiceLine": lines}}
        return complete(self.client.soap, type_name, values)

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = self.client.call("GetCustomer", missing_ok=True, CustomerCode=mapping.customer_code(customer))
        if ours and ours.get("CustomerID"):
            return _customer(ours)

        def search(key: str, value: str) -> list[dict[str, Any]]:
            if key == "email":
                found = self.client.call("GetCustomerByEmail", missing_ok=True, CustomerEmail=value)
                return [found] if found and found.get("CustomerID") else []
            everyone = (self.client.call("GetCustomers") or {}).get("Customer") or []
            return [c for c in everyone if key == "name" and c.get("Name") == value]

        def owner(row: dict[str, Any]) -> str | None:  # another shop customer's record is never ours
            code = str(row.get("Code") or "")
            return code.removeprefix(mapping.CODE_PREFIX) if code.startswith(mapping.CODE_PREFIX) else None

        found = references.match_customer(customer, self.mapping.customer_match, search, owner)
        return _customer(found) if found else None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        new_id = self.client.call("InsertCustomer", write=True,
                                  custr=self._typed("Customer", mapping.customer_args(customer)))
        return ExternalRef(external_id=str(new_id))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        if is_placeholder(ref.external_id):
            return None
        held = self.client.call("GetCustomerByID", missing_ok=True, CustomerID=int(ref.external_id))
        if not held or not held.get("CustomerID"):
            return None
        record = {k: v for k, v in held.items() if v is not None} | mapping.customer_args(customer)
        self.client.call("UpdateCustomer", write=True, custr=self._typed("Customer", record))
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # KashFlow lines post on nominal codes (ProductID 0)

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("kashflow posts lines on nominal codes, never on products")

    create_item = find_item

    # -- look-ups by our reference (KashFlow has no search by it: a scan by date, newest last) --
    def _invoices(self) -> list[dict[str, Any]]:
        today = date.today()
        found = self.client.call("GetInvoicesByDateRange", StartDate=when(today - timedelta(days=self.settings.lookup_days)),
                                 EndDate=when(today + timedelta(days=self.settings.lookup_days)))
        return sorted((found or {}).get("Invoice") or [], key=lambda i: i["InvoiceDBID"])

    def _payments(self) -> list[dict[str, Any]]:
        today, page, rows = date.today(), 1, []
        while True:
            found = (self.client.call("GetInvoicePaymentsByDateRange", PageNumber=page,
                                      StartDate=when(today - timedelta(days=self.settings.lookup_days)),
                                      EndDate=when(today + timedelta(days=self.settings.lookup_days))) or {})
            if not found.get("Payment"):
                return rows
            rows, page = rows + found["Payment"], page + 1

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):  # a receipt, or money paid back on a credit note
            return [_payment(p) for p in self._payments() if p.get("PayNote") == reference]
        documents = [_ref(d) for d in self._invoices() if d.get("CustomerReference") == reference]
        if kind is not DocKind.CREDIT_APPLICATION:
            return documents
        # An application is the credit note's negative payment; money paid back (our settlement) is one too.
        return [_payment(p) for d in documents for p in self._paid(d.external_id)
                if p["PayAmount"] < 0 and not str(p.get("PayNote") or "").startswith(references.SETTLEMENT_PREFIX)]

    def _paid(self, number: str) -> list[dict[str, Any]]:
        if is_placeholder(number):
            return []
        found = self.client.call("GetInvoicePayment", missing_ok=True, InvoiceNumber=int(number))
        return (found or {}).get("Payment") or []

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        args = mapping.invoice_args(event, posting.customer_id, self.mapping, posting.txn_date) | self._currency(event)
        number = self.client.call("InsertInvoice_TypeDefined", write=True, Inv_TD=self._typed("Invoice_TypeDefined", args))
        return self.read_invoice(str(number)) or RemoteInvoice(external_id=str(number), number=event.number)

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        held = self.read_invoice(current.external_id)
        args = mapping.invoice_args(event, posting.customer_id, self.mapping, posting.txn_date,
                                    number=int(current.external_id) if held else 0) | self._currency(event)
        args["InvoiceDBID"] = int((held.raw or {}).get("InvoiceDBID") or 0) if held else 0
        self.client.call("UpdateInvoice_TypeDefined", write=True, InvTD=self._typed("Invoice_TypeDefined", args))
        return self.read_invoice(current.external_id) or RemoteInvoice(external_id=current.external_id)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        held = self.read_invoice(current.external_id)
        if held is None:
            return None  # already deleted
        self.client.call("DeleteInvoice", write=True, InvoiceNumber=int(current.external_id))
        return held.model_copy(update={"status": "deleted"})

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        if is_placeholder(external_id):
            return None
        found = self.client.call("GetInvoice_TypeDefined", missing_ok=True, InvoiceNumber=int(external_id))
        return _remote(found) if found and found.get("InvoiceNumber") else None

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        args = mapping.payment_args(payment, as_id(invoice_id), self.mapping, self.settings.pay_method, posting.txn_date)
        pay_id = self.client.call("InsertInvoicePayment", write=True, InvoicePayment=self._typed("Payment", args))
        return ExternalRef(external_id=str(pay_id), amount=payment.amount)

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        # Already deleted: KashFlow says the payment is not there, which is the wanted state.
        self.client.call("DeleteInvoicePayment", write=True, missing_ok=True, InvoicePaymentNumber=int(ref.external_id))

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        args = mapping.credit_note_args(event, refund, posting.customer_id, self.mapping) | self._currency(event)
        number = self.client.call("InsertInvoice_TypeDefined", write=True, Inv_TD=self._typed("Invoice_TypeDefined", args))
        return ExternalRef(external_id=str(number), amount=refund.amount + refund.tax_amount)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        # applyCreditNoteToInvoice takes the documents' database ids and applies what both have open.
        ids = [(self.read_invoice(n) or RemoteInvoice(external_id=n)).raw.get("InvoiceDBID", n)
               for n in (invoice_id, credit.external_id)]
        self.client.call("applyCreditNoteToInvoice", write=True, InvoiceID=ids[0], CreditNoteID=ids[1])
        made = [p for p in self._paid(credit.external_id) if p["PayAmount"] < 0]
        return _payment(made[-1]) if made else ExternalRef(external_id=f"<applied {credit.external_id}>", amount=amount)

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        self.delete_payment(application, request_id)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """A negative payment on the credit note: the money paid back, out of the refunded payment's bank account."""
        args = mapping.refund_payment_args(event, refund, as_id(credit.external_id), amount, reference, self.mapping,
                                           self.settings.pay_method)
        pay_id = self.client.call("InsertInvoicePayment", write=True, InvoicePayment=self._typed("Payment", args))
        return ExternalRef(external_id=str(pay_id), amount=amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self.delete_payment(settlement, request_id)

    # -- currency: the invoice's own CurrencyCode and KashFlow's rate (currency.py) --
    def home_currency(self) -> str | None:  # configured, else GetCurrencies' default
        return self.mapping.home_currency or self.currencies.home()

    def _currency(self, event: InvoiceEvent) -> dict[str, Any]:
        return self.currencies.fields(event, self.home_currency())

    # -- closed periods: KashFlow's SOAP API exposes no lock date --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        raise PermanentError("kashflow: closed periods are not handled (no lock date in the SOAP API)")


def _customer(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["CustomerID"]))


def _ref(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["InvoiceNumber"]), amount=_total(row))


def _payment(row: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(row["PayID"]), amount=abs(row["PayAmount"]))


def _total(row: dict[str, Any]) -> Decimal:
    return abs((row.get("NetAmount") or Decimal(0)) + (row.get("VATAmount") or Decimal(0)))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    """KashFlow has no concurrency token: the token is a digest of what it holds (a change shows, nothing checks it)."""
    total = _total(invoice)
    held = repr([invoice.get(k) for k in ("InvoiceDate", "DueDate", "CustomerID", "CustomerReference", "ReadableString",
                                          "NetAmount", "VATAmount", "Lines")])
    return RemoteInvoice(external_id=str(invoice["InvoiceNumber"]), number=invoice.get("CustomerReference"),
                         token=hashlib.sha256(held.encode()).hexdigest()[:16], status="issued", total=total, tax_total=invoice.get("VATAmount"),
                         balance=total - (invoice.get("AmountPaid") or Decimal(0)), raw=invoice)
