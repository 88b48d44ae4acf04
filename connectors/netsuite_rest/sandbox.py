"""A local NetSuite account behind SuiteTalk REST web services, for the demo and the tests.

Built from Oracle's REST web services help and the field table in ``netsuite/rest/SOURCE.md`` (NetSuite
publishes no static OpenAPI: each account serves its own): token-based auth (OAuth 1.0a signatures with
HMAC-SHA256 verified here with oauthlib, ``realm`` = the account id, a nonce used once, a timestamp within five
minutes; ``INVALID_LOGIN`` otherwise), records under ``/services/rest/record/v1`` — ``customer``, ``invoice``,
``creditMemo``, ``customerPayment``, ``customerRefund`` (money paid back: its ``apply`` lines name credit memos of
its customer, never more than a memo has left to apply, which drops by it; a memo a refund applies to cannot be
deleted) — created by ``POST`` or ``PUT .../eid:<external id>`` (insert or update),
answered ``204`` with the new record in ``Location``; ``GET`` (sublists expanded with ``expandSubResources``),
sparse ``PATCH`` (sublist lines merged — ``item`` lines by ``line``, ``apply`` lines by ``doc`` — unless
``?replace=<sublist>``), ``DELETE``; ``POST /invoice/{id}/!transform/creditMemo`` (the credit memo copies the
invoice's lines and is applied to what is open on it); ``X-NetSuite-Idempotency-Key`` on POSTs (a key seen
before is refused with ``IDEMPOTENCY_ERROR``); ``X-NetSuite-PropertyNameValidation`` (default ``Warning``:
unknown fields are ignored; ``Error``: refused) and ``X-NetSuite-PropertyValueValidation`` (references must
exist); external ids unique per record type; SuiteQL (``POST /services/rest/query/v1/suiteql``, ``Prefer:
transient`` required, ``limit``/``offset`` paging) over ``transaction``, ``customer``, ``accountingperiod``,
``currency`` and ``subsidiary`` (equality conditions joined by ``AND``, ``TO_CHAR(<date>, 'YYYY-MM-DD')``; other
dates in the account's ``M/D/YYYY`` format); currencies (USD the subsidiary's base, CAD; no EUR): a customer's
primary currency the subsidiary's unless sent, its ``currencyList`` lines the others it takes; a transaction in
its customer's primary currency unless sent, refused (``INVALID_KEY_OR_REF``) in one the customer does not take,
``exchangeRate`` the currency's rate unless sent, applied only to documents in its own currency; accounting
periods closed or A/R-locked refuse transactions dated in them; legacy tax (each line's tax = amount × its tax
code's rate; a tax group's = the sum of its codes', each rounded). Concurrency governance: at most
``concurrency_limit`` requests in flight per account (the "shared" service tier's 5), answered 429. Errors are NetSuite's
``{"type", "title", "status", "o:errorDetails": [{"detail", "o:errorCode", "o:errorPath"}]}``; the codes are
NetSuite's where its help names them (``INVALID_LOGIN``, ``NONEXISTENT_ID``, ``INVALID_KEY_OR_REF``,
``USER_ERROR``, ``IDEMPOTENCY_ERROR``), the details and the 429's code and ``Retry-After`` are the sandbox's own.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import re
import secrets
import threading
import time
from calendar import monthrange
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from oauthlib.oauth1.rfc5849 import signature, utils
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer

ACCOUNT_ID = "1234567_SB1"
REST = "/services/rest"
RECORDS = f"{REST}/record/v1"
CENT, ZERO = Decimal("0.01"), Decimal("0")
REF, TEXT, NUMBER, DAY, FLAG, LIST = "ref", "string", "number", "date", "boolean", "sublist"
_TRANSACTION = {"externalId": TEXT, "tranDate": DAY, "tranId": TEXT, "memo": TEXT, "currency": REF,
                "exchangeRate": NUMBER, "subsidiary": REF, "location": REF, "department": REF, "class": REF}
# The writable standard fields of the field table (netsuite/rest/SOURCE.md), with their JSON types.
FIELDS: dict[str, dict[str, str]] = {
    "customer": {"externalId": TEXT, "entityId": TEXT, "companyName": TEXT, "isPerson": FLAG, "firstName": TEXT,
                 "lastName": TEXT, "email": TEXT, "phone": TEXT, "subsidiary": REF, "currency": REF, "terms": REF,
                 "taxable": FLAG, "currencyList": LIST},
    "invoice": _TRANSACTION | {"entity": REF, "dueDate": DAY, "otherRefNum": TEXT, "terms": REF, "item": LIST},
    "creditMemo": _TRANSACTION | {"entity": REF, "item": LIST, "apply": LIST},
    "customerPayment": _TRANSACTION | {"customer": REF, "payment": NUMBER, "account": REF, "undepFunds": FLAG,
                                       "paymentMethod": REF, "apply": LIST},
    # SuiteTalk 2023_2 tranCust:CustomerRefund / the REST record ``customerRefund`` (Oracle's help "Customer Refund":
    # an ``apply`` sublist of CustomerRefundApplyLine): the total is what its apply lines refund.
    "customerRefund": _TRANSACTION | {"customer": REF, "account": REF, "paymentMethod": REF, "apply": LIST},
}
LINES = {"item": {"item": REF, "quantity": NUMBER, "rate": NUMBER, "amount": NUMBER, "description": TEXT,
                  "taxCode": REF, "price": REF, "isTaxable": FLAG, "location": REF, "line": NUMBER},
         "apply": {"doc": REF, "apply": FLAG, "amount": NUMBER},
         "currencyList": {"currency": REF}}  # a customer's other currencies (Multiple Currencies per customer)
# A customer refund's apply lines name the credits it refunds (credit memos here), not invoices.
RECORD_LINES = {"customerRefund": {"apply": {"doc": f"{REF}:creditMemo", "apply": FLAG, "amount": NUMBER}}}
REQUIRED = {"customer": ("entityId", "companyName", "subsidiary"), "invoice": ("entity", "item"),
            "creditMemo": ("entity", "item"), "customerPayment": ("customer", "payment"),
            "customerRefund": ("customer", "account", "apply")}
TRANSACTION_TYPES = {"invoice": "CustInvc", "creditMemo": "CustCred", "customerPayment": "CustPymt",
                     "customerRefund": "CustRfnd"}
# Which list a reference field points into.
REFERENCES = {"entity": "customer", "customer": "customer", "item": "items", "taxCode": "taxCodes",
              "account": "accounts", "subsidiary": "subsidiaries", "currency": "currencies", "terms": "terms",
              "location": "locations", "department": "departments", "class": "classes", "doc": "invoice",
              "paymentMethod": "paymentMethods", "price": "priceLevels"}


class NsError(Exception):
    def __init__(self, status: int, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.path = status, code, detail, path


TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
          500: "Internal Server Error"}


def ns_error(status: int, code: str, detail: str, path: str | None = None) -> Response:
    item = {"detail": detail, "o:errorCode": code} | ({"o:errorPath": path} if path else {})
    body = {"type": f"https://www.rfc-editor.org/rfc/rfc9110.html#status.{status}", "title": TITLES.get(status, "Error"),
            "status": status, "o:errorDetails": [item]}
    return Response(jsonmoney.dumps(body), status_code=status,
                    media_type="application/vnd.oracle.resource+json; type=error")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _us_date(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"  # the account's date format preference


class Sandbox:
    """One NetSuite account (OneWorld, legacy tax, auto-numbering off) as a local server."""

    def __init__(self, faults: Faults | None = None, *, concurrency_limit: int | None = 5,
                 account_id: str = ACCOUNT_ID) -> None:
        self.faults = faults or Faults()
        self.account_id = account_id
        self.concurrency_limit = concurrency_limit  # None: governance off (conformance sweeps)
        self.multiple_currencies = True  # off: no currency records to read (the feature is not enabled)
        self.in_flight, self.breaches = 0, 0
        self.consumers: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.nonces: set[str] = set()
        self.idempotency_keys: set[str] = set()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FIELDS}
        self.lists: dict[str, dict[str, dict[str, Any]]] = {
            "items": {k: {"name": v} for k, v in {"10": "Parts", "11": "Labour", "12": "Shop fees", "13": "Sublet",
                                                  "14": "Discount", "15": "Core charge", "16": "Adjustment"}.items()},
            # A tax group (GST+PST, STATE+COUNTY) computes each of its codes' tax on the line and adds them.
            "taxCodes": {k: {"name": n, "rates": [Decimal(r) for r in rates.split("+")]} for k, (n, rates) in {
                "5": ("GST", "0.05"), "6": ("PST", "0.07"), "7": ("GST+PST", "0.05+0.07"), "20": ("STATE", "0.0625"),
                "21": ("COUNTY", "0.01"), "22": ("STATE+COUNTY", "0.0625+0.01"), "-7": ("-Not Taxable-", "0")}.items()},
            "accounts": {"1": {"name": "Checking"}, "2": {"name": "Card clearing"}},
            "subsidiaries": {"1": {"name": "Main St Auto Electric", "currency": "1"}},
            # ``symbol`` is the ISO code; ``exchangeRate`` the default rate to the base currency (Currency
            # Exchange Rates): a transaction sent without one takes it. EUR: an account without it.
            "currencies": {"1": {"name": "US Dollar", "symbol": "USD", "isbasecurrency": "T", "isinactive": "F",
                                 "exchangeRate": Decimal("1")},
                           "3": {"name": "Canadian Dollar", "symbol": "CAD", "isbasecurrency": "F", "isinactive": "F",
                                 "exchangeRate": Decimal("0.73")}},
            "terms": {"1": {"name": "Net 15"}, "2": {"name": "Net 30"}, "3": {"name": "Net 60"}},
            "locations": {"1": {"name": "Main St"}}, "departments": {"1": {"name": "Service"}},
            "classes": {"1": {"name": "Auto electric"}}, "paymentMethods": {"1": {"name": "Cash"}},
            "priceLevels": {"-1": {"name": "Custom"}}}
        self.periods: list[dict[str, Any]] = []
        for number, (year, month) in enumerate(((y, m) for y in (2025, 2026, 2027) for m in range(1, 13)), 1):
            self.periods.append({"id": str(number), "periodname": date(year, month, 1).strftime("%b %Y"),
                                 "startdate": date(year, month, 1), "enddate": date(year, month, monthrange(year, month)[1]),
                                 "closed": "F", "arlocked": "F", "isyear": "F", "isquarter": "F"})
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path under /record/v1, body)
        self._ids = itertools.count(101)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route(f"{REST}/query/v1/suiteql", self._suiteql, methods=["POST"]),
            Route(RECORDS + "/{record}", self._collection, methods=["POST"]),
            Route(RECORDS + "/{record}/{key}", self._member, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route(RECORDS + "/{record}/{key}/!transform/{target}", self._transform, methods=["POST"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        """An integration record (consumer key/secret) and a user's access token (token id/secret)."""
        consumer_key, token_id = secrets.token_hex(32), secrets.token_hex(32)
        self.consumers[consumer_key], self.tokens[token_id] = secrets.token_hex(32), secrets.token_hex(32)
        return {"consumer_key": consumer_key, "consumer_secret": self.consumers[consumer_key],
                "token_id": token_id, "token_secret": self.tokens[token_id]}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        settings: dict[str, Any] = {"account_id": self.account_id, "subsidiary_id": "1", "adjustment_item_id": "16"}
        if self.concurrency_limit:
            settings["concurrency"] = self.concurrency_limit
        return {
            "name": name, "platform": "netsuite-rest", "base_url": f"{base_url}{REST}", "settings": settings,
            "mapping": {"items": {"part": "10", "labour": "11", "fee": "12", "sublet": "13", "discount": "14",
                                  "core_charge": "15", "core_return": "15"},
                        "tax_codes": {"GST": "5", "PST": "6", "GST+PST": "7", "STATE": "20", "COUNTY": "21",
                                      "COUNTY+STATE": "22", "none": "-7"},
                        "payment_accounts": {"card": "2", "eft": "1"},  # cash and checks: Undeposited Funds
                        "payment_terms": {15: "1", 30: "2", 60: "3"}},
        }

    def rate_limit_breaches(self) -> int:
        """Requests refused for exceeding the account's concurrency limit (NetSuite has no request-rate limit)."""
        return self.breaches

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for invoice in self.tables["invoice"].values():
                paid = [line["amount"] for p in self.tables["customerPayment"].values() for line in p["apply"]["items"]
                        if line["doc"]["id"] == invoice["id"] and line["apply"]]
                out.append(BookedInvoice(
                    number=invoice.get("tranId") or "", external_id=invoice["id"], voided=self._voided(invoice),
                    total=invoice["total"], tax_total=invoice["taxTotal"], line_count=len(invoice["item"]["items"]),
                    payments_applied=sum(paid, ZERO), payment_count=len(paid),
                    currency=self.lists["currencies"][invoice["currency"]["id"]]["symbol"]))
            return out

    def records(self, record: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.tables[record].values()]

    def close_periods(self, through: date, *, ar_only: bool = False) -> None:
        """The bookkeeper closes (or only locks A/R in) every period ending on or before ``through``."""
        with self._lock:
            for period in self.periods:
                if period["enddate"] <= through:
                    period["arlocked" if ar_only else "closed"] = "T"

    def touch(self, record: str, internal_id: str, **fields: Any) -> None:
        """The bookkeeper edits a record in the UI."""
        with self._lock:
            self.tables[record][internal_id].update(fields, lastModifiedDate=_now())

    def _voided(self, invoice: dict[str, Any]) -> bool:
        """Credited in full by a credit memo transformed from it (how the REST connector voids)."""
        return any(m.get("createdFrom", {}).get("id") == invoice["id"] and m["total"] >= invoice["total"]
                   for m in self.tables["creditMemo"].values())

    # -- plumbing: auth, governance, faults --
    async def _guarded(self, request: Request, handler) -> Response:
        try:
            self._authenticate(request)
        except NsError as error:
            return ns_error(error.status, error.code, error.detail)
        with self._lock:
            if self.concurrency_limit is not None and self.in_flight >= self.concurrency_limit:
                self.breaches += 1
                refused = ns_error(429, "CONCURRENCY_LIMIT_EXCEEDED",
                                   "Concurrent request limit exceeded. Request blocked.")
                refused.headers["Retry-After"] = "1"
                return refused
            self.in_flight += 1
        try:
            return await handler()
        except NsError as error:
            return ns_error(error.status, error.code, error.detail, error.path)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization") or ""
        refused = NsError(401, "INVALID_LOGIN", "Invalid login attempt. For more details, see the Login Audit Trail "
                                                "in the NetSuite UI at Setup > Users/Roles > User Management > View "
                                                "Login Audit Trail.")
        if not header.startswith("OAuth "):
            raise refused
        given = dict(signature.collect_parameters(headers={"Authorization": header}, exclude_oauth_signature=False,
                                                  with_realm=True))
        consumer_secret = self.consumers.get(given.get("oauth_consumer_key", ""))
        token_secret = self.tokens.get(given.get("oauth_token", ""))
        if (consumer_secret is None or token_secret is None or given.get("realm") != self.account_id
                or given.get("oauth_signature_method") != "HMAC-SHA256"
                or abs(time.time() - int(given.get("oauth_timestamp") or 0)) > 300):
            raise refused
        params = signature.collect_parameters(uri_query=request.url.query, headers={"Authorization": header})
        base = signature.signature_base_string(request.method, signature.base_string_uri(str(request.url)),
                                               signature.normalize_parameters(params))
        key = f"{utils.escape(consumer_secret)}&{utils.escape(token_secret)}"  # RFC 5849 §3.4.2
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()).decode()
        with self._lock:
            nonce = f"{given['oauth_consumer_key']}:{given.get('oauth_nonce')}:{given['oauth_timestamp']}"
            if not hmac.compare_digest(expected, given.get("oauth_signature", "")) or nonce in self.nonces:
                raise refused
            self.nonces.add(nonce)

    async def _write(self, request: Request, apply) -> Response:
        """A write: its body checked, recorded, a fault drawn, applied under the lock, answered 204 + Location."""
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            raise NsError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None
        key = request.headers.get("x-netsuite-idempotency-key")
        self.requests.append((request.method, request.url.path.removeprefix(RECORDS), body))
        decided = self.faults.draw()
        if decided == "500":
            return ns_error(500, "UNEXPECTED_ERROR", "An unexpected error occurred.")
        if decided == "429":
            throttled = ns_error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
            throttled.headers["Retry-After"] = "1"
            return throttled
        with self._lock:
            if key and request.method == "POST" and key in self.idempotency_keys:
                raise NsError(400, "IDEMPOTENCY_ERROR", "A request with this idempotency key was already processed.")
            strict = request.headers.get("x-netsuite-propertynamevalidation", "Warning").lower() == "error"
            record, internal_id = apply(body, strict)
            if key and request.method == "POST":
                self.idempotency_keys.add(key)
        response = Response(status_code=204)
        if internal_id:
            response.headers["Location"] = f"{request.base_url}{RECORDS.lstrip('/')}/{record}/{internal_id}"
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- routes --
    async def _collection(self, request: Request) -> Response:
        record = self._record_type(request)
        return await self._guarded(request, lambda: self._write(request, lambda body, strict: (
            record, self._save(record, None, self._checked(record, body, strict, create=True), replace=None))))

    async def _member(self, request: Request) -> Response:
        record, key = self._record_type(request), request.path_params["key"]

        async def handle() -> Response:
            if request.method == "GET":
                with self._lock:
                    found = self._find(record, key)
                    return self._ok(self._view(record, found, request.query_params.get("expandSubResources") == "true"))
            return await self._write(request, lambda body, strict: self._change(request, record, key, body, strict))

        return await self._guarded(request, handle)

    async def _transform(self, request: Request) -> Response:
        record, target = self._record_type(request), request.path_params["target"]
        if (record, target) != ("invoice", "creditMemo"):
            raise NsError(400, "INVALID_TRANSFORM", f"Transforming {record} into {target} is not supported here.")
        return await self._guarded(request, lambda: self._write(request, lambda body, strict: (
            "creditMemo", self._credit_from(self._find("invoice", request.path_params["key"]), body or {}, strict))))

    def _record_type(self, request: Request) -> str:
        record = request.path_params["record"]
        if record not in FIELDS:
            raise NsError(404, "NONEXISTENT_RCRD_TYPE", f"Record type '{record}' does not exist.")
        return record

    @staticmethod
    def _ok(body: Any) -> Response:
        return Response(jsonmoney.dumps(body), media_type="application/vnd.oracle.resource+json; type=singular")

    # -- records --
    def _find(self, record: str, key: str, missing_ok: bool = False) -> dict[str, Any] | None:
        table = self.tables[record]
        found = (next((r for r in table.values() if r.get("externalId") == key[4:]), None) if key.startswith("eid:")
                 else table.get(key))
        if found is None and not missing_ok:
            raise NsError(404, "NONEXISTENT_ID", "The record instance does not exist. Provide a valid record instance ID.")
        return found

    def _change(self, request: Request, record: str, key: str, body: Any, strict: bool) -> tuple[str, str | None]:
        if request.method == "DELETE":
            self._delete(record, self._find(record, key))
            return record, None
        if request.method == "PUT":  # insert or update by external id
            if not key.startswith("eid:"):
                raise NsError(400, "USER_ERROR", "PUT (insert or update) needs an external id: eid:<externalId>.")
            current = self._find(record, key, missing_ok=True)
            fields = self._checked(record, body, strict, create=current is None)
            if fields.setdefault("externalId", key[4:]) != key[4:]:
                raise NsError(400, "USER_ERROR", "The body's externalId differs from the one in the URL.", "externalId")
            sublists = {name for name, kind in FIELDS[record].items() if kind == LIST}
            return record, self._save(record, current, fields, replace=sublists)
        current = self._find(record, key)
        replace = set(filter(None, request.query_params.get("replace", "").split(",")))
        return record, self._save(record, current, self._checked(record, body, strict, create=False), replace=replace)

    def _checked(self, record: str, body: Any, strict: bool, create: bool) -> dict[str, Any]:
        """The body's fields by the field table: names (refused or ignored by PropertyNameValidation), JSON types,
        required fields on insert, and that every reference exists (PropertyValueValidation)."""
        if not isinstance(body, dict):
            raise NsError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        fields = {}
        for name, value in body.items():
            kind = FIELDS[record].get(name)
            if kind is None:
                if strict:
                    raise NsError(400, "USER_ERROR", f"Invalid field name: {name}.", name)
                continue
            fields[name] = self._typed(name, kind, value, RECORD_LINES.get(record, LINES).get(name), strict)
        for name in REQUIRED[record] if create else ():
            if fields.get(name) in (None, "") or (FIELDS[record][name] == LIST and not fields[name]):
                raise NsError(400, "USER_ERROR", f"Please enter value(s) for: {name}.", name)
        return fields

    def _typed(self, name: str, kind: str, value: Any, line_fields: dict[str, str] | None, strict: bool) -> Any:
        wrong = NsError(400, "USER_ERROR", f"Invalid value for the field {name}: expected a {kind}.", name)
        if kind == LIST:
            if not isinstance(value, dict) or not isinstance(value.get("items"), list):
                raise wrong
            lines = []
            for line in value["items"]:
                if not isinstance(line, dict):
                    raise wrong
                unknown = set(line) - set(line_fields or {})
                if unknown and strict:
                    raise NsError(400, "USER_ERROR", f"Invalid field name: {name}.{sorted(unknown)[0]}.", name)
                lines.append({k: self._typed(f"{name}.{k}", line_fields[k], v, None, strict)
                              for k, v in line.items() if k in (line_fields or {})})
            return lines
        if kind.startswith(REF):  # ``ref`` or ``ref:<record>`` (the record it must name)
            if not isinstance(value, dict) or not any(isinstance(value.get(k), str) and value[k] for k in ("id", "externalId")):
                raise wrong
            return self._resolved(name.rsplit(".", 1)[-1], value, kind.partition(":")[2] or None)
        ok = {TEXT: isinstance(value, str), FLAG: isinstance(value, bool),
              NUMBER: isinstance(value, (int, Decimal)) and not isinstance(value, bool),
              DAY: isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None}[kind]
        if not ok:
            raise wrong
        return Decimal(value) if kind == NUMBER else date.fromisoformat(value) if kind == DAY else value

    def _resolved(self, field: str, ref: dict[str, str], target: str | None = None) -> dict[str, str]:
        target = target or REFERENCES[field]
        if target in self.tables:
            found = self._find(target, ref["id"] if ref.get("id") else f"eid:{ref['externalId']}", missing_ok=True)
            internal_id = found["id"] if found else None
        else:
            internal_id = ref.get("id") if ref.get("id") in self.lists[target] else None
        if internal_id is None:
            raise NsError(400, "INVALID_KEY_OR_REF", f"Invalid {field} reference key {ref.get('id') or ref.get('externalId')}.",
                          field)
        return {"id": internal_id}

    def _check_open(self, *days: date | None) -> None:
        for day in days:
            period = next((p for p in self.periods if day and p["startdate"] <= day <= p["enddate"]), None)
            if period and period["closed"] == "T":
                raise NsError(400, "USER_ERROR", f"The accounting period is closed for {day} ({period['periodname']}).",
                              "tranDate")
            if period and period["arlocked"] == "T":
                raise NsError(400, "USER_ERROR", f"The accounting period is locked for A/R for {day} "
                                                 f"({period['periodname']}).", "tranDate")

    def _save(self, record: str, current: dict[str, Any] | None, fields: dict[str, Any], replace: set[str] | None
              ) -> str:
        if fields.get("externalId") and any(r.get("externalId") == fields["externalId"] and r is not current
                                            for r in self.tables[record].values()):
            raise NsError(400, "USER_ERROR", f"A {record} with the external ID {fields['externalId']} already exists.",
                          "externalId")
        if record != "customer":
            self._check_open(current and current["tranDate"], fields.get("tranDate"))
        saved = copy.deepcopy(current) if current else {"id": str(next(self._ids)), "createdDate": _now()}
        for name, value in fields.items():
            if FIELDS[record][name] == LIST:
                saved[name] = {"items": self._merged(name, (saved.get(name) or {}).get("items") or [], value,
                                                     replace is None or name in replace)}
            else:
                saved[name] = value
        saved["lastModifiedDate"] = _now()
        if record == "customer":
            if not saved.get("isPerson") and not saved.get("companyName"):
                raise NsError(400, "USER_ERROR", "Please enter value(s) for: companyName.", "companyName")
            # The primary currency: the subsidiary's unless sent (fixed once the customer has transactions).
            saved.setdefault("currency", {"id": self.lists["subsidiaries"][saved["subsidiary"]["id"]]["currency"]})
            self.tables[record][saved["id"]] = saved
            return saved["id"]
        saved.setdefault("tranDate", date.today())
        self._currency(record, saved)
        self._settle_record(record, saved)
        self.tables[record][saved["id"]] = saved
        self._settle_all()
        return saved["id"]

    @staticmethod
    def _merged(sublist: str, held: list[dict[str, Any]], sent: list[dict[str, Any]], replace: bool
                ) -> list[dict[str, Any]]:
        if replace:
            held = []
        lines = [dict(line) for line in held]
        for line in sent:
            field = {"apply": "doc", "currencyList": "currency"}.get(sublist)  # lines keyed by what they name
            key = line[field]["id"] if field else line.get("line")
            match = next((h for h in lines if key is not None and (h[field]["id"] if field else h.get("line")) == key),
                         None)
            if match is not None:
                match.update(line)
            else:
                lines.append(dict(line))
        if sublist == "item":
            for number, line in enumerate(lines, 1):
                line["line"] = Decimal(number)
        return lines

    def _currency(self, record: str, saved: dict[str, Any]) -> None:
        """A transaction's currency: the customer's primary one unless sent, one the customer takes (its primary
        or its ``currencyList``), at the account's rate for it unless ``exchangeRate`` is sent."""
        customer = self.tables["customer"][(saved.get("entity") or saved.get("customer"))["id"]]
        saved.setdefault("currency", dict(customer["currency"]))
        takes = {customer["currency"]["id"]} | {ln["currency"]["id"] for ln in customer.get("currencyList", {}).get("items", [])}
        if saved["currency"]["id"] not in takes:
            raise NsError(400, "INVALID_KEY_OR_REF", f"Invalid currency reference key {saved['currency']['id']} for "
                                                     f"entity {customer['id']}.", "currency")
        saved.setdefault("exchangeRate", self.lists["currencies"][saved["currency"]["id"]]["exchangeRate"])

    def _same_currency(self, saved: dict[str, Any], doc: dict[str, Any]) -> None:
        if doc["currency"] != saved["currency"]:
            raise NsError(400, "USER_ERROR", f"The transaction {doc['id']} is in another currency than this one.",
                          "apply.doc")

    def _settle_record(self, record: str, saved: dict[str, Any]) -> None:
        """Totals from the lines (legacy tax per line), then what each apply line may take."""
        if record in ("invoice", "creditMemo"):
            subtotal = tax = ZERO
            for line in saved["item"]["items"]:
                quantity = line.setdefault("quantity", Decimal(1))
                if "rate" in line and "amount" in line and _money(quantity * line["rate"]) != line["amount"]:
                    raise NsError(400, "USER_ERROR", f"The amount {line['amount']} is not quantity x rate "
                                                     f"({_money(quantity * line['rate'])}).", "item.amount")
                line.setdefault("amount", _money(quantity * line.get("rate", ZERO)))
                code = self.lists["taxCodes"][(line.get("taxCode") or {"id": "-7"})["id"]]
                line["tax1Amt"] = sum((_money(line["amount"] * rate) for rate in code["rates"]), ZERO)
                subtotal, tax = subtotal + line["amount"], tax + line["tax1Amt"]
            saved.update(subtotal=subtotal, taxTotal=tax, total=subtotal + tax)
        elif record == "customerRefund":
            self._refund_applied(saved)
            return
        else:
            saved["total"] = saved["payment"]
        applied = [line for line in (saved.get("apply") or {}).get("items") or [] if line.get("apply", True)]
        for line in applied:
            line.setdefault("apply", True)
            doc = self.tables["invoice"].get(line["doc"]["id"])
            if doc is not None:
                self._same_currency(saved, doc)
            open_amount = doc["total"] - self._applied_total(doc["id"], but=saved["id"]) if doc else ZERO
            line.setdefault("amount", open_amount)
            if doc is None or line["amount"] > open_amount:
                raise NsError(400, "USER_ERROR", f"The amount applied ({line['amount']}) is more than the amount due "
                                                 f"({open_amount}).", "apply.amount")
        refunded = self._refunded(saved["id"]) if record == "creditMemo" else ZERO  # paid back: not to apply
        if sum((line["amount"] for line in applied), ZERO) > saved["total"] - refunded:
            raise NsError(400, "USER_ERROR", "The total applied is more than the payment or credit.", "apply")

    def _refund_applied(self, saved: dict[str, Any]) -> None:
        """A customer refund: each apply line refunds a credit memo of its customer, never more than the memo has
        left to apply; its total is what it refunds (NetSuite computes it from the apply sublist)."""
        applied = [line for line in (saved.get("apply") or {}).get("items") or [] if line.get("apply", True)]
        for line in applied:
            line.setdefault("apply", True)
            memo = self.tables["creditMemo"].get(line["doc"]["id"])
            if memo is None or memo["entity"]["id"] != saved["customer"]["id"]:
                raise NsError(400, "USER_ERROR", "A customer refund can only apply the credits of its customer.",
                              "apply.doc")
            self._same_currency(saved, memo)
            left = memo["total"] - self._memo_used(memo, but=saved["id"])
            line.setdefault("amount", left)
            if not ZERO < line["amount"] <= left:
                raise NsError(400, "USER_ERROR", f"The amount refunded ({line['amount']}) is more than the credit "
                                                 f"left to apply ({left}).", "apply.amount")
        if not applied:
            raise NsError(400, "USER_ERROR", "You must apply the refund to at least one credit.", "apply")
        saved["total"] = sum((line["amount"] for line in applied), ZERO)

    def _refunded(self, memo_id: str, but: str | None = None) -> Decimal:
        """What customer refunds pay back of a credit memo."""
        return sum((line["amount"] for r in self.tables["customerRefund"].values() if r["id"] != but
                    for line in r["apply"]["items"] if line["doc"]["id"] == memo_id and line.get("apply")), ZERO)

    def _memo_used(self, memo: dict[str, Any], but: str | None = None) -> Decimal:
        """What of a credit memo is applied to invoices or refunded."""
        applied = sum((ln["amount"] for ln in memo.get("apply", {}).get("items", []) if ln.get("apply")), ZERO)
        return applied + self._refunded(memo["id"], but)

    def _applied_total(self, invoice_id: str, but: str | None = None) -> Decimal:
        return sum((line["amount"] for table in ("customerPayment", "creditMemo") for r in self.tables[table].values()
                    if r["id"] != but for line in (r.get("apply") or {}).get("items") or []
                    if line["doc"]["id"] == invoice_id and line.get("apply")), ZERO)

    def _settle_all(self) -> None:
        for invoice in self.tables["invoice"].values():
            paid = self._applied_total(invoice["id"])
            invoice.update(amountPaid=paid, amountRemaining=invoice["total"] - paid,
                           status={"id": "paidInFull" if paid >= invoice["total"] else "open"})
        for memo in self.tables["creditMemo"].values():
            used = self._memo_used(memo)
            memo.update(applied=used, unapplied=memo["total"] - used)

    def _delete(self, record: str, current: dict[str, Any]) -> None:
        if record != "customer":
            self._check_open(current["tranDate"])
        if (record == "invoice" and self._applied_total(current["id"])) or (
                record == "creditMemo" and self._refunded(current["id"])):
            raise NsError(400, "USER_ERROR", "This record cannot be deleted because it has dependent records.")
        del self.tables[record][current["id"]]
        self._settle_all()

    def _credit_from(self, invoice: dict[str, Any], body: dict[str, Any], strict: bool) -> str:
        """``!transform/creditMemo``: the invoice's lines credited, applied to what is open on it."""
        fields = self._checked("creditMemo", body, strict, create=False)
        lines = [{k: v for k, v in ln.items() if k in LINES["item"] and k != "line"} for ln in invoice["item"]["items"]]
        memo = {"entity": invoice["entity"], "item": lines, **{k: v for k, v in invoice.items() if k in (
            "currency", "subsidiary", "location", "department", "class")}} | fields
        memo["apply"] = [{"doc": {"id": invoice["id"]}, "apply": True, "amount": invoice["amountRemaining"]}]
        memo_id = self._save("creditMemo", None, memo, replace=None)
        self.tables["creditMemo"][memo_id]["createdFrom"] = {"id": invoice["id"]}
        return memo_id

    def _view(self, record: str, found: dict[str, Any], expand: bool) -> dict[str, Any]:
        view = copy.deepcopy(found)
        for name, value in view.items():
            if isinstance(value, dict) and "items" in value:
                view[name] = ({"items": value["items"], "totalResults": len(value["items"])} if expand else
                              {"links": [{"rel": "self", "href": f"{RECORDS}/{record}/{found['id']}/{name}"}]})
        return jsonmoney.loads(jsonmoney.dumps(_plain(view))) | {
            "links": [{"rel": "self", "href": f"{RECORDS}/{record}/{found['id']}"}]}

    # -- SuiteQL --
    async def _suiteql(self, request: Request) -> Response:
        async def handle() -> Response:
            if request.headers.get("prefer", "").lower() != "transient":
                raise NsError(400, "INVALID_HEADER", "The Prefer: transient header is required for SuiteQL queries.")
            try:
                query = str(jsonmoney.loads(await request.body())["q"])
            except (ValueError, KeyError, TypeError):
                raise NsError(400, "INVALID_CONTENT", "The body must be {\"q\": \"<SuiteQL query>\"}.") from None
            limit = int(request.query_params.get("limit", 1000))
            offset = int(request.query_params.get("offset", 0))
            if not 1 <= limit <= 1000 or offset % limit:
                raise NsError(400, "INVALID_PARAMETER", "limit must be 1-1000 and offset a multiple of limit.")
            with self._lock:
                rows = self._query(query)
            page = rows[offset:offset + limit]
            return self._ok({"links": [], "count": len(page), "hasMore": offset + limit < len(rows),
                             "items": [{"links": []} | row for row in page], "offset": offset,
                             "totalResults": len(rows)})

        return await self._guarded(request, handle)

    def _query(self, query: str) -> list[dict[str, Any]]:
        shape = re.fullmatch(r"\s*SELECT\s+(.+?)\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+?))?(?:\s+ORDER\s+BY\s+(\w+))?\s*",
                             query, re.IGNORECASE | re.DOTALL)
        if shape is None:
            raise NsError(400, "INVALID_SEARCH", "Invalid search query. Detailed unprocessed description follows. "
                                                 "The sandbox reads SELECT ... FROM ... [WHERE a = 'x' AND ...] [ORDER BY c].")
        columns, table, where, order = shape.groups()
        rows = self._rows(table.lower())
        for condition in re.split(r"\s+AND\s+", where or "", flags=re.IGNORECASE) if where else ():
            test = re.fullmatch(r"(\w+)\s*=\s*(?:'((?:[^']|'')*)'|(-?\d+))", condition.strip())
            if test is None:
                raise NsError(400, "INVALID_SEARCH", f"Invalid search query: unsupported condition {condition!r}.")
            column, text, number = test.groups()
            wanted = text.replace("''", "'") if text is not None else number
            rows = [r for r in rows if _cell(r.get(column.lower())) == wanted]
        if order:
            rows.sort(key=lambda r: (r.get(order.lower()) is None, _sortable(r.get(order.lower()))))
        out = []
        for row in rows:
            picked = {}
            for column in re.split(r",\s*(?![^()]*\))", columns):
                formatted = re.fullmatch(r"TO_CHAR\((\w+),\s*'YYYY-MM-DD'\)\s+AS\s+(\w+)", column.strip(), re.IGNORECASE)
                if formatted:
                    picked[formatted.group(2).lower()] = row[formatted.group(1).lower()].isoformat()
                    continue
                name = column.strip().lower()
                value = row.get(name)
                picked[name] = _us_date(value) if isinstance(value, date) else None if value is None else _cell(value)
            out.append(picked)
        return out

    def _rows(self, table: str) -> list[dict[str, Any]]:
        if table == "transaction":
            return [{"id": r["id"], "type": TRANSACTION_TYPES[record], "externalid": r.get("externalId"),
                     "tranid": r.get("tranId"), "trandate": r["tranDate"], "voided": "F",
                     "entity": (r.get("entity") or r.get("customer"))["id"], "lastmodifieddate": r["lastModifiedDate"],
                     "foreigntotal": -r["total"] if record == "creditMemo" else r["total"]}
                    for record in TRANSACTION_TYPES for r in self.tables[record].values()]
        if table == "customer":
            return [{"id": c["id"], "entityid": c.get("entityId"), "externalid": c.get("externalId"),
                     "companyname": c.get("companyName"), "email": c.get("email"), "phone": c.get("phone"),
                     "lastmodifieddate": c["lastModifiedDate"]} for c in self.tables["customer"].values()]
        if table == "accountingperiod":
            return [dict(p) for p in self.periods]
        if table == "currency" and self.multiple_currencies:
            return [{"id": i, "name": c["name"], "symbol": c["symbol"], "isbasecurrency": c["isbasecurrency"],
                     "isinactive": c["isinactive"], "exchangerate": c["exchangeRate"]}
                    for i, c in self.lists["currencies"].items()]
        if table == "subsidiary":
            return [{"id": i, "name": sub["name"], "currency": sub["currency"]} for i, sub in self.lists["subsidiaries"].items()]
        raise NsError(400, "INVALID_SEARCH", f"Invalid search query: unknown table {table}.")


def _cell(value: Any) -> str | None:
    return None if value is None else str(value)


def _sortable(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value
