"""A local Oracle Fusion Cloud Receivables (REST, 11.13.18.05) for the demo and the tests.

Built from Oracle's farfa pages and examples as ``oracle-erp/SOURCE.md`` and the research notes record them:
HTTP Basic for an integration user, or OAuth client credentials through the identity domain
(``/oauth2/v1/token``, one-hour tokens); ``REST-Framework-Version`` (4 and later: errors as JSON
``{"title", "status", "o:errorDetails": [{"detail", "o:errorCode"}]}``; earlier or absent: plain text);
``q=Field='value';…`` finders with ``limit``/``offset``/``hasMore``/``count``; item bodies as
``application/json`` or ``application/vnd.oracle.adf.resourceitem+json``, custom actions as
``application/vnd.oracle.adf.action+json``; unknown attributes refused (ADF does); the reference data Oracle
lists as prerequisites (business unit, transaction sources and types, payment terms, receipt methods, tax rate
codes, customer accounts) checked; ``receivablesInvoices`` with nested ``receivablesInvoiceLines`` and manual
``receivablesInvoiceLineTaxLines``, of which only ``InvoiceStatus``, ``PaymentTerms`` and ``TransactionDate``
can be updated, DELETE only while Incomplete, Incomplete refused while anything is applied;
``standardReceipts`` (``Amount`` and ``BusinessUnit`` required, ``BusinessUnit`` ≤ 240, ``Comments`` ≤ 200);
on-account ``receivablesCreditMemos``.

Not confirmed by an official page, modelled after Oracle's SOAP application services (Receivables Standard
Receipt and Receipt Application; On-Account Credit Memo Application: ``CustomerTrxId``, ``AmountApplied``,
``ApplyDate``): the REST actions ``standardReceipts/{id}/action/applyReceipt`` / ``reverseReceipt`` and
``receivablesCreditMemos/{id}/action/applyOnAccountCreditMemo`` / ``unapplyOnAccountCreditMemo`` (which takes the
memo's refund off too), and ``refundOnAccountCreditMemo`` after the SOAP On-Account Credit Memo Refund service
(``OnAccountCreditMemoRefund``: ``AmountApplied``, ``ApplyDate``, ``GlDate``, ``Comments``,
``ApplicationReferenceNumber``…; never more than the memo has open, read back as ``RefundedAmount``); the read-only
amounts ``EnteredAmount``, ``TaxAmount``, ``InvoiceBalanceAmount``, ``AppliedAmount``; the ``customerAccounts``
attributes; a fair-use throttle (Oracle publishes no request limit; 429 with ``Retry-After``).
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import time
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, WindowLimit

API = "/fscmRestApi/resources/11.13.18.05"
CENT, ZERO = Decimal("0.01"), Decimal("0")
BUSINESS_UNIT = "Main St Auto Electric BU"
ITEM_TYPES = ("application/json", "application/vnd.oracle.adf.resourceitem+json")
ACTION_TYPE = "application/vnd.oracle.adf.action+json"
STR, NUM, DATE, ARR = "string", "number", "date", "array"
# Writable attributes per resource (SOURCE.md's tables; credit memo names from Oracle's credit memo examples).
INVOICE = {"BusinessUnit": STR, "TransactionSource": STR, "TransactionType": STR, "TransactionNumber": STR,
           "TransactionDate": DATE, "AccountingDate": DATE, "BillingDate": DATE, "DueDate": DATE,
           "BillToCustomerNumber": STR, "BillToCustomerName": STR, "BillToSite": STR, "ShipToCustomerNumber": STR,
           "ShipToCustomerName": STR, "ShipToSite": STR, "InvoiceCurrencyCode": STR, "ConversionRateType": STR,
           "ConversionDate": DATE, "ConversionRate": NUM, "PaymentTerms": STR, "Comments": STR,
           "InternalNotes": STR, "StructuredPaymentReference": STR, "FirstPartyRegistrationNumber": STR,
           "ThirdPartyRegistrationNumber": STR, "InvoiceStatus": STR, "receivablesInvoiceLines": ARR}
INVOICE_LINE = {"LineNumber": NUM, "Description": STR, "ItemNumber": STR, "Quantity": NUM, "UnitSellingPrice": NUM,
                "TaxClassificationCode": STR, "AllocatedFreightAmount": NUM, "AccountingRule": STR,
                "receivablesInvoiceLineTaxLines": ARR}
TAX_LINE = {"TaxAmount": NUM, "TaxRegimeCode": STR, "TaxRateCode": STR}
MEMO = {"BusinessUnit": STR, "TransactionSource": STR, "TransactionType": STR, "TransactionNumber": STR,
        "TransactionDate": DATE, "BillToCustomerNumber": STR, "BillToCustomerName": STR, "CreditMemoCurrency": STR,
        "CreditMemoComments": STR, "CreditReason": STR, "receivablesCreditMemoLines": ARR}
MEMO_LINE = {"LineNumber": NUM, "LineDescription": STR, "LineQuantityCredit": NUM, "UnitSellingPrice": NUM,
             "receivablesCreditMemoLineTaxLines": ARR}
RECEIPT = {"Amount": NUM, "BusinessUnit": STR, "ReceiptNumber": STR, "ReceiptMethod": STR, "ReceiptDate": DATE,
           "AccountingDate": DATE, "Currency": STR, "RemittanceBankAccountNumber": STR,
           "CustomerAccountNumber": STR, "CustomerName": STR, "CustomerSite": STR, "Comments": STR,
           "remittanceReferences": ARR}
ACCOUNT = {"AccountNumber": STR, "AccountName": STR}
APPLICATION = {"CustomerTrxId": NUM, "AmountApplied": NUM, "ApplyDate": DATE}
# The writable attributes of Oracle's OnAccountCreditMemoRefund service data object (Receivables On-Account Credit
# Memo Refund Service, oeswf 24d/25c) that name the refund itself (the memo is the action's key).
REFUND = {"AmountApplied": NUM, "ApplicationReferenceNumber": STR, "ApplyDate": DATE, "Comments": STR,
          "GlDate": DATE, "RefundPaymentMethod": STR}
SCHEMAS = {"receivablesInvoices": INVOICE, "receivablesCreditMemos": MEMO, "standardReceipts": RECEIPT,
           "customerAccounts": ACCOUNT}
CHILDREN = {"receivablesInvoiceLines": INVOICE_LINE, "receivablesInvoiceLineTaxLines": TAX_LINE,
            "receivablesCreditMemoLines": MEMO_LINE, "receivablesCreditMemoLineTaxLines": TAX_LINE}
REQUIRED = {"receivablesInvoices": ("BusinessUnit", "TransactionSource", "TransactionType", "TransactionDate",
                                    "InvoiceCurrencyCode", "receivablesInvoiceLines"),
            "receivablesCreditMemos": ("BusinessUnit", "TransactionSource", "TransactionType", "TransactionDate",
                                       "CreditMemoCurrency", "receivablesCreditMemoLines"),
            "standardReceipts": ("Amount", "BusinessUnit"), "customerAccounts": ("AccountNumber", "AccountName")}
LENGTHS = {("standardReceipts", "BusinessUnit"): 240, ("standardReceipts", "Comments"): 200}
KEYS = {"receivablesInvoices": "CustomerTransactionId", "receivablesCreditMemos": "CustomerTransactionId",
        "standardReceipts": "StandardReceiptId", "customerAccounts": "CustomerAccountId"}
INVOICE_UPDATABLE = {"InvoiceStatus", "PaymentTerms", "TransactionDate"}
FINDER = re.compile(r"(\w+)\s*=\s*'((?:[^']|'')*)'")


class AdfError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class Sandbox:
    """Oracle Fusion Receivables as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 3600.0, *, minute_limit: int = 6000
                 ) -> None:
        self.faults = faults or Faults()
        self.access_ttl_s, self.minute_limit = access_ttl_s, minute_limit
        self.window = WindowLimit(minute_limit, 60.0)
        self.users: dict[str, str] = {}  # integration user -> password
        self.clients: dict[str, str] = {}  # OAuth client id -> secret
        self.tokens: dict[str, float] = {}  # access token -> expiry
        self.refresh_count = 0
        self.tables: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in SCHEMAS}
        self.deleted: list[dict[str, Any]] = []  # deleted incomplete invoices (booked as voided)
        self.reference = {"BusinessUnit": {BUSINESS_UNIT}, "TransactionSource": {"Manual"},
                          "TransactionType": {"Invoice", "Credit Memo"},
                          "PaymentTerms": {"IMMEDIATE", "30 Net", "15 Net"},
                          "ReceiptMethod": {"Card", "Cash", "Check", "EFT"},
                          "TaxRateCode": {"GST5", "PST7", "STATE", "COUNTY"}}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path after the API root, body)
        self._ids = itertools.count(300000000001)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/oauth2/v1/token", self._token, methods=["POST"]),
            Route(API + "/{resource}", self._collection, methods=["GET", "POST"]),
            Route(API + "/{resource}/{key}", self._item, methods=["GET", "PATCH", "DELETE"]),
            Route(API + "/{resource}/{key}/action/{action}", self._action, methods=["POST"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        """OAuth client credentials (also an integration user's ``username``/``password``, for ``auth: basic``)."""
        client_id, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
        user, password = f"lw_integration_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
        with self._lock:
            self.clients[client_id], self.users[user] = secret, password
        return {"client_id": client_id, "client_secret": secret, "username": user, "password": password}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "oracle-erp", "base_url": base_url,
            "settings": {"business_unit": BUSINESS_UNIT, "tax_regime": "US SALES TAX", "auth": "oauth",
                         "token_url": f"{base_url}/oauth2/v1/token", "requests_per_minute": self.minute_limit},
            "mapping": {"tax_codes": {"GST": "GST5", "PST": "PST7", "STATE": "STATE", "COUNTY": "COUNTY"},
                        "payment_accounts": {"card": "Card", "cash": "Cash", "check": "Check", "eft": "EFT"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.window.breaches

    def expire_all(self) -> None:
        with self._lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def records(self, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.tables[resource].values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            reversed_ids = {a["CustomerTrxId"] for m in self.tables["receivablesCreditMemos"].values()
                            if str(m.get("TransactionNumber", "")).startswith("RV") for a in m["_applications"]}
            out = []
            for inv in list(self.tables["receivablesInvoices"].values()) + self.deleted:
                paid = [a["AmountApplied"] for r in self.tables["standardReceipts"].values()
                        for a in r["_applications"] if a["CustomerTrxId"] == inv["CustomerTransactionId"]]
                out.append(BookedInvoice(
                    number=inv.get("TransactionNumber") or "", external_id=str(inv["CustomerTransactionId"]),
                    voided=inv in self.deleted or inv["CustomerTransactionId"] in reversed_ids,
                    total=inv["EnteredAmount"], tax_total=inv["TaxAmount"],
                    line_count=len(inv["receivablesInvoiceLines"]), payments_applied=sum(paid, ZERO),
                    payment_count=len(paid)))
            return out

    # -- auth --
    async def _token(self, request: Request) -> Response:
        form = await request.form()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if not client_id or self.clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed."},
                                status_code=401)
        access = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[access] = time.time() + self.access_ttl_s
            self.refresh_count += 1
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": int(self.access_ttl_s)})

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return self.tokens.get(header[7:], 0.0) > time.time()
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode(errors="replace").partition(":")
            return bool(user) and self.users.get(user) == password
        return False

    # -- plumbing --
    @staticmethod
    def _error(request: Request, error: AdfError, headers: dict[str, str] | None = None) -> Response:
        version = request.headers.get("rest-framework-version", "1")
        if not version.isdigit() or int(version) < 4:  # earlier framework versions answer in plain text
            return Response(error.message, status_code=error.status, media_type="text/plain", headers=headers)
        body = {"title": {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 412: "Precondition Failed", 415: "Unsupported Media Type",
                          429: "Too Many Requests"}.get(error.status, "Internal Server Error"),
                "status": str(error.status), "o:errorDetails": [{"detail": error.message,
                                                                 "o:errorCode": error.code or str(error.status)}]}
        return Response(jsonmoney.dumps(body), status_code=error.status, headers=headers,
                        media_type="application/vnd.oracle.adf.error+json")

    def _guard(self, request: Request) -> Response | None:
        if not self._authenticated(request):
            return self._error(request, AdfError(401, "Authentication failed", "401"))
        wait = self.window.hit("pod")
        if wait is not None:
            return self._error(request, AdfError(429, "Too many requests", "429"),
                               {"Retry-After": str(max(1, round(wait)))})
        return None

    def _ok(self, body: Any, status: int = 200, record: dict[str, Any] | None = None) -> Response:
        headers = {"ETag": self._etag(record)} if record is not None else None
        return Response(jsonmoney.dumps(body), status_code=status, headers=headers,
                        media_type="application/vnd.oracle.adf.resourceitem+json")

    @staticmethod
    def _etag(record: dict[str, Any]) -> str:
        return f'W/"{record["_change"]}"'

    def touch(self, resource: str, key: int, **changes: Any) -> None:
        """Test hook: the bookkeeper changes an item in Oracle (its ETag moves on)."""
        with self._lock:
            record = self.tables[resource][key]
            record.update(changes)
            record["_change"] += 1

    async def _collection(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, request.path_params["resource"], None)
        return await self._write(request, request.path_params["resource"], None, None)

    async def _item(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, request.path_params["resource"], request.path_params["key"])
        return await self._write(request, request.path_params["resource"], request.path_params["key"], None)

    async def _action(self, request: Request) -> Response:
        p = request.path_params
        return await self._write(request, p["resource"], p["key"], p["action"])

    async def _read(self, request: Request, resource: str, key: str | None) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        with self._lock:
            try:
                table = self._table(resource)
                if key is not None:
                    record = self._get(table, resource, key)
                    return self._ok(self._view(record), record=record)
                q = request.query_params
                wanted = {f: v.replace("''", "'") for f, v in FINDER.findall(q.get("q", ""))}
                rows = [self._view(r) for r in table.values() if all(str(r.get(f)) == v for f, v in wanted.items())]
                limit, offset = min(int(q.get("limit", 25)), 500), int(q.get("offset", 0))
                items = rows[offset:offset + limit]
                return self._ok({"items": items, "count": len(items), "hasMore": offset + limit < len(rows),
                                 "limit": limit, "offset": offset})
            except AdfError as error:
                return self._error(request, error)

    @staticmethod
    def _view(record: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}

    def _table(self, resource: str) -> dict[int, dict[str, Any]]:
        if resource not in self.tables:
            raise AdfError(404, f"Resource {resource} not found")
        return self.tables[resource]

    @staticmethod
    def _get(table: dict[int, dict[str, Any]], resource: str, key: str) -> dict[str, Any]:
        record = table.get(int(key)) if key.isdigit() else None
        if record is None:
            raise AdfError(404, f"The requested {resource} item {key} was not found")
        return record

    async def _write(self, request: Request, resource: str, key: str | None, action: str | None) -> Response:
        if_match = request.headers.get("if-match")
        if (refused := self._guard(request)) is not None:
            return refused
        raw = await request.body()
        media = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            if raw and media not in ((ACTION_TYPE,) if action else ITEM_TYPES):
                raise AdfError(415, f"Media type {media or 'none'} is not supported here", "415")
            try:
                body = jsonmoney.loads(raw) if raw else None
            except ValueError:
                raise AdfError(400, "The request body is not valid JSON") from None
        except AdfError as error:
            return self._error(request, error)
        self.requests.append((request.method, request.url.path.removeprefix(API), body))
        decided = self.faults.draw()
        if decided == "500":
            return self._error(request, AdfError(500, "An unexpected error occurred", "500"))
        if decided == "429":
            return self._error(request, AdfError(429, "Too many requests", "429"), {"Retry-After": "1"})
        with self._lock:
            try:
                if key is not None and if_match and if_match != "*" and \
                        if_match != self._etag(self._get(self._table(resource), resource, key)):
                    raise AdfError(412, "The item has been changed by another user", "412")
                answer, status = self._apply(resource, key, action, request.method, body)
                stored = self.tables.get(resource, {}).get(answer[KEYS[resource]]) if isinstance(answer, dict) \
                    and KEYS.get(resource) in answer else None
                response = self._ok(answer, status, stored) if answer is not None else Response(status_code=204)
            except AdfError as error:
                response = self._error(request, error)
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- validation --
    def _check(self, resource: str, body: Any, schema: dict[str, str], where: str = "") -> None:
        if not isinstance(body, dict):
            raise AdfError(400, f"{where or resource}: a JSON object is expected")
        for name, value in body.items():
            kind = schema.get(name)
            if kind is None:
                raise AdfError(400, f"The attribute {name} is not valid for {where or resource}", "AttributeNotValid")
            if kind == NUM and (isinstance(value, bool) or not isinstance(value, (int, Decimal))):
                raise AdfError(400, f"{name}: a number is expected")
            if kind in (STR, DATE) and not isinstance(value, str):
                raise AdfError(400, f"{name}: a string is expected")
            if kind == DATE:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise AdfError(400, f"{name}: {value!r} is not a date (yyyy-mm-dd)") from None
            if kind == ARR:
                if not isinstance(value, list):
                    raise AdfError(400, f"{name}: an array is expected")
                for child in value:
                    self._check(resource, child, CHILDREN[name], name)
            limit = LENGTHS.get((resource, name))
            if limit and len(value) > limit:
                raise AdfError(400, f"{name} is longer than {limit} characters")
            if name in self.reference and value not in self.reference[name]:
                raise AdfError(400, f"The value {value} of {name} is not valid", "InvalidReference")

    def _customer(self, number: Any) -> None:
        if not any(a["AccountNumber"] == number for a in self.tables["customerAccounts"].values()):
            raise AdfError(400, f"The customer account {number} does not exist", "InvalidCustomer")

    def _tax_codes(self, lines: list[dict[str, Any]], child: str) -> Decimal:
        tax = ZERO
        for line in lines:
            for t in line.get(child) or []:
                if "TaxRateCode" in t and t["TaxRateCode"] not in self.reference["TaxRateCode"]:
                    raise AdfError(400, f"The tax rate code {t['TaxRateCode']} is not valid", "InvalidReference")
                tax += Decimal(t.get("TaxAmount", 0))
        return _money(tax)

    # -- the books --
    def _apply(self, resource: str, key: str | None, action: str | None, method: str, body: Any
               ) -> tuple[Any, int]:
        table = self._table(resource)
        if action is not None:
            return self._act(resource, self._get(table, resource, key or ""), action, body or {}), 200
        if key is None:
            return self._create(resource, table, body), 201
        record = self._get(table, resource, key)
        if resource != "receivablesInvoices" and resource != "customerAccounts":
            raise AdfError(400, f"{method} is not supported on {resource}")
        if method == "DELETE":
            if resource != "receivablesInvoices" or record["InvoiceStatus"] != "Incomplete":
                raise AdfError(400, "You can delete only an incomplete transaction", "AR_DELETE_COMPLETE")
            self.deleted.append(table.pop(record["CustomerTransactionId"]))
            return None, 204
        self._check(resource, body, SCHEMAS[resource])
        if resource == "receivablesInvoices":
            refused = set(body) - INVOICE_UPDATABLE
            if refused:
                raise AdfError(400, "You can update only the InvoiceStatus, PaymentTerms, and TransactionDate "
                               f"attributes (not {', '.join(sorted(refused))})", "AR_UPDATE_NOT_ALLOWED")
            if body.get("InvoiceStatus") == "Incomplete" and record["InvoiceBalanceAmount"] != record["EnteredAmount"]:
                raise AdfError(400, "You can't incomplete a transaction that has activity against it", "AR_ACTIVITY")
        elif "AccountNumber" in body and body["AccountNumber"] != record["AccountNumber"]:
            raise AdfError(400, "AccountNumber cannot be changed")
        record.update(body)
        record["_change"] += 1
        return self._view(record), 200

    def _create(self, resource: str, table: dict[int, dict[str, Any]], body: Any) -> dict[str, Any]:
        self._check(resource, body, SCHEMAS[resource])
        missing = [f for f in REQUIRED[resource] if f not in body]
        if resource in ("receivablesInvoices", "receivablesCreditMemos") and not (
                "BillToCustomerNumber" in body or "BillToCustomerName" in body):
            missing.append("BillToCustomerNumber")
        if missing:
            raise AdfError(400, f"The attribute {missing[0]} is required", "AttributeRequired")
        key = next(self._ids)
        record = dict(body) | {KEYS[resource]: key, "_change": 1}
        if resource == "customerAccounts":
            if any(a["AccountNumber"] == body["AccountNumber"] for a in table.values()):
                raise AdfError(400, f"The account number {body['AccountNumber']} already exists", "DuplicateAccount")
        elif resource == "standardReceipts":
            if "CustomerAccountNumber" in body:
                self._customer(body["CustomerAccountNumber"])
            record |= {"ReceiptStatus": "Unapplied", "AppliedAmount": ZERO, "_applications": []}
        else:
            self._customer(body.get("BillToCustomerNumber"))
            invoice = resource == "receivablesInvoices"
            lines = body["receivablesInvoiceLines" if invoice else "receivablesCreditMemoLines"]
            if not lines:
                raise AdfError(400, "A transaction needs at least one line")
            qty = "Quantity" if invoice else "LineQuantityCredit"
            net = _money(sum((Decimal(ln.get(qty, 1)) * Decimal(ln.get("UnitSellingPrice", 0)) for ln in lines), ZERO))
            tax = self._tax_codes(lines, "receivablesInvoiceLineTaxLines" if invoice else
                                  "receivablesCreditMemoLineTaxLines")
            record |= {"EnteredAmount": net + tax, "TaxAmount": tax}
            if invoice:
                if net + tax < 0:
                    raise AdfError(400, "An invoice total cannot be negative: use a credit memo")
                record |= {"InvoiceStatus": body.get("InvoiceStatus", "Complete"), "InvoiceBalanceAmount": net + tax}
            else:
                if net + tax >= 0:
                    raise AdfError(400, "A credit memo's amount must be negative")
                record |= {"AppliedAmount": ZERO, "RefundedAmount": ZERO, "CreditMemoBalance": net + tax,
                           "_applications": [], "_refunds": []}
        table[key] = record
        return self._view(record)

    def _refund(self, memo: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The customer paid back out of an on-account credit memo: never more than it has open."""
        self._check("receivablesCreditMemos", body, REFUND, "refundOnAccountCreditMemo")
        if {"AmountApplied", "ApplyDate"} - set(body):
            raise AdfError(400, "refundOnAccountCreditMemo requires AmountApplied and ApplyDate", "AttributeRequired")
        amount = Decimal(body["AmountApplied"])
        if not ZERO < amount <= -memo["CreditMemoBalance"]:
            raise AdfError(400, f"The refund amount {amount} exceeds the credit memo's open balance "
                           f"{-memo['CreditMemoBalance']}", "AR_REFUND_AMOUNT")
        memo["_refunds"].append(dict(body))
        memo["RefundedAmount"] += amount
        memo["CreditMemoBalance"] += amount
        return self._view(memo)

    def _act(self, resource: str, record: dict[str, Any], action: str, body: dict[str, Any]) -> dict[str, Any]:
        actions = {"standardReceipts": {"applyReceipt", "reverseReceipt"},
                   "receivablesCreditMemos": {"applyOnAccountCreditMemo", "unapplyOnAccountCreditMemo",
                                              "refundOnAccountCreditMemo"}}
        if action not in actions.get(resource, ()):
            raise AdfError(404, f"The action {action} is not defined for {resource}")
        invoices = self.tables["receivablesInvoices"]
        if action in ("reverseReceipt", "unapplyOnAccountCreditMemo"):
            for application in record["_applications"]:
                invoice = invoices.get(application["CustomerTrxId"])
                if invoice is not None:
                    invoice["InvoiceBalanceAmount"] += application["AmountApplied"]
                    invoice["_change"] += 1
            record["_applications"], record["AppliedAmount"] = [], ZERO
            if action == "reverseReceipt":
                record["ReceiptStatus"] = "Reversed"
            else:
                record["CreditMemoBalance"], record["RefundedAmount"], record["_refunds"] = record["EnteredAmount"], ZERO, []
            return self._view(record)
        if action == "refundOnAccountCreditMemo":
            return self._refund(record, body)
        self._check(resource, body, APPLICATION, action)
        if set(APPLICATION) - set(body):
            raise AdfError(400, f"{action} requires CustomerTrxId, AmountApplied and ApplyDate", "AttributeRequired")
        invoice = invoices.get(int(body["CustomerTrxId"]))
        amount = Decimal(body["AmountApplied"])
        if invoice is None or invoice["InvoiceStatus"] != "Complete":
            raise AdfError(400, f"Transaction {body['CustomerTrxId']} is not a complete open transaction")
        if record.get("ReceiptStatus") == "Reversed":
            raise AdfError(400, "A reversed receipt cannot be applied")
        unapplied = (record["Amount"] - record["AppliedAmount"]) if resource == "standardReceipts" \
            else -record["CreditMemoBalance"]
        if amount <= 0 or amount > unapplied or amount > invoice["InvoiceBalanceAmount"]:
            raise AdfError(400, f"The amount applied {amount} exceeds what is open (receipt or credit {unapplied}, "
                           f"transaction {invoice['InvoiceBalanceAmount']})", "AR_APPLY_AMOUNT")
        invoice["InvoiceBalanceAmount"] -= amount
        invoice["_change"] += 1
        record["_applications"].append({"CustomerTrxId": invoice["CustomerTransactionId"], "AmountApplied": amount})
        record["AppliedAmount"] += amount
        if resource == "standardReceipts":
            record["ReceiptStatus"] = "Applied" if record["AppliedAmount"] == record["Amount"] else "Unapplied"
        else:
            record["CreditMemoBalance"] += amount
        return self._view(record)
