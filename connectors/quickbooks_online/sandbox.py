"""A local QuickBooks Online (Accounting API v3) for the demo and the tests.

Built from the official schema (Intuit's ``Finance.xsd`` / ``IntuitRestServiceDef.xsd``: entity and
field names, the Fault/Error envelope) and Intuit's API documentation: OAuth2 refresh with rotating
refresh tokens, the realm in the path, create and *sparse* update guarded by ``SyncToken`` (a stale
token fails with Fault 5010 "Stale Object Error"), the query language subset the connector uses, void,
``requestid`` replay of an earlier answer, a payment bumping its invoice's SyncToken, validation Faults
(2020 required, 6240 duplicate name, 6070 amount ≠ qty × price, 6140 linked payment), and the documented
throttles (500 requests/minute and 10 concurrent requests per realm) answered with 429 and Fault 3001.
Books are kept in memory and inspected with ``booked_invoices()``.

Issue #5 additions: CreditMemo (applied to an invoice through a zero-total Payment whose lines link the
invoice and the credit memo, as QuickBooks records "apply credit"), the name lists a mapping refers to
(Account, TaxCode, TaxRate, Term, Class, Department) readable and queryable, ``Preferences`` with
``AccountingInfoPrefs.BookCloseDate`` (settable: ``set_book_close_date``) — creates, updates, voids and
deletes of transactions dated on or before it fail with QuickBooks' "Account Period Closed" fault (the
message and detail QBO returns, as quoted by integrators: "The account period has closed and the account
books cannot be updated through the QBO Services API…"), ``DiscountLineDetail`` lines, tax-inclusive
invoices (``TaxInclusiveAmt``), and automatic sales tax (``set_automatic_sales_tax``;
``Preferences.TaxPrefs.PartnerTaxEnabled``): QuickBooks then recomputes every ``TaxLine`` itself as rate ×
taxable amount rounded once per rate, whatever amounts the request carried.
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

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, refresh_grant

ENTITIES = {"customer": "Customer", "item": "Item", "invoice": "Invoice", "payment": "Payment", "account": "Account",
            "creditmemo": "CreditMemo", "taxcode": "TaxCode", "taxrate": "TaxRate", "term": "Term", "class": "Class",
            "department": "Department", "purchase": "Purchase"}
TRANSACTIONS = ("Invoice", "Payment", "CreditMemo", "Purchase")
# Payment.Line.LinkedTxn types a Payment may link, and the entity table each refers to: an Expense (a cash
# Purchase) is a charge on the customer when its line is on Accounts Receivable (a customer credit refunded).
LINKABLE = {"Invoice": "Invoice", "CreditMemo": "CreditMemo", "Expense": "Purchase"}
CLOSED_CODE = "6200"
CLOSED_MESSAGE = "Account Period Closed, Cannot Update Through Services API"
CLOSED_DETAIL = ("The account period has closed and the account books cannot be updated through the QBO Services API. "
                 "Please use the QBO website to make these changes.")
CENT = Decimal("0.01")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def fault(kind: str, code: str, message: str, detail: str = "", element: str = "", status: int = 400) -> Response:
    body = {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": element}],
                      "type": kind}, "time": _now()}
    return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")


class QboFault(Exception):
    def __init__(self, kind: str, code: str, message: str, detail: str = "", element: str = "", status: int = 400):
        self.response = fault(kind, code, message, detail, element, status)


def _required(cond: bool, element: str) -> None:
    if not cond:
        raise QboFault("ValidationFault", "2020", "Required param missing, need to supply the required value for the API",
                       f"Required parameter {element} is missing in the request", element)


@dataclass
class Realm:
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {e: {} for e in ENTITIES.values()})
    next_id: int = 100
    replies: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # requestid -> answer
    active: int = 0
    book_close_date: date | None = None  # Preferences.AccountingInfoPrefs.BookCloseDate
    automatic_sales_tax: bool = False  # Preferences.TaxPrefs.PartnerTaxEnabled: QBO computes the tax itself
    preferences_token: int = 0
    # Preferences.CurrencyPrefs and the company's currency list: a company that has turned multicurrency on
    # (``set_multicurrency(False)``: one that has not) and added CAD and EUR.
    home_currency: str = "USD"
    multicurrency: bool = True
    currencies: set[str] = field(default_factory=lambda: {"USD", "CAD", "EUR"})

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)


class Sandbox:
    """QuickBooks Online as a local server. ``faults`` injects 500s, 429s, timeouts and slow answers."""

    api_per_minute = 500
    concurrency = 10
    batch_items_max = 30  # Intuit: at most 30 operations in one batch request
    batch_per_minute = 40  # and at most 40 batch requests per minute per company

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 3600.0, *,
                 api_per_minute: int | None = None) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)
        self.realms: dict[str, Realm] = {}
        self.api_per_minute = api_per_minute or self.api_per_minute  # a harness may lift Intuit's 500/minute
        self.window = WindowLimit(self.api_per_minute, 60.0)
        self.batch_window = WindowLimit(self.batch_per_minute, 60.0)
        self.concurrency_breaches = 0  # requests refused for arriving over the 10 concurrent
        self.batch_requests = 0
        self.api_requests = 0  # accepted API requests of any kind (reads, queries, writes, batches)
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body) for spec validation
        self._lock = threading.RLock()
        self.app = Starlette(routes=[
            Route("/oauth2/v1/tokens/bearer", self._token, methods=["POST"]),
            Route("/v3/company/{realm}/preferences", self._preferences, methods=["GET", "POST"]),
            Route("/v3/company/{realm}/query", self._query, methods=["GET", "POST"]),
            Route("/v3/company/{realm}/batch", self._batch, methods=["POST"]),
            Route("/v3/company/{realm}/{entity}/{id}", self._read, methods=["GET"]),
            Route("/v3/company/{realm}/{entity}", self._write, methods=["POST"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self, realm_id: str = "9130350000000001") -> dict[str, Any]:
        client_id, client_secret = "AB" + secrets.token_hex(8), secrets.token_hex(16)
        refresh = self.issuer.register_client(client_id, client_secret)
        with self._lock:
            realm = self.realms.setdefault(realm_id, Realm())
            for account_id, name, kind in (("1", "Sales of Product Income", "Income"), ("79", "Services", "Income"),
                                           ("35", "Undeposited Funds", "Other Current Asset"),
                                           ("36", "Checking", "Bank"), ("86", "Discounts given", "Income"),
                                           ("90", "Core deposits held", "Other Current Liability"),
                                           ("84", "Accounts Receivable (A/R)", "Accounts Receivable"),
                                           ("41", "Visa", "Credit Card")):
                realm.entities["Account"][account_id] = {"Id": account_id, "Name": name, "AccountType": kind,
                                                         "SyncToken": "0", "Active": True}
            lists = realm.entities
            for code_id, name, taxable in (("TAX", "TAX", True), ("NON", "NON", False)):
                lists["TaxCode"][code_id] = {"Id": code_id, "Name": name, "Taxable": taxable, "Active": True,
                                             "SyncToken": "0"}
            for rate_id, name, rate in (("11", "GST", "5"), ("12", "PST", "7"), ("13", "STATE", "6.25"),
                                        ("14", "COUNTY", "1.5")):
                lists["TaxRate"][rate_id] = {"Id": rate_id, "Name": name, "RateValue": Decimal(rate), "Active": True,
                                             "SyncToken": "0"}
            for term_id, name, days in (("2", "Net 15", 15), ("3", "Net 30", 30), ("4", "Net 60", 60)):
                lists["Term"][term_id] = {"Id": term_id, "Name": name, "Type": "STANDARD", "DueDays": days,
                                          "Active": True, "SyncToken": "0"}
            for entity, entity_id, name in (("Class", "5000000000000001", "Main St"),
                                            ("Class", "5000000000000002", "North"),
                                            ("Department", "1", "Main St"), ("Department", "2", "North")):
                lists[entity][entity_id] = {"Id": entity_id, "Name": name, "FullyQualifiedName": name,
                                            "Active": True, "SyncToken": "0"}
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh, "realm_id": realm_id}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        realm_id = next(iter(self.realms), "9130350000000001")
        return {
            "name": name, "platform": "quickbooks-online", "base_url": base_url,
            "settings": {"realm_id": realm_id, "token_url": f"{base_url}/oauth2/v1/tokens/bearer"},
            "mapping": {"income_accounts": {"labour": "79", "part": "1", "fee": "79", "sublet": "79",
                                            "core_charge": "1", "core_return": "1", "discount": "1"},
                        "payment_accounts": {"card": "35", "cash": "35", "check": "35", "eft": "36"},
                        "tax_codes": {"GST": "11", "PST": "12", "STATE": "13", "COUNTY": "14"},
                        "location_tracking": {"MAIN": "class:5000000000000001", "NORTH": "class:5000000000000002"},
                        "payment_terms": {15: "2", 30: "3", 60: "4"},
                        "core_account": "90", "discount_account": "86"},
        }

    def set_book_close_date(self, when: date | None, realm_id: str | None = None) -> None:
        """The bookkeeper closes the books through ``when`` (None reopens them)."""
        with self._lock:
            for rid, realm in self.realms.items():
                if realm_id in (None, rid):
                    realm.book_close_date = when
                    realm.preferences_token += 1

    def set_automatic_sales_tax(self, enabled: bool = True, realm_id: str | None = None) -> None:
        """Turn on QuickBooks Online's automatic sales tax: QBO computes each tax line itself."""
        with self._lock:
            for rid, realm in self.realms.items():
                if realm_id in (None, rid):
                    realm.automatic_sales_tax = enabled
                    realm.preferences_token += 1

    def set_multicurrency(self, enabled: bool, realm_id: str | None = None) -> None:
        with self._lock:
            for rid, realm in self.realms.items():
                if realm_id in (None, rid):
                    realm.multicurrency = enabled

    def forget_request_ids(self) -> None:
        """Intuit answers a repeated ``requestid`` with the first answer for a while, not for ever."""
        with self._lock:
            for realm in self.realms.values():
                realm.replies.clear()

    def rate_limit_breaches(self) -> int:
        """Requests over the 500/minute, the 40 batches/minute or the 10 concurrent (see the Sandbox protocol)."""
        return self.window.breaches + self.batch_window.breaches + self.concurrency_breaches

    def booked_invoices(self, realm_id: str | None = None) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for rid, realm in self.realms.items():
                if realm_id not in (None, rid):
                    continue
                applied: dict[str, list[Decimal]] = {}
                for payment in realm.entities["Payment"].values():
                    if payment.get("_deleted") or _credit_application(payment):
                        continue  # applying a credit memo moves no money: not a payment received
                    for line in payment.get("Line", []):
                        for linked in line.get("LinkedTxn", []):
                            applied.setdefault(linked["TxnId"], []).append(Decimal(line["Amount"]))
                for inv in realm.entities["Invoice"].values():
                    voided = inv.get("_voided", False)
                    amounts = applied.get(inv["Id"], [])
                    out.append(BookedInvoice(
                        number=inv.get("DocNumber", ""), external_id=inv["Id"], voided=voided,
                        total=Decimal(inv.get("_total_before_void", inv["TotalAmt"])),
                        tax_total=Decimal(inv.get("TxnTaxDetail", {}).get("TotalTax", 0)),
                        line_count=sum(1 for ln in inv.get("Line", []) if ln.get("DetailType") in (
                            "SalesItemLineDetail", "DiscountLineDetail")),
                        payments_applied=sum(amounts, Decimal("0")), payment_count=len(amounts),
                        currency=(inv.get("CurrencyRef") or {}).get("value")))
            return out

    def entities(self, kind: str, realm_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for rid, realm in self.realms.items() if realm_id in (None, rid)
                    for e in realm.entities[kind].values()]

    # -- OAuth2 --
    async def _token(self, request: Request) -> Response:
        return await refresh_grant(self.issuer, request, lambda _: {"x_refresh_token_expires_in": 8726400}, basic_only=401)

    # -- API plumbing: auth, throttles, faults, requestid --
    async def _guard(self, request: Request, realm_id: str) -> Realm | Response:
        if not self.issuer.valid(request.headers.get("authorization")):
            return fault("AUTHENTICATION", "3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                         "Token expired or invalid", status=401)
        realm = self.realms.get(realm_id)
        if realm is None:
            return fault("AUTHORIZATION", "3100", "message=ApplicationAuthorizationFailed; errorCode=003100; "
                         "statusCode=403", "Unknown realm", status=403)
        over_window = self.window.hit(realm_id) is not None
        if not over_window and realm.active >= self.concurrency:
            self.concurrency_breaches += 1
        if over_window or realm.active >= self.concurrency:
            return fault("SERVICE", "3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                         "The request limit was reached.", status=429)
        self.api_requests += 1
        if self.faults.slow_s:
            await asyncio.sleep(self.faults.slow_s)
        return realm

    async def _read(self, request: Request) -> Response:
        realm = await self._guard(request, request.path_params["realm"])
        if isinstance(realm, Response):
            return realm
        kind = ENTITIES.get(request.path_params["entity"])
        with self._lock:
            entity = realm.entities.get(kind, {}).get(request.path_params["id"]) if kind else None
            if entity is None:
                return fault("ValidationFault", "610", "Object Not Found",
                             "Something you're trying to use has been made inactive or deleted.")
            return self._ok({kind: _public(entity)})

    def preferences(self, realm: Realm) -> dict[str, Any]:
        return {"Id": "1", "SyncToken": str(realm.preferences_token),
                "AccountingInfoPrefs": {"BookCloseDate": realm.book_close_date.isoformat()}
                if realm.book_close_date else {},
                "TaxPrefs": {"UsingSalesTax": True, "PartnerTaxEnabled": realm.automatic_sales_tax},
                "SalesFormsPrefs": {"AllowDiscount": True, "CustomTxnNumbers": True},
                "CurrencyPrefs": {"MultiCurrencyEnabled": realm.multicurrency,
                                  "HomeCurrency": {"value": realm.home_currency}}}

    async def _preferences(self, request: Request) -> Response:
        realm = await self._guard(request, request.path_params["realm"])
        if isinstance(realm, Response):
            return realm
        with self._lock:
            if request.method == "POST":  # the bookkeeper's settings screen: BookCloseDate only
                body = jsonmoney.loads(await request.body() or b"{}")
                self.requests.append(("POST", "/preferences", body))
                if str(body.get("SyncToken")) != str(realm.preferences_token):
                    return fault("ValidationFault", "5010", "Stale Object Error", "Preferences SyncToken is stale")
                close = (body.get("AccountingInfoPrefs") or {}).get("BookCloseDate")
                realm.book_close_date = date.fromisoformat(close) if close else None
                realm.preferences_token += 1
            return self._ok({"Preferences": self.preferences(realm)})

    async def _query(self, request: Request) -> Response:
        realm = await self._guard(request, request.path_params["realm"])
        if isinstance(realm, Response):
            return realm
        text = request.query_params.get("query") or (await request.body()).decode()
        match = re.fullmatch(r"\s*select \* from (\w+)(?: where (.+?))?(?: startposition (\d+))?(?: maxresults (\d+))?\s*",
                             text, re.IGNORECASE)
        if not match or match.group(1) not in ENTITIES.values():
            return fault("ValidationFault", "4000", "Error parsing query", f"QueryParserError: {text[:100]}")
        kind, where = match.group(1), match.group(2)
        conditions = re.findall(r"(\w+)\s*(=|like)\s*'((?:[^'\\]|\\.)*)'", where or "", re.IGNORECASE)
        start, limit = int(match.group(3) or 1), int(match.group(4) or 100)
        with self._lock:
            rows = [e for e in realm.entities[kind].values() if not e.get("_deleted")
                    and all(_matches(str(_field(e, f)), op, v.replace("\\'", "'")) for f, op, v in conditions)]
            rows = [_public(e) for e in rows][start - 1: start - 1 + limit]
        body: dict[str, Any] = {"startPosition": start, "maxResults": len(rows)}
        if rows:
            body[kind] = rows
        return self._ok({"QueryResponse": body})

    async def _write(self, request: Request) -> Response:
        realm_id = request.path_params["realm"]
        realm = await self._guard(request, realm_id)
        if isinstance(realm, Response):
            return realm
        kind = ENTITIES.get(request.path_params["entity"])
        if kind is None:
            return fault("ValidationFault", "4001", "Unsupported entity", request.path_params["entity"])
        body = jsonmoney.loads(await request.body() or b"{}")
        operation = request.query_params.get("operation", "create" if "Id" not in body else "update")
        request_id = request.query_params.get("requestid")
        self.requests.append(("POST", f"/{request.path_params['entity']}", body))
        if request_id and request_id in realm.replies:
            status, payload = realm.replies[request_id]  # Intuit replays the earlier answer
            return Response(payload, status_code=status, media_type="application/json")
        decided = self.faults.draw()
        if decided == "500":
            return fault("SystemFault", "10000", "An application error has occurred while processing your request",
                         "System Failure Error: Unknown", status=500)
        if decided == "429":
            throttled = fault("SERVICE", "3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                              "The request limit was reached.", status=429)
            throttled.headers["Retry-After"] = "1"
            return throttled
        realm.active += 1
        try:
            with self._lock:
                try:
                    result = self._apply(realm, kind, operation, body)
                    response = self._ok({kind: _public(result)})
                except QboFault as f:
                    response = f.response
            if request_id:
                realm.replies[request_id] = (response.status_code, response.body)
            if decided == "timeout":
                await self.faults.hang()  # applied, but the answer never arrives in time
            return response
        finally:
            realm.active -= 1

    async def _batch(self, request: Request) -> Response:
        realm_id = request.path_params["realm"]
        realm = await self._guard(request, realm_id)
        if isinstance(realm, Response):
            return realm
        if self.batch_window.hit(realm_id) is not None:
            return fault("SERVICE", "3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                         "The batch request limit was reached.", status=429)
        body = jsonmoney.loads(await request.body() or b"{}")
        items = body.get("BatchItemRequest") or []
        if not items or len(items) > self.batch_items_max:
            return fault("ValidationFault", "6000", "A business validation error has occurred",
                         f"A batch request holds 1 to {self.batch_items_max} items; got {len(items)}")
        request_id = request.query_params.get("requestid")
        if request_id and request_id in realm.replies:
            status, payload = realm.replies[request_id]
            return Response(payload, status_code=status, media_type="application/json")
        decided = self.faults.draw()
        if decided == "500":
            return fault("SystemFault", "10000", "An application error has occurred while processing your request",
                         "System Failure Error: Unknown", status=500)
        self.batch_requests += 1
        answers = []
        with self._lock:
            for item in items:
                kind = next((k for k in ENTITIES.values() if k in item), None)
                answer: dict[str, Any] = {"bId": item.get("bId")}
                if kind is None:
                    answer["Fault"] = {"Error": [{"Message": "Unsupported entity", "code": "4001"}], "type": "ValidationFault"}
                else:
                    self.requests.append(("POST", f"/{kind.lower()}", item[kind]))
                    try:
                        answer[kind] = _public(self._apply(realm, kind, item.get("operation", "create"), item[kind]))
                    except QboFault as f:
                        answer["Fault"] = jsonmoney.loads(f.response.body)["Fault"]
                answers.append(answer)
        response = self._ok({"BatchItemResponse": answers})
        if request_id:
            realm.replies[request_id] = (response.status_code, response.body)
        if decided == "timeout":
            await self.faults.hang()
        return response

    def _ok(self, body: dict[str, Any]) -> Response:
        body["time"] = _now()
        return Response(jsonmoney.dumps(body), media_type="application/json")

    # -- the books --
    def _apply(self, realm: Realm, kind: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)  # the books never share objects with the recorded request
        table = realm.entities[kind]
        if operation in ("update", "void", "delete"):
            _required("Id" in body, f"{kind}.Id")
            _required("SyncToken" in body, f"{kind}.SyncToken")
            current = table.get(str(body["Id"]))
            if current is None or current.get("_deleted"):
                raise QboFault("ValidationFault", "610", "Object Not Found",
                               "Something you're trying to use has been made inactive or deleted.")
            if str(body["SyncToken"]) != current["SyncToken"]:
                raise QboFault("ValidationFault", "5010", "Stale Object Error",
                               f"Stale Object Error : You and {'someone else'} were working on this at the same time. "
                               f"{kind} Id={current['Id']} SyncToken={body['SyncToken']} current {current['SyncToken']}")
        if kind in TRANSACTIONS:
            self._check_open_period(realm, table, operation, body)
        if kind in ("Customer", "Invoice", "Payment", "CreditMemo") and operation in ("create", "update"):
            self._check_currency(realm, kind, table, operation, body)
        if kind == "Customer":
            return self._customer(realm, table, operation, body)
        if kind == "Item":
            return self._item(realm, table, operation, body)
        if kind == "Invoice":
            return self._invoice(realm, table, operation, body)
        if kind == "Payment":
            return self._payment(realm, table, operation, body)
        if kind == "CreditMemo":
            return self._credit_memo(realm, table, operation, body)
        if kind == "Purchase":
            return self._purchase(realm, table, operation, body)
        raise QboFault("ValidationFault", "4001", "Operation not supported", kind)

    def _check_open_period(self, realm: Realm, table: dict, operation: str, body: dict) -> None:
        """Nothing dated on or before the books-closing date may be created, changed, voided or deleted."""
        if realm.book_close_date is None:
            return
        dates = []
        if operation == "create":
            dates.append(body.get("TxnDate") or datetime.now(timezone.utc).date().isoformat())
        else:
            current = table[str(body["Id"])]
            dates.append(current.get("TxnDate"))
            if operation == "update" and body.get("TxnDate"):
                dates.append(body["TxnDate"])
        if any(d and date.fromisoformat(str(d)) <= realm.book_close_date for d in dates):
            raise QboFault("ValidationFault", CLOSED_CODE, CLOSED_MESSAGE, CLOSED_DETAIL, "TxnDate")

    def _check_currency(self, realm: Realm, kind: str, table: dict, operation: str, body: dict) -> None:
        """Finance.xsd's CurrencyRef: a currency the company has added, a foreign one only with multicurrency
        on; a customer's currency is fixed once set and a transaction is in its customer's currency."""
        current = table.get(str(body.get("Id"))) if operation == "update" else None
        code = (body.get("CurrencyRef") or (current or {}).get("CurrencyRef") or {"value": realm.home_currency})["value"]
        if code != realm.home_currency and not realm.multicurrency:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           f"Multicurrency is not enabled for this company: {code} is not the home currency.",
                           "CurrencyRef")
        if code not in realm.currencies:
            raise QboFault("ValidationFault", "2500", "Invalid Reference Id",
                           f"Invalid Reference Id : Currency {code} is not in the company's currency list",
                           "CurrencyRef")
        if kind == "Customer":
            if current is not None and (current.get("CurrencyRef") or {"value": realm.home_currency})["value"] != code:
                raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                               "You can't change the currency of a customer.", "CurrencyRef")
        else:
            customer_ref = body.get("CustomerRef") or (current or {}).get("CustomerRef") or {}
            customer = realm.entities["Customer"].get(str(customer_ref.get("value")))
            held = (customer or {}).get("CurrencyRef", {"value": realm.home_currency})["value"]
            if customer is not None and held != code:
                raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                               f"The transaction's currency ({code}) must be the customer's currency ({held}).",
                               "CurrencyRef")
        body["CurrencyRef"] = {"value": code}

    def _ref_exists(self, realm: Realm, kind: str, ref: dict | None, element: str) -> None:
        if ref is not None and str(ref.get("value")) not in realm.entities[kind]:
            raise QboFault("ValidationFault", "2500", "Invalid Reference Id",
                           f"Invalid Reference Id : {kind} {ref.get('value')} not found", element)

    def _unique_name(self, table: dict, field_name: str, value: str, own_id: str | None) -> None:
        for e in table.values():
            if e.get(field_name) == value and e["Id"] != own_id and not e.get("_deleted"):
                raise QboFault("ValidationFault", "6240", "Duplicate Name Exists Error",
                               f"The name supplied already exists. : Another {field_name} is already using this name.",
                               field_name)

    def _customer(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        if operation == "create":
            _required(bool(body.get("DisplayName") or body.get("GivenName")), "Customer.DisplayName")
            self._unique_name(table, "DisplayName", body["DisplayName"], None)
            entity = {**body, "Id": realm.new_id(), "SyncToken": "0", "Active": True}
            table[entity["Id"]] = entity
            return entity
        current = table[str(body["Id"])]
        if "DisplayName" in body:
            self._unique_name(table, "DisplayName", body["DisplayName"], current["Id"])
        current.update({k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse")})
        current["SyncToken"] = str(int(current["SyncToken"]) + 1)
        return current

    def _item(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        _required(operation == "create", "Item.Id")
        _required(bool(body.get("Name")), "Item.Name")
        _required(body.get("Type") in ("Service", "NonInventory", "Inventory"), "Item.Type")
        _required("IncomeAccountRef" in body, "Item.IncomeAccountRef")
        if str(body["IncomeAccountRef"].get("value")) not in realm.entities["Account"]:
            raise QboFault("ValidationFault", "2500", "Invalid Reference Id",
                           f"Invalid Reference Id : Account {body['IncomeAccountRef'].get('value')} not found",
                           "IncomeAccountRef")
        self._unique_name(table, "Name", body["Name"], None)
        entity = {**body, "Id": realm.new_id(), "SyncToken": "0", "Active": True}
        table[entity["Id"]] = entity
        return entity

    def _invoice_totals(self, realm: Realm, invoice: dict, kind: str = "Invoice") -> None:
        _required(bool(invoice.get("Line")), f"{kind}.Line")
        self._ref_exists(realm, "Term", invoice.get("SalesTermRef"), "SalesTermRef")
        self._ref_exists(realm, "Department", invoice.get("DepartmentRef"), "DepartmentRef")
        subtotal = Decimal("0")
        inclusive = Decimal("0")
        for line in invoice["Line"]:
            _required(line.get("DetailType") in ("SalesItemLineDetail", "DiscountLineDetail"), "Line.DetailType")
            _required("Amount" in line, "Line.Amount")
            if line["DetailType"] == "DiscountLineDetail":
                discount = line.get("DiscountLineDetail") or {}
                if not discount.get("PercentBased"):
                    _required("DiscountAccountRef" in discount, "DiscountLineDetail.DiscountAccountRef")
                self._ref_exists(realm, "Account", discount.get("DiscountAccountRef"), "DiscountAccountRef")
                subtotal -= Decimal(line["Amount"])  # a discount line's amount is subtracted
                inclusive -= Decimal(line["Amount"])
                continue
            detail = line.get("SalesItemLineDetail") or {}
            self._ref_exists(realm, "Class", detail.get("ClassRef"), "ClassRef")
            self._ref_exists(realm, "TaxCode", detail.get("TaxCodeRef"), "TaxCodeRef")
            inclusive += Decimal(detail.get("TaxInclusiveAmt", line["Amount"]))
            _required("ItemRef" in detail, "SalesItemLineDetail.ItemRef")
            if str(detail["ItemRef"].get("value")) not in realm.entities["Item"]:
                raise QboFault("ValidationFault", "2500", "Invalid Reference Id",
                               f"Invalid Reference Id : Item {detail['ItemRef'].get('value')} not found", "ItemRef")
            if "Qty" in detail and "UnitPrice" in detail:
                expected = (Decimal(detail["Qty"]) * Decimal(detail["UnitPrice"])).quantize(CENT)
                if expected != Decimal(line["Amount"]).quantize(CENT):
                    raise QboFault("ValidationFault", "6070", "Amount is not equal to UnitPrice * Qty",
                                   f"Supplied value:{line['Amount']}", "Line.Amount")
            subtotal += Decimal(line["Amount"])
        tax = invoice.get("TxnTaxDetail") or {}
        for tax_line in tax.get("TaxLine") or []:
            self._ref_exists(realm, "TaxRate", (tax_line.get("TaxLineDetail") or {}).get("TaxRateRef"), "TaxRateRef")
        if realm.automatic_sales_tax and tax.get("TaxLine"):
            # Automatic sales tax: QuickBooks works the tax out itself, rate × taxable amount rounded once per
            # rate, and overrides what the request said.
            for tax_line in tax["TaxLine"]:
                detail = tax_line.get("TaxLineDetail") or {}
                rate_entity = realm.entities["TaxRate"].get(str((detail.get("TaxRateRef") or {}).get("value")))
                percent = Decimal(rate_entity["RateValue"]) if rate_entity else Decimal(detail.get("TaxPercent", 0))
                tax_line["Amount"] = (Decimal(detail.get("NetAmountTaxable", 0)) * percent / 100).quantize(
                    CENT, rounding=ROUND_HALF_UP)
            tax["TotalTax"] = sum((Decimal(t["Amount"]) for t in tax["TaxLine"]), Decimal("0"))
        tax_total = Decimal(tax.get("TotalTax", 0))
        if invoice.get("GlobalTaxCalculation") == "TaxInclusive" and inclusive != subtotal + tax_total:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           f"Tax inclusive amounts {inclusive} do not equal line amounts {subtotal} plus tax {tax_total}",
                           "TaxInclusiveAmt")
        if tax.get("TaxLine"):
            lines_tax = sum((Decimal(t["Amount"]) for t in tax["TaxLine"]), Decimal("0"))
            if lines_tax != tax_total:
                raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                               f"TotalTax {tax_total} does not equal the sum of TaxLine amounts {lines_tax}", "TxnTaxDetail")
        invoice["TotalAmt"] = (subtotal + tax_total).quantize(CENT)
        applied = sum((Decimal(line["Amount"]) for p in realm.entities["Payment"].values() if not p.get("_deleted")
                       for line in p.get("Line", []) for linked in line.get("LinkedTxn", [])
                       if linked["TxnId"] == invoice["Id"] and linked.get("TxnType", kind) == kind), Decimal("0"))
        if applied > invoice["TotalAmt"]:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           "The invoice total would be less than the payments applied to it.", "Invoice.TotalAmt")
        invoice["Balance"] = invoice["TotalAmt"] - applied

    def _invoice(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        if operation == "create":
            _required("CustomerRef" in body, "Invoice.CustomerRef")
            if str(body["CustomerRef"].get("value")) not in realm.entities["Customer"]:
                raise QboFault("ValidationFault", "2500", "Invalid Reference Id", "Customer not found", "CustomerRef")
            if len(body.get("DocNumber", "")) > 21:
                raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                               "String length is either shorter or longer than supported by specification. "
                               "Min:0 Max:21 supported. Supplied length:" + str(len(body["DocNumber"])), "DocNumber")
            entity = {**body, "Id": realm.new_id(), "SyncToken": "0"}
            self._invoice_totals(realm, entity)
            table[entity["Id"]] = entity
            return entity
        current = table[str(body["Id"])]
        if operation == "void":
            linked = [p for p in realm.entities["Payment"].values() if not p.get("_deleted") and any(
                lt["TxnId"] == current["Id"] for line in p.get("Line", []) for lt in line.get("LinkedTxn", []))]
            if linked:
                raise QboFault("ValidationFault", "6140", "A business validation error has occurred",
                               "This transaction is linked to a payment; delete or unlink the payment first.")
            current["_total_before_void"] = current["TotalAmt"]
            current.update({"_voided": True, "TotalAmt": Decimal("0"), "Balance": Decimal("0"),
                            "PrivateNote": f"Voided {current.get('PrivateNote') or ''}".strip()})
        else:
            if current.get("_voided"):
                raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                               "You can't edit a voided transaction.")
            _required(body.get("sparse") is True or "Line" in body, "Invoice.Line")
            updated = {**current, **{k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse")}}
            self._invoice_totals(realm, updated)
            current.clear()
            current.update(updated)
        current["SyncToken"] = str(int(current["SyncToken"]) + 1)
        return current

    def _payment(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        invoices = realm.entities["Invoice"]
        linked_tables = {txn_type: realm.entities[kind] for txn_type, kind in LINKABLE.items()}
        if operation == "delete":
            current = table[str(body["Id"])]
            for line in current.get("Line", []):
                for linked in line.get("LinkedTxn", []):
                    doc = linked_tables[linked.get("TxnType", "Invoice")][linked["TxnId"]]
                    field_name = _open_field(linked.get("TxnType", "Invoice"))
                    doc[field_name] = doc[field_name] + Decimal(line["Amount"])
                    doc["SyncToken"] = str(int(doc["SyncToken"]) + 1)
            current["_deleted"] = True
            current["status"] = "Deleted"
            return current
        _required(operation == "create", "Payment.Id")
        _required("CustomerRef" in body, "Payment.CustomerRef")
        _required("TotalAmt" in body, "Payment.TotalAmt")
        total = Decimal(body["TotalAmt"])
        applied = Decimal("0")
        for line in body.get("Line", []):
            for linked in line.get("LinkedTxn", []):
                if linked.get("TxnType") == "CreditMemo":  # a credit applied: it pays like money received
                    memo = realm.entities["CreditMemo"].get(str(linked.get("TxnId")))
                    if memo is None:
                        raise QboFault("ValidationFault", "2500", "Invalid Reference Id", "Linked credit memo not found",
                                       "LinkedTxn")
                    if Decimal(line["Amount"]) > memo["Balance"]:
                        raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                                       "The credit applied is more than the credit memo's remaining credit.", "Line.Amount")
                    applied -= Decimal(line["Amount"])
                    continue
                if linked.get("TxnType") == "Expense":  # a customer charge: money paid back on its credit
                    applied += self._linked_expense(realm, body, linked, Decimal(line["Amount"]))
                    continue
                inv = invoices.get(str(linked.get("TxnId")))
                if linked.get("TxnType") != "Invoice" or inv is None:
                    raise QboFault("ValidationFault", "2500", "Invalid Reference Id", "Linked invoice not found", "LinkedTxn")
                if inv.get("_voided"):
                    raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                                   "You can't apply a payment to a voided transaction.", "LinkedTxn")
                if Decimal(line["Amount"]) > inv["Balance"]:
                    raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                                   "The payment amount applied is more than the invoice's open balance.", "Line.Amount")
                applied += Decimal(line["Amount"])
        if applied > total:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           "The amount applied exceeds the payment total.", "TotalAmt")
        entity = {**body, "Id": realm.new_id(), "SyncToken": "0", "UnappliedAmt": total - applied}
        for line in body.get("Line", []):
            for linked in line.get("LinkedTxn", []):
                doc = linked_tables[linked.get("TxnType", "Invoice")][str(linked["TxnId"])]
                field_name = _open_field(linked.get("TxnType", "Invoice"))
                doc[field_name] = doc[field_name] - Decimal(line["Amount"])
                doc["SyncToken"] = str(int(doc["SyncToken"]) + 1)  # paying an invoice changes it
        table[entity["Id"]] = entity
        return entity

    def _credit_memo(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        _required(operation == "create", "CreditMemo.Id")
        _required("CustomerRef" in body, "CreditMemo.CustomerRef")
        self._ref_exists(realm, "Customer", body["CustomerRef"], "CustomerRef")
        if len(body.get("DocNumber", "")) > 21:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           "String length is either shorter or longer than supported by specification. "
                           "Min:0 Max:21 supported. Supplied length:" + str(len(body["DocNumber"])), "DocNumber")
        entity = {**body, "Id": realm.new_id(), "SyncToken": "0"}
        self._invoice_totals(realm, entity, "CreditMemo")
        entity["RemainingCredit"] = entity["Balance"]
        table[entity["Id"]] = entity
        return entity


    def _linked_expense(self, realm: Realm, payment: dict, linked: dict, amount: Decimal) -> Decimal:
        """An Expense a Payment links: a cash Purchase to this customer on Accounts Receivable, not yet paid."""
        expense = realm.entities["Purchase"].get(str(linked.get("TxnId")))
        if expense is None or expense.get("_deleted"):
            raise QboFault("ValidationFault", "2500", "Invalid Reference Id", "Linked expense not found", "LinkedTxn")
        if expense.get("_open", Decimal("0")) <= 0 or str((expense.get("EntityRef") or {}).get("value")) != str(
                (payment.get("CustomerRef") or {}).get("value")):
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           "The linked expense is not an open Accounts Receivable charge of this customer.", "LinkedTxn")
        if amount > expense["_open"]:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           "The amount applied is more than the expense's open balance.", "Line.Amount")
        return amount

    def _purchase(self, realm: Realm, table: dict, operation: str, body: dict) -> dict:
        """An expense (Finance.xsd ``Purchase``): create and delete. ``PaymentType`` Cash, Check or CreditCard,
        ``AccountRef`` the account paid from (Finance.xsd: a check from a bank account, a credit card purchase from
        a credit card account; cash from a bank or other current asset account), lines of
        ``AccountBasedExpenseLineDetail``; a line on Accounts Receivable needs a customer as the payee (it is a
        charge on that customer, open until a Payment links it). A linked expense cannot be deleted."""
        if operation == "delete":
            current = table[str(body["Id"])]
            if any(not p.get("_deleted") and any(lt.get("TxnType") == "Expense" and lt["TxnId"] == current["Id"]
                                                 for line in p.get("Line", []) for lt in line.get("LinkedTxn", []))
                   for p in realm.entities["Payment"].values()):
                raise QboFault("ValidationFault", "6140", "A business validation error has occurred",
                               "This transaction is linked to a payment; delete or unlink the payment first.")
            current.update({"_deleted": True, "status": "Deleted"})
            return current
        _required(operation == "create", "Purchase.Id")
        _required(body.get("PaymentType") in ("Cash", "Check", "CreditCard"), "Purchase.PaymentType")
        _required("AccountRef" in body, "Purchase.AccountRef")
        _required(bool(body.get("Line")), "Purchase.Line")
        self._ref_exists(realm, "Account", body["AccountRef"], "AccountRef")
        paid_from = realm.entities["Account"][str(body["AccountRef"]["value"])]["AccountType"]
        allowed = {"Check": ("Bank",), "CreditCard": ("Credit Card",), "Cash": ("Bank", "Other Current Asset")}
        if paid_from not in allowed[body["PaymentType"]]:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           f"A {body['PaymentType']} expense cannot be paid from a {paid_from} account.", "AccountRef")
        entity_ref = body.get("EntityRef") or {}
        total = Decimal("0")
        receivable = Decimal("0")
        for line in body["Line"]:
            _required(line.get("DetailType") == "AccountBasedExpenseLineDetail", "Line.DetailType")
            _required("Amount" in line, "Line.Amount")
            detail = line.get("AccountBasedExpenseLineDetail") or {}
            _required("AccountRef" in detail, "AccountBasedExpenseLineDetail.AccountRef")
            self._ref_exists(realm, "Account", detail["AccountRef"], "AccountRef")
            if realm.entities["Account"][str(detail["AccountRef"]["value"])]["AccountType"] == "Accounts Receivable":
                if entity_ref.get("type") != "Customer" or str(entity_ref.get("value")) not in realm.entities["Customer"]:
                    raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                                   "When you use Accounts Receivable, you must choose a customer in the Name field.",
                                   "EntityRef")
                receivable += Decimal(line["Amount"])
            total += Decimal(line["Amount"])
        if "TotalAmt" in body and Decimal(body["TotalAmt"]) != total:
            raise QboFault("ValidationFault", "6000", "A business validation error has occurred",
                           f"TotalAmt {body['TotalAmt']} does not equal the sum of the lines {total}", "TotalAmt")
        # _open: the part of the A/R charge no linked Payment has paid yet (the sandbox's books; not a QBO field).
        entity = {**body, "Id": realm.new_id(), "SyncToken": "0", "TotalAmt": total, "_open": receivable}
        table[entity["Id"]] = entity
        return entity


def _open_field(txn_type: str) -> str:
    """Where a linked document keeps what is still open: an invoice's or credit memo's Balance; an expense's
    unpaid Accounts Receivable charge (kept privately: a Purchase has no Balance in Finance.xsd)."""
    return "_open" if txn_type == "Expense" else "Balance"


def _credit_application(payment: dict[str, Any]) -> bool:
    return any(linked.get("TxnType") == "CreditMemo" for line in payment.get("Line", [])
               for linked in line.get("LinkedTxn", []))


def _public(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if not k.startswith("_")}


def _matches(value: str, operator: str, wanted: str) -> bool:
    """``=``, or ``LIKE`` with ``%`` (any run of characters), the one wildcard Intuit documents."""
    if operator == "=":
        return value == wanted
    return re.fullmatch(".*".join(re.escape(part) for part in wanted.split("%")), value, re.DOTALL) is not None


def _field(entity: dict[str, Any], name: str) -> Any:
    if name == "PrimaryEmailAddr":
        return (entity.get("PrimaryEmailAddr") or {}).get("Address")
    return entity.get(name)
