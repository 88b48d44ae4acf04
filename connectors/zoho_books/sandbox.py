"""A local Zoho Books (API v3) for the demo and the tests.

Built from Zoho's public API documentation (Zoho's own OpenAPI 3.0 files are now stored under the specs
directory, zoho-books/; the connector tests validate every request against them), read for this purpose:
  * API root, organisation_id on every call, errors and HTTP statuses:
      https://www.zoho.com/books/api/v3/introduction/ , https://www.zoho.com/books/api/v3/errors/
  * OAuth 2.0 and the data-centre accounts hosts: https://www.zoho.com/books/api/v3/oauth/
  * Invoices (create with ignore_auto_number_generation, update, list by invoice_number, mark as sent, void):
      https://www.zoho.com/books/api/v3/invoices/
  * Customer payments (create applied to invoices, list by reference_number, delete):
      https://www.zoho.com/books/api/v3/customer-payments/
  * Credit notes ("Credit to an invoice", "List invoices credited", "Delete invoices credited"):
      https://www.zoho.com/books/api/v3/credit-notes/
  * Contacts: https://www.zoho.com/books/api/v3/contacts/ ; items (create, list by name):
    https://www.zoho.com/books/api/v3/items/ ; taxes and tax groups (settings), chart of
    accounts, locations, reporting tags; transaction locking: https://www.zoho.com/books/api/v3/transaction-locking/
    and the help page "Transaction Locking" (transactions dated before the lock date cannot be created,
    modified or deleted).
What it enforces: ``Authorization: Zoho-oauthtoken …`` (expired or unknown → 401 {"code":57,…}); refresh
tokens that do NOT rotate; ``organization_id`` on every call; the request bodies of ``schemas.py`` (the
documented fields, written down by hand — unknown fields are refused with {"code":4,…}); unique
invoice numbers and contact names; payments and credits only on sent invoices and never beyond the
balance ({"code":24016,…}, as Zoho's docs list it); a void refused while payments or credits are applied;
tax computed by Zoho from tax ids (a tax group's members each computed per line, rounded per line —
``tax_rounding="entity_level"`` rounds per document instead); the transaction lock date (settable:
``lock_date``); 100 requests/minute per organisation, a daily cap and a concurrency cap answered with 429.
Answers are ``{"code":0,"message":…,<entity>:{…}}``; errors ``{"code":<non-zero>,"message":…}``.
Error codes that Zoho's pages do not state (rate limit 44/45, lock 4086, duplicate names) are this
sandbox's choice and marked so below; the connector classifies by HTTP status and message as well.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit
from connectors.zoho_books import schemas

CENT = Decimal("0.01")
ZERO = Decimal("0")
CODE_LOCKED = 4086  # sandbox's choice (not stated on Zoho's pages); message carries "locked"


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z")


class ZohoError(Exception):
    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json", headers=headers)


@dataclass
class Org:
    accounts: dict[str, dict] = field(default_factory=dict)
    taxes: dict[str, dict] = field(default_factory=dict)  # taxes and tax groups (tax_type)
    items: dict[str, dict] = field(default_factory=dict)
    locations: dict[str, dict] = field(default_factory=dict)
    tags: dict[str, dict] = field(default_factory=dict)
    contacts: dict[str, dict] = field(default_factory=dict)
    invoices: dict[str, dict] = field(default_factory=dict)
    payments: dict[str, dict] = field(default_factory=dict)
    creditnotes: dict[str, dict] = field(default_factory=dict)
    applications: dict[str, dict] = field(default_factory=dict)  # creditnote_invoice_id -> application
    next_id: int = 460000000100000
    active: int = 0
    lock_date: date | None = None  # transactions dated before it are locked
    # Settings > Currencies: the base currency (USD) and the ones added, each with its latest exchange rate.
    currencies: dict[str, dict] = field(default_factory=lambda: {
        cid: {"currency_id": cid, "currency_code": code, "is_base_currency": code == "USD",
              "exchange_rate": Decimal(rate)}
        for cid, code, rate in (("460000000000097", "USD", "1"), ("460000000000099", "CAD", "0.7300"),
                                ("460000000000101", "EUR", "1.0800"))})

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)


class Sandbox:
    """Zoho Books as a local server. ``faults`` injects 500s, 429s, timeouts and slow answers on writes."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 3600.0, api_per_minute: int = 100,
                 daily_limit: int = 10000, concurrency: int = 10, tax_rounding: str = "item_level") -> None:
        self.faults = faults or Faults()
        # Zoho refresh tokens do not rotate: the one from consent is used for every refresh.
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s, rotate=False)
        self.orgs: dict[str, Org] = {}
        self.api_per_minute = api_per_minute
        self.window = WindowLimit(api_per_minute, 60.0)
        self.daily = WindowLimit(daily_limit, 86400.0)
        self.concurrency = concurrency
        self.concurrency_breaches = 0  # requests refused for arriving over the concurrency cap
        self.tax_rounding = tax_rounding
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of every write
        self.queries: list[dict[str, str]] = []  # the query parameters of each of them, in the same order
        self.api_requests = 0
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/oauth/v2/token", self._token, methods=["POST"]),
            Route("/books/v3/{rest:path}", self._api, methods=["GET", "POST", "PUT", "DELETE"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self, organization_id: str = "60012345678") -> dict[str, Any]:
        client_id = "1000." + secrets.token_hex(15).upper()
        client_secret = secrets.token_hex(21)
        refresh = self.issuer.register_client(client_id, client_secret)
        with self._lock:
            org = self.orgs.setdefault(organization_id, Org())
            for account_id, name, kind in (("4600000000001", "Sales", "income"), ("4600000000002", "Services", "income"),
                                           ("4600000000003", "Core deposits", "other_current_liability"),
                                           ("4600000000004", "Discounts given", "income"),
                                           ("4600000000010", "Undeposited Funds", "cash"),
                                           ("4600000000011", "Checking", "bank")):
                org.accounts[account_id] = {"account_id": account_id, "account_name": name, "account_type": kind}
            for tax_id, name, pct in (("4600000000101", "STATE", "6.25"), ("4600000000102", "COUNTY", "1"),
                                      ("4600000000103", "GST", "5"), ("4600000000104", "PST", "7")):
                org.taxes[tax_id] = {"tax_id": tax_id, "tax_name": name, "tax_percentage": Decimal(pct),
                                     "tax_type": "tax"}
            for group_id, name, members in (("4600000000111", "State + county", ["4600000000101", "4600000000102"]),
                                            ("4600000000112", "GST + PST", ["4600000000103", "4600000000104"])):
                org.taxes[group_id] = {"tax_id": group_id, "tax_name": name, "tax_type": "tax_group", "_members": members,
                                       "tax_percentage": sum((org.taxes[m]["tax_percentage"] for m in members), ZERO)}
            for location_id, name in (("4600000000201", "Main St"), ("4600000000202", "Northside")):
                org.locations[location_id] = {"location_id": location_id, "location_name": name}
            org.tags["4600000000301"] = {"tag_id": "4600000000301", "tag_name": "Shop",
                                         "tag_options": [{"tag_option_id": "4600000000302", "tag_option_name": "Main"},
                                                         {"tag_option_id": "4600000000303", "tag_option_name": "North"}]}
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh,
                "organization_id": organization_id}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        organization_id = next(iter(self.orgs), "60012345678")
        return {
            "name": name, "platform": "zoho-books", "base_url": f"{base_url}/books/v3",
            "settings": {"organization_id": organization_id, "data_centre": "com",
                         "token_url": f"{base_url}/oauth/v2/token",
                         "requests_per_minute": self.api_per_minute},  # the client keeps the sandbox's limit
            "mapping": {
                "income_accounts": {"part": "4600000000001", "labour": "4600000000002", "sublet": "4600000000002",
                                    "fee": "4600000000002", "discount": "4600000000001",
                                    "core_charge": "4600000000003", "core_return": "4600000000003"},
                "core_account": "4600000000003",
                "tax_codes": {"STATE": "4600000000101", "COUNTY": "4600000000102", "GST": "4600000000103",
                              "PST": "4600000000104"},
                "payment_accounts": {"card": "4600000000010", "cash": "4600000000010", "check": "4600000000010",
                                     "eft": "4600000000011"},
                "location_tracking": {"MAIN": "location:4600000000201", "NORTH": "location:4600000000202"},
            },
        }

    def rate_limit_breaches(self) -> int:
        """Requests over the per-minute, the daily or the concurrency cap (see the Sandbox protocol)."""
        return self.window.breaches + self.daily.breaches + self.concurrency_breaches

    def booked_invoices(self, organization_id: str | None = None) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for oid, org in self.orgs.items():
                if organization_id not in (None, oid):
                    continue
                for inv in org.invoices.values():
                    applied = [Decimal(a["amount_applied"]) for p in org.payments.values() for a in p["invoices"]
                               if a["invoice_id"] == inv["invoice_id"]]
                    total = inv.get("_total_before_void", inv["total"])
                    out.append(BookedInvoice(
                        number=inv["invoice_number"], external_id=inv["invoice_id"], voided=inv["status"] == "void",
                        total=total, tax_total=inv.get("_tax_before_void", inv["total"] - inv["sub_total"]),
                        line_count=len(inv["line_items"]), payments_applied=sum(applied, ZERO), payment_count=len(applied),
                        currency=org.currencies.get(inv.get("currency_id") or "", {}).get("currency_code")))
            return out

    def org(self, organization_id: str | None = None) -> Org:
        return self.orgs[organization_id or next(iter(self.orgs))]

    def set_lock_date(self, value: date | None, organization_id: str | None = None) -> None:
        self.org(organization_id).lock_date = value

    # -- OAuth 2.0 (accounts host): refresh_token grant, client credentials in the body --
    async def _token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = self.issuer.refresh(str(form.get("client_id", "")), str(form.get("client_secret", "")),
                                    str(form.get("refresh_token", "")))
        if token is None:
            # Zoho answers an unknown client/refresh token with {"error": "invalid_client"/"invalid_code"}.
            return JSONResponse({"error": "invalid_code"}, status_code=400)
        token.pop("refresh_token", None)  # no rotation: Zoho's refresh answer carries no new refresh token
        return JSONResponse({**token, "token_type": "Bearer", "api_domain": str(request.base_url).rstrip("/")})

    # -- API plumbing --
    async def _api(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not header.startswith("Zoho-oauthtoken ") or not self.issuer.valid("Bearer " + header[16:]):
            return answer(401, {"code": 57, "message": "You are not authorized to perform this operation"})
        org_id = request.query_params.get("organization_id", "")
        org = self.orgs.get(org_id)
        if org is None:
            return answer(400, {"code": 6041, "message": "Invalid value passed for organization_id"})
        wait = self.window.hit(org_id)
        if wait is None and org.active >= self.concurrency:
            self.concurrency_breaches += 1
        if wait is not None or org.active >= self.concurrency:  # codes 44/45: sandbox's choice
            return answer(429, {"code": 44, "message": "You have made too many requests continuously. "
                                "Please try again after some time."}, {"Retry-After": str(max(1, int(wait or 1)))})
        if self.daily.hit(org_id) is not None:
            return answer(429, {"code": 45, "message": "You have reached the maximum number of API calls allowed "
                                "for the day."})
        self.api_requests += 1
        if self.faults.slow_s:
            await asyncio.sleep(self.faults.slow_s)
        method, path = request.method, "/" + request.path_params["rest"].strip("/")
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return answer(400, {"code": 4, "message": "Invalid value passed for JSONString"})
        decided = None
        if method != "GET":
            self.requests.append((method, path, body))
            self.queries.append(dict(request.query_params))
            decided = self.faults.draw()
            if decided == "500":
                return answer(500, {"code": 1000, "message": "Internal error"})
            if decided == "429":
                return answer(429, {"code": 44, "message": "You have made too many requests continuously. "
                                    "Please try again after some time."}, {"Retry-After": "1"})
        org.active += 1
        try:
            with self._lock:
                try:
                    status, payload = self._dispatch(org, method, path, dict(request.query_params),
                                                     copy.deepcopy(body))
                    response = answer(status, {"code": 0, **payload})
                except ZohoError as exc:
                    response = answer(exc.status, {"code": exc.code, "message": exc.message})
            if decided == "timeout":
                await self.faults.hang()  # applied, but the answer never arrives in time
            return response
        finally:
            org.active -= 1

    ROUTES = [
        ("GET", r"/settings/taxes", "_list_taxes"), ("GET", r"/settings/taxgroups/(\d+)", "_get_taxgroup"),
        ("GET", r"/chartofaccounts", "_list_accounts"), ("GET", r"/items", "_list_items"),
        ("POST", r"/items", "_create_item"),
        ("GET", r"/locations", "_list_locations"), ("GET", r"/branches", "_list_branches"),
        ("GET", r"/settings/tags", "_list_tags"), ("GET", r"/settings/currencies", "_list_currencies"),
        ("GET", r"/contacts", "_list_contacts"), ("POST", r"/contacts", "_create_contact"),
        ("PUT", r"/contacts/(\d+)", "_update_contact"),
        ("GET", r"/invoices", "_list_invoices"), ("POST", r"/invoices", "_create_invoice"),
        ("GET", r"/invoices/(\d+)", "_get_invoice"), ("PUT", r"/invoices/(\d+)", "_update_invoice"),
        ("POST", r"/invoices/(\d+)/status/sent", "_mark_sent"), ("POST", r"/invoices/(\d+)/status/void", "_void"),
        ("POST", r"/invoices/(\d+)/status/draft", "_mark_draft"),
        ("GET", r"/customerpayments", "_list_payments"), ("POST", r"/customerpayments", "_create_payment"),
        ("GET", r"/customerpayments/(\d+)", "_get_payment"), ("DELETE", r"/customerpayments/(\d+)", "_delete_payment"),
        ("GET", r"/creditnotes", "_list_creditnotes"), ("POST", r"/creditnotes", "_create_creditnote"),
        ("GET", r"/creditnotes/(\d+)/invoices", "_list_credited"),
        ("POST", r"/creditnotes/(\d+)/invoices", "_credit_invoices"),
        ("DELETE", r"/creditnotes/(\d+)/invoices/(\d+)", "_delete_credited"),
        ("GET", r"/creditnotes/(\d+)/refunds", "_list_note_refunds"),
        ("POST", r"/creditnotes/(\d+)/refunds", "_refund_note"),
        ("DELETE", r"/creditnotes/(\d+)/refunds/(\d+)", "_delete_note_refund"),
    ]

    def _dispatch(self, org: Org, method: str, path: str, query: dict, body: Any) -> tuple[int, dict]:
        for m, pattern, handler in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if m == method and match:
                model = schemas.model_for(method, path)
                if model is not None:
                    try:
                        model.model_validate(body)
                    except ValidationError as exc:
                        first = exc.errors()[0]
                        where = ".".join(str(p) for p in first["loc"]) or "JSONString"
                        raise ZohoError(4, f"Invalid value passed for {where}") from None
                return getattr(self, handler)(org, query, body, *match.groups())
        raise ZohoError(5, "Invalid URL Passed", status=404)

    # -- settings and reference data --
    def _list_taxes(self, org, query, body):
        return 200, {"message": "success", "taxes": [_public(t) for t in org.taxes.values()]}

    def _get_taxgroup(self, org, query, body, group_id):
        group = org.taxes.get(group_id)
        if group is None or group["tax_type"] != "tax_group":
            raise ZohoError(1002, "Tax group does not exist.", 404)
        return 200, {"message": "success", "tax_group": {
            "tax_group_id": group_id, "tax_group_name": group["tax_name"],
            "tax_group_percentage": group["tax_percentage"], "taxes": [_public(org.taxes[m]) for m in group["_members"]]}}

    def _list_accounts(self, org, query, body):
        return 200, {"message": "success", "chartofaccounts": list(org.accounts.values())}

    def _list_items(self, org, query, body):
        rows = list(org.items.values())
        for key in ("name", "sku"):
            if key in query:
                rows = [i for i in rows if i.get(key) == query[key]]
        return 200, {"message": "success", "items": rows}

    def _create_item(self, org, query, body):
        if any(i["name"] == body["name"] for i in org.items.values()):
            raise ZohoError(1001, f'The item "{body["name"]}" already exists.')  # code: sandbox's choice
        if body.get("account_id") and body["account_id"] not in org.accounts:
            raise ZohoError(4, "Invalid value passed for account_id")
        if body.get("tax_id") and body["tax_id"] not in org.taxes:
            raise ZohoError(4, "Invalid value passed for tax_id")
        item = {**body, "item_id": org.new_id(), "status": "active"}
        org.items[item["item_id"]] = item
        return 201, {"message": "The item has been added.", "item": item}

    def _list_locations(self, org, query, body):
        return 200, {"message": "success", "locations": list(org.locations.values())}

    def _list_branches(self, org, query, body):
        return 200, {"message": "success", "branches": []}

    def _list_tags(self, org, query, body):
        return 200, {"message": "success", "reporting_tags": list(org.tags.values())}

    def _list_currencies(self, org, query, body):
        return 200, {"message": "success", "currencies": list(org.currencies.values())}

    # -- contacts --
    def _list_contacts(self, org, query, body):
        rows = list(org.contacts.values())
        if "contact_name" in query:
            rows = [c for c in rows if c["contact_name"] == query["contact_name"]]
        if "contact_name_contains" in query:
            rows = [c for c in rows if query["contact_name_contains"].lower() in c["contact_name"].lower()]
        for key in ("email", "phone"):
            if key in query:
                rows = [c for c in rows if any(p.get(key) == query[key] for p in c.get("contact_persons", []))]
        return 200, {"message": "success", "contacts": rows}

    def _unique_contact(self, org, name, own=None):
        if any(c["contact_name"] == name and c["contact_id"] != own for c in org.contacts.values()):
            raise ZohoError(3062, f'The contact "{name}" already exists.')  # code: sandbox's choice

    def _create_contact(self, org, query, body):
        self._unique_contact(org, body["contact_name"])
        contact = {**body, "contact_id": org.new_id(), "status": "active", "last_modified_time": _now()}
        org.contacts[contact["contact_id"]] = contact
        return 201, {"message": "The contact has been added.", "contact": contact}

    def _update_contact(self, org, query, body, contact_id):
        contact = org.contacts.get(contact_id)
        if contact is None:
            raise ZohoError(1002, "Contact does not exist.", 404)
        self._unique_contact(org, body["contact_name"], contact_id)
        contact.update(body)
        contact["last_modified_time"] = _now()
        return 200, {"message": "Contact has been updated successfully", "contact": contact}

    # -- invoices --
    def _locked(self, org: Org, day: str | None, what: str) -> None:
        if org.lock_date and day and date.fromisoformat(day) < org.lock_date:
            raise ZohoError(CODE_LOCKED, f"You cannot create, modify or delete {what} dated before "
                            f"{org.lock_date.isoformat()} as transactions are locked for that period.")

    def _compute(self, org: Org, doc: dict) -> None:
        """Line totals and tax as Zoho computes them from rate × quantity and the tax ids."""
        inclusive = bool(doc.get("is_inclusive_tax"))
        raw: dict[str, Decimal] = {}
        sums = ZERO
        for order, line in enumerate(doc["line_items"]):
            if line.get("item_id") and line["item_id"] not in org.items:
                raise ZohoError(1002, "Item does not exist.", 404)
            if line.get("account_id") and line["account_id"] not in org.accounts:
                raise ZohoError(4, "Invalid value passed for account_id")
            line.setdefault("line_item_id", org.new_id())
            line.setdefault("item_order", order)
            total = money(Decimal(line["rate"]) * Decimal(line["quantity"]))
            line["item_total"] = total
            sums += total
            if not line.get("tax_id"):
                continue
            tax = org.taxes.get(line["tax_id"])
            if tax is None:
                raise ZohoError(4, "Invalid value passed for tax_id")
            members = [org.taxes[m] for m in tax.get("_members", [tax["tax_id"]])]
            whole = sum((m["tax_percentage"] for m in members), ZERO)
            for m in members:
                part = total * m["tax_percentage"] / (100 + whole if inclusive else 100)
                raw[m["tax_id"]] = raw.get(m["tax_id"], ZERO) + (money(part) if self.tax_rounding == "item_level" else part)
        taxes = [{"tax_id": tid, "tax_name": org.taxes[tid]["tax_name"], "tax_amount": money(amount)}
                 for tid, amount in raw.items()]
        tax_total = sum((t["tax_amount"] for t in taxes), ZERO)
        doc["taxes"] = taxes
        doc["sub_total"] = sums - tax_total if inclusive else sums
        doc["total"] = sums if inclusive else sums + tax_total

    def _applied(self, org: Org, invoice_id: str) -> Decimal:
        paid = sum((Decimal(a["amount_applied"]) for p in org.payments.values() for a in p["invoices"]
                    if a["invoice_id"] == invoice_id), ZERO)
        credited = sum((Decimal(a["amount_applied"]) for a in org.applications.values() if a["invoice_id"] == invoice_id),
                       ZERO)
        return paid + credited

    def _refresh_status(self, org: Org, invoice: dict) -> None:
        invoice["balance"] = invoice["total"] - self._applied(org, invoice["invoice_id"])
        if invoice["status"] not in ("draft", "void"):
            invoice["status"] = "paid" if invoice["balance"] == ZERO else (
                "partially_paid" if invoice["balance"] < invoice["total"] else "sent")
        invoice["last_modified_time"] = _now()

    def _list_invoices(self, org, query, body):
        rows = list(org.invoices.values())
        if "invoice_number" in query:
            rows = [i for i in rows if i["invoice_number"] == query["invoice_number"]]
        if "reference_number" in query:
            rows = [i for i in rows if i.get("reference_number") == query["reference_number"]]
        keys = ("invoice_id", "invoice_number", "reference_number", "customer_id", "status", "date", "due_date",
                "total", "balance", "last_modified_time")
        return 200, {"message": "success", "invoices": [{k: i.get(k) for k in keys} for i in rows]}

    def _get_invoice(self, org, query, body, invoice_id):
        invoice = org.invoices.get(invoice_id)
        if invoice is None:
            raise ZohoError(1002, "Invoice does not exist.", 404)
        return 200, {"message": "success", "invoice": _public(invoice)}

    def _check_refs(self, org: Org, body: dict) -> None:
        if body["customer_id"] not in org.contacts:
            raise ZohoError(4, "Invalid value passed for customer_id")
        if body.get("location_id") and body["location_id"] not in org.locations:
            raise ZohoError(4, "Invalid value passed for location_id")
        if body.get("currency_id") and body["currency_id"] not in org.currencies:
            raise ZohoError(4, "Invalid value passed for currency_id")
        currency = org.currencies.get(body.get("currency_id") or "") or {"is_base_currency": True}
        if not currency["is_base_currency"] and not body.get("exchange_rate"):  # the spec: "Required when the
            raise ZohoError(4, "Invalid value passed for exchange_rate")  # currency differs from the base"

    def _create_invoice(self, org, query, body):
        self._check_refs(org, body)
        if body.get("invoice_number") and query.get("ignore_auto_number_generation") != "true":
            raise ZohoError(4, "Invoice number is auto-generated; pass ignore_auto_number_generation=true to set it")
        number = body.get("invoice_number") or f"INV-{len(org.invoices) + 1:06d}"
        if any(i["invoice_number"] == number for i in org.invoices.values()):
            raise ZohoError(1001, f'Invoice "{number}" already exists.')
        self._locked(org, body.get("date"), "invoices")
        invoice = {**body, "invoice_number": number, "invoice_id": org.new_id(), "status": "draft",
                   "date": body.get("date") or date.today().isoformat()}
        self._compute(org, invoice)
        self._refresh_status(org, invoice)
        org.invoices[invoice["invoice_id"]] = invoice
        return 201, {"message": "The invoice has been created.", "invoice": _public(invoice)}

    def _update_invoice(self, org, query, body, invoice_id):
        invoice = org.invoices.get(invoice_id)
        if invoice is None:
            raise ZohoError(1002, "Invoice does not exist.", 404)
        if invoice["status"] == "void":
            raise ZohoError(1024, "Voided invoices cannot be edited.")  # code: sandbox's choice
        self._check_refs(org, body)
        self._locked(org, invoice.get("date"), "invoices")
        self._locked(org, body.get("date"), "invoices")
        number = body.get("invoice_number", invoice["invoice_number"])
        if any(i["invoice_number"] == number and i["invoice_id"] != invoice_id for i in org.invoices.values()):
            raise ZohoError(1001, f'Invoice "{number}" already exists.')
        updated = {**invoice, **body, "invoice_number": number}
        self._compute(org, updated)
        if updated["total"] < self._applied(org, invoice_id):
            raise ZohoError(1040, "The invoice total cannot be less than the payments and credits applied to it.")
        invoice.clear()
        invoice.update(updated)
        self._refresh_status(org, invoice)
        return 200, {"message": "Invoice information has been updated.", "invoice": _public(invoice)}

    def _mark_sent(self, org, query, body, invoice_id):
        invoice = org.invoices.get(invoice_id)
        if invoice is None:
            raise ZohoError(1002, "Invoice does not exist.", 404)
        if invoice["status"] == "draft":
            invoice["status"] = "sent"
            self._refresh_status(org, invoice)
        return 200, {"message": "Invoice status has been changed to Sent."}

    def _void(self, org, query, body, invoice_id):
        invoice = org.invoices.get(invoice_id)
        if invoice is None:
            raise ZohoError(1002, "Invoice does not exist.", 404)
        self._locked(org, invoice.get("date"), "invoices")
        if self._applied(org, invoice_id) > ZERO:
            raise ZohoError(1041, "Invoices with payments or credits applied cannot be voided. "
                            "Delete the payments and credits first.")  # code: sandbox's choice
        if invoice["status"] != "void":
            invoice["_total_before_void"] = invoice["total"]
            invoice["_tax_before_void"] = invoice["total"] - invoice["sub_total"]
            invoice["status"] = "void"
            invoice["balance"] = ZERO
        return 200, {"message": "Invoice status has been changed to Void."}

    def _mark_draft(self, org, query, body, invoice_id):
        """Zoho's "Mark as draft": a voided invoice back to draft (its total as before the void)."""
        invoice = org.invoices.get(invoice_id)
        if invoice is None:
            raise ZohoError(1002, "Invoice does not exist.", 404)
        if invoice["status"] != "void":
            raise ZohoError(1025, "Only voided invoices can be marked as draft.")  # code: sandbox's choice
        self._locked(org, invoice.get("date"), "invoices")
        invoice["status"] = "draft"
        self._compute(org, invoice)
        self._refresh_status(org, invoice)
        return 200, {"message": "Status of invoice changed from void to draft."}

    # -- customer payments --
    def _list_payments(self, org, query, body):
        rows = list(org.payments.values())
        if "reference_number" in query:
            rows = [p for p in rows if p.get("reference_number") == query["reference_number"]]
        return 200, {"message": "success", "customerpayments": rows}

    def _get_payment(self, org, query, body, payment_id):
        payment = org.payments.get(payment_id)
        if payment is None:
            raise ZohoError(1002, "Payment does not exist.", 404)
        return 200, {"message": "success", "payment": payment}

    def _create_payment(self, org, query, body):
        if body["customer_id"] not in org.contacts:
            raise ZohoError(3004, "The Customer field can neither be blank nor incorrect. Please enter a correct Customer")
        if body.get("account_id") and body["account_id"] not in org.accounts:
            raise ZohoError(4, "Invalid value passed for account_id")
        self._locked(org, body["date"], "payments")
        applied = ZERO
        for line in body["invoices"]:
            invoice = org.invoices.get(line["invoice_id"])
            if invoice is None:
                raise ZohoError(1002, "Invoice does not exist.", 404)
            if invoice["status"] in ("draft", "void"):
                raise ZohoError(24017, f"Payments cannot be recorded for invoices in the {invoice['status']} status.")
            if Decimal(line["amount_applied"]) > invoice["balance"]:
                raise ZohoError(24016, "The amount entered is more than the balance due for this invoice")
            applied += Decimal(line["amount_applied"])
        if applied > Decimal(body["amount"]):
            raise ZohoError(4, "Invalid value passed for amount_applied")
        payment = {**body, "payment_id": org.new_id(), "status": "success",
                   "unused_amount": Decimal(body["amount"]) - applied}
        org.payments[payment["payment_id"]] = payment
        for line in body["invoices"]:
            self._refresh_status(org, org.invoices[line["invoice_id"]])
        return 201, {"message": "The payment has been created.", "payment": payment}

    def _delete_payment(self, org, query, body, payment_id):
        payment = org.payments.get(payment_id)
        if payment is None:
            raise ZohoError(1002, "Payment does not exist.", 404)
        self._locked(org, payment["date"], "payments")
        del org.payments[payment_id]
        for line in payment["invoices"]:
            self._refresh_status(org, org.invoices[line["invoice_id"]])
        return 200, {"message": "The payment has been deleted."}

    # -- credit notes --
    def _list_creditnotes(self, org, query, body):
        rows = list(org.creditnotes.values())
        if "reference_number" in query:
            rows = [c for c in rows if c.get("reference_number") == query["reference_number"]]
        return 200, {"message": "success", "creditnotes": [_public(c) for c in rows]}

    def _create_creditnote(self, org, query, body):
        self._check_refs(org, body)
        self._locked(org, body["date"], "credit notes")
        note = {**body, "creditnote_id": org.new_id(), "creditnote_number": f"CN-{len(org.creditnotes) + 1:05d}",
                "status": "open"}
        self._compute(org, note)
        note["balance"] = note["total"]
        org.creditnotes[note["creditnote_id"]] = note
        return 201, {"message": "The credit note has been created.", "creditnote": _public(note)}

    def _credit_invoices(self, org, query, body, creditnote_id):
        note = org.creditnotes.get(creditnote_id)
        if note is None:
            raise ZohoError(1002, "Credit Note does not exist.", 404)
        if note["status"] != "open":
            raise ZohoError(12003, f"Credit notes that are in {note['status']} status cannot be applied to invoices")
        done = []
        for line in body["invoices"]:
            invoice = org.invoices.get(line["invoice_id"])
            if invoice is None:
                raise ZohoError(1002, "Invoice does not exist.", 404)
            if invoice["status"] == "draft":
                raise ZohoError(12005, "Credits cannot be applied to invoices in the draft status")
            if invoice["status"] == "void":
                raise ZohoError(12007, "Credits cannot be applied to invoices in the void status")
            amount = Decimal(line["amount_applied"])
            if amount > invoice["balance"] or amount > note["balance"]:
                raise ZohoError(24016, "The amount entered is more than the balance due for this invoice")
            application = {"creditnote_invoice_id": org.new_id(), "creditnote_id": creditnote_id,
                           "invoice_id": invoice["invoice_id"], "invoice_number": invoice["invoice_number"],
                           "amount_applied": amount}
            org.applications[application["creditnote_invoice_id"]] = application
            note["balance"] -= amount
            note["status"] = "closed" if note["balance"] == ZERO else "open"
            self._refresh_status(org, invoice)
            done.append({"invoice_id": invoice["invoice_id"], "amount_applied": amount})
        return 200, {"message": "Credits have been applied to the invoice(s).", "apply_to_invoices": {"invoices": done}}

    def _note(self, org, creditnote_id):
        note = org.creditnotes.get(creditnote_id)
        if note is None:
            raise ZohoError(1002, "Credit Note does not exist.", 404)
        return note

    def _list_note_refunds(self, org, query, body, creditnote_id):
        note = self._note(org, creditnote_id)
        return 200, {"message": "success", "creditnote_refunds": list(note.get("_refunds", {}).values())}

    def _refund_note(self, org, query, body, creditnote_id):
        """"Refund credit note": money paid back uses up the note's balance (closed at 0.00)."""
        note = self._note(org, creditnote_id)
        if note["status"] not in ("open",):
            raise ZohoError(12003, f"Credit notes that are in {note['status']} status cannot be refunded")
        self._locked(org, body["date"], "refunds")
        amount = Decimal(str(body["amount"]))
        if amount <= ZERO or amount > note["balance"]:
            raise ZohoError(24016, "The amount entered is more than the balance of this credit note")
        refund = {"creditnote_refund_id": org.new_id(), "creditnote_id": creditnote_id, "date": body["date"],
                  "refund_mode": body.get("refund_mode"), "reference_number": body.get("reference_number"),
                  "amount": amount, "from_account_id": body.get("from_account_id"),
                  "creditnote_number": note["creditnote_number"]}
        note.setdefault("_refunds", {})[refund["creditnote_refund_id"]] = refund
        note["balance"] -= amount
        note["status"] = "closed" if note["balance"] == ZERO else "open"
        return 201, {"message": "The credit note amount is refunded successfully.", "creditnote_refund": refund}

    def _delete_note_refund(self, org, query, body, creditnote_id, refund_id):
        note = self._note(org, creditnote_id)
        refund = note.get("_refunds", {}).pop(refund_id, None)
        if refund is None:
            raise ZohoError(1002, "Refund does not exist.", 404)
        note["balance"] += refund["amount"]
        note["status"] = "open"
        return 200, {"message": "The refund has been deleted."}

    def _list_credited(self, org, query, body, creditnote_id):
        rows = [a for a in org.applications.values() if a["creditnote_id"] == creditnote_id]
        return 200, {"message": "success", "invoices_credited": rows}

    def _delete_credited(self, org, query, body, creditnote_id, application_id):
        application = org.applications.get(application_id)
        if application is None or application["creditnote_id"] != creditnote_id:
            raise ZohoError(1002, "Credit applied to the invoice does not exist.", 404)
        del org.applications[application_id]
        note = org.creditnotes[creditnote_id]
        note["balance"] += application["amount_applied"]
        note["status"] = "open"
        self._refresh_status(org, org.invoices[application["invoice_id"]])
        return 200, {"message": "Credits applied to an invoice have been deleted."}

    def credit_applied(self, invoice_id: str) -> Decimal:
        with self._lock:
            return sum((a["amount_applied"] for org in self.orgs.values() for a in org.applications.values()
                        if a["invoice_id"] == invoice_id), ZERO)


def _public(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if not k.startswith("_")}
