"""A local Sage Business Cloud Accounting (API v3.1) for the demo and the tests.

Built from Sage's Swagger 2.0 (``swagger-accounts-v3.1.json``, ``swagger-core-user-businesses-v3.1.json``:
paths, the ``{"<resource>": {...}}`` request envelopes, required fields and types) and Sage's guides: OAuth2
with 5-minute access tokens and single-use rotating refresh tokens (client id and secret in the form body),
``GET /businesses`` and the ``X-Business`` header on every other request (refused here when missing, instead
of Sage's fall-back to the user's lead business), paged lists (``$items``, ``$next``, ``$back``, ``$total``;
at most 200 per page), ``search`` / ``email`` / ``contact_id`` / ``transaction_type_id`` filters, contacts with a
unique ``reference``, sales invoices and credit notes (lines on ledger accounts with a tax rate; the line's tax
amount required for a non-zero rate, as the Swagger says of v3.1), update by ``PUT`` (no concurrency token:
the last write wins; ``invoice_lines`` replace the lines — the Swagger's PUT line has no id to address one
by), void by ``DELETE ?void_reason=`` (required unless a draft; refused while receipts or allocations are on
the invoice), ``/release`` of a draft, customer receipts (``contact_payments``) allocated through
``allocated_artefacts`` and deleted by ``DELETE``, customer refunds (``contact_payments`` of type ``CUSTOMER_REFUND``,
money paid back) allocated to a sales credit note only, which takes its outstanding amount down, ``contact_allocations`` of a credit note to an invoice
(amounts summing to zero), the year end lockdown date (``financial_settings.year_end_lockdown_date``: nothing
dated on or before it is created, edited, voided or deleted), 100 requests/minute and 2,500/day per business
(third-party figures; 429) and errors as Sage's array of ``{"$severity", "$dataCode", "$message", "$source"}``.
Currencies (Sage Accounting Plus): ``financial_settings`` holds the business's ``base_currency`` (USD here) and
``multi_currency_enabled``; ``GET /currencies`` and ``GET /exchange_rates`` (Sage's rate per foreign currency,
rate = foreign units per base unit); a contact trades in one currency (``currency_id``, the base one unless set;
Sage locks it once the contact has an invoice), a sales invoice / credit note / contact payment is in its contact's
currency (``currency_id``, ``exchange_rate``: Sage's rate when none is sent, as its UI fills it in), a payment or
allocation only settles artefacts in its own currency, and no foreign currency is taken with multi-currency off.
The error texts are the sandbox's own (Sage publishes no catalogue); the lockdown refusal names the lockdown
date, which is what the connector recognises.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client, refresh_grant

API = "/v3.1"
CENT, ZERO = Decimal("0.01"), Decimal("0")
PAGE_MAX = 200
# From the Swagger: the body's envelope per resource and what POST requires (PUT requires only the envelope).
ENVELOPES = {"contacts": "contact", "sales_invoices": "sales_invoice", "sales_credit_notes": "sales_credit_note",
             "contact_payments": "contact_payment", "contact_allocations": "contact_allocation",
             "financial_settings": "financial_settings"}
REQUIRED = {"contact": ("name", "contact_type_ids"), "sales_invoice": ("contact_id", "date", "invoice_lines"),
            "sales_credit_note": ("contact_id", "date", "credit_note_lines"),
            "contact_payment": ("transaction_type_id", "contact_id", "bank_account_id", "date", "total_amount"),
            "contact_allocation": ("transaction_type_id", "contact_id", "allocated_artefacts")}
LINE_REQUIRED = ("description", "ledger_account_id", "unit_price")
NUMBERS = {"unit_price", "quantity", "net_amount", "tax_amount", "total_amount", "amount", "discount_amount",
           "credit_limit", "exchange_rate"}
DATES = {"date", "due_date", "year_end_lockdown_date", "year_end_date"}
# What each money resource takes, and the artefacts each type may be allocated to: a receipt pays invoices; a customer
# refund (money paid back, Sage's guide "Payments and Receipts") only sales credit notes (Sage's developer forum:
# "CUSTOMER_REFUND can be allocated only to sales_credit_notes and payments on account").
TRANSACTION_TYPES = {"contact_payments": ("CUSTOMER_RECEIPT", "CUSTOMER_REFUND"),
                     "contact_allocations": ("CUSTOMER_ALLOCATION",)}
REFUNDABLE = {"CUSTOMER_REFUND": "sales_credit_notes"}
CURRENCIES = {"USD": "US Dollar", "CAD": "Canadian Dollar", "GBP": "Pound Sterling", "EUR": "Euro",
              "JPY": "Japanese Yen"}
RATES = {"CAD": Decimal("1.385200"), "GBP": Decimal("0.788400"), "EUR": Decimal("0.913600")}  # none for JPY


def sage_error(status: int, code: str, message: str, source: str = "") -> Response:
    body = [{"$severity": "error", "$dataCode": code, "$message": message, "$source": source}]
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


class SageError(Exception):
    def __init__(self, message: str, source: str = "", code: str = "RecordInvalid", status: int = 422) -> None:
        super().__init__(message)
        self.response = sage_error(status, code, message, source)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _currency_of(business: Business, contact: dict[str, Any]) -> str:
    """A contact trades in its currency, the base one unless set."""
    return (contact.get("currency") or {}).get("id") or business.base_currency


def _rate(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _link(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"id": record["id"], "displayed_as": record.get("displayed_as", "")} if record else None


@dataclass
class Business:
    id: str
    name: str
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {r: {} for r in (
        "contacts", "sales_invoices", "sales_credit_notes", "contact_payments", "contact_allocations",
        "ledger_accounts", "tax_rates", "bank_accounts", "currencies", "exchange_rates")})
    lockdown: date | None = None
    base_currency: str = "USD"
    multi_currency: bool = True
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return secrets.token_hex(16)  # Sage's keys are 32 hex characters


class Sandbox:
    """Sage Business Cloud Accounting as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 300.0, *, minute_limit: int = 100,
                 day_limit: int = 2500) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)  # Sage: access tokens live 5 minutes
        self.minute_limit, self.day_limit = minute_limit, day_limit
        self.minute_window, self.day_window = WindowLimit(minute_limit, 60.0), WindowLimit(day_limit, 86400.0)
        self.businesses: dict[str, Business] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path, JSON body or None)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/oauth/token", self._token, methods=["POST"]),
            Route(f"{API}/businesses", self._businesses, methods=["GET"]),
            Route(API + "/{resource}", self._collection, methods=["GET", "POST", "PUT"]),
            Route(API + "/{resource}/{key}", self._member, methods=["GET", "PUT", "DELETE"]),
            Route(API + "/sales_invoices/{key}/release", self._release, methods=["POST"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret, refresh = new_client(self.issuer)
        with self._lock:
            if not self.businesses:
                business = Business(id=secrets.token_hex(16), name="Main St Auto Electric")
                seeds = {"ledger_accounts": [("4000", "Sales - parts"), ("4010", "Sales - labour"),
                                             ("4020", "Sales - fees"), ("2150", "Core deposits held"),
                                             ("4900", "Discounts allowed")],
                         "tax_rates": [("US_STATE", "State 6.25%", "6.25"), ("US_COUNTY", "County 1%", "1"),
                                       ("US_STATE_COUNTY", "State + county", "7.25"), ("CA_GST", "GST 5%", "5"),
                                       ("CA_PST", "PST 7%", "7"), ("CA_GST_PST", "GST + PST", "12"),
                                       ("US_NO_TAX", "No tax", "0")],
                         "bank_accounts": [("1210", "Undeposited funds"), ("1200", "Checking")],
                         "currencies": [(code, f"{name} ({code})") for code, name in CURRENCIES.items()]}
                for table, rows in seeds.items():
                    for row in rows:
                        record = {"id": row[0], "displayed_as": row[1], "name": row[1]}
                        if table == "tax_rates":
                            record["percentage"] = Decimal(row[2])
                        business.tables[table][row[0]] = record
                for code, rate in RATES.items():
                    business.tables["exchange_rates"][code] = {
                        "id": code, "displayed_as": f"{code} {rate}", "rate": rate, "inverse_rate": _rate(1 / rate),
                        "currency": {"id": code, "displayed_as": CURRENCIES[code]},
                        "base_currency": {"id": business.base_currency, "displayed_as": CURRENCIES["USD"]}}
                self.businesses[business.id] = business
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "sage-accounting", "base_url": f"{base_url}{API}",
            "settings": {"token_url": f"{base_url}/oauth/token", "requests_per_minute": self.minute_limit,
                         "requests_per_day": self.day_limit},
            "mapping": {"income_accounts": {"part": "4000", "labour": "4010", "fee": "4020", "sublet": "4010",
                                            "discount": "4000", "core_charge": "4000", "core_return": "4000"},
                        "core_account": "2150", "discount_account": "4900",
                        "tax_codes": {"STATE": "US_STATE", "COUNTY": "US_COUNTY", "COUNTY+STATE": "US_STATE_COUNTY",
                                      "GST": "CA_GST", "PST": "CA_PST", "GST+PST": "CA_GST_PST", "none": "US_NO_TAX"},
                        "payment_accounts": {"card": "1210", "cash": "1210", "check": "1210", "eft": "1200"}},
        }

    def set_lockdown_date(self, through: date | None) -> None:
        """The bookkeeper locks the books through ``through`` (None unlocks them)."""
        with self._lock:
            for business in self.businesses.values():
                business.lockdown = through

    def set_multi_currency(self, enabled: bool) -> None:
        """The bookkeeper turns multi-currency on or off (Settings > Financial Settings)."""
        with self._lock:
            for business in self.businesses.values():
                business.multi_currency = enabled

    def records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for b in self.businesses.values() for r in b.tables[table].values()]

    def rate_limit_breaches(self) -> int:
        """Requests over the per-minute or the daily limit (see the Sandbox protocol)."""
        return self.minute_window.breaches + self.day_window.breaches

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for business in self.businesses.values():
                receipts = [(a["artefact_id"], Decimal(a["amount"])) for p in business.tables["contact_payments"].values()
                            for a in p["allocated_artefacts"]]
                for inv in business.tables["sales_invoices"].values():
                    paid = [amount for artefact, amount in receipts if artefact == inv["id"]]
                    out.append(BookedInvoice(
                        number=inv.get("reference") or "", external_id=inv["id"], voided=inv["status"]["id"] == "VOID",
                        total=inv["total_amount"], tax_total=inv["tax_amount"], line_count=len(inv["invoice_lines"]),
                        payments_applied=sum(paid, ZERO), payment_count=len(paid), currency=inv["currency"]["id"]))
            return out

    # -- OAuth2 --
    async def _token(self, request: Request) -> Response:
        return await refresh_grant(self.issuer, request, lambda _: {"refresh_token_expires_in": 2678400})  # 31 days unused

    # -- API plumbing: auth, business, throttles, faults --
    def _guard(self, request: Request, business_required: bool = True) -> Business | None | Response:
        if not self.issuer.valid(request.headers.get("authorization")):
            return sage_error(401, "AuthenticationFailed", "Invalid or expired access token")
        key = request.headers.get("x-business") or ""
        business = self.businesses.get(key)
        if business_required and business is None:
            return sage_error(400 if not key else 404, "BusinessNotFound",
                              "X-Business header missing" if not key else "Unknown business", "X-Business")
        wait = self.minute_window.hit(key) or self.day_window.hit(key)
        if wait is not None:
            response = sage_error(429, "TooManyRequests", "Rate limit exceeded")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        return business

    async def _businesses(self, request: Request) -> Response:
        guarded = self._guard(request, business_required=False)
        if isinstance(guarded, Response):
            return guarded
        return self._ok([{"id": b.id, "displayed_as": b.name, "name": b.name} for b in self.businesses.values()])

    async def _collection(self, request: Request) -> Response:
        resource = request.path_params["resource"]
        if resource == "financial_settings":
            return await self._write(request, resource, None) if request.method == "PUT" else \
                await self._read(request, resource, None)
        if request.method == "GET":
            return await self._list(request, resource)
        return await self._write(request, resource, None)

    async def _member(self, request: Request) -> Response:
        resource, key = request.path_params["resource"], request.path_params["key"]
        if request.method == "GET":
            return await self._read(request, resource, key)
        return await self._write(request, resource, key)

    async def _release(self, request: Request) -> Response:
        return await self._write(request, "sales_invoices", request.path_params["key"], release=True)

    def _ok(self, body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    async def _list(self, request: Request, resource: str) -> Response:
        business = self._guard(request)
        if isinstance(business, Response):
            return business
        if resource not in business.tables:
            return sage_error(404, "RecordNotFound", f"Unknown resource {resource}")
        q = request.query_params
        per_page = min(int(q.get("items_per_page", 20)), PAGE_MAX)
        page = max(int(q.get("page", 1)), 1)
        with self._lock:
            rows = [self._view(business, resource, r, q) for r in business.tables[resource].values()
                    if self._matches(r, q)]
        if q.get("sort", "").endswith(":desc"):
            rows.reverse()  # stored in creation order
        items = rows[(page - 1) * per_page: page * per_page]
        link = f"{API}/{resource}?page={{}}&items_per_page={per_page}"
        return self._ok({"$total": len(rows), "$page": page, "$itemsPerPage": per_page,
                         "$next": link.format(page + 1) if page * per_page < len(rows) else None,
                         "$back": link.format(page - 1) if page > 1 else None, "$items": items})

    @staticmethod
    def _matches(record: dict[str, Any], q: Any) -> bool:
        if q.get("search"):
            text = q["search"].lower()
            if not any(text in str(record.get(f) or "").lower() for f in ("reference", "name", "contact_name")):
                return False
        if q.get("email") and (record.get("main_contact_person") or {}).get("email") != q["email"]:
            return False
        if q.get("contact_type_id") and q["contact_type_id"] not in record.get("contact_type_ids", [q["contact_type_id"]]):
            return False
        for name in ("contact_id", "transaction_type_id"):
            if q.get(name) and record.get(name) != q[name]:
                return False
        return True

    async def _read(self, request: Request, resource: str, key: str | None) -> Response:
        business = self._guard(request)
        if isinstance(business, Response):
            return business
        with self._lock:
            if resource == "financial_settings":
                return self._ok(self._settings(business))
            record = business.tables.get(resource, {}).get(key or "")
            if record is None:
                return sage_error(404, "RecordNotFound", "Record not found")
            return self._ok(self._view(business, resource, record, request.query_params))

    def _settings(self, business: Business) -> dict[str, Any]:
        return {"$path": "/financial_settings", "year_end_date": None, "accounting_type": "accrual",
                "year_end_lockdown_date": business.lockdown.isoformat() if business.lockdown else None,
                "base_currency": {"id": business.base_currency, "displayed_as": CURRENCIES[business.base_currency]},
                "multi_currency_enabled": business.multi_currency, "use_live_exchange_rates": True}

    def _view(self, business: Business, resource: str, record: dict[str, Any], q: Any) -> dict[str, Any]:
        view = {k: v for k, v in record.items() if not k.startswith("_")}
        view["$path"] = f"/{resource}/{record['id']}"
        if resource in ("sales_invoices", "sales_credit_notes") and q.get("show_payments_allocations") == "true":
            view["payments_allocations"] = [
                {"type": kind, "date": doc["date"], "amount": a["amount"], "reference": doc.get("reference"),
                 kind: {"id": doc["id"], "displayed_as": doc.get("reference") or ""}}
                for kind, table in (("contact_payment", "contact_payments"), ("contact_allocation", "contact_allocations"))
                for doc in business.tables[table].values() for a in doc["allocated_artefacts"]
                if a["artefact_id"] == record["id"]]
        return view

    async def _write(self, request: Request, resource: str, key: str | None, release: bool = False) -> Response:
        business = self._guard(request)
        if isinstance(business, Response):
            return business
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return sage_error(400, "InvalidJson", "The request body is not valid JSON")
        self.requests.append((request.method, request.url.path.removeprefix(API), body))
        decided = self.faults.draw()
        if decided == "500":
            return sage_error(500, "UnexpectedError", "An unexpected error occurred")
        if decided == "429":
            throttled = sage_error(429, "TooManyRequests", "Rate limit exceeded")
            throttled.headers["Retry-After"] = "1"
            return throttled
        with self._lock:
            try:
                answer, status = self._apply(business, request.method, resource, key, body, request.query_params,
                                             release)
                response = self._ok(answer, status) if answer is not None else Response(status_code=204)
            except SageError as error:
                response = error.response
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- the books --
    def _apply(self, business: Business, method: str, resource: str, key: str | None, body: Any, q: Any,
               release: bool) -> tuple[Any, int]:
        table = business.tables.get(resource)
        if table is None and resource != "financial_settings":
            raise SageError(f"Unknown resource {resource}", code="RecordNotFound", status=404)
        current = table.get(key) if table is not None and key else None
        if key and current is None:
            raise SageError("Record not found", code="RecordNotFound", status=404)
        if method == "DELETE":
            return self._delete(business, resource, current, q), 204
        if release:
            return self._release_draft(business, current), 200
        fields = self._envelope(resource, body, method)
        if resource == "financial_settings":
            if "year_end_lockdown_date" in fields:
                value = fields["year_end_lockdown_date"]
                business.lockdown = date.fromisoformat(value) if value else None
            business.multi_currency = bool(fields.get("multi_currency_enabled", business.multi_currency))
            return self._settings(business), 200
        if resource == "contacts":
            return self._contact(business, current, fields), 201 if current is None else 200
        if resource in ("sales_invoices", "sales_credit_notes"):
            return self._artefact(business, resource, current, fields), 201 if current is None else 200
        if current is not None:
            raise SageError("Editing a payment or an allocation is not supported by this sandbox", code="NotSupported")
        return self._money(business, resource, fields), 201

    def _envelope(self, resource: str, body: Any, method: str) -> dict[str, Any]:
        name = ENVELOPES.get(resource)
        if name is None or not isinstance(body, dict) or not isinstance(body.get(name), dict):
            raise SageError(f"param is missing or the value is empty: {name}", name or resource, "ParamMissing", 400)
        fields = body[name]
        for required in REQUIRED.get(name, ()) if method == "POST" else ():
            if fields.get(required) in (None, "", []):
                raise SageError("can't be blank", required)
        for line in fields.get("invoice_lines") or fields.get("credit_note_lines") or []:
            for required in LINE_REQUIRED:
                if line.get(required) in (None, ""):
                    raise SageError("can't be blank", f"line.{required}")
        _types(fields)
        return fields

    def _check_open(self, business: Business, *days: Any) -> None:
        for day in days:
            if business.lockdown and day and date.fromisoformat(str(day)) <= business.lockdown:
                raise SageError(f"Date must be after the year end lockdown date ({business.lockdown.isoformat()})",
                                "date")

    def _contact(self, business: Business, current: dict | None, fields: dict[str, Any]) -> dict[str, Any]:
        reference = fields.get("reference")
        if reference and any(c.get("reference") == reference and c is not current
                             for c in business.tables["contacts"].values()):
            raise SageError("has already been taken", "reference")
        contact = current if current is not None else {"id": business.new_id(), "created_at": _now()}
        code = fields.get("currency_id") or _currency_of(business, contact)
        self._currency(business, code)
        if current is not None and code != _currency_of(business, current) and any(
                d["contact"]["id"] == current["id"] for d in business.tables["sales_invoices"].values()):
            raise SageError("The currency of a contact with invoices cannot be changed", "currency_id")
        contact.update(copy.deepcopy(fields) | {"displayed_as": fields.get("name", contact.get("name")),
                                                "updated_at": _now(), "currency": {"id": code}})
        business.tables["contacts"][contact["id"]] = contact
        return contact

    def _lines(self, business: Business, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for line in lines:
            if line["ledger_account_id"] not in business.tables["ledger_accounts"]:
                raise SageError("Ledger account not found", "ledger_account_id")
            rate = business.tables["tax_rates"].get(line.get("tax_rate_id") or "")
            if line.get("tax_rate_id") and rate is None:
                raise SageError("Tax rate not found", "tax_rate_id")
            if rate is not None and rate["percentage"] and "tax_amount" not in line:
                raise SageError("is required for a tax rate with a percentage", "tax_amount")
            quantity, price = Decimal(line.get("quantity", 1)), Decimal(line["unit_price"])
            tax = Decimal(line.get("tax_amount", 0))
            gross = _money(quantity * price)
            net = gross - tax if line.get("unit_price_includes_tax") else gross
            net -= Decimal(line.get("discount_amount", 0))
            if "net_amount" in line and Decimal(line["net_amount"]) != net:
                raise SageError(f"net_amount {line['net_amount']} does not equal quantity x unit_price ({net})",
                                "net_amount")
            if "total_amount" in line and Decimal(line["total_amount"]) != net + tax:
                raise SageError("total_amount does not equal net_amount + tax_amount", "total_amount")
            out.append({**line, "id": secrets.token_hex(16), "net_amount": net, "tax_amount": tax,
                        "total_amount": net + tax, "ledger_account": {"id": line["ledger_account_id"]},
                        "tax_rate": {"id": line.get("tax_rate_id")}})
        return out

    def _artefact(self, business: Business, resource: str, current: dict | None, fields: dict[str, Any]
                  ) -> dict[str, Any]:
        lines_key = "invoice_lines" if resource == "sales_invoices" else "credit_note_lines"
        contact = business.tables["contacts"].get(fields.get("contact_id") or (current or {}).get("contact_id", ""))
        if contact is None:
            raise SageError("Contact not found", "contact_id")
        if current is not None:
            if current["status"]["id"] == "VOID":
                raise SageError("A void invoice cannot be edited", "status")
            self._check_open(business, current["date"], fields.get("date"))
        else:
            self._check_open(business, fields["date"])
        document = copy.deepcopy(current) if current is not None else {
            "id": business.new_id(), "created_at": _now(), "status": {"id": "UNPAID", "displayed_as": "Unpaid"}}
        document.update({k: copy.deepcopy(v) for k, v in fields.items() if k != lines_key})
        if lines_key in fields or current is None:
            document[lines_key] = self._lines(business, fields[lines_key])
        lines = document[lines_key]
        document.update(contact={"id": contact["id"], "displayed_as": contact["name"]}, contact_name=contact["name"],
                        net_amount=sum((ln["net_amount"] for ln in lines), ZERO),
                        tax_amount=sum((ln["tax_amount"] for ln in lines), ZERO), updated_at=_now())
        document["total_amount"] = document["net_amount"] + document["tax_amount"]
        self._in_currency(business, document, contact, fields)
        allocated = self._allocated(business, document["id"])
        if allocated > document["total_amount"]:
            raise SageError("The total cannot be less than the payments and allocations on it", "total_amount")
        prefix = "SI" if resource == "sales_invoices" else "SCN"
        document.setdefault("displayed_as", f"{prefix}-{next(business.numbers)}")
        self._settle(document, allocated)
        business.tables[resource][document["id"]] = document
        return document

    @staticmethod
    def _allocated(business: Business, artefact_id: str) -> Decimal:
        return sum((abs(Decimal(a["amount"])) for table in ("contact_payments", "contact_allocations")
                    for doc in business.tables[table].values() for a in doc["allocated_artefacts"]
                    if a["artefact_id"] == artefact_id), ZERO)

    @staticmethod
    def _settle(document: dict[str, Any], allocated: Decimal) -> None:
        document["outstanding_amount"] = document["total_amount"] - allocated
        document["total_paid"] = allocated
        if document["status"]["id"] not in ("VOID", "DRAFT"):
            status = "PAID" if document["outstanding_amount"] == 0 else "PART_PAID" if allocated else "UNPAID"
            document["status"] = {"id": status, "displayed_as": status.replace("_", " ").title()}

    def _artefact_for(self, business: Business, artefact_id: str) -> dict[str, Any]:
        for table in ("sales_invoices", "sales_credit_notes"):
            if artefact_id in business.tables[table]:
                return business.tables[table][artefact_id]
        raise SageError("Artefact not found", "allocated_artefacts.artefact_id")

    def _money(self, business: Business, resource: str, fields: dict[str, Any]) -> dict[str, Any]:
        kind = fields["transaction_type_id"]
        if kind not in TRANSACTION_TYPES[resource]:
            raise SageError("Transaction type is not valid here", "transaction_type_id")
        contact = business.tables["contacts"].get(fields["contact_id"])
        if contact is None:
            raise SageError("Contact not found", "contact_id")
        day = fields.get("date") or date.today().isoformat()
        self._check_open(business, day)
        artefacts = [(self._artefact_for(business, a["artefact_id"]), Decimal(a["amount"]))
                     for a in fields.get("allocated_artefacts") or []]
        record = copy.deepcopy(fields)
        if resource == "contact_payments":
            self._in_currency(business, record, contact, fields)
        in_currency = (record.get("currency") or (artefacts[0][0]["currency"] if artefacts else {}) or {}).get("id")
        for document, amount in artefacts:
            if document["currency"]["id"] != in_currency:
                raise SageError(f"The artefact is in {document['currency']['id']}, not {in_currency}",
                                "allocated_artefacts.artefact_id")
            if kind in REFUNDABLE and document["id"] not in business.tables[REFUNDABLE[kind]]:
                raise SageError("A customer refund can only be allocated to a sales credit note",
                                "allocated_artefacts.artefact_id")
            if document["status"]["id"] == "VOID":
                raise SageError("Cannot allocate to a void artefact", "allocated_artefacts")
            if abs(amount) > document["outstanding_amount"]:
                raise SageError("The allocated amount is more than the outstanding amount", "allocated_artefacts.amount")
        if resource == "contact_payments":
            if fields["bank_account_id"] not in business.tables["bank_accounts"]:
                raise SageError("Bank account not found", "bank_account_id")
            if sum((amount for _, amount in artefacts), ZERO) > Decimal(fields["total_amount"]):
                raise SageError("The allocated amounts exceed the payment's total", "total_amount")
        elif sum((amount for _, amount in artefacts), ZERO) != 0 or len(artefacts) < 2:
            raise SageError("The allocated amounts must balance to zero", "allocated_artefacts")
        record |= {"id": business.new_id(), "date": day, "created_at": _now(),
                                          "updated_at": _now(), "transaction_type": {"id": fields["transaction_type_id"]}}
        business.tables[resource][record["id"]] = record
        for document, _ in artefacts:
            self._settle(document, self._allocated(business, document["id"]))
            document["updated_at"] = _now()
        return record

    def _currency(self, business: Business, code: str) -> None:
        if code not in business.tables["currencies"]:
            raise SageError("Currency not found", "currency_id")
        if code != business.base_currency and not business.multi_currency:
            raise SageError(f"Multi-currency is not enabled for this business: {code} cannot be used", "currency_id")

    def _in_currency(self, business: Business, record: dict[str, Any], contact: dict[str, Any],
                     fields: dict[str, Any]) -> None:
        """A document or payment is in its contact's currency, at the rate sent or Sage's own."""
        code = fields.get("currency_id") or (record.get("currency") or {}).get("id") or _currency_of(business, contact)
        self._currency(business, code)
        if code != _currency_of(business, contact):
            raise SageError(f"The currency must be the contact's currency ({_currency_of(business, contact)})",
                            "currency_id")
        if code == business.base_currency:
            rate = Decimal(1)
        elif "exchange_rate" in fields:
            rate = Decimal(fields["exchange_rate"])
            if rate <= 0:
                raise SageError("must be greater than 0", "exchange_rate")
        elif "exchange_rate" in record:
            rate = record["exchange_rate"]
        elif code in business.tables["exchange_rates"]:
            rate = business.tables["exchange_rates"][code]["rate"]
        else:
            raise SageError(f"No exchange rate for {code}", "exchange_rate")
        record.pop("currency_id", None)
        record.update(currency={"id": code, "displayed_as": CURRENCIES[code]}, exchange_rate=rate,
                      inverse_exchange_rate=_rate(1 / rate))
        if "total_amount" in record:
            record["base_currency_total_amount"] = _money(Decimal(record["total_amount"]) / rate)

    def _delete(self, business: Business, resource: str, current: dict[str, Any], q: Any) -> None:
        if resource in ("contact_payments", "contact_allocations"):
            self._check_open(business, current["date"])
            del business.tables[resource][current["id"]]
            for a in current["allocated_artefacts"]:
                document = self._artefact_for(business, a["artefact_id"])
                self._settle(document, self._allocated(business, document["id"]))
                document["updated_at"] = _now()
            return None
        if resource not in ("sales_invoices", "sales_credit_notes"):
            raise SageError("Deleting this record is not supported by this sandbox", code="NotSupported")
        if current["status"]["id"] == "DRAFT":
            del business.tables[resource][current["id"]]
            return None
        if current["status"]["id"] == "VOID":
            raise SageError("The artefact is already void", "status")
        if not q.get("void_reason"):
            raise SageError("can't be blank", "void_reason")
        self._check_open(business, current["date"])
        if self._allocated(business, current["id"]):
            raise SageError("An artefact with payments or allocations cannot be voided; remove them first", "status")
        current.update(status={"id": "VOID", "displayed_as": "Void"}, void_reason=q["void_reason"],
                       outstanding_amount=ZERO, updated_at=_now())
        return None

    def _release_draft(self, business: Business, current: dict[str, Any]) -> dict[str, Any]:
        if current["status"]["id"] != "DRAFT":
            raise SageError("Only a draft can be released", "status")
        current["status"] = {"id": "UNPAID", "displayed_as": "Unpaid"}
        self._settle(current, self._allocated(business, current["id"]))
        return current


def _types(value: Any, name: str = "") -> None:
    """The Swagger's types for what Sage validates: amounts are JSON numbers, dates ISO dates."""
    if isinstance(value, dict):
        for key, item in value.items():
            _types(item, key)
    elif isinstance(value, list):
        for item in value:
            _types(item, name)
    elif name in NUMBERS and (isinstance(value, bool) or not isinstance(value, (int, Decimal))):
        raise SageError("is not a number", name)
    elif name in DATES and value is not None:
        try:
            date.fromisoformat(str(value))
        except ValueError:
            raise SageError("is not a valid date", name) from None
