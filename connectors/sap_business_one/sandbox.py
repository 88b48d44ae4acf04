"""A local SAP Business One Service Layer (``/b1s/v1``, OData v3) for the demo and the tests.

Built from the field table and conventions of ``sap-business-one/SOURCE.md`` (SAP publishes no $metadata outside
the product) and the platform notes: ``POST /b1s/v1/Login`` ``{CompanyDB, UserName, Password}`` answering
``SessionId``/``Version``/``SessionTimeout`` and the ``B1SESSION`` + ``ROUTEID`` cookies, a 30-minute idle
timeout (then 401, code 301 "Invalid session"), ``POST /b1s/v1/Logout``; entity sets ``BusinessPartners``
(key ``CardCode``), ``Invoices``, ``CreditNotes``, ``IncomingPayments``, ``VendorPayments`` (outgoing payments,
the same ``SAPB1.Payment`` type; to a customer, ``DocType`` rCustomer, paying A/R credit memos: ``PaymentInvoices``
``it_CredItnote``, never more than a memo has open; key ``DocEntry``); ``$filter``
(``Field eq 'text'`` joined by ``and``) with server-driven paging (``Prefer: odata.maxpagesize``, default 20,
``odata.nextLink``); unknown properties refused ("Property 'X' of 'Document' is invalid"), required fields,
enums (``cCustomer``, ``dDocument_Service``, ``rCustomer``, ``it_Invoice``…), lengths, dates and decimals
checked; tax computed per row and jurisdiction from the row's ``TaxCode``; posted documents never deleted and
their amounts never changed (``PATCH`` of a document: header texts and dates, lines matched by ``LineNum``);
``POST Invoices(n)/Cancel`` (a cancellation document; refused while payments or copied credit memos are on
it), ``POST CreditNotes(n)/Cancel`` (refused while an outgoing payment pays it), ``POST IncomingPayments(n)/Cancel``,
``POST VendorPayments(n)/Cancel``; credit memos copied from an invoice (``BaseType`` 13, ``BaseEntry``,
``BaseLine``) reconciled with it; errors as ``{"error": {"code", "message": {"lang": "en-us", "value"}}}``.

Not modelled: ``$batch``, ``$metadata``, items and warehouses (service documents only), posting periods,
exchange rates, user-defined fields. SAP's error codes other than 301 and -1000 and error texts not quoted in
SOURCE.md are the sandbox's own. The Service Layer documents no rate limit, so none is kept.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
import threading
import time
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer

COMPANY_DB = "SBODEMOUS"
CENT, ZERO = Decimal("0.01"), Decimal("0")
TRANSFER_ACCOUNT = "_SYS00000000001"
SEGMENT = re.compile(r"^(\w+)(?:\((\d+|'(?:[^']|'')*')\))?(?:/(Cancel|Close))?$")
FILTER = re.compile(r"^(\w+) eq '((?:[^']|'')*)'$")

# Writable properties (name -> type[:max length or enum]) from SOURCE.md's field table.
S, D, N, I, A = "string", "date", "decimal", "integer", "array"
LINE = {"LineNum": I, "ItemCode": S + ":50", "AccountCode": S + ":15", "ItemDescription": S + ":100",
        "ItemDetails": S + ":254", "Quantity": N, "UnitPrice": N, "Price": N, "DiscountPercent": N, "LineTotal": N,
        "TaxCode": S + ":8", "VatGroup": S + ":8", "WarehouseCode": S + ":8", "CostingCode": S + ":8",
        "ProjectCode": S + ":20", "BaseType": I, "BaseEntry": I, "BaseLine": I}
DOCUMENT = {"CardCode": S + ":15", "DocDate": D, "DocDueDate": D, "TaxDate": D,
            "DocType": "enum:dDocument_Items|dDocument_Service", "NumAtCard": S + ":100", "Comments": S + ":254",
            "DocCurrency": S + ":3", "DocRate": N, "Series": I, "JournalMemo": S + ":50", "DiscountPercent": N,
            "DocumentLines": A}
ADDRESS = {"AddressName": S + ":50", "Street": S + ":100", "City": S + ":100", "ZipCode": S + ":20",
           "Country": S + ":3", "AddressType": "enum:bo_BillTo|bo_ShipTo"}
PAYMENT_INVOICE = {"DocEntry": I, "SumApplied": N, "AppliedFC": N, "InvoiceType": "enum:it_Invoice|it_CredItnote"}
PAYMENT = {"CardCode": S + ":15", "DocDate": D, "DocType": "enum:rCustomer", "DocCurrency": S + ":3",
           "Remarks": S + ":254", "CounterReference": S + ":8", "CashSum": N, "CashAccount": S + ":15",
           "TransferSum": N, "TransferAccount": S + ":15", "TransferDate": D, "TransferReference": S + ":27",
           "PaymentCreditCards": A, "PaymentChecks": A, "PaymentInvoices": A}
PAYMENTS = ("IncomingPayments", "VendorPayments")  # both SAPB1.Payment: money in, money out
WRITABLE: dict[str, dict[str, str]] = {
    "BusinessPartners": {"CardCode": S + ":15", "CardName": S + ":100", "CardType": "enum:cCustomer|cSupplier|cLid",
                         "Currency": S + ":3", "Phone1": S + ":20", "EmailAddress": S + ":100",
                         "FederalTaxID": S + ":32", "VatGroup": S + ":8", "BPAddresses": A},
    "Invoices": DOCUMENT, "CreditNotes": DOCUMENT,
    "IncomingPayments": PAYMENT, "VendorPayments": PAYMENT,
}
NESTED = {"DocumentLines": LINE, "BPAddresses": ADDRESS, "PaymentInvoices": PAYMENT_INVOICE}
TYPE_NAME = {"BusinessPartners": "BusinessPartner", "Invoices": "Document", "CreditNotes": "Document",
             "IncomingPayments": "Payment", "VendorPayments": "Payment", "DocumentLines": "DocumentLine", "BPAddresses": "BPAddress",
             "PaymentInvoices": "PaymentInvoice"}
# A posted document's PATCH: only texts and dates; its lines (matched by LineNum) only their texts.
PATCHABLE = {"Comments", "NumAtCard", "DocDueDate", "JournalMemo", "DocumentLines"}
PATCHABLE_LINE = {"LineNum", "ItemDescription", "ItemDetails"}


class B1Error(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        return b1_error(self.status, self.code, self.message)


def b1_error(status: int, code: int, message: str) -> Response:
    body = {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def check_properties(entity: str, body: Any, writable: dict[str, str] | None = None) -> None:
    """Unknown properties refused; types, lengths and enums of the field table."""
    if not isinstance(body, dict):
        raise B1Error(400, -1000, "The request body must be a JSON object.")
    writable = writable if writable is not None else WRITABLE[entity]
    for name, value in body.items():
        kind = writable.get(name)
        if kind is None:
            raise B1Error(400, -1000, f"Property '{name}' of '{TYPE_NAME[entity]}' is invalid")
        if kind == A:
            if not isinstance(value, list):
                raise B1Error(400, -1000, f"Property '{name}' of '{TYPE_NAME[entity]}' must be a collection")
            for row in value:
                check_properties(name, row, NESTED.get(name, {}))
            continue
        _check_value(name, kind, value)


def _check_value(name: str, kind: str, value: Any) -> None:
    base, _, rule = kind.partition(":")
    invalid = B1Error(400, -1000, f"Value '{value}' of property '{name}' is invalid ({base})")
    if base in (N, I):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or (base == I and not isinstance(value, int)):
            raise invalid
    elif not isinstance(value, str):
        raise invalid
    elif base == D:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise invalid from None
    elif base == "enum" and value not in rule.split("|"):
        raise B1Error(400, -1000, f"Enum value '{value}' is invalid for property '{name}'")
    elif base == S and rule and len(value) > int(rule):
        raise B1Error(400, -5002, f"Value too long in property '{name}' (maximum {rule} characters)")


class Sandbox:
    """The Service Layer as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, session_timeout_min: int = 30) -> None:
        self.faults = faults or Faults()
        self.session_timeout_min = session_timeout_min
        self.users: dict[str, str] = {}
        self.sessions: dict[str, float] = {}  # session id -> last used (time.time())
        self.logins = 0
        self.sets: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in WRITABLE}
        self.accounts = {"40100", "40200", "40300", "22100", "40900", TRANSFER_ACCOUNT}
        # Sales tax codes -> their jurisdictions and rates (a combination: one row per jurisdiction).
        self.tax_codes: dict[str, tuple[tuple[str, Decimal], ...]] = {
            "GST": (("GST", Decimal("5")),), "PST": (("PST", Decimal("7")),),
            "GSTPST": (("GST", Decimal("5")), ("PST", Decimal("7"))), "STATE": (("STATE", Decimal("6.25")),),
            "COUNTY": (("COUNTY", Decimal("1")),), "STCNTY": (("STATE", Decimal("6.25")), ("COUNTY", Decimal("1"))),
            "EX": ()}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path below /b1s/v1, body)
        self._entries = itertools.count(1)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/b1s/v1/Login", self._login, methods=["POST"]),
            Route("/b1s/v1/Logout", self._logout, methods=["POST"]),
            Route("/b1s/v1/{rest:path}", self._api, methods=["GET", "POST", "PATCH", "DELETE"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        username, password = "manager" + secrets.token_hex(3), secrets.token_urlsafe(18)
        with self._lock:
            self.users[username] = password
        return {"company_db": COMPANY_DB, "username": username, "password": password}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "sap-business-one", "base_url": f"{base_url}/b1s/v1",
            "settings": {"transfer_account": TRANSFER_ACCOUNT},
            "mapping": {"income_accounts": {"part": "40100", "labour": "40200", "fee": "40300", "sublet": "40200",
                                            "discount": "40100", "core_charge": "40100", "core_return": "40100"},
                        "core_account": "22100", "discount_account": "40900",
                        "tax_codes": {"GST": "GST", "PST": "PST", "GST+PST": "GSTPST", "STATE": "STATE",
                                      "COUNTY": "COUNTY", "COUNTY+STATE": "STCNTY", "none": "EX"}},
        }

    def rate_limit_breaches(self) -> int:
        return 0  # the Service Layer documents no rate limit: nothing is refused for one

    def expire_sessions(self) -> None:
        with self._lock:
            self.sessions = {sid: 0.0 for sid in self.sessions}

    def records(self, entity_set: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.sets[entity_set].values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            payments = [p for p in self.sets["IncomingPayments"].values() if p["Cancelled"] == "tNO"]
            for invoice in self.sets["Invoices"].values():
                if invoice["CancelStatus"] == "csCancellation":
                    continue
                # What each payment received for this invoice (anything Business One could not apply to it stays
                # on the customer's account).
                paid = [sum((Decimal(pi["SumApplied"]) for pi in p.get("PaymentInvoices") or []
                             if pi.get("DocEntry") == invoice["DocEntry"]), ZERO) for p in payments
                        if any(pi.get("DocEntry") == invoice["DocEntry"] for pi in p.get("PaymentInvoices") or [])]
                out.append(BookedInvoice(
                    number=invoice.get("NumAtCard") or "", external_id=str(invoice["DocEntry"]),
                    voided=invoice["CancelStatus"] == "csYes", total=invoice["DocTotal"], tax_total=invoice["VatSum"],
                    line_count=len(invoice["DocumentLines"]), payments_applied=sum(paid, ZERO),
                    payment_count=len(paid)))
            return out

    def bookkeeper_edit(self, doc_entry: str) -> None:
        """The bookkeeper changes the invoice's remarks in Business One (no concurrency token: last write wins)."""
        with self._lock:
            invoice = self.sets["Invoices"].get(str(doc_entry))
            if invoice is not None:
                invoice["Comments"] = "Checked by the bookkeeper"
                self._stamp(invoice)

    # -- sessions --
    async def _login(self, request: Request) -> Response:
        try:
            body = jsonmoney.loads(await request.body())
        except ValueError:
            return b1_error(400, -1000, "The request body is not valid JSON.")
        if not isinstance(body, dict) or set(body) - {"CompanyDB", "UserName", "Password", "Language"}:
            return b1_error(400, -1000, "Login accepts CompanyDB, UserName, Password and Language only")
        if body.get("CompanyDB") != COMPANY_DB or self.users.get(str(body.get("UserName"))) != body.get("Password"):
            return b1_error(401, -304, "Login failed: wrong company database, user name or password")
        session = secrets.token_hex(18)
        with self._lock:
            self.sessions[session] = time.time()
            self.logins += 1
        response = Response(jsonmoney.dumps({"odata.metadata": "$metadata#B1Sessions/@Element", "SessionId": session,
                                             "Version": "1000230", "SessionTimeout": self.session_timeout_min}),
                            media_type="application/json")
        response.set_cookie("B1SESSION", session, path="/b1s/v1", httponly=True)
        response.set_cookie("ROUTEID", ".node1", path="/b1s")
        return response

    def _session(self, request: Request) -> str | None:
        session = request.cookies.get("B1SESSION", "")
        with self._lock:
            used = self.sessions.get(session)
            if used is None or time.time() - used > self.session_timeout_min * 60 or request.cookies.get("ROUTEID") != ".node1":
                return None
            self.sessions[session] = time.time()
        return session

    async def _logout(self, request: Request) -> Response:
        session = self._session(request)
        with self._lock:
            self.sessions.pop(session or "", None)
        return Response(status_code=204)

    # -- the API --
    async def _api(self, request: Request) -> Response:
        if self._session(request) is None:
            return b1_error(401, 301, "Invalid session or session already timeout.")
        path = request.path_params["rest"].strip("/")
        matched = SEGMENT.match(path)
        if matched is None or matched.group(1) not in self.sets:
            return b1_error(404, -1000, f"Resource not found for the segment '{path}'.")
        name, key, action = matched.group(1), matched.group(2), matched.group(3)
        key = key.strip("'").replace("''", "'") if key else None
        if request.method == "GET":
            with self._lock:
                try:
                    return self._ok(self._read(name, key, request))
                except B1Error as error:
                    return error.response()
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return b1_error(400, -1000, "The request body is not valid JSON.")
        self.requests.append((request.method, path, body))
        decided = self.faults.draw()
        if decided == "500":
            return b1_error(500, -1, "Internal server error")
        if decided == "429":
            response = b1_error(429, -1, "Too many requests")  # a proxy in front of the server (injected fault)
            response.headers["Retry-After"] = "1"
            return response
        with self._lock:
            try:
                answer, status = self._write(request.method, name, key, action, body)
                response = self._ok(answer, status) if answer is not None else Response(status_code=204)
            except B1Error as error:
                response = error.response()
        if decided == "timeout":
            await self.faults.hang()
        return response

    @staticmethod
    def _ok(body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json;odata=minimalmetadata")

    # -- reads --
    def _get(self, name: str, key: str) -> dict[str, Any]:
        row = self.sets[name].get(key)
        if row is None:
            raise B1Error(404, -2028, "No matching records found (ODBC -2028)")
        return row

    def _read(self, name: str, key: str | None, request: Request) -> Any:
        if key is not None:
            return self._view(self._get(name, key))
        query = request.query_params
        rows = list(self.sets[name].values())
        for clause in filter(None, (query.get("$filter") or "").split(" and ")):
            matched = FILTER.match(clause.strip())
            if not matched:
                raise B1Error(400, -1000, f"The $filter '{clause}' is not supported by this sandbox.")
            field, value = matched.group(1), matched.group(2).replace("''", "'")
            rows = [r for r in rows if str(r.get(field, "")) == value]
        prefer = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
        size, skip = int(prefer.group(1)) if prefer else 20, int(query.get("$skip") or 0)
        answer: dict[str, Any] = {"odata.metadata": f"$metadata#{name}",
                                  "value": [self._view(r) for r in rows[skip:skip + size]]}
        if skip + size < len(rows):
            answer["odata.nextLink"] = f"{name}?" + urlencode({**dict(query), "$skip": skip + size})
        return answer

    @staticmethod
    def _view(row: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in row.items() if not k.startswith("_")}

    # -- writes --
    def _write(self, method: str, name: str, key: str | None, action: str | None, body: Any) -> tuple[Any, int]:
        if action:
            if method != "POST" or key is None:
                raise B1Error(405, -1000, f"{method} is not allowed on the action {action}")
            return self._action(name, self._get(name, key), action), 204
        if method == "POST" and key is None:
            check_properties(name, body)
            return self._view(self._create(name, copy.deepcopy(body))), 201
        if method == "PATCH" and key is not None:
            return self._patch(name, self._get(name, key), body), 204
        if method == "DELETE":
            raise B1Error(400, -5006, "Posted documents and business partners with transactions cannot be "
                          "removed; cancel the document instead")
        raise B1Error(405, -1000, f"{method} is not allowed on {name}")

    def _create(self, name: str, row: dict[str, Any]) -> dict[str, Any]:
        if name == "BusinessPartners":
            for field in ("CardCode", "CardName"):
                if not row.get(field):
                    raise B1Error(400, -10, f"Property '{field}' of 'BusinessPartner' is missing")
            if row["CardCode"] in self.sets[name]:
                raise B1Error(400, -10, f"1320000140 - Business partner code '{row['CardCode']}' already assigned "
                              "to a business partner; enter a unique business partner code")
            row.setdefault("CardType", "cCustomer")
            self.sets[name][row["CardCode"]] = row
            return row
        customer = self.sets["BusinessPartners"].get(str(row.get("CardCode") or ""))
        if customer is None or customer["CardType"] != "cCustomer":
            raise B1Error(400, -10, f"Invalid BP code '{row.get('CardCode')}'")
        entry = next(self._entries)
        row.update(DocEntry=entry, DocNum=entry)
        self._stamp(row)
        if name in PAYMENTS:
            self._payment(name, row)
        else:
            self._document(name, row)
        self.sets[name][str(entry)] = row
        return row

    def _document(self, name: str, row: dict[str, Any]) -> None:
        if not row.get("DocDueDate"):
            raise B1Error(400, -10, "Property 'DocDueDate' of 'Document' is missing")
        lines = row.get("DocumentLines") or []
        if not lines:
            raise B1Error(400, -5002, "Document must have at least one row")
        row.setdefault("DocDate", date.today().isoformat())
        row.setdefault("DocType", "dDocument_Items")
        if row["DocType"] != "dDocument_Service":
            raise B1Error(400, -5002, "Item documents are not modelled by this sandbox: use dDocument_Service")
        for number, line in enumerate(lines):
            if line.get("AccountCode") not in self.accounts:
                raise B1Error(400, -5002, f"Invalid G/L account '{line.get('AccountCode')}' [DocumentLines.AccountCode]"
                              f"[line: {number + 1}]")
            if (line.get("TaxCode") or "") not in self.tax_codes:
                raise B1Error(400, -5002, f"Invalid tax code '{line.get('TaxCode')}' [DocumentLines.TaxCode]"
                              f"[line: {number + 1}]")
            amount = _money(Decimal(line.get("LineTotal", 0)))
            tax = sum((_money(amount * rate / 100) for _, rate in self.tax_codes[line["TaxCode"]]), ZERO)
            line.update(LineNum=number, LineTotal=amount, TaxTotal=tax)
        net, tax = sum((ln["LineTotal"] for ln in lines), ZERO), sum((ln["TaxTotal"] for ln in lines), ZERO)
        row.update(DocTotal=net + tax, VatSum=tax, PaidToDate=ZERO, CancelStatus="csNo", Cancelled="tNO",
                   DocumentStatus="bost_Open")
        if name == "CreditNotes":
            self._reconcile(row)

    def _reconcile(self, memo: dict[str, Any]) -> None:
        """A credit memo copied from an invoice (BaseType 13) is reconciled with it, as far as it is open."""
        bases = {(ln.get("BaseType"), ln.get("BaseEntry"), ln.get("BaseLine")) for ln in memo["DocumentLines"]
                 if ln.get("BaseType") is not None or ln.get("BaseEntry") is not None}
        memo["_applied"] = ZERO
        for base_type, entry, line in bases:
            invoice = self.sets["Invoices"].get(str(entry))
            if base_type != 13 or invoice is None or invoice["CancelStatus"] != "csNo":
                raise B1Error(400, -5002, f"Base document {base_type}/{entry} is not an open A/R invoice")
            if invoice["CardCode"] != memo["CardCode"] or not any(
                    ln["LineNum"] == line for ln in invoice["DocumentLines"]):
                raise B1Error(400, -5002, f"Base line {line} of A/R invoice {entry} does not exist for this customer")
            applied = min(memo["DocTotal"] - memo["_applied"], invoice["DocTotal"] - invoice["PaidToDate"])
            memo["_applied"] += applied
            invoice["PaidToDate"] += applied
            self._settle(invoice)

    def _stamp(self, row: dict[str, Any]) -> None:
        """``UpdateDate``/``UpdateTime`` of the record (the time to the second, a counter beyond it)."""
        row.update(UpdateDate=date.today().isoformat(), UpdateTime=time.strftime("%H:%M:%S"),
                   _version=next(self._entries))

    def _settle(self, document: dict[str, Any]) -> None:
        self._stamp(document)
        if document["CancelStatus"] == "csNo":  # a credit memo: paid out, or reconciled with its invoice
            settled = document["PaidToDate"] + document.get("_applied", ZERO)
            document["DocumentStatus"] = "bost_Close" if settled >= document["DocTotal"] else "bost_Open"

    def _payment(self, name: str, row: dict[str, Any]) -> None:
        if name == "IncomingPayments":
            row.setdefault("DocType", "rCustomer")
        elif row.get("DocType") != "rCustomer":  # Business One's default for an outgoing payment is a supplier's
            raise B1Error(400, -5002, "Outgoing payments to suppliers and accounts are not modelled by this sandbox: "
                          "DocType rCustomer")
        means = sum((Decimal(row.get(field) or 0) for field in ("CashSum", "TransferSum")), ZERO)
        if not means and not row.get("PaymentChecks") and not row.get("PaymentCreditCards"):
            raise B1Error(400, -5002, "Enter a payment means (cash, transfer, check or credit card)")
        for field, account in (("TransferSum", "TransferAccount"), ("CashSum", "CashAccount")):
            if row.get(field) and row.get(account) not in self.accounts:
                raise B1Error(400, -5002, f"Invalid G/L account '{row.get(account)}' [{account}]")
        if name == "VendorPayments":
            return self._paid_out(row, means)
        applied = ZERO
        for part in row.get("PaymentInvoices") or []:
            invoice = self.sets["Invoices"].get(str(part.get("DocEntry")))
            if part.get("InvoiceType", "it_Invoice") != "it_Invoice" or invoice is None \
                    or invoice["CancelStatus"] != "csNo" or invoice["CardCode"] != row["CardCode"]:
                raise B1Error(400, -5002, f"Document {part.get('DocEntry')} is not an open A/R invoice of this customer")
            if Decimal(part["SumApplied"]) > invoice["DocTotal"] - invoice["PaidToDate"]:
                raise B1Error(400, -5002, f"Amount applied exceeds the open balance of invoice {invoice['DocNum']}")
            applied += Decimal(part["SumApplied"])
        if applied > means and means:
            raise B1Error(400, -5002, "The total applied exceeds the payment amount")
        for part in row.get("PaymentInvoices") or []:
            invoice = self.sets["Invoices"][str(part["DocEntry"])]
            invoice["PaidToDate"] += Decimal(part["SumApplied"])
            self._settle(invoice)
        row.update(Cancelled="tNO", DocTotal=means)

    def _paid_out(self, row: dict[str, Any], means: Decimal) -> None:
        """An outgoing payment to a customer: it pays A/R credit memos of that customer (``it_CredItnote``), never
        more than a memo has open (neither reconciled with its invoice nor paid out before)."""
        parts = row.get("PaymentInvoices") or []
        for part in parts:
            memo = self.sets["CreditNotes"].get(str(part.get("DocEntry")))
            if part.get("InvoiceType") != "it_CredItnote" or memo is None or memo["CancelStatus"] != "csNo" \
                    or memo["CardCode"] != row["CardCode"]:
                raise B1Error(400, -5002, f"Document {part.get('DocEntry')} is not an open A/R credit memo of this "
                              "customer")
            if not ZERO < Decimal(part["SumApplied"]) <= self.credit_open(memo):
                raise B1Error(400, -5002, f"Amount applied exceeds the open balance of credit memo {memo['DocNum']}")
        if not parts or sum((Decimal(p["SumApplied"]) for p in parts), ZERO) != means:
            raise B1Error(400, -5002, "An outgoing payment to a customer must pay its credit memos exactly")
        for part in parts:
            memo = self.sets["CreditNotes"][str(part["DocEntry"])]
            memo["PaidToDate"] += Decimal(part["SumApplied"])
            self._settle(memo)
        row.update(Cancelled="tNO", DocTotal=means)

    @staticmethod
    def credit_open(memo: dict[str, Any]) -> Decimal:
        """What of an A/R credit memo is still the customer's credit: neither reconciled with its invoice nor paid
        out to the customer."""
        return memo["DocTotal"] - memo["_applied"] - memo["PaidToDate"]

    def _patch(self, name: str, current: dict[str, Any], body: Any) -> None:
        check_properties(name, body)
        if name == "BusinessPartners":
            if "CardCode" in body and body["CardCode"] != current["CardCode"]:
                raise B1Error(400, -5002, "The business partner code cannot be changed")
            current.update(copy.deepcopy(body))
            self._stamp(current)
            return None
        if name in PAYMENTS or set(body) - PATCHABLE or current.get("CancelStatus", "csNo") != "csNo":
            raise B1Error(400, -5002, "Cannot update a posted document: only remarks, the reference and the due "
                          "date can change")
        held = {ln["LineNum"]: ln for ln in current["DocumentLines"]}
        for line in body.get("DocumentLines") or []:
            if set(line) - PATCHABLE_LINE or line.get("LineNum") not in held:
                raise B1Error(400, -5002, "Cannot update a posted document's row amounts or accounts")
        for line in body.pop("DocumentLines", None) or []:
            held[line["LineNum"]].update(line)
        current.update(copy.deepcopy(body))
        self._stamp(current)
        return None

    def _action(self, name: str, current: dict[str, Any], action: str) -> None:
        if action != "Cancel" or name not in ("Invoices", "CreditNotes", *PAYMENTS):
            raise B1Error(405, -1000, f"The action '{action}' is not bound to {name}")
        if name in PAYMENTS:
            if current["Cancelled"] == "tYES":
                raise B1Error(400, -5002, "The payment is already cancelled")
            paid = "Invoices" if name == "IncomingPayments" else "CreditNotes"
            for part in current.get("PaymentInvoices") or []:
                document = self.sets[paid][str(part["DocEntry"])]
                document["PaidToDate"] -= Decimal(part["SumApplied"])
                self._settle(document)
            current["Cancelled"] = "tYES"
            self._stamp(current)
            return None
        if current["CancelStatus"] != "csNo":
            raise B1Error(400, -5002, "The document is already cancelled or is a cancellation document")
        if name == "Invoices":
            copied = any(m["CancelStatus"] == "csNo" and any(ln.get("BaseEntry") == current["DocEntry"]
                                                             for ln in m["DocumentLines"])
                         for m in self.sets["CreditNotes"].values())
            if current["PaidToDate"] or copied:
                raise B1Error(400, -5002, "Cannot cancel the document: payments or target documents are linked "
                              "to it; cancel them first")
        elif current["PaidToDate"]:
            raise B1Error(400, -5002, "Cannot cancel the document: payments are linked to it; cancel them first")
        else:
            for line in current["DocumentLines"]:
                invoice = self.sets["Invoices"].get(str(line.get("BaseEntry")))
                if invoice is not None and current["_applied"]:
                    invoice["PaidToDate"] -= current["_applied"]
                    current["_applied"] = ZERO
                    self._settle(invoice)
        entry = next(self._entries)
        self.sets[name][str(entry)] = copy.deepcopy(current) | {
            "DocEntry": entry, "DocNum": entry, "CancelStatus": "csCancellation", "DocumentStatus": "bost_Close",
            "DocDate": date.today().isoformat()}
        current.update(CancelStatus="csYes", Cancelled="tYES", DocumentStatus="bost_Close")
        self._stamp(current)
        return None
