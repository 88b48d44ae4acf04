"""A local Reckon One (API v2) for the demo and the tests.

Built from Reckon's OpenAPI 3.0 export (``reckon-one/reckon-one-api-v2.openapi.yaml``: paths, the input
schemas' required fields, types, enums and lengths — ``INPUTS`` below, checked against the spec by the tests —
the ``{"list": [...]}`` pages, ``IdResponse`` answers, ``204`` for PUT / PATCH / DELETE, ``415`` for a PATCH
that is not ``application/merge-patch+json``, and ``ErrorResponse {code, message, errors[{location, message}]}``)
and what current clients show: OAuth2 at the identity server's ``/connect/token`` (client id and secret as HTTP
Basic, access tokens of 180 minutes, refresh tokens rotated and dead after 45 days unused), Azure API Management's
``Ocp-Apim-Subscription-Key`` on every call (its own ``{"statusCode", "message"}`` 401 when missing or wrong),
the book id first in every path. Books: customers, invoices (created Draft — the status is set only by
``PATCH``; lines on ledger accounts with a tax rate by name; ``PUT`` replaces the whole invoice; ``DELETE``
refused while receipts or credit notes are linked), receipts allocated through ``transactionLinks``, credit
notes (Draft until approved) linked to invoices, ``filter=<field> eq "<value>"`` on lists, and the book's
``lockOffDate``: nothing dated on or before it is created, changed or deleted. Reckon publishes no request
limit: ``minute_limit`` (off by default) answers API Management's 429 with ``Retry-After`` when set. The
error texts are the sandbox's own (Reckon publishes no catalogue); the lock refusal names the lock off date.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client

API = "/r1/v2"
CENT, ZERO = Decimal("0.01"), Decimal("0")
TAX_STATUS = ("NonTaxed", "Inclusive", "Exclusive")
LINKED = ("Estimate", "Expense", "Timesheet", "Receipt", "CreditNote", "Payment", "Invoice", "Journal")
_LINE = {"lineNumber": "integer", "serviceDate": "date-time", "project": "string", "description": "string",
         "taxAmount": "number", "taxRate": "string", "itemDetails": "ItemDetails", "accountDetails": "AccountDetails"}
# The input schemas the connector's requests use, as Reckon's OpenAPI states them: (required, {field: type}),
# a type being a JSON type, "date-time", an enum tuple, another entry's name, [entry] for an array of it, or
# (type, maxLength). tests/connectors/test_reckon_one.py checks this table against the spec file.
INPUTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "InvoiceInput": (("amountTaxStatus", "customer", "invoiceDate"), {
        "customer": "string", "invoiceDate": "date-time", "dueDate": "date-time", "invoiceDiscountAmount": "number",
        "invoiceDiscountPercent": "number", "amountTaxStatus": TAX_STATUS, "paymentTerms": "string",
        "reference": "string", "classification": "string", "template": "string", "lineItems": ["LineItem"],
        "notes": "string", "paymentDetails": "string"}),
    "InvoicePatch": ((), {"customer": "string", "invoiceDate": "date-time", "dueDate": "date-time",
                          "status": ("Draft", "Approved", "Paid"), "paymentTerms": "string", "reference": "string",
                          "classification": "string", "template": "string", "notes": "string",
                          "paymentDetails": "string"}),
    "LineItem": (("lineNumber",), _LINE),
    "ItemDetails": (("item",), {"item": "string", "price": "number", "quantity": "number",
                                "discountAmount": "number", "discountPercent": "number"}),
    "AccountDetails": (("ledgerAccount",), {"ledgerAccount": "string", "quantity": "number", "amount": "number"}),
    "CreditNoteInput": (("amountTaxStatus", "creditNoteDate", "customer"), {
        "customer": "string", "creditNoteDate": "date-time", "amountTaxStatus": TAX_STATUS, "reference": "string",
        "classification": "string", "template": "string", "lineItems": ["LineItem"], "notes": "string"}),
    "CreditNotePatch": ((), {"customer": "string", "creditNoteDate": "date-time",
                             "status": ("Draft", "Approved", "Closed"), "reference": "string", "notes": "string"}),
    "ReceiptInput": (("customer", "receiptDate", "totalAmount"), {
        "customer": "string", "receiptDate": "date-time", "ledgerAccount": "string", "paymentMethod": "string",
        "reference": ("string", 200), "notes": ("string", 255), "totalAmount": "number",
        "internalNotes": ("string", 400), "classification": "string", "transactionLinks": ["TransactionLinkInput"]}),
    "TransactionLinkInput": (("transactionAmount", "transactionId", "transactionType"), {
        "transactionId": "string", "transactionAmount": "number", "transactionType": LINKED}),
    "CustomerInput": (("name",), {
        "name": ("string", 100), "organisationName": ("string", 100), "branch": ("string", 100),
        "notes": ("string", 1000), "businessNumber1": ("string", 20), "businessNumber2": ("string", 20),
        "status": "string", "addresses": ["AddressInput"], "phoneNumbers": ["PhoneNumberInput"],
        "electronicAddresses": ["ElectronicAddressInput"], "entityTypes": "EntityType", "creditLimit": "number",
        "paymentTerms": "string"}),
    "AddressInput": (("type",), {"line1": ("string", 80), "line2": ("string", 80), "line3": ("string", 80),
                                 "suburb": ("string", 80), "town": ("string", 80), "state": ("string", 80),
                                 "postcode": ("string", 30), "country": ("string", 30), "type": "string"}),
    "PhoneNumberInput": (("type",), {"countryCode": ("string", 10), "areaCode": ("string", 10),
                                     "number": ("string", 30), "extension": ("string", 10), "type": "string"}),
    "ElectronicAddressInput": (("type",), {"type": "string", "address": ("string", 100)}),
    "EntityType": ((), {"isCustomer": "boolean", "isSupplier": "boolean", "isEmployee": "boolean",
                        "isSuperfund": "boolean"}),
}
BODIES = {("POST", "invoices"): "InvoiceInput", ("PUT", "invoices"): "InvoiceInput", ("PATCH", "invoices"): "InvoicePatch",
          ("POST", "creditNotes"): "CreditNoteInput", ("PATCH", "creditNotes"): "CreditNotePatch",
          ("POST", "receipts"): "ReceiptInput", ("POST", "customers"): "CustomerInput",
          ("PUT", "customers"): "CustomerInput", ("POST", "transactionLinks"): "TransactionLinkInput"}
FILTER = re.compile(r'^\s*(\w+)\s+eq\s+(?:"([^"]*)"|\'([^\']*)\')\s*$')


class ReckonError(Exception):
    def __init__(self, message: str, location: str = "", status: int = 400) -> None:
        super().__init__(message)
        body: dict[str, Any] = {"code": status, "message": message}
        if location:
            body["errors"] = [{"location": location, "message": message}]
        self.response = Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


def _apim(status: int, message: str) -> Response:
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _check(value: Any, kind: Any, where: str) -> None:
    """One value against the INPUTS table (types, enums, lengths, required fields, nested entries)."""
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise ReckonError("must be an array", where)
        for n, item in enumerate(value):
            _check(item, kind[0], f"{where}[{n}]")
    elif kind in INPUTS:
        if not isinstance(value, dict):
            raise ReckonError("must be an object", where)
        required, fields = INPUTS[kind]
        for name in required:
            if value.get(name) in (None, ""):
                raise ReckonError(f"The {name} field is required.", f"{where}.{name}".lstrip("."))
        for name, item in value.items():
            if name in fields and item is not None:
                _check(item, fields[name], f"{where}.{name}".lstrip("."))
    elif isinstance(kind, tuple) and isinstance(kind[1], int):
        _check(value, kind[0], where)
        if len(value) > kind[1]:
            raise ReckonError(f"The field must be a string with a maximum length of {kind[1]}.", where)
    elif isinstance(kind, tuple):
        if value not in kind:
            raise ReckonError(f"'{value}' is not one of {', '.join(kind)}.", where)
    elif kind == "date-time":
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            raise ReckonError(f"'{value}' is not a valid date.", where) from None
    elif kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or (
                kind == "integer" and not isinstance(value, int)):
            raise ReckonError(f"'{value}' is not a valid {kind}.", where)
    elif kind == "string" and not isinstance(value, str):
        raise ReckonError("must be a string", where)
    elif kind == "boolean" and not isinstance(value, bool):
        raise ReckonError("must be a boolean", where)


def _day(value: Any) -> date:
    return datetime.fromisoformat(str(value)).date()


@dataclass
class Book:
    id: str
    name: str
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {r: {} for r in (
        "customers", "invoices", "receipts", "creditNotes", "ledgeraccounts", "taxrates")})
    deleted: list[dict[str, Any]] = field(default_factory=list)  # deleted invoices (for booked_invoices)
    lock_off: date | None = None
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def named(self, table: str, key: str, where: str) -> dict[str, Any]:
        """Reckon references records by id or by (full) name."""
        rows = self.tables[table]
        found = rows.get(key) or next((r for r in rows.values() if r.get("name") == key), None)
        if found is None:
            raise ReckonError(f"'{key}' was not found.", where)
        return found


class Sandbox:
    """Reckon One as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 10800.0, *,
                 minute_limit: int | None = None, refresh_idle_s: float = 45 * 86400.0) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)  # Reckon: access tokens live 180 minutes
        self.refresh_idle_s = refresh_idle_s  # a refresh token unused for 45 days dies (rolling)
        self._refresh_issued: dict[str, float] = {}
        self.minute_limit = minute_limit
        self.minute_window = WindowLimit(minute_limit, 60.0) if minute_limit else None
        self.subscription_keys: set[str] = set()
        self.books: dict[str, Book] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path after the book, body)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/connect/token", self._token, methods=["POST"]),
            Route(f"{API}/books", self._books, methods=["GET"]),
            Route(API + "/{book}/{resource}", self._call, methods=["GET", "POST"]),
            Route(API + "/{book}/{resource}/{key}", self._call, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route(API + "/{book}/{resource}/{key}/transactionLinks", self._call, methods=["POST"]),
            Route(API + "/{book}/{resource}/{key}/transactionlinks/{link}", self._call, methods=["DELETE"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret, refresh = new_client(self.issuer)
        self._refresh_issued[refresh] = time.time()
        key = secrets.token_hex(16)  # API Management subscription keys are 32 hex characters
        with self._lock:
            self.subscription_keys.add(key)
            if not self.books:
                book = Book(id=str(uuid.uuid4()), name="Main St Auto Electric")
                for name in ("Sales - parts", "Sales - labour", "Sales - fees", "Core deposits held",
                             "Discounts allowed", "Undeposited funds", "Cheque account"):
                    account = {"id": str(uuid.uuid4()), "name": name}
                    book.tables["ledgeraccounts"][account["id"]] = account
                for name, percent in (("GST", "10"), ("State", "6.25"), ("County", "1"), ("State+County", "7.25"),
                                      ("GST 5%", "5"), ("PST 7%", "7"), ("GST+PST", "12"), ("GST Free", "0")):
                    rate = {"id": str(uuid.uuid4()), "name": name, "percent": Decimal(percent)}
                    book.tables["taxrates"][rate["id"]] = rate
                self.books[book.id] = book
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh,
                "subscription_key": key}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "reckon-one", "base_url": f"{base_url}{API}",
            "settings": {"token_url": f"{base_url}/connect/token", "requests_per_minute": self.minute_limit or 6000},
            "mapping": {"income_accounts": {"part": "Sales - parts", "labour": "Sales - labour", "fee": "Sales - fees",
                                            "sublet": "Sales - labour", "discount": "Sales - parts",
                                            "core_charge": "Sales - parts", "core_return": "Sales - parts"},
                        "core_account": "Core deposits held", "discount_account": "Discounts allowed",
                        "tax_codes": {"STATE": "State", "COUNTY": "County", "COUNTY+STATE": "State+County",
                                      "GST": "GST 5%", "PST": "PST 7%", "GST+PST": "GST+PST", "none": "GST Free"},
                        "payment_accounts": {"card": "Undeposited funds", "cash": "Undeposited funds",
                                             "check": "Undeposited funds", "eft": "Cheque account"}},
        }

    def age_refresh_tokens(self, seconds: float) -> None:
        """Test hook: every refresh token was issued ``seconds`` earlier than it was."""
        for token in self._refresh_issued:
            self._refresh_issued[token] -= seconds

    def rate_limit_breaches(self) -> int:
        return self.minute_window.breaches if self.minute_window else 0

    def set_lock_off_date(self, through: date | None) -> None:
        """The bookkeeper locks the books through ``through`` (None unlocks them)."""
        with self._lock:
            for book in self.books.values():
                book.lock_off = through

    def records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for b in self.books.values() for r in b.tables[table].values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for book in self.books.values():
                receipts = [(link["transactionId"], link["transactionAmount"]) for r in book.tables["receipts"].values()
                            for link in r["transactionLinks"]]
                for voided, invoice in [(False, i) for i in book.tables["invoices"].values()] + [
                        (True, i) for i in book.deleted]:
                    paid = [amount for invoice_id, amount in receipts if invoice_id == invoice["id"]] if not voided else []
                    out.append(BookedInvoice(
                        number=invoice.get("reference") or "", external_id=invoice["id"], voided=voided,
                        total=invoice["totalAmount"], tax_total=invoice["totalTaxAmount"],
                        line_count=len(invoice["lineItems"]), payments_applied=sum(paid, ZERO), payment_count=len(paid)))
            return out

    # -- OAuth2 (the identity server) --
    async def _token(self, request: Request) -> Response:
        form = await request.form()
        try:
            client_id, _, client_secret = base64.b64decode(
                request.headers.get("authorization", "").removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            client_id = client_secret = ""
        if self.issuer.clients.get(client_id) != client_secret or not client_id:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = str(form.get("refresh_token", ""))
        if time.time() - self._refresh_issued.get(token, time.time()) > self.refresh_idle_s:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        answer = self.issuer.refresh(client_id, client_secret, token)
        if answer is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        self._refresh_issued[answer["refresh_token"]] = time.time()
        return JSONResponse(answer | {"scope": "openid read write offline_access"})

    # -- the gateway (subscription key, throttle) and the API's bearer token --
    def _guard(self, request: Request) -> Response | None:
        key = request.headers.get("ocp-apim-subscription-key") or request.query_params.get("subscription-key")
        if not key:
            return _apim(401, "Access denied due to missing subscription key. Make sure to include subscription key "
                              "when making requests to an API.")
        if key not in self.subscription_keys:
            return _apim(401, "Access denied due to invalid subscription key. Make sure to provide a valid key for "
                              "an active subscription.")
        wait = self.minute_window.hit(key) if self.minute_window else None
        if wait is not None:
            seconds = max(1, round(wait))
            response = _apim(429, f"Rate limit is exceeded. Try again in {seconds} seconds.")
            response.headers["Retry-After"] = str(seconds)
            return response
        if not self.issuer.valid(request.headers.get("authorization")):
            return ReckonError("Authorization has been denied for this request.", status=401).response
        return None

    async def _books(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        return JSONResponse({"list": [{"id": b.id, "name": b.name, "status": "Active", "ownership": "Owned",
                                       "country": "AU", "bookCreated": True} for b in self.books.values()]})

    async def _call(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        p = request.path_params
        book = self.books.get(p["book"])
        if book is None:
            return ReckonError("The specified book does not exist.", status=404).response
        resource, key, link = p["resource"], p.get("key"), p.get("link")
        if request.method == "GET":
            with self._lock:
                try:
                    return self._ok(self._read(book, resource, key, request.query_params))
                except ReckonError as error:
                    return error.response
        if request.method == "PATCH" and request.headers.get("content-type", "").split(";")[0] != \
                "application/merge-patch+json":
            return ReckonError("The request must use Content-Type `application/merge-patch+json`.", status=415).response
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return ReckonError("The request body is not valid JSON.").response
        path = request.url.path.removeprefix(f"{API}/{book.id}")
        self.requests.append((request.method, path, body))
        decided = self.faults.draw()
        if decided == "500":
            return ReckonError("An unexpected error occurred.", status=500).response
        if decided == "429":
            throttled = _apim(429, "Rate limit is exceeded. Try again in 1 seconds.")
            throttled.headers["Retry-After"] = "1"
            return throttled
        with self._lock:
            try:
                answer = self._write(book, request.method, resource, key, link, path, body)
                response = self._ok(answer, 201) if answer is not None else Response(status_code=204)
            except ReckonError as error:
                response = error.response
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    @staticmethod
    def _ok(body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    # -- reads --
    def _read(self, book: Book, resource: str, key: str | None, q: Any) -> Any:
        if resource == "settings" and key is None:
            return {"bookName": book.name, "startDate": "2020-07-01T00:00:00", "financialYearStartDay": 1,
                    "financialYearStartMonth": 7, "bankDataRetrievalDays": 30,
                    "bookCreatedDateTime": "2020-07-01T00:00:00+00:00",
                    "lockOffDate": f"{book.lock_off.isoformat()}T00:00:00" if book.lock_off else None}
        table = book.tables.get({"creditnotes": "creditNotes"}.get(resource, resource))
        if table is None:
            raise ReckonError("The requested resource does not exist.", status=404)
        if key is not None:
            if key not in table:
                raise ReckonError("The specified record does not exist.", status=404)
            return table[key]
        rows = list(table.values())
        for clause in filter(None, re.split(r"\s+and\s+", q.get("filter", ""))):
            match = FILTER.match(clause)
            if match is None:
                raise ReckonError(f"The filter '{clause}' is not supported.", "filter")
            name, value = match.group(1).lower(), match.group(2) if match.group(2) is not None else match.group(3)
            rows = [r for r in rows if any(k.lower() == name and str(v) == value for k, v in r.items())]
        per_page = min(int(q.get("perPage") or q.get("perpage") or 100) or 100, 500)
        page = max(int(q.get("page", 1)), 1)
        return {"list": rows[(page - 1) * per_page: page * per_page]}

    # -- writes --
    def _write(self, book: Book, method: str, resource: str, key: str | None, link: str | None, path: str,
               body: Any) -> dict[str, Any] | None:
        table = book.tables.get(resource)
        if table is None or resource in ("ledgeraccounts", "taxrates") or (key is not None and key not in table):
            raise ReckonError("The specified book or record does not exist.", status=404)
        current = table.get(key) if key else None
        linking = path.endswith("/transactionLinks")
        schema = BODIES.get(("POST", "transactionLinks") if linking else (method, resource))
        if method != "DELETE":
            if schema is None:
                raise ReckonError(f"{method} is not supported here by this sandbox.", status=405)
            if not isinstance(body, dict):
                raise ReckonError("A request body is required.", "body")
            _check(body, schema, "")
        if resource == "customers":
            return self._customer(book, current, body, method)
        if linking:
            return {"id": self._link(book, current, body)}
        if method == "DELETE":
            return self._delete(book, resource, current, link)
        if method == "PATCH":
            return self._patch(book, resource, current, body)
        if resource == "receipts":
            return {"id": self._receipt(book, body)}
        return {"id": self._document(book, resource, current, body)}

    def _open(self, book: Book, *days: Any) -> None:
        for day in days:
            if book.lock_off and day and _day(day) <= book.lock_off:
                raise ReckonError(f"The date is on or before the lock off date ({book.lock_off.isoformat()}).", "date")

    def _customer(self, book: Book, current: dict | None, body: Any, method: str) -> dict[str, Any] | None:
        if method not in ("POST", "PUT"):
            raise ReckonError(f"{method} of a customer is not supported by this sandbox.", status=405)
        record = current if current is not None else {"id": str(uuid.uuid4())}
        keep = {"id": record["id"], "status": "Active"}
        record.clear()
        record.update(copy.deepcopy(body) | keep | {"lastModifiedDateTime": datetime.now().isoformat()})
        book.tables["customers"][record["id"]] = record
        return {"id": record["id"], "name": record["name"]} if current is None else None

    def _lines(self, book: Book, lines: list[dict[str, Any]], tax_status: str) -> list[dict[str, Any]]:
        out = []
        for n, line in enumerate(lines):
            where = f"lineItems[{n}]"
            if line.get("itemDetails") is not None:  # this sandbox's books hold no items
                raise ReckonError("'itemDetails' is not supported by this sandbox: post lines on ledger accounts.", where)
            details = line.get("accountDetails")
            if details is None:
                raise ReckonError("Either itemDetails or accountDetails must be provided.", where)
            account = book.named("ledgeraccounts", details["ledgerAccount"], f"{where}.accountDetails.ledgerAccount")
            rate = book.named("taxrates", line["taxRate"], f"{where}.taxRate") if line.get("taxRate") else None
            amount = Decimal(details.get("amount", 0))
            tax = Decimal(line["taxAmount"]) if line.get("taxAmount") is not None else ZERO if rate is None else _money(
                amount * rate["percent"] / (100 + (rate["percent"] if tax_status == "Inclusive" else 0)))
            if tax_status == "NonTaxed" and tax:
                raise ReckonError("A non-taxed transaction cannot carry tax.", f"{where}.taxAmount")
            out.append({"lineId": str(uuid.uuid4()), "lineNumber": line["lineNumber"],
                        "description": line.get("description"),
                        "accountDetails": {"ledgerAccount": {"id": account["id"], "name": account["name"]},
                                           "quantity": details.get("quantity", Decimal("1")), "amount": amount},
                        "taxRate": {"id": rate["id"], "name": rate["name"]} if rate else None, "taxAmount": tax,
                        "taxIsModified": line.get("taxAmount") is not None})
        return out

    def _document(self, book: Book, resource: str, current: dict | None, body: dict[str, Any]) -> str:
        """An invoice or credit note, created (Draft) or replaced whole by ``PUT``."""
        dated = "invoiceDate" if resource == "invoices" else "creditNoteDate"
        self._open(book, body[dated], current and current[dated])
        customer = book.named("customers", body["customer"], "customer")
        lines = self._lines(book, body.get("lineItems") or [], body["amountTaxStatus"])
        document = current if current is not None else {
            "id": str(uuid.uuid4()), "status": "Draft", "emailStatus": "Unsent", "transactionLinks": [],
            "invoiceNumber" if resource == "invoices" else "creditNoteNumber":
                f"{'INV' if resource == 'invoices' else 'CN'}{next(book.numbers):04d}"}
        tax = sum((ln["taxAmount"] for ln in lines), ZERO)
        total = sum((ln["accountDetails"]["amount"] for ln in lines), ZERO) + (
            tax if body["amountTaxStatus"] == "Exclusive" else ZERO)
        linked = sum((ln["transactionAmount"] for ln in document["transactionLinks"]), ZERO)
        if total < linked:
            raise ReckonError("The total cannot be less than the amounts linked to it.", "lineItems")
        for name in ("dueDate", "reference", "notes", "classification", "paymentDetails"):
            document.pop(name, None)
        document.update({k: copy.deepcopy(v) for k, v in body.items() if k not in ("customer", "lineItems")})
        document.update(customer={"id": customer["id"], "name": customer["name"]}, lineItems=lines, totalAmount=total,
                        totalTaxAmount=tax)
        self._settle(document)
        book.tables[resource][document["id"]] = document
        return document["id"]

    @staticmethod
    def _settle(document: dict[str, Any]) -> None:
        document["balance"] = document["totalAmount"] - sum(
            (ln["transactionAmount"] for ln in document["transactionLinks"]), ZERO)
        if document["status"] != "Draft" and "invoiceNumber" in document:
            document["status"] = "Paid" if document["balance"] == 0 else "Approved"

    def _patch(self, book: Book, resource: str, current: dict[str, Any], body: dict[str, Any]) -> None:
        if resource not in ("invoices", "creditNotes"):
            raise ReckonError("PATCH of this record is not supported by this sandbox.", status=405)
        dated = "invoiceDate" if resource == "invoices" else "creditNoteDate"
        self._open(book, current[dated], body.get(dated))
        status = body.get("status")
        if status == "Paid" or (status == "Draft" and current["transactionLinks"]):
            raise ReckonError(f"The status cannot be changed to {status}.", "status")
        for name, value in body.items():  # JSON merge patch: null removes
            if name != "status" and value is None:
                current.pop(name, None)
            elif name != "status":
                current[name] = value
        if status:
            current["status"] = status
        self._settle(current)

    def _approved(self, book: Book, table: str, key: str, where: str) -> dict[str, Any]:
        document = book.tables[table].get(key)
        if document is None:
            raise ReckonError(f"The transaction '{key}' was not found.", where)
        if document["status"] == "Draft":
            raise ReckonError("A draft transaction cannot be linked; approve it first.", where)
        return document

    def _receipt(self, book: Book, body: dict[str, Any]) -> str:
        self._open(book, body["receiptDate"])
        customer = book.named("customers", body["customer"], "customer")
        account = book.named("ledgeraccounts", body.get("ledgerAccount") or "Undeposited funds", "ledgerAccount")
        links = body.get("transactionLinks") or []
        if sum((Decimal(link["transactionAmount"]) for link in links), ZERO) > Decimal(body["totalAmount"]):
            raise ReckonError("The linked amounts exceed the receipt's total.", "transactionLinks")
        receipt = copy.deepcopy(body) | {"id": str(uuid.uuid4()), "receiptNumber": f"RCPT{next(book.numbers):04d}",
                                         "customer": {"id": customer["id"], "name": customer["name"]},
                                         "ledgerAccount": {"id": account["id"], "name": account["name"]},
                                         "reconciliationStatus": "Uncleared", "transactionLinks": []}
        for n, link in enumerate(links):
            self._allocate(book, receipt, "Receipt", link, f"transactionLinks[{n}]")
        receipt["allocateFullAmount"] = sum((ln["transactionAmount"] for ln in receipt["transactionLinks"]),
                                            ZERO) == receipt["totalAmount"]
        book.tables["receipts"][receipt["id"]] = receipt
        return receipt["id"]

    def _allocate(self, book: Book, source: dict[str, Any], source_type: str, link: dict[str, Any], where: str) -> str:
        if link["transactionType"] != "Invoice":
            raise ReckonError("Only invoices can be linked here by this sandbox.", f"{where}.transactionType")
        invoice = self._approved(book, "invoices", link["transactionId"], f"{where}.transactionId")
        amount = Decimal(link["transactionAmount"])
        if invoice["customer"]["id"] != source["customer"]["id"]:
            raise ReckonError("The invoice belongs to another customer.", f"{where}.transactionId")
        if amount <= 0 or amount > invoice["balance"]:
            raise ReckonError("The amount is more than the invoice's balance.", f"{where}.transactionAmount")
        link_id = f"{source_type[:3].upper()}-{uuid.uuid4()}"
        source["transactionLinks"].append({"linkId": link_id, "transactionType": "Invoice", "transactionId": invoice["id"],
                                           "transactionNumber": invoice["invoiceNumber"], "transactionAmount": amount})
        invoice["transactionLinks"].append({"linkId": link_id, "transactionType": source_type,
                                            "transactionId": source["id"], "transactionAmount": amount})
        self._settle(invoice)
        return link_id

    def _link(self, book: Book, note: dict[str, Any], body: dict[str, Any]) -> str:
        if "creditNoteNumber" not in note:
            raise ReckonError("Links are added to credit notes only by this sandbox.", status=405)
        self._approved(book, "creditNotes", note["id"], "creditNoteId")
        if Decimal(body["transactionAmount"]) > note["balance"]:
            raise ReckonError("The amount is more than the credit note's balance.", "transactionAmount")
        link_id = self._allocate(book, note, "CreditNote", body, "")
        self._settle(note)
        return link_id

    def _unlink(self, book: Book, source: dict[str, Any], link_id: str) -> None:
        for link in [ln for ln in source["transactionLinks"] if ln["linkId"] == link_id]:
            source["transactionLinks"].remove(link)
            invoice = book.tables["invoices"].get(link["transactionId"])
            if invoice is not None:
                invoice["transactionLinks"] = [ln for ln in invoice["transactionLinks"] if ln["linkId"] != link_id]
                self._settle(invoice)
        if "creditNoteNumber" in source:
            self._settle(source)

    def _delete(self, book: Book, resource: str, current: dict[str, Any], link: str | None) -> None:
        if link is not None:
            if not any(ln["linkId"] == link for ln in current["transactionLinks"]):
                raise ReckonError("The specified transaction link does not exist.", status=404)
            self._unlink(book, current, link)
            return None
        dated = {"invoices": "invoiceDate", "creditNotes": "creditNoteDate", "receipts": "receiptDate"}[resource]
        self._open(book, current[dated])
        if resource == "receipts":
            for ln in list(current["transactionLinks"]):
                self._unlink(book, current, ln["linkId"])
        elif current["transactionLinks"]:
            raise ReckonError("The transaction could not be deleted: receipts or credit notes are linked to it.",
                              "transactionLinks")
        del book.tables[resource][current["id"]]
        if resource == "invoices":
            book.deleted.append(current)
        return None
