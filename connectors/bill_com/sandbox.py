"""A local Bill.com (API v3, accounts receivable) for the demo and the tests.

Built from ``bill-com/SOURCE.md`` (its field tables for ``POST /v3/invoices`` and ``record-payment``; customers
need a name and an e-mail) and BILL's developer pages: ``POST /v3/login`` (username, password, organizationId,
devKey) → ``sessionId``, sent with ``devKey`` on every call and dead after 35 idle minutes (``401`` with
``BDC_1109`` "Session is invalid. Please log in."; a wrong user ``BDC_1101``, a wrong key ``BDC_1102``); errors as
``[{timestamp, code, severity, category, message}]``; 20,000 requests an hour per developer key and 200 logins an
hour (``BDC_1144``), 3 concurrent requests per developer key per organisation (``BDC_1322``), 5 a minute on the
endpoints that send e-mail or SMS (``/v3/invoices/{id}/email``; SOURCE.md lists login apart, at 200 an hour — an
earlier sandbox counted logins against the 5 a minute too and refused the sixth login of a minute). Invoices:
``PUT`` replaces the invoice (a line whose id is omitted is removed; an id BILL does not hold is refused;
``creditAmount`` omitted is 0), ``PATCH`` changes what it names, ``creditAmount`` = credit memo amounts applied (at
most what the customer's memos have left), archive / restore; ``record-payment`` applies an offline payment to
invoices of one customer; ``GET /v3/receivable-payments``; credit memos (``POST``, archive). Lists: ``max`` ≤ 100,
``page`` token, ``filters=field:eq:value``; ``results`` / ``nextPage`` / ``prevPage``. Fields outside SOURCE.md's
invoice and payment tables are refused (BILL's ``BDC_1002`` advice: "confirm whether a parameter is unknown or
misspelt").

The sandbox's own, not BILL's (no page states them): the HTTP status of a limit (429), the per-minute limit's
message and the validation codes (``BDC_VALIDATION``); that an archived invoice must carry no money; that a
negative ``record-payment`` reverses one (BILL publishes no void of a recorded AR payment); the response fields
``paidAmount``/``dueAmount``/``appliedAmount`` and the receivable payment's ``invoices``.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, WindowLimit

CENT, ZERO = Decimal("0.01"), Decimal("0")
TAX_LINE = "Sales tax "
PAYMENT_TYPES = {"CASH", "CHECK", "CREDIT_CARD", "ACH", "PAYPAL", "OTHER"}
INVOICE_FIELDS = {"customer", "invoiceLineItems", "invoiceNumber", "invoiceDate", "dueDate", "processingOptions",
                  "classifications", "creditAmount", "salesTaxItemId", "enableCardPayment", "convenienceFee"}
LINE_FIELDS = {"id", "quantity", "description", "price"}
PAYMENT_FIELDS = {"paymentDate", "paymentType", "amount", "invoices", "customerId", "description"}
MEMO_FIELDS = {"customerId", "referenceNumber", "creditDate", "description", "creditMemoLineItems", "salesTaxItemId",
               "classifications"}
CUSTOMER_FIELDS = {"name", "email", "accountNumber", "phone", "companyName", "description"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def bill_error(status: int, code: str, message: str, category: str = "REQUEST") -> Response:
    body = [{"timestamp": _now(), "code": code, "severity": "ERROR", "category": category, "message": message}]
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


class BillError(Exception):
    def __init__(self, message: str, code: str = "BDC_VALIDATION", status: int = 400) -> None:
        super().__init__(message)
        self.response = bill_error(status, code, message)


@dataclass
class Org:
    id: str
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    memos: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)


class Sandbox:
    """Bill.com v3 as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, *, hour_limit: int = 20_000, login_hour_limit: int = 200,
                 email_minute_limit: int = 5, concurrent: int = 3, idle_timeout_s: float = 35 * 60.0) -> None:
        self.faults = faults or Faults()
        self.hour_window, self.login_window = WindowLimit(hour_limit, 3600.0), WindowLimit(login_hour_limit, 3600.0)
        self.email_window = WindowLimit(email_minute_limit, 60.0)
        self.concurrent, self.idle_timeout_s = concurrent, idle_timeout_s
        self.concurrency_breaches = 0
        self._in_flight: dict[str, int] = {}
        self.users: dict[str, tuple[str, str, str]] = {}  # username -> (password, organisation id, dev key)
        self.sessions: dict[str, tuple[str, str, float]] = {}  # session id -> (organisation, dev key, last used)
        self.logins = 0
        self.orgs: dict[str, Org] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path, JSON body)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/v3/login", self._login, methods=["POST"]),
            Route("/v3/invoices/record-payment", self._route("payment"), methods=["POST"]),
            Route("/v3/{resource}", self._route("collection"), methods=["GET", "POST"]),
            Route("/v3/{resource}/{key}", self._route("member"), methods=["GET", "PUT", "PATCH"]),
            Route("/v3/{resource}/{key}/{action}", self._route("action"), methods=["POST"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        with self._lock:
            org = next(iter(self.orgs.values()), None) or Org(id="008" + secrets.token_hex(8))
            self.orgs[org.id] = org
            dev_key = next((u[2] for u in self.users.values()), None) or secrets.token_hex(16)
            username, password = f"api-{secrets.token_hex(4)}@shop.example", secrets.token_urlsafe(16)
            self.users[username] = (password, org.id, dev_key)
        return {"username": username, "password": password, "organization_id": org.id, "dev_key": dev_key}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {"name": name, "platform": "bill-com", "base_url": base_url,
                "settings": {"fallback_email": "accounts@shop.example"}, "mapping": {}}

    def expire_sessions(self) -> None:
        """Test hook: every session idles out now (the next call must log in again)."""
        with self._lock:
            self.sessions = {k: (org, key, 0.0) for k, (org, key, _) in self.sessions.items()}

    def rate_limit_breaches(self) -> int:
        return (self.hour_window.breaches + self.login_window.breaches + self.email_window.breaches
                + self.concurrency_breaches)

    def records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for org in self.orgs.values() for r in getattr(org, table).values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for org in self.orgs.values():
                for inv in org.invoices.values():
                    paid = [Decimal(a["amount"]) for p in org.payments.values() for a in p["invoices"]
                            if a["id"] == inv["id"]]
                    # a negative recorded payment reverses one
                    live = max(0, sum(1 for a in paid if a > 0) - sum(1 for a in paid if a < 0))
                    out.append(BookedInvoice(
                        number=inv["invoiceNumber"], external_id=inv["id"], voided=inv["archived"],
                        total=inv["totalAmount"], tax_total=sum((ln["amount"] for ln in inv["invoiceLineItems"]
                                                                 if ln["description"].startswith(TAX_LINE)), ZERO),
                        line_count=sum(1 for ln in inv["invoiceLineItems"] if not ln["description"].startswith(TAX_LINE)),
                        payments_applied=sum(paid, ZERO), payment_count=live))
            return out

    # -- session, limits, faults --
    async def _login(self, request: Request) -> Response:
        try:
            body = jsonmoney.loads(await request.body())
        except ValueError:
            return bill_error(400, "BDC_1002", "Unknown error occurred.")
        dev_key = str(body.get("devKey") or "")
        with self._lock:
            wait = self.login_window.hit(dev_key) if self.login_window.limit else None
            if wait is not None:
                return bill_error(429, "BDC_1144", f"Max number of allowed requests per hour reached: "
                                                   f"{self.login_window.limit}.", "DOWNSTREAM")
            if dev_key not in {u[2] for u in self.users.values()}:
                return bill_error(401, "BDC_1102", "Developer key is invalid.")
            user = self.users.get(str(body.get("username") or ""))
            if user is None or user[0] != body.get("password") or user[1] != body.get("organizationId"):
                return bill_error(401, "BDC_1101", "User name and/or password do not match our records.")
            session = secrets.token_urlsafe(24)
            self.sessions[session] = (user[1], dev_key, time.monotonic())
            self.logins += 1
        return Response(jsonmoney.dumps({"sessionId": session, "organizationId": user[1], "userId": "006" + secrets.token_hex(6)}),
                        media_type="application/json")

    def _guard(self, request: Request) -> tuple[Org, str] | Response:
        dev_key, session = request.headers.get("devkey") or "", request.headers.get("sessionid") or ""
        with self._lock:
            held = self.sessions.get(session)
            if held is None or held[1] != dev_key or time.monotonic() - held[2] > self.idle_timeout_s:
                self.sessions.pop(session, None)
                return bill_error(401, "BDC_1109", "Session is invalid.  Please log in.", "DOWNSTREAM")
            self.sessions[session] = (held[0], dev_key, time.monotonic())
            if self.hour_window.hit(dev_key) is not None:
                return bill_error(429, "BDC_1144", f"Max number of allowed requests per hour reached: "
                                                   f"{self.hour_window.limit}.", "DOWNSTREAM")
            return self.orgs[held[0]], f"{dev_key}/{held[0]}"

    @contextmanager
    def _slot(self, key: str) -> Iterator[bool]:
        with self._lock:
            allowed = self._in_flight.get(key, 0) < self.concurrent
            if allowed:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
            else:
                self.concurrency_breaches += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self._in_flight[key] -= 1

    def _route(self, kind: str):
        async def handle(request: Request) -> Response:
            guarded = self._guard(request)
            if isinstance(guarded, Response):
                return guarded
            org, key = guarded
            hang = False
            with self._slot(key) as allowed:
                if not allowed:
                    return bill_error(429, "BDC_1322", "Max number of concurrent requests per organization reached.",
                                      "DOWNSTREAM")
                response, hang = await self._handle(request, org, kind)
            if hang:  # applied; the answer is lost on the way (the request no longer counts as running)
                await self.faults.hang()
            return response
        return handle

    async def _handle(self, request: Request, org: Org, kind: str) -> tuple[Response, bool]:
        params = request.path_params
        resource = "invoices" if kind == "payment" else params.get("resource", "")
        if resource not in ("customers", "invoices", "credit-memos", "receivable-payments"):
            return bill_error(404, "BDC_1121", "API not supported."), False
        if request.method == "GET":
            with self._lock:
                try:
                    return self._ok(self._read(org, resource, params.get("key"), request.query_params)), False
                except BillError as error:
                    return error.response, False
        if kind == "action" and params["action"] == "email" and self.email_window.hit(str(org.id)) is not None:
            return bill_error(429, "BDC_1144", f"Max number of allowed requests per minute reached: "
                                               f"{self.email_window.limit}.", "DOWNSTREAM"), False
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else {}
        except ValueError:
            return bill_error(400, "BDC_1002", "Unknown error occurred."), False
        self.requests.append((request.method, request.url.path, body))
        decided = self.faults.draw()
        if decided == "500":
            return bill_error(500, "BDC_1001", "System error occurred.", "SERVER"), False
        if decided == "429":
            return bill_error(429, "BDC_1322", "Max number of concurrent requests per organization reached.",
                              "DOWNSTREAM"), False
        with self._lock:
            try:
                answer = self._write(org, kind, resource, request.method, params, body)
                response = self._ok(answer, 200 if request.method != "POST" or kind == "action" else 201)
            except BillError as error:
                response = error.response
        return response, decided == "timeout"

    @staticmethod
    def _ok(body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    # -- reads --
    def _table(self, org: Org, resource: str) -> dict[str, dict[str, Any]]:
        return {"customers": org.customers, "invoices": org.invoices, "credit-memos": org.memos,
                "receivable-payments": org.payments}[resource]

    def _read(self, org: Org, resource: str, key: str | None, q: Any) -> Any:
        table = self._table(org, resource)
        if key is not None:
            if key not in table:
                raise BillError("Object not found.", "BDC_1121", 404)
            return table[key]
        size = int(q.get("max", 20))
        if not 1 <= size <= 100:
            raise BillError("max: must be between 1 and 100")
        rows = [r for r in table.values() if all(self._matches(r, f) for f in _filters(q.get("filters", "")))]
        start = int(q.get("page") or 0)
        more = start + size < len(rows)
        return {"results": rows[start:start + size], "nextPage": str(start + size) if more else None,
                "prevPage": str(max(0, start - size)) if start else None}

    @staticmethod
    def _matches(row: dict[str, Any], condition: tuple[str, str, str]) -> bool:
        name, op, value = condition
        if op != "eq":
            raise BillError(f"filters: operator {op} is not supported by this sandbox")
        return str(row.get(name)).lower() == value.lower()

    # -- writes --
    def _write(self, org: Org, kind: str, resource: str, method: str, params: dict[str, str], body: Any) -> Any:
        if not isinstance(body, dict):
            raise BillError("The request body must be a JSON object.", "BDC_1002")
        if kind == "payment":
            return self._record_payment(org, body)
        key = params.get("key")
        table = self._table(org, resource)
        current = table.get(key) if key else None
        if key and current is None:
            raise BillError("Object not found.", "BDC_1121", 404)
        if kind == "action":
            return self._action(org, resource, current, params["action"])
        if resource == "customers":
            return self._customer(org, current, body, method)
        if resource == "invoices":
            return self._invoice(org, current, body, method)
        if resource == "credit-memos" and method == "POST":
            return self._memo(org, body)
        raise BillError(f"{method} {resource} is not supported by this sandbox", "BDC_1121", 404)

    def _customer(self, org: Org, current: dict | None, body: dict[str, Any], method: str) -> dict[str, Any]:
        _known(body, CUSTOMER_FIELDS)
        merged = (current or {}) | body
        for name in ("name", "email"):
            if not str(merged.get(name) or "").strip():
                raise BillError(f"{name}: must not be blank")
        customer = current if current is not None else {"id": "0cu" + secrets.token_hex(8), "archived": False,
                                                         "createdTime": _now()}
        customer.update(copy.deepcopy(body) | {"updatedTime": _now()})
        org.customers[customer["id"]] = customer
        return customer

    def _lines(self, lines: Any, held: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
        if not isinstance(lines, list) or not lines:
            raise BillError(f"{key}: must not be empty")
        out = []
        for line in lines:
            _known(line, LINE_FIELDS, key)
            if line.get("quantity") is None:
                raise BillError(f"{key}.quantity: must not be null")
            quantity, price = _number(line["quantity"], "quantity"), _number(line.get("price", 0), "price")
            if "id" in line and line["id"] not in held:
                raise BillError(f"{key}.id: line item {line['id']} is not on this document")
            out.append({"id": line.get("id") or "0il" + secrets.token_hex(8), "description": str(line.get("description") or ""),
                        "quantity": quantity, "price": price,
                        "amount": (quantity * price).quantize(CENT, rounding=ROUND_HALF_UP)})
        return out

    def _invoice(self, org: Org, current: dict | None, body: dict[str, Any], method: str) -> dict[str, Any]:
        _known(body, INVOICE_FIELDS)
        if current is not None and current["archived"]:
            raise BillError("An archived invoice cannot be changed; restore it first")
        replace = method in ("POST", "PUT")
        if replace:
            customer = body.get("customer")
            if not isinstance(customer, dict) or customer.get("id") not in org.customers:
                raise BillError("customer.id: must be an existing customer")
        number = body.get("invoiceNumber", (current or {}).get("invoiceNumber"))
        if number is not None and (not isinstance(number, str) or not 1 <= len(number) <= 100):
            raise BillError("invoiceNumber: length must be between 1 and 100")
        for name in ("invoiceDate", "dueDate"):
            if name in body:
                _date(body[name], name)
        invoice = copy.deepcopy(current) if current is not None else {
            "id": "00e" + secrets.token_hex(8), "archived": False, "createdTime": _now(), "paidAmount": ZERO,
            "creditAmount": ZERO, "credits": {}}
        held = {ln["id"]: ln for ln in (current or {}).get("invoiceLineItems", [])}
        if replace or "invoiceLineItems" in body:
            invoice["invoiceLineItems"] = self._lines(body.get("invoiceLineItems"), held, "invoiceLineItems")
        today = date.today().isoformat()
        if replace:
            invoice.update(customerId=body["customer"]["id"], invoiceNumber=number or f"INV-{len(org.invoices) + 1}",
                           invoiceDate=body.get("invoiceDate", today), dueDate=body.get("dueDate", today))
        else:
            invoice.update({k: body[k] for k in ("invoiceDate", "dueDate", "invoiceNumber") if k in body})
        invoice["totalAmount"] = sum((ln["amount"] for ln in invoice["invoiceLineItems"]), ZERO)
        drawn: dict[str, Decimal] = {}
        if replace or "creditAmount" in body:
            drawn = self._draw_credit(org, invoice, _number(body.get("creditAmount", 0), "creditAmount"))
        if invoice["paidAmount"] + invoice["creditAmount"] > invoice["totalAmount"]:
            raise BillError("totalAmount: cannot be less than the payments and credits applied to the invoice")
        # Checked first, applied after: a refused write leaves the customer's memos as they were.
        for memo_id, step in drawn.items():
            org.memos[memo_id]["appliedAmount"] += step
        self._settle(invoice)
        org.invoices[invoice["id"]] = invoice
        return invoice

    def _draw_credit(self, org: Org, invoice: dict[str, Any], wanted: Decimal) -> dict[str, Decimal]:
        """``creditAmount`` = credit memo amounts applied: drawn from the customer's memos oldest first, given
        back newest first. Sets the invoice's ``creditAmount`` and its per-memo ``credits``; returns what each
        memo gives (negative: takes back), for the caller to apply once the invoice is accepted."""
        if wanted < 0:
            raise BillError("creditAmount: must not be negative")
        credits: dict[str, Decimal] = invoice.setdefault("credits", {})
        change = wanted - sum(credits.values(), ZERO)
        memos = [m for m in org.memos.values() if m["customerId"] == invoice["customerId"] and not m["archived"]]
        if change > sum((m["totalAmount"] - m["appliedAmount"] for m in memos), ZERO):
            raise BillError("creditAmount: more than the customer's available credit")
        drawn: dict[str, Decimal] = {}
        # The direction is decided once: more credit draws from memos with some left, less gives back from the
        # memos this invoice holds (deciding it per memo took a later memo this invoice never drew from: KeyError).
        giving = change > 0
        for memo in memos if giving else reversed([m for m in memos if credits.get(m["id"])]):
            if change == 0:
                break
            step = min(change, memo["totalAmount"] - memo["appliedAmount"]) if giving else max(change, -credits[memo["id"]])
            if step:
                drawn[memo["id"]] = step
                credits[memo["id"]] = credits.get(memo["id"], ZERO) + step
                change -= step
        invoice["creditAmount"] = wanted
        return drawn

    @staticmethod
    def _settle(invoice: dict[str, Any]) -> None:
        invoice["dueAmount"] = invoice["totalAmount"] - invoice["paidAmount"] - invoice["creditAmount"]
        invoice["status"] = "PAID_IN_FULL" if invoice["dueAmount"] == 0 and invoice["totalAmount"] else \
            "PARTIAL_PAYMENT" if invoice["paidAmount"] + invoice["creditAmount"] else "OPEN"
        invoice["updatedTime"] = _now()

    def _record_payment(self, org: Org, body: dict[str, Any]) -> dict[str, Any]:
        _known(body, PAYMENT_FIELDS)
        for name in ("paymentDate", "paymentType", "amount", "invoices"):
            if body.get(name) in (None, "", []):
                raise BillError(f"{name}: must not be null")
        _date(body["paymentDate"], "paymentDate")
        if body["paymentType"] not in PAYMENT_TYPES:
            raise BillError(f"paymentType: must be one of {sorted(PAYMENT_TYPES)}")
        amount = _number(body["amount"], "amount")
        applied = []
        for part in body["invoices"]:
            _known(part, {"id", "amount"}, "invoices")
            invoice = org.invoices.get(part.get("id"))
            if invoice is None or invoice["archived"]:
                raise BillError(f"invoices.id: {part.get('id')} is not an open invoice")
            applied.append((invoice, _number(part.get("amount"), "invoices.amount")))
        customers = {inv["customerId"] for inv, _ in applied} | ({body["customerId"]} if body.get("customerId") else set())
        if len(customers) != 1:
            raise BillError("invoices: all invoices must belong to the same customer")
        if abs(sum((a for _, a in applied), ZERO)) > abs(amount):
            raise BillError("amount: less than the amounts applied to the invoices")
        for invoice, part in applied:
            if part > invoice["dueAmount"] or invoice["paidAmount"] + part < 0:
                raise BillError(f"invoices.amount: {part} is more than invoice {invoice['invoiceNumber']} allows")
        for invoice, part in applied:
            invoice["paidAmount"] += part
            self._settle(invoice)
        received = copy.deepcopy(body) | {"id": "0rp" + secrets.token_hex(8), "customerId": customers.pop(),
                                          "amount": amount, "createdTime": _now()}
        org.payments[received["id"]] = received
        return received

    def _memo(self, org: Org, body: dict[str, Any]) -> dict[str, Any]:
        _known(body, MEMO_FIELDS)
        for name in ("customerId", "referenceNumber", "creditDate", "creditMemoLineItems"):
            if body.get(name) in (None, "", []):
                raise BillError(f"{name}: must not be null")
        if body["customerId"] not in org.customers:
            raise BillError("customerId: must be an existing customer")
        _date(body["creditDate"], "creditDate")
        lines = self._lines(body["creditMemoLineItems"], {}, "creditMemoLineItems")
        memo = copy.deepcopy(body) | {"id": "ccr" + secrets.token_hex(8), "creditMemoLineItems": lines,
                                      "totalAmount": sum((ln["amount"] for ln in lines), ZERO), "appliedAmount": ZERO,
                                      "archived": False, "createdTime": _now(), "updatedTime": _now()}
        org.memos[memo["id"]] = memo
        return memo

    def _action(self, org: Org, resource: str, current: dict[str, Any], action: str) -> dict[str, Any]:
        if action not in ("archive", "restore") or resource not in ("invoices", "credit-memos", "customers"):
            raise BillError(f"{action} is not supported by this sandbox", "BDC_1121", 404)
        if action == "archive" and resource == "invoices" and (current["paidAmount"] or current["creditAmount"]):
            raise BillError("An invoice with payments or credits applied cannot be archived")
        if action == "archive" and resource == "credit-memos" and current["appliedAmount"]:
            raise BillError("A credit memo applied to an invoice cannot be archived")
        current.update(archived=action == "archive", updatedTime=_now())
        return current


def _filters(text: str) -> list[tuple[str, str, str]]:
    out = []
    for part in re.findall(r'[^,"]+(?:"[^"]*")?', text):
        name, op, value = (part.split(":", 2) + ["", ""])[:3]
        out.append((name.strip(), op, value.strip('"')))
    return [f for f in out if f[0]]


def _known(body: Any, allowed: set[str], where: str = "") -> None:
    if not isinstance(body, dict):
        raise BillError(f"{where or 'body'}: must be an object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BillError(f"Unknown parameter {(where + '.') if where else ''}{unknown[0]}", "BDC_1002")


def _number(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise BillError(f"{name}: must be a number")
    return Decimal(value)


def _date(value: Any, name: str) -> None:
    try:
        date.fromisoformat(str(value))
    except ValueError:
        raise BillError(f"{name}: must be a date in the yyyy-MM-dd format") from None
