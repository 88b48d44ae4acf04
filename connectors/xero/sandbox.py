"""A local Xero (Accounting API 2.0 + identity) for the demo and the tests.

Built from Xero's official OpenAPI files (``xero_accounting.yaml`` 16.1.0: paths, field names, the
``Error``/``Element``/``ValidationError`` shape; ``xero-identity.yaml``: GET /connections) and Xero's
documentation for what the YAML does not model: OAuth2 token endpoint with client_secret_basic, 30-minute
access tokens and single-use rotating refresh tokens; the ``xero-tenant-id`` header; per-tenant limits of
60 calls/minute, 5,000/day and 5 concurrent, answered with 429 + ``Retry-After`` + ``X-Rate-Limit-Problem``;
``unitdp=4`` (otherwise unit amounts are rounded to 2 dp); tax rounded per line, an explicit line
``TaxAmount`` honoured; ``summarizeErrors=false`` per-item errors; ``Idempotency-Key`` replay; documents
with payments or credit notes allocated cannot be edited or voided; settable period / end-of-year lock
dates refused with Xero's lock-date messages. Books are kept in memory (``booked_invoices()``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client, refresh_grant

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
API = "/api.xro/2.0"


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _ms_date(day: date | None = None) -> str:
    moment = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) if day else datetime.now(timezone.utc)
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json", headers=headers)


class XeroError(Exception):
    """A ValidationException (400) with one message per problem, shaped exactly as Xero answers."""

    def __init__(self, *messages: str, element: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)
        self.element = element or {}

    def response(self) -> Response:
        element = {**self.element, "ValidationErrors": [{"Message": m} for m in self.messages]}
        return _json({"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred",
                      "Elements": [element]}, status=400)


def _problem(status: int, title: str, detail: str) -> Response:
    return _json({"Type": None, "Title": title, "Status": status, "Detail": detail,
                  "Instance": str(uuid.uuid4()), "Extensions": {}}, status=status)


def _not_found() -> Response:
    return Response("The resource you're looking for cannot be found", status_code=404, media_type="text/plain")


@dataclass
class Organisation:
    tenant_id: str
    name: str
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # Code -> Account
    tax_rates: dict[str, dict[str, Any]] = field(default_factory=dict)  # TaxType -> TaxRate
    tracking: dict[str, dict[str, Any]] = field(default_factory=dict)  # Name -> TrackingCategory
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # Code -> Item
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # Idempotency-Key -> answer
    active: int = 0
    period_lock_date: date | None = None
    end_of_year_lock_date: date | None = None


class Sandbox:
    """Xero as a local server. ``faults`` injects 500s, 429s, timeouts and slow answers on writes."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 1800.0, *, minute_limit: int = 60,
                 day_limit: int = 5000, concurrent_limit: int = 5, recompute_tax: bool = False) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)  # Xero: access tokens live 30 minutes
        self.orgs: dict[str, Organisation] = {}
        self.minute_limit, self.day_limit, self.concurrent_limit = minute_limit, day_limit, concurrent_limit
        self.minute_window = WindowLimit(minute_limit, 60.0)
        self.day_window = WindowLimit(day_limit, 86400.0)
        self.concurrency_breaches = 0  # requests refused for arriving over the concurrent limit
        # Xero computes each line's tax itself when no TaxAmount is given; ``recompute_tax`` makes it
        # ignore the given TaxAmount too (a platform that recomputes tax its own way).
        self.recompute_tax = recompute_tax
        self.requests: list[dict[str, Any]] = []  # every API request: method, path, query, headers, body
        self.connections_requests = 0
        self._lock = threading.RLock()
        p = API
        self.app = Starlette(routes=[
            Route("/connect/token", self._token, methods=["POST"]),
            Route("/connections", self._connections, methods=["GET"]),
            Route(p + "/Invoices", self._invoices, methods=["GET", "PUT", "POST"]),
            Route(p + "/Invoices/{id}", self._invoice, methods=["GET", "POST"]),
            Route(p + "/Payments", self._payments, methods=["GET", "PUT"]),
            Route(p + "/Payments/{id}", self._payment, methods=["GET", "POST"]),
            Route(p + "/CreditNotes", self._credit_notes, methods=["GET", "PUT"]),
            Route(p + "/CreditNotes/{id}", self._credit_note, methods=["GET", "POST"]),
            Route(p + "/CreditNotes/{id}/Allocations", self._allocate, methods=["PUT"]),
            Route(p + "/CreditNotes/{id}/Allocations/{allocation}", self._deallocate, methods=["DELETE"]),
            Route(p + "/Contacts", self._contacts, methods=["GET", "PUT"]),
            Route(p + "/Contacts/{id}", self._contact, methods=["GET", "POST"]),
            Route(p + "/Items", self._items, methods=["GET", "PUT", "POST"]),
            Route(p + "/{collection:str}", self._settings_read, methods=["GET"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret = secrets.token_hex(16).upper(), secrets.token_urlsafe(36)
        refresh = self.issuer.register_client(client_id, client_secret)
        with self._lock:
            if not self.orgs:
                self._seed_org(str(uuid.uuid4()), "Ledgerwire Demo Auto Electric")
        # No tenant id: the connector discovers it once through GET /connections, as a real app does.
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh}

    def _seed_org(self, tenant_id: str, name: str) -> Organisation:
        org = Organisation(tenant_id=tenant_id, name=name)
        for code, acct_name, kind, pay in (("200", "Sales", "REVENUE", False), ("260", "Other Revenue", "REVENUE", False),
                                           ("270", "Interest Income", "REVENUE", False),
                                           ("835", "Core Deposits Held", "CURRLIAB", False),
                                           ("090", "Business Bank Account", "BANK", True),
                                           ("091", "Card Clearing", "BANK", True),
                                           ("610", "Accounts Receivable", "CURRENT", False)):
            org.accounts[code] = {"AccountID": str(uuid.uuid4()), "Code": code, "Name": acct_name, "Type": kind,
                                  "Status": "ACTIVE", "EnablePaymentsToAccount": pay,
                                  **({"BankAccountType": "BANK"} if kind == "BANK" else {})}
        for tax_type, rate_name, components in (
                ("NONE", "Tax Exempt", [("Exempt", "0")]), ("TAX001", "State sales tax 6.25%", [("STATE", "6.25")]),
                ("TAX002", "County tax 1%", [("COUNTY", "1")]),
                ("TAX003", "State + County 7.25%", [("STATE", "6.25"), ("COUNTY", "1")]),
                ("TAX004", "GST 5%", [("GST", "5")]), ("TAX005", "PST 7%", [("PST", "7")]),
                ("TAX006", "GST + PST 12%", [("GST", "5"), ("PST", "7")])):
            total = sum((Decimal(r) for _, r in components), Decimal("0"))
            org.tax_rates[tax_type] = {"Name": rate_name, "TaxType": tax_type, "Status": "ACTIVE",
                                       "TaxComponents": [{"Name": n, "Rate": Decimal(r), "IsCompound": False,
                                                          "IsNonRecoverable": False} for n, r in components],
                                       "CanApplyToRevenue": True, "DisplayTaxRate": total, "EffectiveRate": total}
        category_id = str(uuid.uuid4())
        org.tracking["Location"] = {"TrackingCategoryID": category_id, "Name": "Location", "Status": "ACTIVE",
                                    "Options": [{"TrackingOptionID": str(uuid.uuid4()), "Name": option,
                                                 "Status": "ACTIVE"} for option in ("MAIN", "NORTH")]}
        self.orgs[tenant_id] = org
        return org

    def org(self) -> Organisation:
        return next(iter(self.orgs.values()))

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": name, "platform": "xero", "base_url": f"{base_url}{API}",
            "settings": {"token_url": f"{base_url}/connect/token", "connections_url": f"{base_url}/connections",
                         "requests_per_minute": self.minute_limit, "requests_per_day": self.day_limit,
                         "concurrency": self.concurrent_limit},
            "mapping": {
                "income_accounts": {"part": "200", "labour": "200", "sublet": "260", "fee": "260", "discount": "200",
                                    "core_charge": "835", "core_return": "835"},
                "core_account": "835",
                "tax_codes": {"STATE": "TAX001", "COUNTY": "TAX002", "COUNTY+STATE": "TAX003",
                              "GST": "TAX004", "PST": "TAX005", "GST+PST": "TAX006"},
                "payment_accounts": {"card": "091", "cash": "090", "check": "090", "eft": "090"},
                "location_tracking": {"MAIN": "Location:MAIN", "NORTH": "Location:NORTH"},
            },
        }
        return config

    def rate_limit_breaches(self) -> int:
        """Requests over the per-minute, the daily or the concurrent limit (see the Sandbox protocol)."""
        return self.minute_window.breaches + self.day_window.breaches + self.concurrency_breaches

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for org in self.orgs.values():
                for inv in org.invoices.values():
                    if inv["Type"] != "ACCREC":
                        continue
                    live = [p for p in org.payments.values()
                            if p["Status"] != "DELETED" and p.get("Invoice", {}).get("InvoiceID") == inv["InvoiceID"]]
                    out.append(BookedInvoice(
                        number=inv.get("InvoiceNumber", ""), external_id=inv["InvoiceID"],
                        voided=inv["Status"] in ("VOIDED", "DELETED"), total=inv["Total"], tax_total=inv["TotalTax"],
                        line_count=len(inv.get("LineItems") or []),
                        payments_applied=sum((p["Amount"] for p in live), ZERO), payment_count=len(live)))
            return out

    def set_lock_date(self, period: date | None = None, end_of_year: date | None = None) -> None:
        with self._lock:
            for org in self.orgs.values():
                org.period_lock_date, org.end_of_year_lock_date = period, end_of_year

    # -- OAuth2 (identity.xero.com/connect/token) and the identity API --
    async def _token(self, request: Request) -> Response:
        return await refresh_grant(self.issuer, request, lambda _: {"token_type": "Bearer", "scope": (
            "offline_access accounting.transactions accounting.contacts accounting.settings.read")}, basic_only=400)

    async def _connections(self, request: Request) -> Response:
        if not self.issuer.valid(request.headers.get("authorization")):
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        self.connections_requests += 1
        with self._lock:
            return _json([{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, org.tenant_id)), "tenantId": org.tenant_id,
                           "tenantType": "ORGANISATION", "tenantName": org.name,
                           "createdDateUtc": "2026-01-05T10:00:00.0000000", "updatedDateUtc": "2026-01-05T10:00:00.0000000"}
                          for org in self.orgs.values()])

    # -- plumbing: auth, tenant, limits, faults, idempotency --
    async def _guard(self, request: Request) -> Organisation | Response:
        if not self.issuer.valid(request.headers.get("authorization")):
            return _problem(401, "Unauthorized", "TokenExpired: token expired or invalid")
        org = self.orgs.get(request.headers.get("xero-tenant-id", ""))
        if org is None:
            return _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        if org.active >= self.concurrent_limit:
            self.concurrency_breaches += 1
            return self._too_many("concurrent", 1)
        wait = self.minute_window.hit(org.tenant_id)
        if wait is not None:
            return self._too_many("minute", wait)
        wait = self.day_window.hit(org.tenant_id)
        if wait is not None:
            return self._too_many("day", wait)
        if self.faults.slow_s:
            await asyncio.sleep(self.faults.slow_s)
        return org

    def _too_many(self, problem: str, wait: float) -> Response:
        return Response("", status_code=429, headers={"Retry-After": str(max(1, int(wait + 0.999))),
                                                      "X-Rate-Limit-Problem": problem})

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        body = jsonmoney.loads(raw) if raw else None
        with self._lock:
            self.requests.append({"method": request.method, "path": request.url.path[len(API):],
                                  "query": dict(request.query_params),
                                  "headers": {k: v for k, v in request.headers.items()
                                              if k in ("xero-tenant-id", "idempotency-key", "content-type")},
                                  "body": body})
        return body

    async def _write(self, request: Request, apply) -> Response:
        """A write: guard, record, replay an Idempotency-Key, faults, apply under the books' lock."""
        org = await self._guard(request)
        body = await self._record(request)
        if isinstance(org, Response):
            return org
        key = request.headers.get("idempotency-key")
        if key and key in org.replies:
            status, payload = org.replies[key]
            return Response(payload, status_code=status, media_type="application/json")
        decided = self.faults.draw()
        if decided == "500":
            return _json({"ErrorNumber": 500, "Type": "UnknownErrorException",
                          "Message": "An error occurred in Xero. Check the API Status page "
                                     "http://status.developer.xero.com for current service status."}, status=500)
        if decided == "429":
            return self._too_many("minute", 1)
        org.active += 1
        try:
            with self._lock:
                try:
                    response = _json(apply(org, body or {}, request))
                except XeroError as exc:
                    response = exc.response()
                except _NotFound:
                    response = _not_found()
            if key and response.status_code < 500:
                org.replies[key] = (response.status_code, response.body)
            if decided == "timeout":
                await self.faults.hang()  # applied, but the answer never arrives in time
            return response
        finally:
            org.active -= 1

    async def _read(self, request: Request, read) -> Response:
        org = await self._guard(request)
        await self._record(request)
        if isinstance(org, Response):
            return org
        org.active += 1
        try:
            with self._lock:
                try:
                    return _json(read(org, request))
                except _NotFound:
                    return _not_found()
                except XeroError as exc:
                    return exc.response()
        finally:
            org.active -= 1

    # -- routes --
    async def _invoices(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Invoices": [
                self._public(i) for i in _filter(org.invoices.values(), r.query_params)
                if _in_list(i.get("InvoiceNumber"), r.query_params.get("InvoiceNumbers"))
                and _in_list(i["InvoiceID"], r.query_params.get("IDs"))]})
        return await self._write(request, lambda org, body, r: self._put_documents(
            org, body, r, "Invoices", self._save_invoice))

    async def _invoice(self, request: Request) -> Response:
        invoice_id = request.path_params["id"]
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Invoices": [self._public(_get(org.invoices, invoice_id))]})

        def apply(org, body, r):
            items = body.get("Invoices") if "Invoices" in body else [body]
            if len(items or []) != 1:
                raise XeroError("A single invoice is expected")
            _get(org.invoices, invoice_id)
            return {"Invoices": [self._public(self._save_invoice(org, {**items[0], "InvoiceID": invoice_id}, r))]}
        return await self._write(request, apply)

    async def _payments(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Payments": [
                p for p in _filter(org.payments.values(), r.query_params)]})
        return await self._write(request, lambda org, body, r: self._put_documents(
            org, body, r, "Payments", self._save_payment))

    async def _payment(self, request: Request) -> Response:
        payment_id = request.path_params["id"]
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Payments": [_get(org.payments, payment_id)]})
        return await self._write(request, lambda org, body, r: {"Payments": [self._delete_payment(org, payment_id, body)]})

    async def _credit_notes(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"CreditNotes": [
                self._public(c) for c in _filter(org.credit_notes.values(), r.query_params)]})
        return await self._write(request, lambda org, body, r: self._put_documents(
            org, body, r, "CreditNotes", self._save_credit_note))

    async def _credit_note(self, request: Request) -> Response:
        credit_id = request.path_params["id"]
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"CreditNotes": [self._public(_get(org.credit_notes, credit_id))]})

        def apply(org, body, r):
            items = body.get("CreditNotes") if "CreditNotes" in body else [body]
            return {"CreditNotes": [self._public(self._save_credit_note(org, {**items[0], "CreditNoteID": credit_id}, r))]}
        return await self._write(request, apply)

    async def _allocate(self, request: Request) -> Response:
        credit_id = request.path_params["id"]
        return await self._write(request, lambda org, body, r: {"Allocations": [
            self._save_allocation(org, credit_id, a) for a in body.get("Allocations") or []]})

    async def _deallocate(self, request: Request) -> Response:
        credit_id, allocation_id = request.path_params["id"], request.path_params["allocation"]

        def apply(org, body, r):
            credit = _get(org.credit_notes, credit_id)
            allocation = next((a for a in credit["Allocations"] if a["AllocationID"] == allocation_id), None)
            if allocation is None:
                raise _NotFound()
            invoice = org.invoices[allocation["Invoice"]["InvoiceID"]]
            self._check_lock(org, _parse_date(allocation["Date"]))
            credit["Allocations"].remove(allocation)
            self._restate(org, invoice)
            self._restate_credit(credit)
            return {"Allocations": [{**allocation, "IsDeleted": True}]}
        return await self._write(request, apply)

    async def _contacts(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Contacts": _page(
                _filter(org.contacts.values(), r.query_params), r.query_params)})
        return await self._write(request, lambda org, body, r: self._put_documents(
            org, body, r, "Contacts", self._save_contact))

    async def _contact(self, request: Request) -> Response:
        contact_id = request.path_params["id"]
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Contacts": [_get(org.contacts, contact_id)]})

        def apply(org, body, r):
            items = body.get("Contacts") if "Contacts" in body else [body]
            _get(org.contacts, contact_id)
            return {"Contacts": [self._save_contact(org, {**items[0], "ContactID": contact_id}, r)]}
        return await self._write(request, apply)

    async def _items(self, request: Request) -> Response:
        if request.method == "GET":
            return await self._read(request, lambda org, r: {"Items": _filter(org.items.values(), r.query_params)})
        return await self._write(request, lambda org, body, r: self._put_documents(
            org, body, r, "Items", self._save_item))

    async def _settings_read(self, request: Request) -> Response:
        collection = request.path_params["collection"]
        tables = {"Accounts": lambda o: o.accounts, "TaxRates": lambda o: o.tax_rates,
                  "TrackingCategories": lambda o: o.tracking, "Items": lambda o: o.items}
        if collection == "Organisation":
            return await self._read(request, lambda org, r: {"Organisations": [
                {"OrganisationID": org.tenant_id, "Name": org.name, "BaseCurrency": "USD",
                 # Shown if set, in Xero's JSON date form ("/Date(1546214400000+0000)/" in the spec's example).
                 **({"PeriodLockDate": _ms_date(org.period_lock_date)} if org.period_lock_date else {}),
                 **({"EndOfYearLockDate": _ms_date(org.end_of_year_lock_date)} if org.end_of_year_lock_date else {})}]})
        if collection not in tables:
            return _not_found()
        return await self._read(request, lambda org, r: {collection: list(_filter(tables[collection](org).values(),
                                                                                   r.query_params))})

    # -- the books --
    def _put_documents(self, org: Organisation, body: dict, request: Request, collection: str, save) -> dict:
        """PUT/POST of a collection. summarizeErrors=false: every item answers on its own (200, HasErrors on
        the failed ones); otherwise nothing is saved when any item fails (400 ValidationException)."""
        items = body.get(collection)
        if not isinstance(items, list) or not items:
            raise XeroError(f"No {collection} were provided")
        summarize = request.query_params.get("summarizeErrors", "true").lower() != "false"
        out, errors = [], []
        for item in items:
            try:
                if summarize:
                    save(org, item, request, dry_run=True)
                else:
                    out.append(self._public(save(org, item, request)))
            except XeroError as exc:
                if summarize:
                    errors.append((item, exc))
                else:
                    out.append({**item, "HasErrors": True, "StatusAttributeString": "ERROR",
                                "ValidationErrors": [{"Message": m} for m in exc.messages]})
        if errors:
            raise XeroError(*[m for _, exc in errors for m in exc.messages], element=dict(errors[0][0]))
        if summarize:
            out = [self._public(save(org, item, request)) for item in items]
        return {collection: out}

    def _public(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if not k.startswith("_")}

    def _check_lock(self, org: Organisation, day: date | None) -> None:
        if day is None:
            return
        messages = []
        if org.period_lock_date and day <= org.period_lock_date:
            messages.append("The document date cannot be before the period lock date, currently set at "
                            f"{org.period_lock_date.strftime('%d-%b-%Y')}")
        if org.end_of_year_lock_date and day <= org.end_of_year_lock_date:
            messages.append("The document date cannot be before the end of year lock date, currently set at "
                            f"{org.end_of_year_lock_date.strftime('%d-%b-%Y')}")
        if messages:
            raise XeroError(*messages)

    def _lines(self, org: Organisation, body: dict, request: Request, kind: str) -> tuple[list, Decimal, Decimal]:
        unitdp = request.query_params.get("unitdp") == "4"
        inclusive = body.get("LineAmountTypes", "Exclusive") == "Inclusive"
        if body.get("LineAmountTypes", "Exclusive") not in ("Exclusive", "Inclusive", "NoTax"):
            raise XeroError(f"'{body.get('LineAmountTypes')}' is not a valid LineAmountTypes value")
        items = body.get("LineItems")
        if not items:
            raise XeroError(f"A {kind} must have at least one line item")
        lines, subtotal, tax_total = [], ZERO, ZERO
        for raw in items:
            line = dict(raw)
            if not line.get("Description") and not line.get("ItemCode"):
                raise XeroError("Description is mandatory for each line item")
            if line.get("ItemCode") and line["ItemCode"] not in org.items:
                raise XeroError(f"Item code '{line['ItemCode']}' is not valid")
            if line.get("ItemCode") and not line.get("AccountCode"):  # the item's sales account by default
                line["AccountCode"] = (org.items[line["ItemCode"]].get("SalesDetails") or {}).get("AccountCode")
            code = line.get("AccountCode")
            if code is None or code not in org.accounts or org.accounts[code]["Status"] != "ACTIVE" \
                    or org.accounts[code]["Type"] == "BANK":
                raise XeroError(f"Account code '{code}' is not a valid code for this document.")
            quantity = Decimal(str(line.get("Quantity", 1)))
            unit = Decimal(str(line.get("UnitAmount", 0)))
            if not unitdp:
                unit = _money(unit)  # without unitdp=4 Xero keeps 2 decimal places of a unit amount
            line["UnitAmount"] = unit
            amount = _money(quantity * unit)
            if "LineAmount" in line and Decimal(str(line["LineAmount"])) != amount:
                raise XeroError(f"The line total {line['LineAmount']} does not match the expected line total {amount}")
            line["LineAmount"] = amount
            tax_type = line.get("TaxType") or "NONE"
            rate = org.tax_rates.get(tax_type)
            if rate is None or rate["Status"] != "ACTIVE":
                raise XeroError(f"The TaxType code '{tax_type}' does not exist or cannot be used for this type of "
                                "transaction.")
            percent = rate["EffectiveRate"] / 100
            computed = _money(amount * percent / (1 + percent)) if inclusive else _money(amount * percent)
            if body.get("LineAmountTypes") == "NoTax":
                computed = ZERO
            given = line.get("TaxAmount")
            tax = Decimal(str(given)) if given is not None and not self.recompute_tax else computed
            line["TaxAmount"] = tax
            line["TaxType"] = tax_type
            for track in line.get("Tracking") or []:
                category = org.tracking.get(track.get("Name", ""))
                if category is None:
                    raise XeroError(f"Tracking category '{track.get('Name')}' does not exist")
                if track.get("Option") not in {o["Name"] for o in category["Options"] if o["Status"] == "ACTIVE"}:
                    raise XeroError(f"The TrackingOption with Name '{track.get('Option')}' could not be found")
            line.setdefault("LineItemID", str(uuid.uuid4()))
            lines.append(line)
            subtotal += amount - (tax if inclusive else ZERO)
            tax_total += tax
        return lines, subtotal, tax_total

    def _contact_ref(self, org: Organisation, body: dict) -> dict:
        contact = body.get("Contact") or {}
        found = org.contacts.get(str(contact.get("ContactID"))) if contact.get("ContactID") else None
        if found is None and contact.get("Name"):
            found = next((c for c in org.contacts.values() if c["Name"] == contact["Name"]), None)
        if found is None:
            raise XeroError("A Contact must be specified for this type of transaction" if not contact
                            else "The contact specified could not be found")
        return {"ContactID": found["ContactID"], "Name": found["Name"], "ContactNumber": found.get("ContactNumber")}

    def _save_invoice(self, org: Organisation, body: dict, request: Request, dry_run: bool = False) -> dict:
        current = org.invoices.get(str(body.get("InvoiceID"))) if body.get("InvoiceID") else None
        if current is not None:
            if current["Status"] in ("VOIDED", "DELETED"):
                raise XeroError("Invoice not of valid status for modification")
            self._check_lock(org, current["_date"])
            allocated = self._allocated(org, current["InvoiceID"])
            if body.get("Status") == "VOIDED":
                if allocated:
                    raise XeroError("This document cannot be voided as it has a payment or credit note allocated to it.")
                if dry_run:
                    return current
                current.update({"Status": "VOIDED", "AmountDue": ZERO, "UpdatedDateUTC": _ms_date()})
                return current
            if allocated and any(k not in ("InvoiceID", "Reference", "DueDate") for k in body):
                raise XeroError("This document cannot be edited as it has a payment or credit note allocated to it.")
            merged = {**current, **{k: v for k, v in body.items() if not k.startswith("_")}}
        else:
            merged = dict(body)
        if merged.get("Type") not in ("ACCREC", "ACCPAY"):
            raise XeroError("Invoice Type must be ACCREC or ACCPAY")
        contact = self._contact_ref(org, merged)
        day = _parse_date(merged.get("Date")) or date.today()
        self._check_lock(org, day)
        if merged.get("Status", "DRAFT") not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
            raise XeroError(f"Invoice Status '{merged.get('Status')}' is not valid for a new or edited invoice")
        if not merged.get("DueDate") and merged["Type"] == "ACCREC":
            terms = (org.contacts[contact["ContactID"]].get("PaymentTerms") or {}).get("Sales") or {}
            if terms.get("Type") == "DAYSAFTERBILLDATE":  # Xero applies the contact's sales terms
                merged["DueDate"] = (day + timedelta(days=int(terms["Day"]))).isoformat()
        if merged.get("Status") == "AUTHORISED" and not merged.get("DueDate"):
            raise XeroError("Due Date is mandatory for an approved invoice")
        number = merged.get("InvoiceNumber")
        if number and merged["Type"] == "ACCREC" and any(
                i.get("InvoiceNumber") == number and i["InvoiceID"] != merged.get("InvoiceID")
                and i["Status"] not in ("DELETED", "VOIDED") for i in org.invoices.values()):
            raise XeroError("Invoice # must be unique.")
        lines, subtotal, tax = self._lines(org, merged, request, "invoice")
        total = subtotal + tax
        if "Total" in body and Decimal(str(body["Total"])) != total:
            raise XeroError(f"The total {body['Total']} does not match the sum of the line items {total}")
        if dry_run:
            return merged
        invoice_id = merged.get("InvoiceID") or str(uuid.uuid4())
        merged.update({"InvoiceID": invoice_id, "Contact": contact, "LineItems": lines, "SubTotal": subtotal,
                       "TotalTax": tax, "Total": total, "Status": merged.get("Status", "DRAFT"), "_date": day,
                       "DateString": day.isoformat(), "Date": _ms_date(day), "UpdatedDateUTC": _ms_date(),
                       "CurrencyCode": merged.get("CurrencyCode", "USD")})
        org.invoices[invoice_id] = merged
        self._restate(org, merged)
        return merged

    def _allocated(self, org: Organisation, invoice_id: str) -> bool:
        return any(p["Status"] != "DELETED" and p.get("Invoice", {}).get("InvoiceID") == invoice_id for p in org.payments.values()) \
            or any(a["Invoice"]["InvoiceID"] == invoice_id for c in org.credit_notes.values() for a in c["Allocations"])

    def _restate(self, org: Organisation, invoice: dict) -> None:
        """AmountPaid/AmountCredited/AmountDue, the Payments and CreditNotes lists, PAID when nothing is due."""
        payments = [p for p in org.payments.values()
                    if p["Status"] != "DELETED" and p.get("Invoice", {}).get("InvoiceID") == invoice["InvoiceID"]]
        credits = [(c, a) for c in org.credit_notes.values() for a in c["Allocations"]
                   if a["Invoice"]["InvoiceID"] == invoice["InvoiceID"]]
        invoice["AmountPaid"] = sum((p["Amount"] for p in payments), ZERO)
        invoice["AmountCredited"] = sum((a["Amount"] for _, a in credits), ZERO)
        invoice["Payments"] = [{"PaymentID": p["PaymentID"], "Amount": p["Amount"], "Reference": p.get("Reference"),
                                "Date": p["Date"]} for p in payments]
        invoice["CreditNotes"] = [{"CreditNoteID": c["CreditNoteID"], "CreditNoteNumber": c.get("CreditNoteNumber"),
                                   "AppliedAmount": a["Amount"], "Total": c["Total"]} for c, a in credits]
        if invoice["Status"] in ("VOIDED", "DELETED"):
            return
        invoice["AmountDue"] = invoice["Total"] - invoice["AmountPaid"] - invoice["AmountCredited"]
        if invoice["Status"] in ("AUTHORISED", "PAID"):
            invoice["Status"] = "PAID" if invoice["AmountDue"] == 0 and invoice["Total"] > 0 else "AUTHORISED"

    def _save_payment(self, org: Organisation, body: dict, request: Request, dry_run: bool = False) -> dict:
        """A payment on an invoice (ACCRECPAYMENT), or on an ACCRECCREDIT credit note: money paid back to the
        customer (ARCREDITPAYMENT), which uses up the credit note's RemainingCredit like an allocation does."""
        if body.get("CreditNote"):
            document = _get(org.credit_notes, str(body["CreditNote"].get("CreditNoteID")))
            outstanding, kind = document["RemainingCredit"], "ARCREDITPAYMENT"
            link = {"CreditNote": {"CreditNoteID": document["CreditNoteID"],
                                   "CreditNoteNumber": document.get("CreditNoteNumber")}}
        else:
            ref = body.get("Invoice") or {}
            document = org.invoices.get(str(ref.get("InvoiceID"))) if ref.get("InvoiceID") else next(
                (i for i in org.invoices.values() if i.get("InvoiceNumber") == ref.get("InvoiceNumber")), None)
            if document is None:
                raise XeroError("Invoice could not be found")
            outstanding, kind = document.get("AmountDue"), "ACCRECPAYMENT"
            link = {"Invoice": {"InvoiceID": document["InvoiceID"], "InvoiceNumber": document.get("InvoiceNumber")}}
        if document["Status"] != "AUTHORISED":
            raise XeroError("Payment can only be made against Authorised documents")
        code = (body.get("Account") or {}).get("Code")
        account = org.accounts.get(str(code))
        if account is None or not (account["Type"] == "BANK" or account.get("EnablePaymentsToAccount")):
            raise XeroError(f"Account code '{code}' is not a valid code for this document." if account is None
                            else "Account type is invalid for making a payment to/from")
        amount = Decimal(str(body.get("Amount", 0)))
        if amount <= 0:
            raise XeroError("Payment amount must be greater than zero")
        if amount > outstanding:
            raise XeroError("Payment amount exceeds the amount outstanding on this document")
        day = _parse_date(body.get("Date"))
        if day is None:
            raise XeroError("Date is mandatory for a payment")
        self._check_lock(org, day)
        if dry_run:
            return body
        payment = {"PaymentID": str(uuid.uuid4()), "Date": _ms_date(day), "_date": day, "Amount": amount,
                   "Reference": body.get("Reference", ""), "Status": "AUTHORISED", "PaymentType": kind,
                   "Account": {"AccountID": account["AccountID"], "Code": account["Code"]}, **link,
                   "UpdatedDateUTC": _ms_date()}
        org.payments[payment["PaymentID"]] = payment
        if "CreditNote" in link:
            document.setdefault("_refunds", []).append(payment)
            self._restate_credit(document)
        else:
            self._restate(org, document)
        return self._public(payment)

    def _delete_payment(self, org: Organisation, payment_id: str, body: dict) -> dict:
        payment = _get(org.payments, payment_id)
        if body.get("Status") != "DELETED":
            raise XeroError("Status must be DELETED to remove a payment")
        if payment["Status"] == "DELETED":
            raise XeroError("Payment has already been deleted")
        self._check_lock(org, payment["_date"])
        payment["Status"] = "DELETED"
        payment["UpdatedDateUTC"] = _ms_date()
        if "CreditNote" in payment:  # money paid back on a credit note: its credit is open again
            self._restate_credit(org.credit_notes[payment["CreditNote"]["CreditNoteID"]])
            return self._public(payment)
        self._restate(org, org.invoices[payment["Invoice"]["InvoiceID"]])
        return self._public(payment)

    def _save_credit_note(self, org: Organisation, body: dict, request: Request, dry_run: bool = False) -> dict:
        current = org.credit_notes.get(str(body.get("CreditNoteID"))) if body.get("CreditNoteID") else None
        if current is not None:
            self._check_lock(org, current["_date"])
            if body.get("Status") == "VOIDED":
                if current["Allocations"] or any(p["Status"] != "DELETED" for p in current.get("_refunds", [])):
                    raise XeroError("This document cannot be voided as it has a payment or credit note allocated to it.")
                if not dry_run:
                    current.update({"Status": "VOIDED", "RemainingCredit": ZERO, "UpdatedDateUTC": _ms_date()})
                return current
            raise XeroError("Only voiding an existing credit note is supported by this sandbox")
        if body.get("Type") not in ("ACCRECCREDIT", "ACCPAYCREDIT"):
            raise XeroError("CreditNote Type must be ACCRECCREDIT or ACCPAYCREDIT")
        contact = self._contact_ref(org, body)
        day = _parse_date(body.get("Date")) or date.today()
        self._check_lock(org, day)
        number = body.get("CreditNoteNumber")
        if number and any(c.get("CreditNoteNumber") == number and c["Status"] not in ("DELETED", "VOIDED")
                          for c in org.credit_notes.values()):
            raise XeroError("Credit Note # must be unique.")
        lines, subtotal, tax = self._lines(org, body, request, "credit note")
        if dry_run:
            return body
        credit = {**body, "CreditNoteID": str(uuid.uuid4()), "Contact": contact, "LineItems": lines,
                  "SubTotal": subtotal, "TotalTax": tax, "Total": subtotal + tax, "_date": day, "Date": _ms_date(day),
                  "DateString": day.isoformat(), "Status": body.get("Status", "DRAFT"), "Allocations": [],
                  "UpdatedDateUTC": _ms_date()}
        self._restate_credit(credit)
        org.credit_notes[credit["CreditNoteID"]] = credit
        return credit

    def _restate_credit(self, credit: dict) -> None:
        allocated = sum((a["Amount"] for a in credit["Allocations"]), ZERO) + sum(
            (p["Amount"] for p in credit.get("_refunds", []) if p["Status"] != "DELETED"), ZERO)
        credit["AppliedAmount"] = allocated
        if credit["Status"] not in ("VOIDED", "DELETED"):
            credit["RemainingCredit"] = credit["Total"] - allocated
            if credit["Status"] in ("AUTHORISED", "PAID"):
                credit["Status"] = "PAID" if credit["RemainingCredit"] == 0 else "AUTHORISED"

    def _save_allocation(self, org: Organisation, credit_id: str, body: dict) -> dict:
        credit = _get(org.credit_notes, credit_id)
        if credit["Status"] != "AUTHORISED":
            raise XeroError("Credit note must be authorised before it can be allocated")
        invoice = org.invoices.get(str((body.get("Invoice") or {}).get("InvoiceID")))
        if invoice is None:
            raise XeroError("Invoice could not be found")
        if invoice["Status"] != "AUTHORISED":
            raise XeroError("Allocations can only be made against Authorised documents")
        if "Date" not in body or "Amount" not in body:
            raise XeroError("Amount, Invoice and Date are required for an allocation")
        amount = Decimal(str(body["Amount"]))
        if amount <= 0 or amount > credit["RemainingCredit"] or amount > invoice["AmountDue"]:
            raise XeroError("The amount allocated cannot exceed the remaining credit or the amount due on the invoice")
        day = _parse_date(body["Date"])
        self._check_lock(org, day)
        allocation = {"AllocationID": str(uuid.uuid4()), "Amount": amount, "Date": _ms_date(day),
                      "Invoice": {"InvoiceID": invoice["InvoiceID"], "InvoiceNumber": invoice.get("InvoiceNumber")},
                      "CreditNote": {"CreditNoteID": credit_id, "CreditNoteNumber": credit.get("CreditNoteNumber")}}
        credit["Allocations"].append(allocation)
        self._restate_credit(credit)
        self._restate(org, invoice)
        return allocation

    def _save_item(self, org: Organisation, body: dict, request: Request, dry_run: bool = False) -> dict:
        """Items (PUT/POST /Items): Code required, at most 30 characters and unique; Name at most 50; the sales
        account must be a valid non-bank account."""
        code = body.get("Code")
        if not code:
            raise XeroError("Item code must be specified")
        if len(str(code)) > 30:
            raise XeroError("The Item code must not be more than 30 characters long")
        if len(str(body.get("Name") or "")) > 50:
            raise XeroError("The Item name must not be more than 50 characters long")
        current = org.items.get(str(code))
        if current is not None and body.get("ItemID") != current["ItemID"]:
            raise XeroError(f"Item code '{code}' already exists")
        sales = body.get("SalesDetails") or {}
        account = sales.get("AccountCode")
        if account is not None and (account not in org.accounts or org.accounts[account]["Type"] == "BANK"):
            raise XeroError(f"Account code '{account}' is not a valid code for this document.")
        tax = sales.get("TaxType")
        if tax is not None and tax not in org.tax_rates:
            raise XeroError(f"The TaxType code '{tax}' does not exist or cannot be used for this type of transaction.")
        if dry_run:
            return body
        item = {**(current or {}), **body, "ItemID": (current or {}).get("ItemID") or str(uuid.uuid4()),
                "IsTrackedAsInventory": False, "UpdatedDateUTC": _ms_date()}
        org.items[str(code)] = item
        return item

    def _save_contact(self, org: Organisation, body: dict, request: Request, dry_run: bool = False) -> dict:
        current = org.contacts.get(str(body.get("ContactID"))) if body.get("ContactID") else None
        merged = {**(current or {}), **body}
        if not merged.get("Name"):
            raise XeroError("The contact name must be specified")
        for side, terms in (merged.get("PaymentTerms") or {}).items():
            if side not in ("Bills", "Sales") or not isinstance(terms, dict):
                raise XeroError("PaymentTerms takes Bills and Sales")
            if terms.get("Type") not in ("DAYSAFTERBILLDATE", "DAYSAFTERBILLMONTH", "OFCURRENTMONTH",
                                         "OFFOLLOWINGMONTH"):
                raise XeroError(f"'{terms.get('Type')}' is not a valid payment term type")
            day = terms.get("Day")
            if not isinstance(day, int) or day < 0 or (terms["Type"] in ("OFCURRENTMONTH", "OFFOLLOWINGMONTH")
                                                        and day > 31):
                raise XeroError("The payment terms day is not valid")
        if any(c["Name"] == merged["Name"] and c["ContactID"] != merged.get("ContactID") for c in org.contacts.values()):
            raise XeroError(f"The contact name {merged['Name']} is already assigned to another contact. The contact "
                            "name must be unique across all active contacts.")
        if dry_run:
            return merged
        merged.setdefault("ContactID", str(uuid.uuid4()))
        merged.update({"ContactStatus": "ACTIVE", "IsCustomer": True, "UpdatedDateUTC": _ms_date()})
        org.contacts[merged["ContactID"]] = merged
        return merged


class _NotFound(Exception):
    pass


def _get(table: dict[str, dict], key: str) -> dict:
    found = table.get(key)
    if found is None:
        raise _NotFound()
    return found


def _parse_date(value: Any) -> date | None:
    if not value:
        return None
    text = str(value)
    match = re.fullmatch(r"/Date\((\d+)([+-]\d{4})?\)/", text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=timezone.utc).date()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise XeroError(f"'{text}' is not a valid date") from None


def _page(docs: list[dict], query) -> list[dict]:
    """``page`` (1-based): 100 documents a page (``pageSize`` up to 1000), as Xero pages contacts."""
    if "page" not in query:
        return docs
    size = min(int(query.get("pageSize") or 100), 1000)
    page = max(int(query["page"]), 1)
    return docs[(page - 1) * size: page * size]


def _in_list(value: Any, csv: str | None) -> bool:
    return csv is None or str(value) in [v.strip() for v in csv.split(",")]


_CLAUSE = re.compile(r'\s*([\w.\[\]]+)\s*==\s*"((?:[^"\\]|\\.)*)"\s*')


def _path(doc: dict, dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        if match is None or not isinstance(value, dict):
            return None
        value = value.get(match.group(1))
        if match.group(2) is not None:
            value = value[int(match.group(2))] if isinstance(value, list) and len(value) > int(match.group(2)) else None
    return value


def _filter(docs, query) -> list[dict]:
    """Xero's ``where`` filter, the subset the connector uses: ``Field=="value"`` clauses joined by AND
    (dotted paths and [n] indexes allowed), plus ``Statuses``."""
    where = query.get("where")
    clauses = []
    if where:
        for part in re.split(r"\s+(?:AND|&&)\s+", where.strip()):
            match = _CLAUSE.fullmatch(part)
            if match is None:
                raise XeroError(f"The where clause '{where}' could not be parsed")
            clauses.append((match.group(1), match.group(2).replace('\\"', '"')))
    statuses = query.get("Statuses")
    out = []
    for doc in docs:
        if all(str(_path(doc, f)) == v for f, v in clauses) and _in_list(doc.get("Status"), statuses):
            out.append(doc if isinstance(doc, dict) else doc)
    return [{k: v for k, v in d.items() if not k.startswith("_")} for d in out]


__all__ = ["Sandbox", "XeroError"]
