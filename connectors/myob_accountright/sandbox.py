"""A local MYOB AccountRight (API v2) for the demo and the tests.

Built from MYOB's official .NET SDK contracts (the field table in ``$LEDGERWIRE_SPECS_DIR/myob-accountright/
SOURCE.md``) and MYOB's developer pages: OAuth2 refresh at ``/oauth2/v1/authorize`` (client id and secret in the
form body; 20-minute access tokens, the refresh token replaced on every refresh), the headers ``x-myobapi-key``
(refused as ``DeveloperInactive`` when missing or unknown), ``x-myobapi-version: v2`` and ``x-myobapi-cftoken``
(base64 ``user:password`` of the company file's user), company files listed at ``/accountright/`` and their
resources under ``/accountright/{company file id}/``: ``Contact/Customer``, ``Sale/Invoice/Item`` and
``Sale/Invoice/Service`` (GET | POST | PUT | DELETE), ``Sale/CustomerPayment``, ``Sale/CreditSettlement`` and
``Sale/CreditRefund`` (money paid back on a credit: ``Invoice``, ``Account``, ``Amount``, ``Date``, SDK
CreditRefund.cs) (GET | POST | DELETE: the sandbox does not edit them), ``Company/Preferences``, and the reference lists
(``Inventory/Item``, ``GeneralLedger/Account``, ``GeneralLedger/TaxCode``). Lists answer OData ``$filter``
(``field eq 'value'`` joined by ``and``), ``$top`` (≤ 1000) and ``$skip`` with ``{"Items", "NextPageLink",
"Count"}``; ``returnBody=true`` answers a POST or PUT with the stored resource (else 201/200 with a
``Location``). Required fields, lengths (``Number`` 13, ``DisplayID`` 15), GUIDs, enums and dates as SOURCE.md
lists them; ``PUT`` needs ``UID`` + ``RowVersion``, a stale ``RowVersion`` answered 409; tax computed per line
from the tax code (a consolidated code component by component); a negative invoice is a credit (status
``Credit``); ``System.LockPeriodPriorTo`` refuses anything dated before it; ``TransactionsCannotBeChanged
MustBeReversed`` refuses deletes (error 25003); 8 calls/second and 1,000,000/day per API key, refused with
MYOB's ``403 RateLimitError``; errors as MYOB's ``{"Errors": [{"Name", "Message", "AdditionalDetails",
"ErrorCode", "Severity", "LearnMore"}]}``. Names and texts MYOB's pages give are used (RateLimitError,
DeveloperInactive, SerializationError 50, Required 100, NotFound 150, TransactionsCannotBeDeleted 25003); the
others (the 409 body, the lock-period name seen in integrators' notes, the company-file credential refusal) are
the sandbox's own. Currencies (multi-currency on): ``GeneralLedger/Currency`` (USD, the file's own, and CAD at a
``CurrencyRate``; no EUR); a card's ``ForeignCurrency`` (never changed), a sale, payment, settlement or credit refund
in its card's currency only, a foreign one with a ``CurrencyExchangeRate`` (settlements: none) and its amounts read
from the ``*Foreign`` fields (the local ones ignored), its totals and balance held in both (local = foreign × rate).
MYOB deletes invoices: a deleted one stays listed by ``booked_invoices`` as voided (numbered by its
``CustomerPurchaseOrderNumber``, where the connector keeps the shop's whole number).
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client, refresh_grant

CENT, ZERO = Decimal("0.01"), Decimal("0")
TOP_MAX = 1000
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")
INVOICES = ("Sale/Invoice/Item", "Sale/Invoice/Service")
WRITABLE = ("Contact/Customer", *INVOICES, "Sale/CustomerPayment", "Sale/CreditSettlement", "Sale/CreditRefund")
MONEY = ("Sale/CustomerPayment", "Sale/CreditSettlement", "Sale/CreditRefund")  # never edited: POST and DELETE
READ_ONLY = ("Inventory/Item", "GeneralLedger/Account", "GeneralLedger/TaxCode", "GeneralLedger/Currency")
CLAUSE = re.compile(r"\s*([A-Za-z/]+) eq (?:guid)?'((?:[^']|'')*)'\s*(and\b|$)")


def myob_error(status: int, name: str, message: str, details: str = "", code: int = 0) -> Response:
    body = {"Errors": [{"Name": name, "Message": message, "AdditionalDetails": details, "ErrorCode": code,
                        "Severity": "Error", "LearnMore": None}]}
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


class MyobError(Exception):
    def __init__(self, name: str, message: str, details: str = "", code: int = 0, status: int = 400) -> None:
        super().__init__(message)
        self.response = myob_error(status, name, message, details, code)


def required(name: str) -> MyobError:
    return MyobError("Required", f"{name} is required", name, 100)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class CompanyFile:
    id: str
    name: str
    user: str = "Administrator"
    password: str = "ledgerwire"
    tables: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {r: {} for r in (*WRITABLE, *READ_ONLY)})
    lock_prior_to: date | None = None  # System.LockPeriodPriorTo
    local_currency: str = "USD"  # the file's own currency (MYOB's API does not name it)
    must_reverse: bool = False  # System.TransactionsCannotBeChangedMustBeReversed
    deleted: list[dict[str, Any]] = field(default_factory=list)  # deleted item invoices (booked as voided)
    versions: itertools.count = field(default_factory=lambda: itertools.count(7_000_000_000_000_000_001, 977))
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def row_version(self) -> str:
        return str(next(self.versions))


class Sandbox:
    """MYOB AccountRight as a local server. ``faults`` injects 500s, rate-limit refusals and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 1200.0, *, per_second_limit: int = 8,
                 day_limit: int = 1_000_000) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)  # MYOB: access tokens live 20 minutes
        self.per_second_limit, self.day_limit = per_second_limit, day_limit
        self.second_window, self.day_window = WindowLimit(per_second_limit, 1.0), WindowLimit(day_limit, 86400.0)
        self.files: dict[str, CompanyFile] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, resource path, JSON body or None)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/oauth2/v1/authorize", self._token, methods=["POST"]),
            Route("/accountright/", self._company_files, methods=["GET"]),
            Route("/accountright/{cf}/{path:path}", self._api, methods=["GET", "POST", "PUT", "DELETE"]),
        ])
        self._seed_file()  # the company file exists before anyone asks for a target config

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret = secrets.token_hex(12), secrets.token_hex(20)
        refresh = self.issuer.register_client(client_id, client_secret)
        cf = next(iter(self.files.values()))
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh,
                "company_file_username": cf.user, "company_file_password": cf.password}

    def _seed_file(self) -> None:
        cf = CompanyFile(id=str(uuid.uuid4()), name="Main St Auto Electric")
        uid = {}  # seed key -> UID, for target_config
        for table, rows in {
            "GeneralLedger/Account": [("4-1000", "Sales - parts"), ("4-1100", "Sales - labour"), ("4-1200", "Sales - fees"),
                                      ("2-1500", "Core deposits held"), ("4-1900", "Discounts given"),
                                      ("1-1210", "Undeposited funds"), ("1-1110", "Cheque account")],
            "Inventory/Item": [("PARTS", "Parts"), ("LABOUR", "Labour"), ("FEES", "Shop fees"), ("SUBLET", "Sublet work"),
                               ("CORE", "Core charges"), ("DISCOUNT", "Discounts")],
        }.items():
            for key, name in rows:
                uid[key] = str(uuid.uuid4())
                record = {"UID": uid[key], "Name": name, "RowVersion": cf.row_version(), "IsActive": True}
                record |= {"DisplayID": key, "IsHeader": False} if table.startswith("General") else {
                    "Number": key, "IsSold": True, "IsInventoried": False}
                cf.tables[table][uid[key]] = record
        # The file's currencies (multi-currency on): its own and CAD, at MYOB's rate (no EUR).
        for code, name, rate in [("USD", "US Dollar", "1"), ("CAD", "Canadian Dollar", "0.730000")]:
            uid[code] = str(uuid.uuid4())
            cf.tables["GeneralLedger/Currency"][uid[code]] = {"UID": uid[code], "Code": code, "CurrencyName": name,
                                                              "CurrencyRate": Decimal(rate), "RowVersion": cf.row_version()}
        # Consolidated codes (GST+PST) compute their components one by one, as the shop does.
        for code, rate, components in [("GST", "5", ()), ("PST", "7", ()), ("STA", "6.25", ()), ("CTY", "1", ()),
                                       ("N-T", "0", ()), ("G+P", "0", ("GST", "PST")), ("S+C", "0", ("STA", "CTY"))]:
            uid[code] = str(uuid.uuid4())
            cf.tables["GeneralLedger/TaxCode"][uid[code]] = {
                "UID": uid[code], "Code": code, "Rate": Decimal(rate), "RowVersion": cf.row_version(),
                "Type": "Consolidated" if components else "GST", "Components": [uid[c] for c in components]}
        self.files[cf.id] = cf
        self._uids = uid

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        cf, u = next(iter(self.files.values())), self._uids
        return {
            "name": name, "platform": "myob-accountright", "base_url": f"{base_url}/accountright",
            "settings": {"company_file_id": cf.id, "token_url": f"{base_url}/oauth2/v1/authorize",
                         "requests_per_second": self.per_second_limit, "requests_per_day": self.day_limit},
            "mapping": {"items": {"part": u["PARTS"], "labour": u["LABOUR"], "fee": u["FEES"], "sublet": u["SUBLET"],
                                  "core_charge": u["CORE"], "discount": u["DISCOUNT"]},
                        "income_accounts": {"part": u["4-1000"], "labour": u["4-1100"], "fee": u["4-1200"],
                                            "sublet": u["4-1100"], "discount": u["4-1000"], "core_charge": u["4-1000"]},
                        "core_account": u["2-1500"], "discount_account": u["4-1900"],
                        "tax_codes": {"GST": u["GST"], "PST": u["PST"], "GST+PST": u["G+P"], "STATE": u["STA"],
                                      "COUNTY": u["CTY"], "COUNTY+STATE": u["S+C"], "none": u["N-T"]},
                        "payment_accounts": {"card": u["1-1210"], "cash": u["1-1210"], "check": u["1-1210"],
                                             "eft": u["1-1110"]},
                        "home_currency": cf.local_currency},  # MYOB's API does not say it: the target does
        }

    def set_lock_period(self, prior_to: date | None) -> None:
        """The bookkeeper locks everything dated before ``prior_to`` (None unlocks)."""
        with self._lock:
            for cf in self.files.values():
                cf.lock_prior_to = prior_to

    def records(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for cf in self.files.values() for r in cf.tables[table].values()]

    def rate_limit_breaches(self) -> int:
        return self.second_window.breaches + self.day_window.breaches

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for cf in self.files.values():
                paid = [(line["UID"], _paid(p, line)) for p in cf.tables["Sale/CustomerPayment"].values()
                        for line in p["Invoices"]]
                for voided, invoice in [(False, i) for i in cf.tables["Sale/Invoice/Item"].values()] + [
                        (True, i) for i in cf.deleted]:
                    mine = [] if voided else [amount for uid, amount in paid if uid == invoice["UID"]]
                    out.append(BookedInvoice(
                        number=invoice.get("CustomerPurchaseOrderNumber") or invoice.get("Number") or "",
                        external_id=invoice["UID"], voided=voided,
                        total=_own(invoice, "TotalAmount"), tax_total=_own(invoice, "TotalTax"),
                        line_count=len(invoice["Lines"]), payments_applied=sum(mine, ZERO), payment_count=len(mine),
                        currency=(invoice.get("ForeignCurrency") or {}).get("Code") or cf.local_currency))
            return out

    # -- OAuth2 --
    async def _token(self, request: Request) -> Response:
        # MYOB sends expires_in as a string ("1200") and a scope.
        return await refresh_grant(self.issuer, request, lambda answer: {"expires_in": str(answer["expires_in"]),
                                                                          "scope": "CompanyFile"})

    # -- API plumbing: key, token, version, company file user, throttles --
    def _guard(self, request: Request, cf_id: str | None) -> CompanyFile | None | Response:
        key = request.headers.get("x-myobapi-key") or ""
        if key not in self.issuer.clients:
            return myob_error(403, "DeveloperInactive", "API key is missing or inactive")
        if not self.issuer.valid(request.headers.get("authorization")):
            return myob_error(401, "OAuthTokenIsInvalid", "The supplied OAuth token (Bearer) is not valid")
        if request.headers.get("x-myobapi-version") != "v2":
            return myob_error(400, "UnsupportedApiVersion", "This API requires the header x-myobapi-version: v2")
        for window, period in ((self.second_window, "per-second"), (self.day_window, "daily")):
            if window.hit(key) is not None:
                return myob_error(403, "RateLimitError", f"API key has exceeded the {period} rate limit",
                                  "Header: x-myobapi-key")
        if cf_id is None:
            return None
        cf = self.files.get(cf_id)
        if cf is None:
            return myob_error(404, "NotFound", "Company file not found", code=150)
        expected = base64.b64encode(f"{cf.user}:{cf.password}".encode()).decode()
        if request.headers.get("x-myobapi-cftoken") != expected:
            return myob_error(401, "InvalidCompanyFileCredentials", "The company file user or password is not valid",
                              "Header: x-myobapi-cftoken")
        return cf

    async def _company_files(self, request: Request) -> Response:
        guarded = self._guard(request, None)
        if isinstance(guarded, Response):
            return guarded
        base = str(request.base_url).rstrip("/")
        return self._ok([{"Id": cf.id, "Name": cf.name, "Uri": f"{base}/accountright/{cf.id}", "ProductVersion": "2025.1"}
                         for cf in self.files.values()])

    def _ok(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(jsonmoney.dumps(body) if body is not None else b"", status_code=status,
                        media_type="application/json", headers=headers)

    @staticmethod
    def _resource(path: str) -> tuple[str, str | None]:
        for name in sorted((*WRITABLE, *READ_ONLY, "Company/Preferences"), key=len, reverse=True):
            if path == name or path.startswith(name + "/"):
                rest = path[len(name):].strip("/")
                return name, rest or None
        raise MyobError("NotFound", f"Resource {path} not found", code=150, status=404)

    async def _api(self, request: Request) -> Response:
        cf = self._guard(request, request.path_params["cf"])
        if isinstance(cf, Response):
            return cf
        assert cf is not None
        try:
            resource, key = self._resource(request.path_params["path"].strip("/"))
            if request.method == "GET":
                with self._lock:
                    return self._read(request, cf, resource, key)
            return await self._write(request, cf, resource, key)
        except MyobError as error:
            return error.response

    def _read(self, request: Request, cf: CompanyFile, resource: str, key: str | None) -> Response:
        if resource == "Company/Preferences":
            return self._ok({"System": {
                "LockPeriodPriorTo": f"{cf.lock_prior_to.isoformat()}T00:00:00" if cf.lock_prior_to else None,
                "TransactionsCannotBeChangedMustBeReversed": cf.must_reverse, "UseAlphaAccountIdentifier": False}})
        table = cf.tables[resource]
        if key is not None:
            if key not in table:
                raise MyobError("NotFound", "Resource not found", key, 150, 404)
            return self._ok(self._view(request, resource, table[key]))
        q = request.query_params
        text, at, wanted = q.get("$filter", ""), 0, []
        while text.strip() and at < len(text):  # field eq 'value' [and …]; a quote inside a value is doubled
            match = CLAUSE.match(text, at)
            if match is None:
                raise MyobError("InvalidFilter", f"The $filter {text!r} is not supported here", "$filter")
            wanted.append((match.group(1).split("/"), match.group(2).replace("''", "'")))
            at = match.end()
        rows = [r for r in table.values() if all(str(_at(r, path)) == value for path, value in wanted)]
        top, skip = min(int(q.get("$top", TOP_MAX)), TOP_MAX), int(q.get("$skip", 0))
        page = rows[skip: skip + top]
        more = skip + top < len(rows)
        link = str(request.url.include_query_params(**{"$skip": skip + top})) if more else None
        return self._ok({"Items": [self._view(request, resource, r) for r in page], "NextPageLink": link,
                         "Count": len(rows)})

    def _view(self, request: Request, resource: str, record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if not k.startswith("_")} | {
            "URI": f"{str(request.base_url).rstrip('/')}/accountright/{request.path_params['cf']}/{resource}/{record['UID']}"}

    async def _write(self, request: Request, cf: CompanyFile, resource: str, key: str | None) -> Response:
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return myob_error(400, "SerializationError", "Error converting value: the body is not valid JSON", code=50)
        self.requests.append((request.method, resource + (f"/{key}" if key else ""), body))
        decided = self.faults.draw()
        if decided == "500":
            return myob_error(500, "InternalError", "An unexpected error occurred")
        if decided == "429":  # MYOB's rate-limit refusal is a 403
            return myob_error(403, "RateLimitError", "API key has exceeded the per-second rate limit",
                              "Header: x-myobapi-key")
        with self._lock:
            try:
                answer, status = self._apply(cf, request.method, resource, key, body)
                location = f"{str(request.base_url).rstrip('/')}/accountright/{cf.id}/{resource}/{answer['UID']}" \
                    if answer else None
                if answer is not None and request.query_params.get("returnBody") == "true":
                    response = self._ok(self._view(request, resource, answer), status)
                else:
                    response = self._ok(None, status, {"Location": location} if location else None)
            except MyobError as error:
                response = error.response
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- the books --
    def _apply(self, cf: CompanyFile, method: str, resource: str, key: str | None, body: Any
               ) -> tuple[dict[str, Any] | None, int]:
        if resource not in WRITABLE:
            raise MyobError("MethodNotAllowed", f"{method} is not supported on {resource}", status=405)
        table = cf.tables[resource]
        current = table.get(key) if key else None
        if key and current is None:
            raise MyobError("NotFound", "Resource not found", key, 150, 404)
        if method == "DELETE":
            if current is None:
                raise MyobError("MethodNotAllowed", "DELETE needs the resource's UID", status=405)
            self._delete(cf, resource, current)
            return None, 200
        if not isinstance(body, dict):
            raise MyobError("SerializationError", "Error converting value: the body must be a JSON object", code=50)
        if method == "PUT":
            if current is None or resource in MONEY:
                raise MyobError("MethodNotAllowed", f"PUT updates an existing {resource}; payments and settlements "
                                "cannot be edited", status=405 if current is not None else 404)
            for name in ("UID", "RowVersion"):
                if not body.get(name):
                    raise required(name)
            if body["UID"] != current["UID"]:
                raise MyobError("ValidationError", "UID does not match the resource", "UID")
            if body["RowVersion"] != current["RowVersion"]:
                raise MyobError("ConcurrencyConflict", "The RowVersion is not the current one: the resource was "
                                "changed since it was read", "RowVersion", status=409)
        elif "UID" in body or "RowVersion" in body:
            raise MyobError("ValidationError", "UID and RowVersion are only for updates", "UID")
        _check_types(body)
        if resource == "Contact/Customer":
            return self._customer(cf, current, body), 201 if current is None else 200
        if resource in INVOICES:
            return self._invoice(cf, resource, current, body), 201 if current is None else 200
        if resource == "Sale/CustomerPayment":
            return self._payment(cf, body), 201
        if resource == "Sale/CreditRefund":
            return self._credit_refund(cf, body), 201
        return self._settlement(cf, body), 201

    def _ref(self, cf: CompanyFile, table: str, body: dict[str, Any], name: str, need: bool = True, at: str = ""
             ) -> dict[str, Any] | None:
        uid = (body.get(name) or {}).get("UID")
        if not uid:
            if need:
                raise required(f"{at}{name}.UID")
            return None
        found = cf.tables[table].get(uid)
        if found is None:
            raise MyobError("NotFound", f"{at}{name} with UID {uid} was not found", f"{at}{name}.UID", 150)
        return found

    def _check_open(self, cf: CompanyFile, *days: Any) -> None:
        for day in days:
            if cf.lock_prior_to and day and _day(day) < cf.lock_prior_to:
                raise MyobError("BusinessEvent_DateOccured_InLockPeriod",
                                f"The date falls in a locked period (prior to {cf.lock_prior_to.isoformat()})", "Date")

    def _stamp(self, cf: CompanyFile, record: dict[str, Any]) -> dict[str, Any]:
        record["RowVersion"] = cf.row_version()
        return record

    def _customer(self, cf: CompanyFile, current: dict | None, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("IsIndividual") and not body.get("CompanyName"):
            raise required("CompanyName")
        display = body.get("DisplayID") or "*None"
        if len(display) > 15:
            raise MyobError("ValidationError", "DisplayID is longer than 15 characters", "DisplayID")
        if display != "*None" and any(c.get("DisplayID") == display and c is not current
                                      for c in cf.tables["Contact/Customer"].values()):
            raise MyobError("DisplayIDAlreadyExists", "A card with this card ID already exists", "DisplayID")
        selling = body.get("SellingDetails") or {}
        for name in ("TaxCode", "FreightTaxCode"):
            self._ref(cf, "GeneralLedger/TaxCode", selling, name)
        currency = self._ref(cf, "GeneralLedger/Currency", body, "ForeignCurrency", need=False)
        if current is not None and "ForeignCurrency" in body and (
                (currency or {}).get("UID") != (current.get("ForeignCurrency") or {}).get("UID")):
            raise MyobError("ValidationError", "A card's currency cannot be changed", "ForeignCurrency")
        card = copy.deepcopy(current) if current else {"UID": str(uuid.uuid4())}
        card.update(copy.deepcopy(body) | {"DisplayID": display, "UID": card["UID"]})
        if currency is not None:
            card["ForeignCurrency"] = {"UID": currency["UID"], "Code": currency["Code"]}
        cf.tables["Contact/Customer"][card["UID"]] = self._stamp(cf, card)
        return card

    def _tax(self, cf: CompanyFile, code: dict[str, Any], total: Decimal, inclusive: bool) -> Decimal:
        components = [cf.tables["GeneralLedger/TaxCode"][c] for c in code.get("Components") or []] or [code]
        if inclusive:  # the tax a price holds: its share of the price at the code's whole rate
            rate = sum((c["Rate"] for c in components), ZERO) / 100
            return _money(total - total / (1 + rate))
        return sum((_money(total * c["Rate"] / 100) for c in components), ZERO)

    def _currency(self, cf: CompanyFile, body: dict[str, Any], card: dict[str, Any], rate: bool = True
                  ) -> dict[str, Any] | None:
        """A record's ``ForeignCurrency``: the card's own (a card transacts in its currency only), with a
        ``CurrencyExchangeRate`` where the record takes one (the sandbox holds it mandatory, as the support
        article's foreign samples mark the multi-currency properties)."""
        currency = self._ref(cf, "GeneralLedger/Currency", body, "ForeignCurrency", need=False)
        if (currency or {}).get("UID") != (card.get("ForeignCurrency") or {}).get("UID"):
            raise MyobError("ValidationError", "The currency must be the customer card's currency "
                            f"({(card.get('ForeignCurrency') or {}).get('Code') or cf.local_currency})", "ForeignCurrency")
        if currency is not None and rate and not body.get("CurrencyExchangeRate"):
            raise required("CurrencyExchangeRate")
        return currency

    def _lines(self, cf: CompanyFile, resource: str, body: dict[str, Any]) -> tuple[list[dict], Decimal, Decimal]:
        lines = body.get("Lines")
        foreign = "Foreign" if body.get("ForeignCurrency") else ""  # a foreign record's amounts (the local ignored)
        if not isinstance(lines, list) or not lines:
            raise required("Lines")
        out, subtotal, tax_total = [], ZERO, ZERO
        for n, line in enumerate(lines, start=1):
            if line.get("Type", "Transaction") not in ("Transaction", "Header", "SubTotal"):
                raise MyobError("ValidationError", f"Lines[{n}].Type is not a valid InvoiceLineType", "Type")
            if line.get("Type", "Transaction") != "Transaction":
                out.append(copy.deepcopy(line) | {"RowID": n})
                continue
            if line.get(f"Total{foreign}") is None:
                raise required(f"Lines[{n}].Total{foreign}")
            total = Decimal(str(line[f"Total{foreign}"]))
            if resource == "Sale/Invoice/Item":
                if line.get("ShipQuantity") is None:
                    raise required(f"Lines[{n}].ShipQuantity")
                self._ref(cf, "Inventory/Item", line, "Item", at=f"Lines[{n}].")
                if line.get(f"UnitPrice{foreign}") is not None:
                    expected = _money(Decimal(str(line["ShipQuantity"])) * Decimal(str(line[f"UnitPrice{foreign}"])) * (
                        1 - Decimal(str(line.get("DiscountPercent") or 0)) / 100))
                    if expected != total:
                        raise MyobError("ValidationError", f"Lines[{n}].Total {total} is not ShipQuantity x UnitPrice "
                                        f"less discount ({expected})", "Total")
            else:
                self._ref(cf, "GeneralLedger/Account", line, "Account", at=f"Lines[{n}].")
            code = self._ref(cf, "GeneralLedger/TaxCode", line, "TaxCode", at=f"Lines[{n}].")
            assert code is not None
            tax = self._tax(cf, code, total, bool(body.get("IsTaxInclusive")))
            subtotal += total
            tax_total += tax
            out.append(copy.deepcopy(line) | {"RowID": n, "RowVersion": cf.row_version()})
        return out, subtotal, tax_total

    def _invoice(self, cf: CompanyFile, resource: str, current: dict | None, body: dict[str, Any]) -> dict[str, Any]:
        for name in ("Date",):
            if not body.get(name):
                raise required(name)
        if len(str(body.get("Number") or "")) > 13:
            raise MyobError("ValidationError", "Number is longer than 13 characters", "Number")
        self._check_open(cf, body["Date"], *([current["Date"]] if current else []))
        customer = self._ref(cf, "Contact/Customer", body, "Customer")
        assert customer is not None
        currency = self._currency(cf, body, customer)
        lines, subtotal, tax = self._lines(cf, resource, body)
        inclusive = bool(body.get("IsTaxInclusive"))
        total = subtotal if inclusive else subtotal + tax
        invoice = copy.deepcopy(current) if current else {"UID": str(uuid.uuid4())}
        applied = self._applied(cf, invoice["UID"])
        if current is not None and abs(total) < applied:
            raise MyobError("ValidationError", "The invoice total cannot be less than the payments and credits "
                            "applied to it", "Lines")
        invoice.update(copy.deepcopy(body) | {
            "UID": invoice["UID"], "Number": body.get("Number") or f"{next(cf.numbers):08d}", "Lines": lines,
            "Customer": {"UID": customer["UID"], "Name": customer.get("CompanyName"), "DisplayID": customer["DisplayID"]},
            "_layout": resource})
        rate = Decimal(str(body["CurrencyExchangeRate"])) if currency else Decimal(1)
        for name, amount in (("Subtotal", subtotal - (tax if inclusive else ZERO)), ("TotalTax", tax), ("TotalAmount", total)):
            invoice[name] = _money(amount * rate)  # in the file's currency; a foreign record's own in <name>Foreign
            invoice[f"{name}Foreign"] = amount if currency else None
        invoice["ForeignCurrency"] = {"UID": currency["UID"], "Code": currency["Code"]} if currency else None
        self._settle(invoice, applied)
        cf.tables[resource][invoice["UID"]] = self._stamp(cf, invoice)
        return invoice

    @staticmethod
    def _applied(cf: CompanyFile, uid: str) -> Decimal:
        """What payments and credit settlements take off the invoice (or, for a credit, what it gave)."""
        paid = sum((_paid(p, ln) for p in cf.tables["Sale/CustomerPayment"].values()
                    for ln in p["Invoices"] if ln["UID"] == uid), ZERO)
        settled = sum((Decimal(str(ln["AmountApplied"])) for s in cf.tables["Sale/CreditSettlement"].values()
                       for ln in s["Lines"] if ln["Sale"]["UID"] == uid), ZERO)
        given = sum((Decimal(str(s["CreditAmount"])) for s in cf.tables["Sale/CreditSettlement"].values()
                     if s["CreditFromInvoice"]["UID"] == uid), ZERO)
        refunded = sum((Decimal(str(r["Amount"])) for r in cf.tables["Sale/CreditRefund"].values()
                        if r["Invoice"]["UID"] == uid), ZERO)
        return paid + settled + given + refunded

    @staticmethod
    def _settle(invoice: dict[str, Any], applied: Decimal) -> None:
        """The balance due in the invoice's own currency (a foreign one's also in the file's, at its rate)."""
        total = _own(invoice, "TotalAmount")
        balance = total - applied if total >= 0 else total + applied
        rate = Decimal(str(invoice["CurrencyExchangeRate"])) if invoice.get("ForeignCurrency") else Decimal(1)
        invoice.update(BalanceDueAmount=_money(balance * rate),
                       BalanceDueAmountForeign=balance if invoice.get("ForeignCurrency") else None)
        invoice["Status"] = "Credit" if total < 0 and balance else ("Closed" if balance == 0 else "Open")

    def _sale(self, cf: CompanyFile, uid: str) -> dict[str, Any]:
        for table in INVOICES:
            if uid in cf.tables[table]:
                return cf.tables[table][uid]
        raise MyobError("NotFound", f"Sale with UID {uid} was not found", "UID", 150)

    def _resettle(self, cf: CompanyFile, *uids: str) -> None:
        for uid in uids:
            sale = self._sale(cf, uid)
            self._settle(sale, self._applied(cf, uid))
            self._stamp(cf, sale)  # applying money changes the invoice's RowVersion

    def _payment(self, cf: CompanyFile, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("DepositTo") not in ("Account", "UndepositedFunds"):
            raise MyobError("ValidationError", "DepositTo must be Account or UndepositedFunds", "DepositTo")
        self._ref(cf, "GeneralLedger/Account", body, "Account", need=body["DepositTo"] == "Account")
        customer = self._ref(cf, "Contact/Customer", body, "Customer")
        assert customer is not None
        currency = self._currency(cf, body, customer)
        foreign = "Foreign" if currency else ""
        for name in ("Date", f"AmountReceived{foreign}", "Invoices"):
            if body.get(name) in (None, "", []):
                raise required(name)
        self._check_open(cf, body["Date"])
        applied = ZERO
        for line in body["Invoices"]:
            if line.get("Type") not in ("Invoice", "Order"):
                raise MyobError("ValidationError", "Invoices[].Type must be Invoice or Order", "Type")
            sale = self._sale(cf, str(line.get("UID")))
            amount = Decimal(str(line.get(f"AmountApplied{foreign}")))
            if sale["Customer"]["UID"] != customer["UID"]:
                raise MyobError("ValidationError", "The invoice belongs to another customer", "Invoices.UID")
            if amount <= 0 or amount > _own(sale, "BalanceDueAmount"):
                raise MyobError("ValidationError", "AmountApplied is more than the invoice's balance due", "AmountApplied")
            applied += amount
        if applied != Decimal(str(body[f"AmountReceived{foreign}"])):
            raise MyobError("ValidationError", "AmountReceived must equal the amounts applied", "AmountReceived")
        record = copy.deepcopy(body) | {"UID": str(uuid.uuid4()), "ReceiptNumber": f"CR{next(cf.numbers):06d}",
                                        "ForeignCurrency": currency and {"UID": currency["UID"], "Code": currency["Code"]}}
        cf.tables["Sale/CustomerPayment"][record["UID"]] = self._stamp(cf, record)
        self._resettle(cf, *(line["UID"] for line in body["Invoices"]))
        return record

    def _settlement(self, cf: CompanyFile, body: dict[str, Any]) -> dict[str, Any]:
        for name in ("Date", "CreditAmount", "Lines"):
            if body.get(name) in (None, "", []):
                raise required(name)
        self._check_open(cf, body["Date"])
        credit = self._sale(cf, str((body.get("CreditFromInvoice") or {}).get("UID")))
        self._currency(cf, body, self._card(cf, credit), rate=False)  # a settlement stays in one card's currency
        amount = Decimal(str(body["CreditAmount"]))
        if credit["Status"] != "Credit" or amount <= 0 or amount > -_own(credit, "BalanceDueAmount"):
            raise MyobError("ValidationError", "CreditAmount is more than the credit available", "CreditAmount")
        applied = ZERO
        for line in body["Lines"]:
            sale = self._sale(cf, str((line.get("Sale") or {}).get("UID")))
            if line.get("Type") not in ("Invoice", "Order") or sale["Customer"]["UID"] != credit["Customer"]["UID"]:
                raise MyobError("ValidationError", "A settlement line applies to an invoice of the same customer", "Lines")
            if Decimal(str(line["AmountApplied"])) > _own(sale, "BalanceDueAmount"):
                raise MyobError("ValidationError", "AmountApplied is more than the invoice's balance due", "AmountApplied")
            applied += Decimal(str(line["AmountApplied"]))
        if applied != amount:
            raise MyobError("ValidationError", "CreditAmount must equal the amounts applied", "CreditAmount")
        record = copy.deepcopy(body) | {"UID": str(uuid.uuid4()), "Number": f"CS{next(cf.numbers):06d}"}
        cf.tables["Sale/CreditSettlement"][record["UID"]] = self._stamp(cf, record)
        self._resettle(cf, credit["UID"], *(line["Sale"]["UID"] for line in body["Lines"]))
        return record

    def _credit_refund(self, cf: CompanyFile, body: dict[str, Any]) -> dict[str, Any]:
        """Money paid back on a credit (SDK CreditRefund.cs): out of an account, no more than the credit has left."""
        for name in ("Date", "Amount"):
            if body.get(name) in (None, ""):
                raise required(name)
        self._ref(cf, "GeneralLedger/Account", body, "Account")
        customer = self._ref(cf, "Contact/Customer", body, "Customer", need=False)
        self._check_open(cf, body["Date"])
        if not (body.get("Invoice") or {}).get("UID"):
            raise required("Invoice.UID")
        credit = self._sale(cf, str(body["Invoice"]["UID"]))
        if customer is not None and credit["Customer"]["UID"] != customer["UID"]:
            raise MyobError("ValidationError", "The credit belongs to another customer", "Customer.UID")
        self._currency(cf, body, self._card(cf, credit))
        amount = Decimal(str(body["Amount"]))
        if credit["Status"] != "Credit" or amount <= 0 or amount > -_own(credit, "BalanceDueAmount"):
            raise MyobError("ValidationError", "Amount is more than the credit available", "Amount")
        record = copy.deepcopy(body) | {"UID": str(uuid.uuid4()), "Number": f"CR{next(cf.numbers):06d}"}
        cf.tables["Sale/CreditRefund"][record["UID"]] = self._stamp(cf, record)
        self._resettle(cf, credit["UID"])
        return record

    @staticmethod
    def _card(cf: CompanyFile, sale: dict[str, Any]) -> dict[str, Any]:
        return cf.tables["Contact/Customer"][sale["Customer"]["UID"]]

    def _delete(self, cf: CompanyFile, resource: str, current: dict[str, Any]) -> None:
        if resource == "Contact/Customer":
            raise MyobError("MethodNotAllowed", "The sandbox does not delete cards", status=405)
        if cf.must_reverse:
            raise MyobError("TransactionsCannotBeDeleted", "Transactions cannot be deleted and must be reversed",
                            code=25003)
        self._check_open(cf, current["Date"])
        if resource in INVOICES and self._applied(cf, current["UID"]):
            raise MyobError("ValidationError", "An invoice with payments or credits applied cannot be deleted", "UID")
        del cf.tables[resource][current["UID"]]
        if resource == "Sale/Invoice/Item":
            cf.deleted.append(current)
        elif resource == "Sale/CustomerPayment":
            self._resettle(cf, *(line["UID"] for line in current["Invoices"]))
        elif resource == "Sale/CreditSettlement":
            self._resettle(cf, current["CreditFromInvoice"]["UID"], *(line["Sale"]["UID"] for line in current["Lines"]))
        elif resource == "Sale/CreditRefund":
            self._resettle(cf, current["Invoice"]["UID"])


def _at(record: dict[str, Any], path: list[str]) -> Any:
    value: Any = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _own(record: dict[str, Any], name: str) -> Decimal:
    """An amount in the record's own currency: ``<name>Foreign`` on a foreign record."""
    return record[f"{name}Foreign"] if record.get("ForeignCurrency") else record[name]


def _paid(payment: dict[str, Any], line: dict[str, Any]) -> Decimal:
    """What a payment line applies, in the invoice's currency."""
    return Decimal(str(line["AmountAppliedForeign" if payment.get("ForeignCurrency") else "AmountApplied"]))


def _day(value: Any) -> date:
    return datetime.fromisoformat(str(value).replace(" ", "T")).date()


NUMBERS = {"Total", "ShipQuantity", "UnitPrice", "DiscountPercent", "AmountReceived", "AmountApplied", "CreditAmount",
           "Freight", "UnitCount", "Amount", "TotalForeign", "UnitPriceForeign", "AmountReceivedForeign",
           "AmountAppliedForeign", "CurrencyExchangeRate"}
BOOLEANS = {"IsTaxInclusive", "IsIndividual", "IsActive"}
DATES = {"Date", "PromisedDate"}


def _check_types(value: Any, name: str = "") -> None:
    """What MYOB's serializer refuses (SerializationError, 50): a number that is not one, a bool that is not one,
    a UID that is not a GUID, a date that is not MYOB's DateTime."""
    def refuse(what: str) -> MyobError:
        return MyobError("SerializationError", f"Error converting value {value!r} to type '{what}'", name, 50)

    if isinstance(value, dict):
        for key, item in value.items():
            _check_types(item, key)
    elif isinstance(value, list):
        for item in value:
            _check_types(item, name)
    elif name in NUMBERS:
        try:
            if isinstance(value, bool) or not Decimal(str(value)).is_finite():
                raise refuse("System.Decimal")
        except InvalidOperation:
            raise refuse("System.Decimal") from None
    elif name in BOOLEANS and not isinstance(value, bool):
        raise refuse("System.Boolean")
    elif name == "UID" and not (isinstance(value, str) and GUID.match(value)):
        raise refuse("System.Guid")
    elif name in DATES and value is not None and not (isinstance(value, str) and DATETIME.match(value)):
        raise refuse("System.DateTime")
