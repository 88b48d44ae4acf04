"""A local KashFlow SOAP service for the demo and the tests, built from KashFlow's own WSDL.

The WSDL (``$LEDGERWIRE_SPECS_DIR/kashflow/KashFlow.wsdl``) is the contract: every request's body element is
validated against the WSDL's schema (xmlschema) and refused as ASP.NET's .asmx refuses what it cannot read (HTTP 500
``soap:Fault`` "Server was unable to read request"); requests are read and answers written by zeep from the same
WSDL. As KashFlow does, every call carries the API user name and password (a wrong pair: ``Status`` "NO"), every
answer carries ``Status`` ("OK"/"NO") and ``StatusDetail``, a refusal is a 200 with ``Status`` "NO". Modelled:
customers (unique ``Code``), invoices numbered by KashFlow (``InvoiceNumber`` from 1001, ``InvoiceDBID`` apart),
lines on the account's nominal codes with one of its VAT rates (``GetVATRates``), totals computed (net = quantity x
rate, VAT as sent), updates replacing the lines (last write wins: no concurrency token), deletion refused while
payments are on the invoice, payments (method and bank account must exist; ``PayID``), credit notes as invoices with
negative lines, a credit note's refund as a negative payment on it (KashFlow's help, "Refunds & Credit Notes": a
credit note is settled by a negative payment; no more than the credit left), ``applyCreditNoteToInvoice`` (by database ids) recorded as a pair of payments (the credit note's
negative one and the invoice's, deleted together), currencies (``GetCurrencies``: the account's own USD and CAD and
EUR set up with KashFlow's rates; an invoice or credit note in another currency carries a ``CurrencyCode`` set up
there and a positive ``ExchangeRate``, else it is refused; a credit note applies only to an invoice in its
currency; ``set_currencies`` changes the list). KashFlow documents no rate limit: none is enforced. The
``StatusDetail`` texts are the sandbox's own (KashFlow publishes no catalogue)."""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import xmlschema
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from zeep.helpers import serialize_object

from connectors.kashflow.client import SOAP_NS, ZEROS, complete, plain, wsdl_client
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer

PATH = "/api/service.asmx"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
ZERO, CENT = Decimal("0"), Decimal("0.01")
NOMINAL_CODES = {4000: "Sales - parts", 4010: "Sales - labour", 4020: "Sales - fees", 2150: "Core deposits held"}
VAT_RATES = (Decimal("0"), Decimal("5"), Decimal("7"), Decimal("12"), Decimal("1"), Decimal("6.25"), Decimal("7.25"),
             Decimal("20"))
PAY_METHODS = {1: "Credit/debit card", 2: "Cash", 3: "Cheque", 4: "BACS", 9: "Credit note"}
BANK_ACCOUNTS = {1200: "Current account", 1210: "Undeposited funds"}
# Settings > Currencies: (code, KashFlow's rate: units of it per unit of the account's own currency), the first the
# account's own (isDefault).
CURRENCIES = (("USD", Decimal("1")), ("CAD", Decimal("1.3642")), ("EUR", Decimal("0.9223")))
PAGE = 100  # payments per page of GetInvoicePaymentsByDateRange (KashFlow states no page size)
NOT_READ = "System.Web.Services.Protocols.SoapException: Server was unable to read request. ---> "


def wsdl_path() -> Path:
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs")) / "kashflow" / "KashFlow.wsdl"


@lru_cache(maxsize=2)
def wsdl_schema(path: str) -> xmlschema.XMLSchema:
    """The XML schema inside the WSDL's ``types`` (what an .asmx reads requests with)."""
    types = etree.parse(path).find(f"{{{WSDL_NS}}}types/{{http://www.w3.org/2001/XMLSchema}}schema")
    return xmlschema.XMLSchema(etree.tostring(types).decode())


def envelope_problems(content: bytes, path: str | None = None) -> list[str]:
    """Why a SOAP 1.1 request is not one the WSDL's schema accepts ([] when it is)."""
    try:
        body = etree.fromstring(content).find(f"{{{SOAP_NS}}}Body")
    except etree.XMLSyntaxError as exc:
        return [f"not XML: {exc}"]
    if body is None or len(body) != 1:
        return ["no single operation element in soap:Body"]
    return [str(e.reason or e) for e in wsdl_schema(path or str(wsdl_path())).iter_errors(etree.tostring(body[0]).decode())]


class Refused(Exception):
    """A KashFlow ``Status`` "NO" answer."""


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class Sandbox:
    """KashFlow's SOAP service as a local server. ``faults`` injects 500s, 429s and timeouts (once per write)."""

    WRITES = {"InsertCustomer", "UpdateCustomer", "InsertInvoice_TypeDefined", "UpdateInvoice_TypeDefined",
              "DeleteInvoice", "InsertInvoicePayment", "DeleteInvoicePayment", "applyCreditNoteToInvoice"}

    def __init__(self, faults: Faults | None = None) -> None:
        self.wsdl = str(wsdl_path().resolve())
        self.soap = wsdl_client(self.wsdl)
        self.faults = faults or Faults()
        self.users: dict[str, str] = {}
        self.auto_auth_keys: dict[str, str] = {}  # user -> the AutoAuthKey the user was given
        self.allowed_ips: set[str] = set()  # the account's API IP address list (the user's own setting)
        self.auto_authorisations = 0
        self.customers: dict[int, dict[str, Any]] = {}
        self.invoices: dict[int, dict[str, Any]] = {}  # InvoiceNumber -> Invoice_TypeDefined (+ "deleted")
        self.payments: dict[int, dict[str, Any]] = {}  # PayID -> Payment (+ "pair": the other half of a credit)
        self.requests: list[tuple[str, Any]] = []  # (operation, arguments without the credentials) of writes
        self.currencies: dict[str, Decimal] = dict(CURRENCIES)  # code -> rate; the first is the account's own
        self._ids = {"customer": itertools.count(101), "number": itertools.count(1001), "db": itertools.count(50001),
                     "pay": itertools.count(7001)}
        self._lock = threading.RLock()
        self.app = Starlette(routes=[Route(PATH, self._endpoint, methods=["POST"])])

    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        username, password = f"shop{secrets.token_hex(3)}", secrets.token_urlsafe(16)
        key = f"{secrets.token_hex(4).upper()}-{secrets.token_hex(2).upper()}"
        self.users[username], self.auto_auth_keys[username] = password, key
        self.allowed_ips.add("127.0.0.1")  # the user listed the daemon's host when enabling the API
        return {"username": username, "password": password, "auto_auth_key": key}

    def forget_ips(self) -> None:
        """The API's IP list no longer holds the daemon's address (its host moved): AutoAuthIP must add it."""
        self.allowed_ips.clear()

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "kashflow", "base_url": f"{base_url}{PATH}",
            "settings": {"wsdl": self.wsdl, "requests_per_minute": 100_000, "concurrency": 4},
            "mapping": {"income_accounts": {"part": "4000", "labour": "4010", "fee": "4020", "sublet": "4010",
                                            "discount": "4000", "core_charge": "4000", "core_return": "4000"},
                        "core_account": "2150",
                        "tax_codes": {"STATE": "6.25", "COUNTY": "1", "COUNTY+STATE": "7.25", "GST": "5", "PST": "7",
                                      "GST+PST": "12", "none": "0"},
                        "payment_accounts": {"card": "1210", "cash": "1210", "check": "1210", "eft": "1200"}},
        }

    def set_currencies(self, rates: dict[str, Decimal]) -> None:
        """Settings > Currencies: the account's own currency first (its rate 1), then the others set up."""
        with self._lock:
            self.currencies = dict(rates)

    def rate_limit_breaches(self) -> int:
        return 0  # KashFlow documents no request limit: nothing is refused for rate

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            return [BookedInvoice(
                number=inv.get("CustomerReference") or "", external_id=str(n), voided=inv["deleted"],
                total=inv["NetAmount"] + inv["VATAmount"], tax_total=inv["VATAmount"],
                line_count=len(inv["Lines"]["InvoiceLine"]),
                payments_applied=sum((p["PayAmount"] for p in self._paid(n, receipts=True)), ZERO),
                payment_count=len(self._paid(n, receipts=True)), currency=self._currency_of(inv))
                for n, inv in self.invoices.items() if inv["NetAmount"] + inv["VATAmount"] >= 0]

    def credit_notes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [inv for inv in self.invoices.values()
                    if not inv["deleted"] and inv["NetAmount"] + inv["VATAmount"] < 0]

    # -- the SOAP endpoint --
    async def _endpoint(self, request: Request) -> Response:
        content = await request.body()
        operation = request.headers.get("SOAPAction", "").strip('"').removeprefix("KashFlow/")
        problems = envelope_problems(content, self.wsdl)
        try:
            binding = self.soap.service._binding.get(operation)
        except Exception:  # noqa: BLE001 - zeep's LookupError / ValueError for an unknown operation
            problems = problems or [f"Unable to handle request action {operation!r}"]
        if problems:
            return self._fault(NOT_READ + "; ".join(problems[:3]))
        args = serialize_object(binding.input.deserialize(etree.fromstring(content)), dict)
        user = args.pop("UserName", None)
        if self.users.get(user) != args.pop("Password", None) or not self.users:
            return self._answer(binding, None, "Incorrect username or password", operation)
        caller = request.client.host if request.client else ""
        if operation == "AutoAuthIP":
            if args.get("AutoAuthKey") != self.auto_auth_keys.get(user):
                return self._answer(binding, None, "Invalid AutoAuthKey", operation)
            self.allowed_ips.add(caller)
            self.auto_authorisations += 1
            return self._answer(binding, 1, "", operation)
        if caller not in self.allowed_ips:
            return self._answer(binding, None, f"Access denied: the IP address {caller} is not authorised", operation)
        decided = None
        if operation in self.WRITES:
            self.requests.append((operation, plain(args)))
            decided = self.faults.draw()
            if decided == "500":
                return self._fault("Server was unable to process request. ---> Timeout expired.")
            if decided == "429":
                return Response("Too many requests", status_code=429, headers={"Retry-After": "1"})
        with self._lock:
            try:
                result, detail = getattr(self, f"_op_{operation}")(**args), ""
            except Refused as refusal:
                result, detail = None, str(refusal)
            except AttributeError:
                result, detail = None, f"{operation} is not available in this sandbox"
        response = self._answer(binding, result, detail, operation)
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    def _answer(self, binding: Any, result: Any, detail: str, operation: str) -> Response:
        values: dict[str, Any] = {"Status": "NO" if detail else "OK", "StatusDetail": detail}
        for name, element in binding.output.body.type.elements:
            if name == f"{operation}Result":  # a refusal still carries a required value-type result: its zero
                values[name] = ZEROS.get(getattr(element.type, "name", None)) if result is None else result
        content = binding.output.serialize(**values).content
        return Response(etree.tostring(content, xml_declaration=True, encoding="utf-8"),
                        media_type="text/xml; charset=utf-8")

    def _fault(self, text: str) -> Response:
        body = (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body><soap:Fault>'
                f"<faultcode>soap:Client</faultcode><faultstring>{_escape(text)}</faultstring><detail /></soap:Fault>"
                "</soap:Body></soap:Envelope>")
        return Response(body, status_code=500, media_type="text/xml; charset=utf-8")

    # -- customers --
    def _customer_out(self, row: dict[str, Any] | None, missing: str) -> dict[str, Any]:
        if row is None:
            raise Refused(missing)
        return complete(self.soap, "Customer", row)

    def _op_InsertCustomer(self, custr: dict[str, Any]) -> int:
        record = plain(custr)
        if not (record.get("Name") or "").strip():
            raise Refused("Customer name is required")
        code = record.get("Code") or f"CUST{len(self.customers) + 1:04d}"
        if any(c.get("Code") == code for c in self.customers.values()):
            raise Refused(f"Customer code {code} already exists")
        new_id = next(self._ids["customer"])
        self.customers[new_id] = record | {"CustomerID": new_id, "Code": code, "Created": datetime.now()}
        return new_id

    def _op_UpdateCustomer(self, custr: dict[str, Any]) -> str:
        record = plain(custr)
        if record.get("CustomerID") not in self.customers:
            raise Refused("Customer not found")
        self.customers[record["CustomerID"]].update(record, Updated=datetime.now())
        return "OK"

    def _op_GetCustomer(self, CustomerCode: str) -> dict[str, Any]:  # noqa: N803 - the WSDL's names
        found = next((c for c in self.customers.values() if c.get("Code") == CustomerCode), None)
        return self._customer_out(found, f"Customer not found: {CustomerCode}")

    def _op_GetCustomerByID(self, CustomerID: int) -> dict[str, Any]:  # noqa: N803
        return self._customer_out(self.customers.get(CustomerID), "Customer not found")

    def _op_GetCustomerByEmail(self, CustomerEmail: str) -> dict[str, Any]:  # noqa: N803
        found = next((c for c in self.customers.values() if (c.get("Email") or "").lower() == CustomerEmail.lower()), None)
        return self._customer_out(found, "Customer not found")

    def _op_GetCustomers(self) -> dict[str, Any]:
        return {"Customer": [complete(self.soap, "Customer", c) for c in self.customers.values()]}

    # -- invoices --
    def _lines(self, inv: dict[str, Any]) -> list[dict[str, Any]]:
        lines = ((inv.get("Lines") or {}).get("InvoiceLine")) or []
        if not lines:
            raise Refused("An invoice needs at least one line")
        for line in lines:
            if line["ChargeType"] not in NOMINAL_CODES:
                raise Refused(f"Invalid nominal code {line['ChargeType']}")
            if line["VatRate"] not in VAT_RATES:
                raise Refused(f"Invalid VAT rate {line['VatRate']}")
            if not line["Quantity"]:
                raise Refused("Quantity cannot be zero")
        return lines

    def _book(self, inv: dict[str, Any], number: int, db_id: int) -> dict[str, Any]:
        if inv.get("CustomerID") not in self.customers:
            raise Refused(f"Customer ID {inv.get('CustomerID')} not found")
        if not inv.get("InvoiceDate") or inv["InvoiceDate"].year < 1900:
            raise Refused("Invoice date is required")
        lines = [line | {"LineID": i + 1} for i, line in enumerate(self._lines(inv))]
        code = inv.get("CurrencyCode") or self._currency_of({})
        if code not in self.currencies:
            raise Refused(f"Currency {code} is not set up in this account")
        if code != self._currency_of({}) and not (inv.get("ExchangeRate") or ZERO) > 0:
            raise Refused(f"An exchange rate is required for an invoice in {code}")
        return plain(inv) | {
            "InvoiceNumber": number, "InvoiceDBID": db_id, "Lines": {"InvoiceLine": lines}, "deleted": False,
            "NetAmount": sum((money(ln["Quantity"] * ln["Rate"]) for ln in lines), ZERO),
            "VATAmount": sum((ln["VatAmount"] for ln in lines), ZERO), "AmountPaid": ZERO,
            "CustomerName": self.customers[inv["CustomerID"]].get("Name")}

    def _op_InsertInvoice_TypeDefined(self, Inv_TD: dict[str, Any]) -> int:  # noqa: N803
        number = next(self._ids["number"])
        self.invoices[number] = self._book(Inv_TD, number, next(self._ids["db"]))
        return number

    def _invoice(self, number: int) -> dict[str, Any]:
        inv = self.invoices.get(number)
        if inv is None or inv["deleted"]:
            raise Refused(f"Invoice {number} not found")
        return inv

    def _op_UpdateInvoice_TypeDefined(self, InvTD: dict[str, Any]) -> None:  # noqa: N803
        held = self._invoice(InvTD["InvoiceNumber"])
        booked = self._book(InvTD, held["InvoiceNumber"], held["InvoiceDBID"])
        self.invoices[held["InvoiceNumber"]] = booked | {"AmountPaid": held["AmountPaid"]}

    def _op_GetInvoice_TypeDefined(self, InvoiceNumber: int) -> dict[str, Any]:  # noqa: N803
        return self._out(self._invoice(InvoiceNumber))

    def _out(self, inv: dict[str, Any], typed: bool = True) -> dict[str, Any]:
        view = {k: v for k, v in inv.items() if k != "deleted"}
        if typed:
            view["Lines"] = {"InvoiceLine": [complete(self.soap, "InvoiceLine", ln) for ln in inv["Lines"]["InvoiceLine"]]}
        else:
            view.pop("Lines")  # ArrayOfAnyType: the untyped lines are left out of the list
        return complete(self.soap, "Invoice_TypeDefined" if typed else "Invoice", view)

    def _op_GetInvoicesByDateRange(self, StartDate: datetime, EndDate: datetime) -> dict[str, Any]:  # noqa: N803
        return {"Invoice": [self._out(inv, typed=False) for inv in self.invoices.values()
                            if not inv["deleted"] and StartDate <= inv["InvoiceDate"] <= EndDate]}

    def _op_DeleteInvoice(self, InvoiceNumber: int) -> int:  # noqa: N803
        inv = self._invoice(InvoiceNumber)
        if self._paid(InvoiceNumber):
            raise Refused(f"Invoice {InvoiceNumber} has payments or credits allocated: delete them first")
        inv["deleted"] = True
        return InvoiceNumber

    # -- payments and credits --
    def _paid(self, number: int, receipts: bool = False) -> list[dict[str, Any]]:
        return [p for p in self.payments.values() if p["PayInvoice"] == number and not (receipts and p.get("pair"))]

    def _settle(self, number: int) -> None:
        self.invoices[number]["AmountPaid"] = sum((p["PayAmount"] for p in self._paid(number)), ZERO)

    def _op_InsertInvoicePayment(self, InvoicePayment: dict[str, Any]) -> int:  # noqa: N803
        pay = plain(InvoicePayment)
        if pay["PayMethod"] not in PAY_METHODS or pay["PayAccount"] not in BANK_ACCOUNTS:
            raise Refused("Invalid payment method or bank account")
        held = self._invoice(pay["PayInvoice"])
        total = held["NetAmount"] + held["VATAmount"]
        if total < 0:  # a credit note is refunded by a negative payment, no more than it has left
            if pay["PayAmount"] >= 0 or -pay["PayAmount"] > -(total - held["AmountPaid"]):
                raise Refused("A credit note's refund is a negative payment of no more than the credit left")
        elif pay["PayAmount"] <= 0:
            raise Refused("Payment amount must be greater than zero")
        pay_id = next(self._ids["pay"])
        self.payments[pay_id] = pay | {"PayID": pay_id}
        self._settle(pay["PayInvoice"])
        return pay_id

    def _op_DeleteInvoicePayment(self, InvoicePaymentNumber: int) -> None:  # noqa: N803
        pay = self.payments.pop(InvoicePaymentNumber, None)
        if pay is None:
            raise Refused(f"Payment {InvoicePaymentNumber} not found")
        if pay.get("pair"):
            self.payments.pop(pay["pair"], None)
            self._settle(pay["other_invoice"])
        self._settle(pay["PayInvoice"])

    def _op_GetInvoicePayment(self, InvoiceNumber: int) -> dict[str, Any]:  # noqa: N803
        self._invoice(InvoiceNumber)
        return {"Payment": [self._pay_out(p) for p in self._paid(InvoiceNumber)]}

    def _pay_out(self, pay: dict[str, Any]) -> dict[str, Any]:
        return complete(self.soap, "Payment", {k: v for k, v in pay.items() if k not in ("pair", "other_invoice")})

    def _op_GetInvoicePaymentsByDateRange(self, StartDate: datetime, EndDate: datetime, PageNumber: int
                                          ) -> dict[str, Any]:  # noqa: N803
        rows = [p for p in self.payments.values() if StartDate <= p["PayDate"] <= EndDate]
        return {"Payment": [self._pay_out(p) for p in rows[(PageNumber - 1) * PAGE:PageNumber * PAGE]]}

    def _op_applyCreditNoteToInvoice(self, InvoiceID: int, CreditNoteID: int) -> bool:  # noqa: N803
        by_db = {inv["InvoiceDBID"]: inv for inv in self.invoices.values() if not inv["deleted"]}
        invoice, credit = by_db.get(InvoiceID), by_db.get(CreditNoteID)
        if invoice is None or credit is None:
            raise Refused("Invoice or credit note not found")
        if credit["NetAmount"] + credit["VATAmount"] >= 0 or credit["CustomerID"] != invoice["CustomerID"]:
            raise Refused("The credit note does not belong to this customer's credit notes")
        if self._currency_of(credit) != self._currency_of(invoice):
            raise Refused("The credit note is not in the invoice's currency")
        open_credit = -(credit["NetAmount"] + credit["VATAmount"] - credit["AmountPaid"])
        due = invoice["NetAmount"] + invoice["VATAmount"] - invoice["AmountPaid"]
        amount = min(open_credit, due)
        if amount <= 0:
            raise Refused("Nothing to apply: the credit note or the invoice has nothing outstanding")
        on_invoice, on_credit = next(self._ids["pay"]), next(self._ids["pay"])
        common = {"PayDate": datetime.combine(datetime.now().date(), datetime.min.time()), "PayMethod": 9, "PayAccount": 0}
        self.payments[on_invoice] = common | {"PayID": on_invoice, "PayInvoice": invoice["InvoiceNumber"], "PayAmount": amount,
                                              "PayNote": f"Credit note {credit['InvoiceNumber']}", "pair": on_credit,
                                              "other_invoice": credit["InvoiceNumber"]}
        self.payments[on_credit] = common | {"PayID": on_credit, "PayInvoice": credit["InvoiceNumber"], "PayAmount": -amount,
                                             "PayNote": f"Applied to invoice {invoice['InvoiceNumber']}", "pair": on_invoice,
                                             "other_invoice": invoice["InvoiceNumber"]}
        self._settle(invoice["InvoiceNumber"])
        self._settle(credit["InvoiceNumber"])
        return True

    # -- currencies --
    def _currency_of(self, inv: dict[str, Any]) -> str:
        return inv.get("CurrencyCode") or next(iter(self.currencies))

    def _op_GetCurrencies(self) -> dict[str, Any]:
        return {"Currencies": [{"CurrencyId": i + 1, "CurrencyCode": code, "ExchangeRate": rate, "isDefault": int(i == 0)}
                               for i, (code, rate) in enumerate(self.currencies.items())]}

    def _op_GetVATRates(self) -> dict[str, Any]:
        return {"BasicDataset": [{"ID": i + 1, "Name": f"{rate}%", "Description": f"{rate}%", "Value": rate}
                                 for i, rate in enumerate(VAT_RATES)]}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
