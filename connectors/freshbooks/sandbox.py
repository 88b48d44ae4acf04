"""A local FreshBooks (the accounting API) for the demo and the tests.

Built from FreshBooks' own Node SDK (``APIClient.ts`` paths and auth, ``models/*.ts`` serialisers: the field
table in ``$LEDGERWIRE_SPECS_DIR/freshbooks/SOURCE.md``) and FreshBooks' API pages: OAuth2 with 12-hour access
tokens and single-use rotating refresh tokens at ``/auth/oauth/token``, the identity call
``/auth/api/v1/users/me`` naming the account id, every accounting path under
``/accounting/account/{accountId}/``, wrapped bodies (``{"invoice": …}``; the SDK's ``{"credit_notes": …}``) and
answers (``{"response": {"result": …}}``), ``search[…]`` filters and pages of at most 100 (silently capped),
clients, invoices (lines with a Money ``unit_cost`` as a decimal string and up to two taxes by name and percent
— ``taxName1``/``taxAmount1`` — the tax computed per line here; created as drafts, ``action_mark_as_sent``
issues; update by ``PUT``, lines replaced, no concurrency token: the last write wins; delete = ``vis_state``
1), payments on an invoice (type from the SDK's enum; delete = ``vis_state`` 1), credit notes (delete =
``vis_state`` 1, refused while their credit is drawn on), and payments of
type ``Credit`` paid out of the client's credit (refused beyond what the client's live credit notes hold; the
credit is drawn from the oldest note first). Errors are FreshBooks' ``{"response": {"errors": [{"errno",
"field", "message", "object", "value"}]}}`` and the auth server's ``{"error", "error_description"}``.

Not from FreshBooks (it publishes none of these): the rate limit (``minute_limit``, our default, answered with
429 and ``Retry-After``), the errno values and texts, refusing a payment larger than what is outstanding (real
FreshBooks turns the excess into an overpayment credit, which is not modelled), and refusing edits of a deleted
invoice.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit

CENT, ZERO = Decimal("0.01"), Decimal("0")
PAGE_MAX = 100
ACCESS_TTL_S = 12 * 3600.0  # FreshBooks access tokens live 12 hours
RESOURCES = {"invoices/invoices": ("invoice", "invoices"), "payments/payments": ("payment", "payments"),
             "credit_notes/credit_notes": ("credit_notes", "credit_notes"), "users/clients": ("client", "clients")}
PAYMENT_TYPES = {"Check", "Credit", "Cash", "Bank Transfer", "Credit Card", "Debit", "PayPal", "2Checkout", "VISA",
                 "MASTERCARD", "DISCOVER", "AMEX", "DINERS", "JCB", "ACH", "Other"}
REQUIRED = {"invoice": ("customerid", "create_date"), "payment": ("invoiceid", "amount", "date"),
            "credit_notes": ("clientid", "create_date", "lines"), "client": ()}
INTS = {"customerid", "clientid", "invoiceid", "due_offset_days", "vis_state", "estimateid", "parent"}
DATES = {"create_date", "date"}
ACTIVE, DELETED = 0, 1


class FreshBooksError(Exception):
    def __init__(self, message: str, field_name: str = "", errno: int = 2001, status: int = 422) -> None:
        super().__init__(message)
        self.response = fb_error(status, errno, message, field_name)


def fb_error(status: int, errno: int, message: str, field_name: str = "", value: Any = None) -> Response:
    body = {"response": {"errors": [{"errno": errno, "field": field_name, "message": message, "object": "",
                                     "value": value}]}}
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _money_in(value: Any, name: str) -> Decimal:
    """A Money object: ``amount`` is a decimal STRING (the SDK's Money model)."""
    if not isinstance(value, dict) or not isinstance(value.get("amount"), str):
        raise FreshBooksError("must be a Money object with a decimal string amount", name, 2002)
    try:
        return Decimal(value["amount"])
    except InvalidOperation:
        raise FreshBooksError("is not a decimal amount", name, 2002) from None


def _number(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise FreshBooksError("is not a number", name, 2002)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise FreshBooksError("is not a number", name, 2002) from None


@dataclass
class Account:
    account_id: str
    business_id: int
    tables: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: {r: {} for r in RESOURCES})
    ids: itertools.count = field(default_factory=lambda: itertools.count(10001))
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))


class Sandbox:
    """FreshBooks as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = ACCESS_TTL_S, *,
                 minute_limit: int = 60) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)
        self.minute_limit = minute_limit
        self.minute_window = WindowLimit(minute_limit, 60.0)
        self.accounts: dict[str, Account] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path after the account, body)
        self._lock = threading.RLock()
        base = "/accounting/account/{account}/{group}/{name}"
        self.app = Starlette(routes=[
            Route("/auth/oauth/token", self._token, methods=["POST"]),
            Route("/auth/api/v1/users/me", self._me, methods=["GET"]),
            Route(base, self._collection, methods=["GET", "POST"]),
            Route(base + "/{key}", self._member, methods=["GET", "PUT"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret = secrets.token_hex(16), secrets.token_hex(32)
        refresh = self.issuer.register_client(client_id, client_secret)
        with self._lock:
            if not self.accounts:
                account = Account(account_id="xZ" + secrets.token_hex(2), business_id=4301)
                self.accounts[account.account_id] = account
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "freshbooks", "base_url": base_url,
            "settings": {"token_url": f"{base_url}/auth/oauth/token", "requests_per_minute": self.minute_limit},
            # FreshBooks taxes are named on the line; the mapping names them per source tax code.
            "mapping": {"tax_codes": {"GST": "GST", "PST": "PST", "HST": "HST", "STATE": "State tax",
                                      "COUNTY": "County tax"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.minute_window.breaches

    def records(self, resource: str, live: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for a in self.accounts.values() for r in a.tables[resource].values()
                    if not live or r.get("vis_state", ACTIVE) != DELETED]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for account in self.accounts.values():
                for inv in account.tables["invoices/invoices"].values():
                    paid = [Decimal(p["amount"]["amount"]) for p in account.tables["payments/payments"].values()
                            if p["invoiceid"] == inv["id"] and p["vis_state"] == ACTIVE and p["type"] != "Credit"]
                    out.append(BookedInvoice(
                        number=inv.get("invoice_number") or "", external_id=str(inv["id"]),
                        voided=inv["vis_state"] == DELETED, total=Decimal(inv["amount"]["amount"]),
                        tax_total=inv["_tax"], line_count=len(inv["lines"]), payments_applied=sum(paid, ZERO),
                        payment_count=len(paid)))
            return out

    # -- OAuth2 and identity --
    async def _token(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            form: Any = jsonmoney.loads(await request.body() or b"{}")
        else:
            form = await request.form()
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "The authorization "
                                 "grant type is not supported by the authorization server."}, status_code=400)
        answer = self.issuer.refresh(str(form.get("client_id", "")), str(form.get("client_secret", "")),
                                     str(form.get("refresh_token", "")))
        if answer is None:  # a refresh token is single use: a second use of one lands here
            return JSONResponse({"error": "invalid_grant", "error_description": "The provided authorization grant "
                                 "is invalid, expired, revoked, or was issued to another client."}, status_code=400)
        now = int(datetime.now(timezone.utc).timestamp())
        return JSONResponse(answer | {"token_type": "Bearer", "scope": "user:profile:read user:clients:read "
                                      "user:clients:write user:invoices:read user:invoices:write "
                                      "user:payments:read user:payments:write", "created_at": now})

    def _unauthenticated(self, request: Request) -> Response | None:
        if self.issuer.valid(request.headers.get("authorization")):
            return None
        return JSONResponse({"error": "unauthenticated",
                             "error_description": "This action requires authentication to continue."}, status_code=401)

    async def _me(self, request: Request) -> Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        memberships = [{"id": n, "role": "owner", "business": {"id": a.business_id, "account_id": a.account_id,
                                                               "name": "Main St Auto Electric"}}
                       for n, a in enumerate(self.accounts.values(), start=1)]
        return self._ok({"response": {"id": 1, "business_memberships": memberships}})

    # -- API plumbing: auth, account, throttle, faults --
    def _guard(self, request: Request) -> tuple[Account, str] | Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        account = self.accounts.get(request.path_params["account"])
        resource = f"{request.path_params['group']}/{request.path_params['name']}"
        if account is None or resource not in RESOURCES:
            return fb_error(404, 1012, "The requested resource was not found.")
        wait = self.minute_window.hit(account.account_id)
        if wait is not None:
            response = fb_error(429, 1003, "Too many requests; try again later.")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        return account, resource

    def _ok(self, body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    def _result(self, resource: str, record: dict[str, Any]) -> Response:
        view = {k: v for k, v in record.items() if not k.startswith("_")}
        return self._ok({"response": {"result": {RESOURCES[resource][0]: view}}})

    async def _collection(self, request: Request) -> Response:
        guarded = self._guard(request)
        if isinstance(guarded, Response):
            return guarded
        account, resource = guarded
        if request.method == "POST":
            return await self._write(request, account, resource, None)
        q = request.query_params
        search = {m.group(1): v for k, v in q.items() if (m := re.fullmatch(r"search\[(\w+)\]", k))}
        per_page = min(int(q.get("per_page", 15)), PAGE_MAX)  # FreshBooks caps pages silently
        page = max(int(q.get("page", 1)), 1)
        with self._lock:
            rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in account.tables[resource].values()
                    if _matches(r, search)]
        pages = max(1, -(-len(rows) // per_page))
        return self._ok({"response": {"result": {RESOURCES[resource][1]: rows[(page - 1) * per_page: page * per_page],
                                                 "page": page, "pages": pages, "per_page": per_page,
                                                 "total": len(rows)}}})

    async def _member(self, request: Request) -> Response:
        guarded = self._guard(request)
        if isinstance(guarded, Response):
            return guarded
        account, resource = guarded
        key = request.path_params["key"]
        record = account.tables[resource].get(int(key)) if key.isdigit() else None
        if record is None:
            return fb_error(404, 1012, "The requested resource was not found.")
        if request.method == "GET":
            with self._lock:
                return self._result(resource, record)
        return await self._write(request, account, resource, record)

    async def _write(self, request: Request, account: Account, resource: str, current: dict | None) -> Response:
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return fb_error(400, 1001, "The request body is not valid JSON.")
        path = request.url.path.split(f"/account/{account.account_id}", 1)[1]
        self.requests.append((request.method, path, body))
        decided = self.faults.draw()
        if decided == "500":
            return fb_error(500, 1000, "An unexpected error occurred.")
        if decided == "429":
            throttled = fb_error(429, 1003, "Too many requests; try again later.")
            throttled.headers["Retry-After"] = "1"
            return throttled
        with self._lock:
            try:
                response = self._result(resource, self._apply(account, resource, current, body))
            except FreshBooksError as error:
                response = error.response
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- the books --
    def _apply(self, account: Account, resource: str, current: dict | None, body: Any) -> dict[str, Any]:
        envelope = RESOURCES[resource][0]
        if not isinstance(body, dict) or not isinstance(body.get(envelope), dict):
            raise FreshBooksError(f"The request body must hold the object {envelope!r}.", envelope, 1001, 400)
        fields = body[envelope]
        _types(fields)
        if current is None:
            for name in REQUIRED[envelope]:
                if fields.get(name) in (None, "", []):
                    raise FreshBooksError("This field is required.", name, 2000)
        elif fields.get("vis_state") is not None and set(fields) == {"vis_state"}:
            before = current["vis_state"]
            current.update(vis_state=fields["vis_state"], updated=_now())
            if resource == "credit_notes/credit_notes" and self._credit_overdrawn(account, current["clientid"]):
                current["vis_state"] = before
                raise FreshBooksError("The credit is in use on invoices: remove those payments first.", "vis_state", 2014)
            self._settle(account)
            return current
        elif current.get("vis_state") == DELETED:
            raise FreshBooksError("A deleted record cannot be edited.", "vis_state", 2010)
        if resource == "users/clients":
            return self._store(account, resource, current, copy.deepcopy(fields))
        if resource == "payments/payments":
            if current is not None:
                raise FreshBooksError("Editing a payment is not modelled by this sandbox.", "payment", 2099)
            return self._payment(account, fields)
        return self._document(account, resource, current, fields)

    def _store(self, account: Account, resource: str, current: dict | None, fields: dict[str, Any]) -> dict:
        record = current if current is not None else {"id": next(account.ids), "vis_state": ACTIVE,
                                                      "accounting_systemid": account.account_id}
        record.update(fields, updated=_now())
        account.tables[resource][record["id"]] = record
        return record

    def _client(self, account: Account, client_id: Any, name: str) -> dict[str, Any]:
        client = account.tables["users/clients"].get(client_id)
        if client is None or client["vis_state"] == DELETED:
            raise FreshBooksError("Client not found.", name, 2004)
        return client

    def _document(self, account: Account, resource: str, current: dict | None, fields: dict[str, Any]) -> dict:
        invoice = resource == "invoices/invoices"
        client_key = "customerid" if invoice else "clientid"
        self._client(account, fields.get(client_key, (current or {}).get(client_key)), client_key)
        fields = copy.deepcopy(fields)
        if fields.pop("action_mark_as_sent", None) and current is not None and current["v3_status"] == "draft":
            current.update(v3_status="sent", status="sent", display_status="sent")
        if current is None:
            number_key = "invoice_number" if invoice else "credit_number"
            fields.setdefault(number_key, f"{next(account.numbers):07d}")
            fields.setdefault("currency_code", "USD")
            fields.update(v3_status="draft", status="draft", display_status="draft", lines=fields.get("lines") or [])
        record = self._store(account, resource, current, fields)
        self._lines(record)
        if invoice and record.get("due_offset_days") is not None:
            record["due_date"] = date.fromordinal(date.fromisoformat(record["create_date"]).toordinal()
                                                  + int(record["due_offset_days"])).isoformat()
        self._settle(account)
        if invoice and Decimal(record["outstanding"]["amount"]) < 0:
            raise FreshBooksError("The invoice total cannot be less than the payments on it.", "lines", 2011)
        return record

    def _lines(self, record: dict[str, Any]) -> None:
        """Line amounts and each line's taxes, computed as FreshBooks does from the rate (per line)."""
        code, net, tax = record["currency_code"], ZERO, ZERO
        for n, line in enumerate(record["lines"], start=1):
            if not isinstance(line, dict):
                raise FreshBooksError("A line must be an object.", "lines", 2002)
            qty = _number(line.get("qty", 1), "qty")
            amount = _cents(qty * _money_in(line.get("unit_cost"), "unit_cost"))
            first = _cents(amount * _number(line["taxAmount1"], "taxAmount1") / 100) if line.get("taxAmount1") else ZERO
            base = amount + first if line.get("compounded_tax") else amount
            second = _cents(base * _number(line["taxAmount2"], "taxAmount2") / 100) if line.get("taxAmount2") else ZERO
            line.update(lineid=n, amount={"amount": format(amount, "f"), "code": code},
                        unit_cost={**line["unit_cost"], "code": line["unit_cost"].get("code") or code})
            net, tax = net + amount, tax + first + second
        record["_tax"] = tax
        record["amount"] = {"amount": format(net + tax, "f"), "code": code}

    def _credit_left(self, account: Account, client_id: int) -> list[tuple[dict[str, Any], Decimal]]:
        """Each live credit note of the client with what is left on it (Credit payments drawn oldest first)."""
        notes = sorted((c for c in account.tables["credit_notes/credit_notes"].values()
                        if c["clientid"] == client_id and c["vis_state"] == ACTIVE), key=lambda c: c["id"])
        used = sum((Decimal(p["amount"]["amount"]) for p in account.tables["payments/payments"].values()
                    if p["clientid"] == client_id and p["type"] == "Credit" and p["vis_state"] == ACTIVE), ZERO)
        out = []
        for note in notes:
            total = Decimal(note["amount"]["amount"])
            taken = min(total, used)
            used -= taken
            out.append((note, total - taken))
        return out

    def _credit_overdrawn(self, account: Account, client_id: int) -> bool:
        used = sum((Decimal(p["amount"]["amount"]) for p in account.tables["payments/payments"].values()
                    if p["clientid"] == client_id and p["type"] == "Credit" and p["vis_state"] == ACTIVE), ZERO)
        return used > sum((Decimal(n["amount"]["amount"]) for n, _ in self._credit_left(account, client_id)), ZERO)

    def _payment(self, account: Account, fields: dict[str, Any]) -> dict[str, Any]:
        invoice = account.tables["invoices/invoices"].get(fields["invoiceid"])
        if invoice is None or invoice["vis_state"] == DELETED:
            raise FreshBooksError("Invoice not found.", "invoiceid", 2004)
        amount = _money_in(fields["amount"], "amount")
        kind = fields.get("type", "Check")
        if kind not in PAYMENT_TYPES:
            raise FreshBooksError(f"Invalid payment type {kind!r}.", "type", 2002)
        if amount <= 0:
            raise FreshBooksError("The amount must be greater than zero.", "amount", 2002)
        if amount > Decimal(invoice["outstanding"]["amount"]):
            raise FreshBooksError("The payment is more than the invoice's outstanding amount (overpayments are "
                                  "not modelled by this sandbox).", "amount", 2012)
        left = self._credit_left(account, invoice["customerid"])
        if kind == "Credit" and amount > sum((rest for _, rest in left), ZERO):
            raise FreshBooksError("The client does not have enough credit.", "amount", 2013)
        code = invoice["amount"]["code"]
        record = self._store(account, "payments/payments", None, copy.deepcopy(fields) | {
            "amount": {"amount": format(amount, "f"), "code": code}, "type": kind, "clientid": invoice["customerid"],
            "from_credit": kind == "Credit", "overpaymentid": None, "logid": None, "orderid": None,
            "creditid": next((n["id"] for n, rest in left if rest > 0), None) if kind == "Credit" else None})
        record["logid"] = record["id"]
        self._settle(account)
        return record

    def _settle(self, account: Account) -> None:
        """Paid and outstanding on every invoice, what is left on every credit note."""
        payments = [p for p in account.tables["payments/payments"].values() if p["vis_state"] == ACTIVE]
        for inv in account.tables["invoices/invoices"].values():
            total, code = Decimal(inv["amount"]["amount"]), inv["amount"]["code"]
            paid = sum((Decimal(p["amount"]["amount"]) for p in payments if p["invoiceid"] == inv["id"]), ZERO)
            inv.update(paid={"amount": format(paid, "f"), "code": code},
                       outstanding={"amount": format(total - paid, "f"), "code": code},
                       payment_status="paid" if paid >= total else "partial" if paid else "unpaid")
            if inv["v3_status"] != "draft":
                inv["v3_status"] = inv["payment_status"] if paid else "sent"
        for client_id in {c["clientid"] for c in account.tables["credit_notes/credit_notes"].values()}:
            for note, left in self._credit_left(account, client_id):
                code = note["amount"]["code"]
                note.update(paid={"amount": format(Decimal(note["amount"]["amount"]) - left, "f"), "code": code},
                            _left=left)


def _matches(record: dict[str, Any], search: dict[str, str]) -> bool:
    if record.get("vis_state", ACTIVE) == DELETED and search.get("vis_state") != str(DELETED):
        return False
    for name, value in search.items():
        if name == "notes":  # Like: the note contains it
            if value.lower() not in str(record.get("note") or "").lower():
                return False
        elif name == "organization_like":
            if value.lower() not in str(record.get("organization") or "").lower():
                return False
        elif name in ("invoice_number", "credit_number", "email", "invoiceid", "customerid", "clientid", "type"):
            if str(record.get(name) or "") != value:
                return False
    return True


def _types(value: Any, name: str = "") -> None:
    """The SDK's types for what FreshBooks validates: ids are integers, dates ISO dates, Money amounts strings."""
    if isinstance(value, dict) and name not in ("amount", "unit_cost"):
        for key, item in value.items():
            _types(item, key)
    elif isinstance(value, list):
        for item in value:
            _types(item, name)
    elif name in ("amount", "unit_cost"):
        _money_in(value, name)
    elif name in INTS and (isinstance(value, bool) or not isinstance(value, int)):
        raise FreshBooksError("must be an integer", name, 2002, 400)
    elif name in DATES and value is not None:
        try:
            date.fromisoformat(str(value))
        except ValueError:
            raise FreshBooksError("is not a valid date (YYYY-MM-DD)", name, 2002, 400) from None
    elif name in ("taxAmount1", "taxAmount2", "qty") and value is not None:
        _number(value, name)
