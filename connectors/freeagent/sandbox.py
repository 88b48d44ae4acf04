"""A local FreeAgent (API v2) for the demo and the tests.

Built from FreeAgent's Postman collection (paths, verbs, the ``{"<resource>": {...}}`` envelopes, resource URIs
as references, transitions) and FreeAgent's API pages and forum (dev.freeagent.com/docs, api-discuss): OAuth2
with 1-hour access tokens and rotating refresh tokens at ``/v2/token_endpoint`` (client by HTTP Basic or in the
form), at most 5 token refreshes a minute; 120 requests a minute and 3,600 an hour per user, answered 429 with
``Retry-After`` ("You must not exceed 120 requests per 60 seconds"); paged lists (``page``, ``per_page`` ≤ 100,
``Link`` header); contacts (an organisation name, or first and last name); invoices and credit notes created as
Draft and moved by ``transitions/mark_as_sent|mark_as_cancelled``, items with an item type, price, quantity,
income category and sales tax rates (first and, on a Universal account, second) from which FreeAgent computes
the tax (per item, half up here); an update's ``invoice_items`` add items and remove those named by ``url`` with
``_destroy``; payments as bank transaction explanations of money in naming the invoice (``paid_invoice``: the
explanation made with a ``bank_account`` creates its manual bank transaction, deleting it removes both);
a credit note's refund as money out (a negative ``gross_value``) explained with ``paid_invoice`` naming the credit
note (FreeAgent staff on api-discuss, "Record manual payment / net off credit note"), no more than is left on it;
``credit_note_reconciliations`` setting a sent credit note against an invoice; account locks (``GET
/account_locks``: nothing dated on or before ``locked_to_date`` is created, changed, cancelled or deleted:
"dated_on is in a locked period"); errors as ``{"errors": {"error": {"message": …}}}`` (one) or
``{"errors": [{"message": …}]}`` (several). Not confirmed by a FreeAgent page, and built as stated: invoice
references unique among invoices that are not cancelled; a draft cannot be cancelled, nor an invoice with
payments or credit on it; the validation messages' wording (FreeAgent publishes no catalogue).
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client

API = "/v2"
CENT, ZERO = Decimal("0.01"), Decimal("0")
PAGE_MAX = 100
ENVELOPES = {"contacts": "contact", "invoices": "invoice", "credit_notes": "credit_note",
             "bank_transaction_explanations": "bank_transaction_explanation",
             "credit_note_reconciliations": "credit_note_reconciliation"}
REQUIRED = {"invoice": ("contact", "dated_on", "payment_terms_in_days"),
            "credit_note": ("contact", "dated_on", "payment_terms_in_days"),
            "bank_transaction_explanation": ("dated_on", "gross_value"),
            "credit_note_reconciliation": ("gross_value", "dated_on", "invoice", "credit_note")}
ITEM_TYPES = {"Hours", "Days", "Weeks", "Months", "Years", "Products", "Services", "Training", "Expenses",
              "Comment", "Bills", "Discount", "Credit", "VAT", "Stock", "-no unit-"}
DECIMALS = {"price", "quantity", "gross_value", "sales_tax_rate", "second_sales_tax_rate", "exchange_rate"}
DATES = {"dated_on", "due_on"}


def fa_error(status: int, *texts: str) -> Response:
    body: dict[str, Any] = {"errors": {"error": {"message": texts[0]}} if len(texts) == 1 else
                            [{"message": t} for t in texts]}
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


class FreeAgentError(Exception):
    def __init__(self, *texts: str, status: int = 422) -> None:
        super().__init__(texts[0])
        self.response = fa_error(status, *texts)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _decimal(value: Any, name: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise FreeAgentError(f"{name} is not a number") from None


@dataclass
class Company:
    """One FreeAgent company (the user's); its tables keyed by numeric id."""

    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {r: {} for r in (
        "contacts", "invoices", "credit_notes", "bank_transaction_explanations", "bank_transactions",
        "credit_note_reconciliations", "bank_accounts", "categories")})
    locked_to: date | None = None
    sales_tax_rates: set[Decimal] = field(default_factory=lambda: {Decimal(r) for r in ("0", "5", "6.25", "7.25")})
    second_sales_tax_rates: set[Decimal] = field(default_factory=lambda: {Decimal(r) for r in ("0", "1", "7")})
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return str(next(self.ids))


class Sandbox:
    """FreeAgent as a local server. ``faults`` injects 500s, 429s and timeouts (one draw per write)."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 3600.0, *, minute_limit: int = 120,
                 hour_limit: int = 3600, refresh_limit: int = 5) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)  # FreeAgent: access tokens live one hour
        self.minute_limit, self.hour_limit = minute_limit, hour_limit
        self.minute_window, self.hour_window = WindowLimit(minute_limit, 60.0), WindowLimit(hour_limit, 3600.0)
        self.refresh_window = WindowLimit(refresh_limit, 60.0)
        self.company = Company()
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path, JSON body or None)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route(f"{API}/token_endpoint", self._token, methods=["POST"]),
            Route(f"{API}/account_locks", self._locks, methods=["GET"]),
            Route(API + "/{resource}", self._handle, methods=["GET", "POST"]),
            Route(API + "/{resource}/{key}", self._handle, methods=["GET", "PUT", "DELETE"]),
            Route(API + "/{resource}/{key}/transitions/{transition}", self._handle, methods=["PUT"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret, refresh = new_client(self.issuer)
        with self._lock:
            tables = self.company.tables
            if not tables["bank_accounts"]:
                for key, name in (("1", "Current account"), ("2", "Card takings")):
                    tables["bank_accounts"][key] = {"id": key, "name": name, "type": "StandardBankAccount"}
                for code, name in (("001", "Sales"), ("002", "Sales - labour"), ("003", "Sales - fees"),
                                   ("004", "Core charges"), ("005", "Discounts")):
                    tables["categories"][code] = {"id": code, "nominal_code": code, "description": name}
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "freeagent", "base_url": f"{base_url}{API}",
            "settings": {"token_url": f"{base_url}{API}/token_endpoint", "requests_per_minute": self.minute_limit,
                         "requests_per_hour": self.hour_limit},
            "mapping": {"income_accounts": {"part": "001", "labour": "002", "fee": "003", "sublet": "002",
                                            "discount": "005", "core_charge": "004", "core_return": "004"},
                        "tax_codes": {"STATE": "6.25", "COUNTY": "second:1", "GST": "5", "PST": "second:7"},
                        "payment_accounts": {"card": "2", "cash": "1", "check": "1", "eft": "1"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.minute_window.breaches + self.hour_window.breaches + self.refresh_window.breaches

    def set_lock_date(self, through: date | None) -> None:
        """The bookkeeper locks the accounts through ``through`` (None removes the lock)."""
        with self._lock:
            self.company.locked_to = through

    def records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.company.tables[table].values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for inv in self.company.tables["invoices"].values():
                paid = [e["gross_value"] for e in self.company.tables["bank_transaction_explanations"].values()
                        if e.get("paid_invoice") == inv["id"]]
                out.append(BookedInvoice(
                    number=inv.get("reference") or "", external_id=inv["id"], voided=inv["status"] == "Cancelled",
                    total=inv["total_value"], tax_total=inv["sales_tax_value"] + inv["second_sales_tax_value"],
                    line_count=len(inv["items"]), payments_applied=sum(paid, ZERO), payment_count=len(paid)))
            return out

    # -- OAuth2 and limits --
    async def _token(self, request: Request) -> Response:
        form = await request.form()
        client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        if self.refresh_window.hit(client_id) is not None:
            return fa_error(429, "You must not exceed 5 token refreshes per 60 seconds")
        if form.get("grant_type") != "refresh_token":
            return Response(jsonmoney.dumps({"error": "unsupported_grant_type"}), 400, media_type="application/json")
        answer = self.issuer.refresh(client_id, client_secret, str(form.get("refresh_token", "")))
        if answer is None:
            return Response(jsonmoney.dumps({"error": "invalid_grant"}), 400, media_type="application/json")
        answer["refresh_token_expires_in"] = 20 * 365 * 86400
        return Response(jsonmoney.dumps(answer), media_type="application/json")

    def _guard(self, request: Request) -> Response | None:
        if not self.issuer.valid(request.headers.get("authorization")):
            return fa_error(401, "Access token not recognised")
        for window, limit, seconds in ((self.minute_window, self.minute_limit, 60),
                                       (self.hour_window, self.hour_limit, 3600)):
            wait = window.hit("user")
            if wait is not None:
                refused = fa_error(429, f"You must not exceed {limit} requests per {seconds} seconds")
                refused.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                return refused
        return None

    # -- requests --
    async def _locks(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        locked = self.company.locked_to
        locks = [{"locked_to_date": locked.isoformat(), "user_lock": True, "locked_by_description": "Bookkeeper"}
                 ] if locked else []
        return self._ok({"account_locks": locks})

    async def _handle(self, request: Request) -> Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        params = request.path_params
        resource, key, transition = params["resource"], params.get("key"), params.get("transition")
        table = self.company.tables.get(resource)
        if table is None:
            return fa_error(404, "Resource not found")
        if request.method == "GET":
            with self._lock:
                if key is None:
                    return self._page(request, resource, table)
                record = table.get(key)
                if record is None:
                    return fa_error(404, "Resource not found")
                return self._ok({ENVELOPES.get(resource, resource[:-1]): self._view(request, resource, record)})
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return fa_error(400, "Request body is not valid JSON")
        self.requests.append((request.method, request.url.path.removeprefix(API), body))
        decided = self.faults.draw()
        if decided == "500":
            return fa_error(500, "Internal server error")
        if decided == "429":
            throttled = fa_error(429, f"You must not exceed {self.minute_limit} requests per 60 seconds")
            throttled.headers["Retry-After"] = "1"
            return throttled
        with self._lock:
            try:
                record = self._write(request.method, resource, key, transition, body)
                response = (self._ok({ENVELOPES[resource]: self._view(request, resource, record)},
                                     201 if request.method == "POST" else 200)
                            if record is not None else Response(status_code=200))
            except FreeAgentError as error:
                response = error.response
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    @staticmethod
    def _ok(body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    def _page(self, request: Request, resource: str, table: dict[str, dict[str, Any]]) -> Response:
        q = request.query_params
        rows = list(table.values())
        if resource == "bank_transaction_explanations" and q.get("bank_account"):
            rows = [r for r in rows if r.get("bank_account") == _key(q["bank_account"])]
        page, per_page = max(1, int(q.get("page", 1))), min(PAGE_MAX, max(1, int(q.get("per_page", 25))))
        chunk = rows[(page - 1) * per_page: page * per_page]
        response = self._ok({resource: [self._view(request, resource, r) for r in chunk]})
        if page * per_page < len(rows):
            response.headers["Link"] = f'<{request.url.include_query_params(page=page + 1)}>; rel="next"'
        return response

    def _view(self, request: Request, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        """A record as FreeAgent shows it: references as URIs, money as decimal strings."""
        base = str(request.base_url).rstrip("/") + API

        def uri(table: str, key: str | None) -> str | None:
            return f"{base}/{table}/{key}" if key else None

        view: dict[str, Any] = {k: v for k, v in record.items() if k not in ("id", "items") and not k.startswith("_")}
        view["url"] = uri(resource, record["id"])
        for name, table in (("contact", "contacts"), ("paid_invoice", record.get("_paid", "invoices")), ("invoice", "invoices"),
                            ("credit_note", "credit_notes"), ("bank_account", "bank_accounts"),
                            ("bank_transaction", "bank_transactions")):
            if name in view:
                view[name] = uri(table, view[name])
        if "items" in record:
            view["invoice_items" if resource == "invoices" else "credit_note_items"] = [
                {**{k: v for k, v in item.items() if k != "id"}, "url": uri("invoice_items", item["id"]),
                 "category": uri("categories", item.get("category"))} for item in record["items"]]
        return _texts(view)

    # -- the books --
    def _write(self, method: str, resource: str, key: str | None, transition: str | None, body: Any
               ) -> dict[str, Any] | None:
        table = self.company.tables[resource]
        current = table.get(key) if key else None
        if key and current is None:
            raise FreeAgentError("Resource not found", status=404)
        if transition:
            return self._transition(resource, current, transition)
        if method == "DELETE":
            return self._delete(resource, current)
        name = ENVELOPES.get(resource)
        if name is None or not isinstance(body, dict) or not isinstance(body.get(name), dict):
            raise FreeAgentError(f"Missing parameter: {name or resource}", status=400)
        fields = body[name]
        missing = [f for f in REQUIRED.get(name, ()) if method == "POST" and fields.get(f) in (None, "")]
        if missing:
            raise FreeAgentError(*[f"{f.replace('_', ' ').capitalize()} can't be blank" for f in missing])
        _types(fields)
        if resource == "contacts":
            return self._contact(current, fields)
        if resource in ("invoices", "credit_notes"):
            return self._document(resource, current, fields)
        if current is not None:
            raise FreeAgentError("Updating this record is not supported by this sandbox")
        if resource == "bank_transaction_explanations":
            return self._explain(fields)
        return self._reconcile(fields)

    def _check_open(self, *days: Any) -> None:
        locked = self.company.locked_to
        if locked and any(day and date.fromisoformat(str(day)) <= locked for day in days):
            raise FreeAgentError("dated_on is in a locked period")

    def _ref(self, table: str, value: Any, name: str) -> dict[str, Any]:
        record = self.company.tables[table].get(_key(str(value or "")))
        if record is None or f"/{table}/" not in str(value):
            raise FreeAgentError(f"{name.replace('_', ' ').capitalize()} not found")
        return record

    def _contact(self, current: dict | None, fields: dict[str, Any]) -> dict[str, Any]:
        contact = current if current is not None else {"id": self.company.new_id(), "created_at": _now()}
        merged = {**contact, **copy.deepcopy(fields)}
        if not merged.get("organisation_name") and not (merged.get("first_name") and merged.get("last_name")):
            raise FreeAgentError("Organisation name or first and last name must be present")
        contact.update(merged, updated_at=_now())
        self.company.tables["contacts"][contact["id"]] = contact
        return contact

    def _items(self, given: list[dict[str, Any]], kept: list[dict[str, Any]], credit: bool) -> list[dict[str, Any]]:
        drop = {_key(str(i.get("url"))) for i in given if i.get("_destroy") in ("1", 1, True, "true")}
        out = [i for i in kept if i["id"] not in drop]
        for item in given:
            if "_destroy" in item:
                continue
            if item.get("item_type", "Products") not in ITEM_TYPES:
                raise FreeAgentError(f"Item type {item['item_type']} is not included in the list")
            if not item.get("description") and item.get("price") is None:
                raise FreeAgentError("Invoice item needs a description or a price")
            rate = _decimal(item.get("sales_tax_rate", 0), "sales_tax_rate")
            second = _decimal(item.get("second_sales_tax_rate", 0), "second_sales_tax_rate")
            if rate not in self.company.sales_tax_rates or second not in self.company.second_sales_tax_rates:
                raise FreeAgentError("Sales tax rate is not valid for this company")
            if item.get("category"):
                self._ref("categories", item["category"], "category")
            net = _money(_decimal(item.get("quantity", 1), "quantity") * _decimal(item.get("price", 0), "price"))
            out.append({**{k: v for k, v in item.items() if k != "url"}, "id": self.company.new_id(),
                        "category": _key(str(item.get("category") or "")) or None, "net_value": net,
                        "sales_tax_value": _money(net * rate / 100),
                        "second_sales_tax_value": _money(net * second / 100)})
        if credit and sum((i["net_value"] for i in out), ZERO) > 0:
            raise FreeAgentError("Credit note total must be negative")
        return out

    def _document(self, resource: str, current: dict | None, fields: dict[str, Any]) -> dict[str, Any]:
        items_key = "invoice_items" if resource == "invoices" else "credit_note_items"
        contact = self._ref("contacts", fields["contact"], "contact")["id"] if "contact" in fields else None
        if current is not None:
            if current["status"] == "Cancelled":
                raise FreeAgentError("A cancelled invoice cannot be edited")
            self._check_open(current["dated_on"], fields.get("dated_on"))
        else:
            self._check_open(fields["dated_on"])
        reference = fields.get("reference") or (current or {}).get("reference") or f"{len(self.company.tables[resource]) + 1:03d}"
        if resource == "invoices" and any(d.get("reference") == reference and d is not current
                                          and d["status"] != "Cancelled" for d in self.company.tables[resource].values()):
            raise FreeAgentError("Reference is already in use by another invoice")
        document = current if current is not None else {"id": self.company.new_id(), "created_at": _now(),
                                                         "status": "Draft", "items": []}
        items = self._items(fields.get(items_key) or [], document["items"], resource == "credit_notes")
        document.update({k: copy.deepcopy(v) for k, v in fields.items() if k != items_key})
        document.update(reference=reference, items=items, contact=contact or document.get("contact"),
                        currency=fields.get("currency") or document.get("currency") or "USD", updated_at=_now())
        self._totals(resource, document)
        self.company.tables[resource][document["id"]] = document
        return document

    def _settled(self, resource: str, document_id: str) -> Decimal:
        """Paid by explanations plus set against credit notes (positive)."""
        # An invoice's receipts are money in; a credit note's refunds money out (negative), which settles it.
        sign = 1 if resource == "invoices" else -1
        paid = sum((sign * e["gross_value"] for e in self.company.tables["bank_transaction_explanations"].values()
                    if e.get("paid_invoice") == document_id and e.get("_paid", "invoices") == resource), ZERO)
        side = "invoice" if resource == "invoices" else "credit_note"
        return paid + sum((r["gross_value"] for r in self.company.tables["credit_note_reconciliations"].values()
                           if r[side] == document_id), ZERO)

    def _totals(self, resource: str, document: dict[str, Any]) -> None:
        items = document["items"]
        document["net_value"] = sum((i["net_value"] for i in items), ZERO)
        document["sales_tax_value"] = sum((i["sales_tax_value"] for i in items), ZERO)
        document["second_sales_tax_value"] = sum((i["second_sales_tax_value"] for i in items), ZERO)
        document["total_value"] = document["net_value"] + document["sales_tax_value"] + document["second_sales_tax_value"]
        settled = self._settled(resource, document["id"])
        sign = 1 if resource == "invoices" else -1
        if settled > sign * document["total_value"]:
            raise FreeAgentError("The total cannot be less than what is paid or credited on it")
        document["paid_value"] = sign * settled
        document["due_value"] = document["total_value"] - sign * settled
        if document["status"] not in ("Draft", "Cancelled"):
            document["status"] = "Paid" if document["due_value"] == 0 else "Open"

    def _transition(self, resource: str, current: dict[str, Any], transition: str) -> dict[str, Any]:
        if transition == "mark_as_sent":
            if current["status"] == "Draft":
                self._check_open(current["dated_on"])
                current["status"] = "Open"
        elif transition == "mark_as_cancelled":
            if current["status"] == "Draft":
                raise FreeAgentError("A draft cannot be cancelled: mark it as sent or delete it")
            if self._settled(resource, current["id"]):
                raise FreeAgentError("Cannot cancel an invoice with payments or credit notes against it")
            self._check_open(current["dated_on"])
            current["status"], current["due_value"] = "Cancelled", ZERO
            current["updated_at"] = _now()
            return current
        else:
            raise FreeAgentError(f"Unknown transition {transition}", status=404)
        current["updated_at"] = _now()
        self._totals(resource, current)
        return current

    def _explain(self, fields: dict[str, Any]) -> dict[str, Any]:
        self._check_open(fields["dated_on"])
        if not fields.get("bank_account") and not fields.get("bank_transaction"):
            raise FreeAgentError("Bank account or bank transaction must be present")
        bank = self._ref("bank_accounts", fields["bank_account"], "bank_account")["id"]
        gross = _decimal(fields["gross_value"], "gross_value")
        record = {**copy.deepcopy(fields), "id": self.company.new_id(), "bank_account": bank, "gross_value": gross,
                  "created_at": _now(), "updated_at": _now()}
        invoice, table = None, "invoices"
        if fields.get("paid_invoice"):
            # ``paid_invoice`` names an invoice (its receipt) or a credit note (its refund: money out).
            table = "credit_notes" if "/credit_notes/" in str(fields["paid_invoice"]) else "invoices"
            invoice = self._ref(table, fields["paid_invoice"], "paid_invoice")
            if invoice["status"] in ("Draft", "Cancelled"):
                raise FreeAgentError("Paid invoice must be sent and not cancelled")
            if table == "credit_notes" and (gross >= 0 or -gross > -invoice["due_value"]):
                raise FreeAgentError("A credit note's refund is money out of no more than is left on the credit note")
            record.update(paid_invoice=invoice["id"], _paid=table, is_money_in=gross > 0,
                          type="Invoice Receipt" if table == "invoices" else "Credit Note Refund")
        elif not fields.get("description"):
            raise FreeAgentError("Description can't be blank")
        transaction = {"id": self.company.new_id(), "bank_account": bank, "amount": gross, "is_manual": True,
                       "dated_on": fields["dated_on"], "unexplained_amount": ZERO}
        self.company.tables["bank_transactions"][transaction["id"]] = transaction
        record["bank_transaction"] = transaction["id"]
        self.company.tables["bank_transaction_explanations"][record["id"]] = record
        if invoice is not None:
            self._totals(table, invoice)
        return record

    def _reconcile(self, fields: dict[str, Any]) -> dict[str, Any]:
        self._check_open(fields["dated_on"])
        invoice = self._ref("invoices", fields["invoice"], "invoice")
        note = self._ref("credit_notes", fields["credit_note"], "credit_note")
        amount = _decimal(fields["gross_value"], "gross_value")
        if "Draft" in (invoice["status"], note["status"]) or "Cancelled" in (invoice["status"], note["status"]):
            raise FreeAgentError("Invoice and credit note must both be sent")
        if amount <= 0 or amount > invoice["due_value"] or amount > -note["due_value"]:
            raise FreeAgentError("Gross value is more than is due on the invoice or left on the credit note")
        record = {**copy.deepcopy(fields), "id": self.company.new_id(), "gross_value": amount,
                  "invoice": invoice["id"], "credit_note": note["id"], "created_at": _now(), "updated_at": _now()}
        self.company.tables["credit_note_reconciliations"][record["id"]] = record
        self._totals("invoices", invoice)
        self._totals("credit_notes", note)
        return record

    def _delete(self, resource: str, current: dict[str, Any]) -> None:
        if resource not in ("bank_transaction_explanations", "credit_note_reconciliations"):
            raise FreeAgentError("Deleting this record is not supported by this sandbox")
        self._check_open(current["dated_on"])
        del self.company.tables[resource][current["id"]]
        self.company.tables["bank_transactions"].pop(current.get("bank_transaction") or "", None)
        for table, name in ((current.get("_paid", "invoices"), "paid_invoice"), ("invoices", "invoice"),
                            ("credit_notes", "credit_note")):
            if current.get(name):
                self._totals(table, self.company.tables[table][current[name]])
        return None


def _texts(value: Any) -> Any:
    """FreeAgent writes money as decimal strings."""
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_texts(v) for v in value]
    return f"{value:f}" if isinstance(value, Decimal) else value


def _key(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _types(value: Any, name: str = "") -> None:
    """What FreeAgent validates of a value: decimals parse, dates are YYYY-MM-DD."""
    if isinstance(value, dict):
        for key, item in value.items():
            _types(item, key)
    elif isinstance(value, list):
        for item in value:
            _types(item, name)
    elif name in DECIMALS and value is not None:
        _decimal(value, name)
    elif name in DATES and value is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
        raise FreeAgentError(f"{name.replace('_', ' ').capitalize()} is not a valid date")
