"""A local Dynamics 365 Business Central (API v2.0) for the demo and the tests.

Built from Microsoft's v2.0 resource pages (``business-central/v2.0-docs``: the property tables of customer,
salesInvoice(+Line), salesCreditMemo(+Line), customerPaymentJournal, customerPayment; bound actions) and the
limits pages: Microsoft Entra ID client credentials (``/{tenant}/oauth2/v2.0/token``, scope
``https://api.businesscentral.dynamics.com/.default``, tokens of 3599 s), ``companies`` and
``companies({id})/<entity set>`` URLs, OData ``$filter`` (``field eq 'text'`` joined by ``and``), writes of
unknown properties refused (as OData does) and of read-only ones refused, GUID / date / decimal / enum / length
checks, ``@odata.etag`` on every entity with ``If-Match`` required on PATCH and DELETE (missing:
``BadRequest_InvalidToken``; stale: 412 ``Request_EntityChanged``), invoices and credit memos created as
drafts (deep insert of lines), ``Microsoft.NAV.post`` / ``Microsoft.NAV.cancel`` (cancel refused once anything
is applied; a corrective credit memo is made; a credit memo's cancel refused unless it is a corrective one), "The invoice has been posted and can no longer be modified",
tax computed per line from the line's ``taxCode``, per-user limits of 6,000 requests per 5-minute sliding window
and 5 concurrent requests (429 with ``Retry-After``) and errors as ``{"error": {"code", "message"}}``.

Not as Business Central does it (documented in the README): a customer payment journal line reduces the
invoice's ``remainingAmount`` as soon as it is entered (Business Central: when the journal is posted, which API
v2.0 offers no action for); read-only properties are refused where Business Central may ignore them; error
texts not quoted from Microsoft are the sandbox's own.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import secrets
import threading
import time
import uuid
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, WindowLimit

TENANT = "11111111-2222-3333-4444-555555555555"
SCOPE = "https://api.businesscentral.dynamics.com/.default"
CENT, ZERO = Decimal("0.01"), Decimal("0")
SALES_TAX_PAYABLE, INVOICE_ROUNDING = "23100", "65950"  # the tax jurisdictions' sales tax account; a rounding account
CANADIAN = {"GST", "PST"}  # jurisdictions of a Canadian tax area: rounded jurisdiction by jurisdiction
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SEGMENT = re.compile(r"^([A-Za-z.]+)(?:\(([^)]*)\))?$")
ADJUSTMENT = re.compile(r"^(.+)-([AC]\d+)$")  # an adjustment's externalDocumentNumber: the invoice's, tagged
FILTER = re.compile(r"^(\w+) eq '((?:[^']|'')*)'$")

# Writable properties per entity (name -> type[:max length or enum]) from the v2.0 property tables; the
# read-only ones ("Read-Only" / "Non-editable") are refused on write.
S, G, D, N, B, I = "string", "guid", "date", "decimal", "boolean", "integer"
LINE = {"sequence": I, "itemId": G, "accountId": G, "lineType": "enum:Comment|Account|Item|Resource|Fixed Asset|Charge",
        "lineObjectNumber": S + ":20", "description": S + ":100", "description2": S + ":50", "unitOfMeasureId": G,
        "unitOfMeasureCode": S + ":10", "quantity": N, "unitPrice": N, "discountAmount": N, "discountPercent": N,
        "discountAppliedBeforeTax": B, "taxCode": S + ":20", "shipmentDate": D, "itemVariantId": G, "locationId": G}
LINE_READ_ONLY = {"id", "documentId", "amountExcludingTax", "taxPercent", "totalTaxAmount", "amountIncludingTax",
                  "invoiceDiscountAllocation", "netAmount", "netTaxAmount", "netAmountIncludingTax"}
ADDRESS = {f"{who}{part}": S for who in ("sellTo", "billTo", "shipTo")
           for part in ("AddressLine1", "AddressLine2", "City", "Country", "State", "PostCode")}
DOCUMENT = {"number": S + ":20", "externalDocumentNumber": S + ":35", "postingDate": D, "dueDate": D,
            "customerId": G, "customerNumber": S + ":20", "customerName": S + ":100", "billToName": S + ":100",
            "billToCustomerId": G, "billToCustomerNumber": S + ":20", "currencyId": G, "currencyCode": S + ":10",
            "shortcutDimension1Code": S, "shortcutDimension2Code": S, "paymentTermsId": G, "shipmentMethodId": G,
            "salesperson": S + ":20", "discountAmount": N, "discountAppliedBeforeTax": B, "phoneNumber": S + ":30",
            "email": S + ":80"} | {k: v for k, v in ADDRESS.items() if not k.startswith("shipTo")}
WRITABLE = {
    "customers": {"number": S + ":20", "displayName": S + ":100", "type": "enum:Company|Person",
                  "addressLine1": S + ":100", "addressLine2": S + ":50", "city": S + ":30", "state": S + ":30",
                  "country": S + ":10", "postalCode": S + ":20", "phoneNumber": S + ":30", "email": S + ":80",
                  "website": S + ":80", "salespersonCode": S + ":20", "creditLimit": N, "taxLiable": B,
                  "taxAreaId": G, "taxRegistrationNumber": S + ":20", "currencyId": G, "currencyCode": S + ":10",
                  "paymentTermsId": G, "shipmentMethodId": G, "paymentMethodId": G,
                  "blocked": "enum: |Ship|Invoice|All"},
    "salesInvoices": DOCUMENT | ADDRESS | {"invoiceDate": D, "promisedPayDate": D,
                                           "customerPurchaseOrderReference": S + ":35", "shipToName": S + ":100",
                                           "shipToContact": S + ":100", "disputeStatusId": G, "disputeStatus": S},
    "salesCreditMemos": DOCUMENT | {"creditMemoDate": D, "invoiceId": G, "invoiceNumber": S + ":20",
                                    "customerReturnReasonId": G},
    "customerPayments": {"journalId": G, "lineNumber": I, "customerId": G, "customerNumber": S + ":20",
                         "postingDate": D, "documentNumber": S + ":20",
                         "externalDocumentNumber": S + ":35", "amount": N, "appliesToInvoiceId": G,
                         "appliesToInvoiceNumber": S + ":20", "description": S + ":100", "comment": S + ":250"},
}
READ_ONLY = {"id", "lastModifiedDateTime", "status", "pricesIncludeTax", "remainingAmount", "totalAmountExcludingTax",
             "totalTaxAmount", "totalAmountIncludingTax", "orderId", "orderNumber", "journalDisplayName", "balanceDue",
             "taxAreaDisplayName"}
LINES = {"salesInvoices": "salesInvoiceLines", "salesCreditMemos": "salesCreditMemoLines"}
ENTITY_TYPE = {"customers": "customer", "salesInvoices": "salesInvoice", "salesCreditMemos": "salesCreditMemo",
               "customerPayments": "customerPayment", "salesInvoiceLines": "salesInvoiceLine",
               "salesCreditMemoLines": "salesCreditMemoLine"}


class BCError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        return bc_error(self.status, self.code, self.message)


def bc_error(status: int, code: str, message: str, retry_after: int | None = None) -> Response:
    response = Response(jsonmoney.dumps({"error": {"code": code, "message": message}}), status_code=status,
                        media_type="application/json")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _booked_tax(document: dict[str, Any]) -> Decimal:
    """A document's tax in the books: Business Central's plus its lines on the sales tax account."""
    lines = document.get("salesInvoiceLines", document.get("salesCreditMemoLines")) or []
    return document["totalTaxAmount"] + sum((ln["amountExcludingTax"] for ln in lines
                                            if ln.get("lineObjectNumber") == SALES_TAX_PAYABLE), ZERO)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_properties(entity_set: str, body: Any, writable: dict[str, str] | None = None) -> None:
    """Unknown and read-only properties refused; types, lengths and enums as the v2.0 tables state them."""
    if not isinstance(body, dict):
        raise BCError(400, "BadRequest", "The request body must be a JSON object.")
    writable = writable if writable is not None else WRITABLE[entity_set]
    for name, value in body.items():
        if name in LINES.values() and LINES.get(entity_set) == name:
            if not isinstance(value, list):
                raise BCError(400, "BadRequest", f"The navigation property '{name}' must be a collection.")
            for line in value:
                check_properties(name, line, LINE)
            continue
        kind = writable.get(name)
        if kind is None:
            if name in READ_ONLY or name in LINE_READ_ONLY:
                raise BCError(400, "BadRequest", f"The property '{name}' is read-only.")
            raise BCError(400, "BadRequest", f"The property '{name}' does not exist on type "
                          f"'Microsoft.NAV.{ENTITY_TYPE[entity_set]}'. Make sure to only use property names that "
                          "are defined by the type.")
        _check_value(name, kind, value)


def _check_value(name: str, kind: str, value: Any) -> None:
    base, _, rule = kind.partition(":")
    invalid = BCError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type of "
                                         f"property '{name}' ({base}).")
    if base in (N, I):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or (base == I and not isinstance(value, int)):
            raise invalid
    elif base == B:
        if not isinstance(value, bool):
            raise invalid
    elif not isinstance(value, str):
        raise invalid
    elif base == G and not GUID.match(value):
        raise invalid
    elif base == D:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise invalid from None
    elif base == "enum" and value not in rule.split("|"):
        raise BCError(400, "BadRequest", f"The value '{value}' is not valid for the enum of property '{name}'.")
    elif base == S and rule and len(value) > int(rule):
        raise BCError(400, "Internal_StringLengthExceeded",
                      f"The length of the string is {len(value)}, but it must be less than or equal to {rule} "
                      f"characters. Value: {value}")


class Company:
    def __init__(self, name: str) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.sets: dict[str, dict[str, dict[str, Any]]] = {
            "customers": {}, "salesInvoices": {}, "salesCreditMemos": {}, "customerPayments": {}}
        self.journals = {str(uuid.uuid4()): {"code": "CASHRCPT", "displayName": "Cash receipts"}}
        self.accounts = {"40100", "40200", "40300", "22100", "40900", SALES_TAX_PAYABLE, INVOICE_ROUNDING}
        # Tax groups (a line's ``taxCode``) -> the tax jurisdictions of the company's tax areas and their rates.
        self.tax_codes: dict[str, tuple[tuple[str, Decimal], ...]] = {
            "GST": (("GST", Decimal("5")),), "PST": (("PST", Decimal("7")),),
            "GSTPST": (("GST", Decimal("5")), ("PST", Decimal("7"))), "STATE": (("STATE", Decimal("6.25")),),
            "COUNTY": (("COUNTY", Decimal("1")),), "STATECOUNTY": (("STATE", Decimal("6.25")), ("COUNTY", Decimal("1"))),
            "NONTAXABLE": ()}
        self.numbers = itertools.count(1001)


class Sandbox:
    """Business Central as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 3599.0, *,
                 five_minute_limit: int = 6000, concurrency_limit: int = 5) -> None:
        self.faults = faults or Faults()
        self.access_ttl_s = access_ttl_s
        self.five_minute_limit, self.concurrency_limit = five_minute_limit, concurrency_limit
        self.window = WindowLimit(five_minute_limit, 300.0)
        self.concurrency_breaches = 0
        self.clients: dict[str, str] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (client id, expiry)
        self.refresh_count = 0
        self.in_flight: dict[str, int] = {}
        self.companies: dict[str, Company] = {}
        self.requests: list[tuple[str, str, Any]] = []  # every write: (method, path after the company, body)
        self._lock = threading.RLock()
        self._versions = itertools.count(1)
        self.app = Starlette(routes=[
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/v2.0/{tenant}/{environment}/api/v2.0/{rest:path}", self._api,
                  methods=["GET", "POST", "PATCH", "DELETE"]),
        ])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(30)
        with self._lock:
            self.clients[client_id] = secret
            if not self.companies:
                company = Company("Main St Auto Electric")
                self.companies[company.id] = company
        return {"client_id": client_id, "client_secret": secret}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "business-central",
            "base_url": f"{base_url}/v2.0/{TENANT}/production/api/v2.0",
            "settings": {"tenant_id": TENANT, "token_url": f"{base_url}/{TENANT}/oauth2/v2.0/token",
                         "requests_per_five_minutes": self.five_minute_limit,
                         "concurrency": min(5, self.concurrency_limit), "tax_rounding_account": SALES_TAX_PAYABLE},
            "mapping": {"income_accounts": {"part": "40100", "labour": "40200", "fee": "40300", "sublet": "40200",
                                            "discount": "40100", "core_charge": "40100", "core_return": "40100"},
                        "core_account": "22100", "discount_account": "40900",
                        "tax_codes": {"GST": "GST", "PST": "PST", "GST+PST": "GSTPST", "STATE": "STATE",
                                      "COUNTY": "COUNTY", "COUNTY+STATE": "STATECOUNTY", "none": "NONTAXABLE"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.window.breaches + self.concurrency_breaches

    def expire_all(self) -> None:
        with self._lock:
            self.tokens = {t: (c, 0.0) for t, (c, _) in self.tokens.items()}

    def company(self) -> Company:
        return next(iter(self.companies.values()))

    def records(self, entity_set: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for c in self.companies.values() for r in c.sets[entity_set].values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        """Each shop invoice as the books hold it. An invoice a refund's credit memo is applied to cannot be
        cancelled, so its edits are adjustment documents carrying its number tagged ``-A<n>`` (an increase: a sales
        invoice) or ``-C<n>`` (a decrease: a credit memo applied to it): they count in its total, tax and payments;
        one whose documents net to nothing is voided."""
        with self._lock:
            out = []
            for company in self.companies.values():
                payments = list(company.sets["customerPayments"].values())
                invoices = company.sets["salesInvoices"].values()
                adjustments: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}  # (base, tag) -> docs
                for sign, document in [(1, i) for i in invoices] + [
                        (-1, m) for m in company.sets["salesCreditMemos"].values()]:
                    tagged = ADJUSTMENT.match(document.get("externalDocumentNumber") or "")
                    if tagged and document["status"] not in ("Draft", "Canceled", "Corrective"):
                        adjustments.setdefault((tagged.group(1), tagged.group(2)), []).append((sign, document))
                owned = {invoice["id"]: [] if invoice["status"] in ("Draft", "Canceled") else [
                    (sign, d) for (base, tag), held in adjustments.items() for sign, d in held if d is not invoice
                    and (invoice.get("externalDocumentNumber") or "")[:35 - len(tag) - 1] == base
                    and d["customerId"] == invoice["customerId"]] for invoice in invoices}
                adjusted = {d["id"] for own in owned.values() for _, d in own}
                for invoice in invoices:
                    if invoice["id"] in adjusted:
                        continue
                    number, own = invoice.get("externalDocumentNumber") or "", owned[invoice["id"]]
                    documents = [(1, invoice)] + own
                    ids = {d["id"] for sign, d in documents if sign > 0}
                    paid = [p["amount"] for p in payments if p.get("appliesToInvoiceId") in ids]
                    total = sum((sign * d["totalAmountIncludingTax"] for sign, d in documents), ZERO)
                    booked_tax = sum((sign * _booked_tax(d) for sign, d in documents), ZERO)
                    voided = invoice["status"] == "Canceled" or (total == 0 and any(s < 0 for s, _ in own))
                    out.append(BookedInvoice(
                        number=number, external_id=invoice["id"], voided=voided, total=total, tax_total=booked_tax,
                        line_count=sum(1 for ln in invoice["salesInvoiceLines"]
                                       if ln.get("lineObjectNumber") not in (SALES_TAX_PAYABLE, INVOICE_ROUNDING)),
                        payments_applied=sum(paid, ZERO), payment_count=len(paid)))
            return out

    def bookkeeper_touch(self, entity_set: str, entity_id: str) -> None:
        """The bookkeeper changes the record in Business Central (its ETag moves on)."""
        with self._lock:
            for company in self.companies.values():
                if entity_id in company.sets[entity_set]:
                    self._stamp(company.sets[entity_set][entity_id])

    # -- Microsoft Entra ID: client credentials --
    async def _token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type", "error_description":
                                 "AADSTS70003: The app requested an unsupported grant type."}, status_code=400)
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if self.clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client", "error_description":
                                 "AADSTS7000215: Invalid client secret provided."}, status_code=401)
        if form.get("scope") != SCOPE:
            return JSONResponse({"error": "invalid_scope", "error_description":
                                 "AADSTS1002012: The provided value for scope is not valid."}, status_code=400)
        access = secrets.token_urlsafe(40)
        with self._lock:
            self.tokens[access] = (client_id, time.time() + self.access_ttl_s)
            self.refresh_count += 1
        return JSONResponse({"token_type": "Bearer", "expires_in": int(self.access_ttl_s),
                             "ext_expires_in": int(self.access_ttl_s), "access_token": access})

    # -- the API --
    async def _api(self, request: Request) -> Response:
        header = request.headers.get("authorization") or ""
        client, expiry = self.tokens.get(header.removeprefix("Bearer "), ("", 0.0))
        if not header.startswith("Bearer ") or expiry < time.time():
            return bc_error(401, "Authentication_InvalidCredentials", "The credentials provided are incorrect")
        wait = self.window.hit(client)
        if wait is not None:
            return bc_error(429, "Application_TooManyRequests", "Too many requests reached. Maximum "
                            f"({self.five_minute_limit}) requests in 5 minutes.", max(1, round(wait)))
        with self._lock:
            if self.in_flight.get(client, 0) >= self.concurrency_limit:
                self.concurrency_breaches += 1
                return bc_error(429, "Application_TooManyRequests", "Too many concurrent requests. Maximum "
                                f"({self.concurrency_limit}).", 1)
            self.in_flight[client] = self.in_flight.get(client, 0) + 1
        try:
            return await self._serve(request)
        finally:
            with self._lock:
                self.in_flight[client] -= 1

    async def _serve(self, request: Request) -> Response:
        segments = [SEGMENT.match(s) for s in request.path_params["rest"].strip("/").split("/")]
        if not segments or any(m is None for m in segments):
            return bc_error(404, "BadRequest_NotFound", "The request URI is not valid.")
        parts = [(m.group(1), m.group(2)) for m in segments if m]
        if parts == [("companies", None)] and request.method == "GET":
            return self._ok({"value": [{"id": c.id, "name": c.name, "displayName": c.name}
                                       for c in self.companies.values()]})
        if parts[0][0] != "companies" or parts[0][1] not in self.companies or len(parts) < 2:
            return bc_error(404, "BadRequest_NotFound", "The company does not exist.")
        company = self.companies[parts[0][1]]
        raw = await request.body()
        try:
            body = jsonmoney.loads(raw) if raw else None
        except ValueError:
            return bc_error(400, "BadRequest", "The request body is not valid JSON.")
        if request.method == "GET":
            with self._lock:
                try:
                    return self._ok(self._read(company, parts[1:], request.query_params))
                except BCError as error:
                    return error.response()
        self.requests.append((request.method, request.path_params["rest"].split("/", 1)[1], body))
        decided = self.faults.draw()
        if decided == "500":
            return bc_error(500, "InternalServerError", "An unexpected error occurred.")
        if decided == "429":
            return bc_error(429, "Application_TooManyRequests", "Too many requests reached.", 1)
        with self._lock:
            try:
                answer, status = self._write(company, request.method, parts[1:], body, request.headers.get("if-match"))
                response = self._ok(answer, status) if answer is not None else Response(status_code=204)
            except BCError as error:
                response = error.response()
        if decided == "timeout":
            await self.faults.hang()
        return response

    def _ok(self, body: Any, status: int = 200) -> Response:
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json; odata.metadata=minimal")

    # -- reads --
    def _entity_set(self, company: Company, parts: list[tuple[str, str | None]]) -> tuple[str, str | None]:
        """(entity set, key) of a path below the company; payments live in their journal."""
        if parts[0][0] == "customerPaymentJournals" and len(parts) >= 2:
            if parts[0][1] not in company.journals or parts[1][0] != "customerPayments":
                raise BCError(404, "BadRequest_NotFound", "The customer payment journal does not exist.")
            return "customerPayments", parts[1][1]
        if parts[0][0] not in company.sets and parts[0][0] != "customerPaymentJournals":
            raise BCError(404, "BadRequest_NotFound", f"The entity set '{parts[0][0]}' does not exist.")
        return parts[0][0], parts[0][1]

    def _read(self, company: Company, parts: list[tuple[str, str | None]], query: Any) -> Any:
        name, key = self._entity_set(company, parts)
        if name == "customerPaymentJournals":
            rows = [{"id": k, **j, "@odata.etag": 'W/"J1"'} for k, j in company.journals.items()]
        else:
            rows = list(company.sets[name].values())
            if key is not None:
                if key not in company.sets[name] or (name == "customerPayments"
                                                     and company.sets[name][key]["journalId"] != parts[0][1]):
                    raise BCError(404, "BadRequest_NotFound", f"The {ENTITY_TYPE[name]} does not exist. "
                                  f"Identification fields and values: Id='{key}'")
                return self._view(company.sets[name][key])
        for clause in filter(None, (query.get("$filter") or "").split(" and ")):
            matched = FILTER.match(clause.strip())
            if not matched:
                raise BCError(400, "BadRequest", f"The $filter '{clause}' is not supported by this sandbox.")
            field, value = matched.group(1), matched.group(2).replace("''", "'")
            rows = [r for r in rows if str(r.get(field, "")) == value]
        return {"value": [self._view(r) for r in rows]}

    @staticmethod
    def _view(row: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in row.items() if not k.startswith("_")}

    def _stamp(self, row: dict[str, Any]) -> None:
        row["lastModifiedDateTime"] = _now()
        row["@odata.etag"] = 'W/"' + base64.b64encode(f"{row['id']}:{next(self._versions)}".encode()).decode() + '"'

    # -- writes --
    def _write(self, company: Company, method: str, parts: list[tuple[str, str | None]], body: Any,
               if_match: str | None) -> tuple[Any, int]:
        if len(parts) == 2 and parts[0][0] in LINES and parts[1] == (LINES[parts[0][0]], None) and method == "POST":
            return self._add_line(company, parts[0][0], parts[0][1] or "", body), 201
        action = parts[-1][0] if parts[-1][0].startswith("Microsoft.NAV.") else None
        name, key = self._entity_set(company, parts[:-1] if action else parts)
        table = company.sets.get(name)
        if table is None:
            raise BCError(405, "BadRequest_MethodNotAllowed", "The journal itself is not written by this sandbox.")
        current = table.get(key) if key else None
        if key and current is None:
            raise BCError(404, "BadRequest_NotFound", f"The {ENTITY_TYPE[name]} does not exist. "
                          f"Identification fields and values: Id='{key}'")
        if action:
            return self._action(company, name, current, action), 204
        if method == "POST":
            if key:
                raise BCError(405, "BadRequest_MethodNotAllowed", "'POST' requests for 'entity' are not allowed.")
            check_properties(name, body)
            return self._create(company, name, body, parts[0][1]), 201
        if current is None:
            raise BCError(405, "BadRequest_MethodNotAllowed", f"'{method}' requests for 'collection' are not allowed.")
        if not if_match:
            raise BCError(400, "BadRequest_InvalidToken", "Could not validate the client concurrency token required "
                          "by the service. Please provide a valid token in the client request.")
        if if_match != "*" and if_match != current["@odata.etag"]:
            raise BCError(412, "Request_EntityChanged", "Another user has already changed the record.")
        if method == "DELETE":
            return self._delete(company, name, current), 204
        check_properties(name, body)
        if name != "customers":
            raise BCError(400, "Application_DialogException", "The invoice has been posted and can no longer be "
                          "modified." if current.get("status") != "Draft" else "Only customers are edited by "
                          "this sandbox.")
        current.update(copy.deepcopy(body))
        self._stamp(current)
        return self._view(current), 200

    def _create(self, company: Company, name: str, body: dict[str, Any], journal: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"id": str(uuid.uuid4())} | copy.deepcopy(body)
        if name == "customers":
            row.setdefault("number", f"C{next(company.numbers)}")
            if any(c["number"] == row["number"] for c in company.sets["customers"].values()):
                raise BCError(400, "Internal_EntityWithSameKeyExists",
                              f"The record in table Customer already exists. Identification fields and values: "
                              f"No.='{row['number']}'")
            row.update(balanceDue=ZERO, blocked=row.get("blocked", " "))
        else:
            customer = company.sets["customers"].get(str(body.get("customerId", "")))
            if customer is None:
                raise BCError(400, "Internal_RecordNotFound", "The Customer does not exist. Identification fields "
                              f"and values: Id='{body.get('customerId')}'")
            row["customerNumber"], row["customerName"] = customer["number"], customer["displayName"]
        if name == "customerPayments":
            self._payment(company, row, journal or "")
        elif name in LINES:
            self._document(company, name, row)
        self._stamp(row)
        company.sets[name][row["id"]] = row
        return self._view(row)

    def _document(self, company: Company, name: str, row: dict[str, Any]) -> None:
        row[LINES[name]] = [self._line(company, row["id"], line) for line in row.pop(LINES[name], [])]
        draft = ("S-INV" if name == "salesInvoices" else "S-CR") + str(next(company.numbers))
        row.update({"number": row.get("number") or draft, "status": "Draft", "pricesIncludeTax": False})
        self._compute_tax(company, name, row)
        if name == "salesCreditMemos" and row.get("invoiceId"):
            invoice = company.sets["salesInvoices"].get(row["invoiceId"])
            if invoice is None:
                raise BCError(400, "Internal_RecordNotFound", f"The Sales Invoice does not exist. Id='{row['invoiceId']}'")
            row["invoiceNumber"] = invoice["number"]

    @staticmethod
    def _line(company: Company, document_id: str, line: dict[str, Any]) -> dict[str, Any]:
        if line.get("lineType", "Item") == "Account" and line.get("lineObjectNumber") not in company.accounts:
            raise BCError(400, "Internal_RecordNotFound", "The G/L Account does not exist. Identification "
                          f"fields and values: No.='{line.get('lineObjectNumber')}'")
        if line.get("lineType", "Item") != "Account":
            raise BCError(400, "Application_DialogException", "Only G/L account lines are posted by this sandbox.")
        if (line.get("taxCode") or "NONTAXABLE") not in company.tax_codes:
            raise BCError(400, "Internal_RecordNotFound", "The Tax Group does not exist. Identification fields "
                          f"and values: Code='{line.get('taxCode')}'")
        amount = _money(Decimal(line.get("quantity", 0)) * Decimal(line.get("unitPrice", 0)))
        return copy.deepcopy(line) | {"id": str(uuid.uuid4()), "documentId": document_id, "amountExcludingTax": amount,
                                      "netAmount": amount}

    def _compute_tax(self, company: Company, name: str, row: dict[str, Any]) -> None:
        """Sales tax as Business Central's "Sales Tax Calculate" codeunit distributes it: per jurisdiction, each
        line's exact tax is rounded with the rounding left over from the lines before it on the document (lines
        by tax group, then amount), so the document's tax is rounded once per jurisdiction (a Canadian tax area:
        ``RoundByJurisdiction``) or once over all its jurisdictions (a US one) — not line by line."""
        lines = row[LINES[name]]
        taxes = {ln["id"]: ZERO for ln in lines}
        rates = {ln["id"]: ZERO for ln in lines}
        ordered = sorted(lines, key=lambda ln: (ln.get("taxCode") or "NONTAXABLE", ln["amountExcludingTax"]))
        jurisdictions = sorted({j for ln in lines for j, _ in company.tax_codes[ln.get("taxCode") or "NONTAXABLE"]})
        carry: dict[str, Decimal] = {}
        for jurisdiction in jurisdictions:
            key = jurisdiction if jurisdiction in CANADIAN else "US"
            for ln in ordered:
                rate = dict(company.tax_codes[ln.get("taxCode") or "NONTAXABLE"]).get(jurisdiction)
                if not rate:
                    continue
                exact = ln["amountExcludingTax"] * rate / 100 + carry.get(key, ZERO)
                taxes[ln["id"]] += _money(exact)
                carry[key] = exact - _money(exact)
                rates[ln["id"]] += rate
        for number, ln in enumerate(lines, start=1):
            tax = taxes[ln["id"]]
            ln.update({"sequence": number * 10000, "taxPercent": rates[ln["id"]], "totalTaxAmount": tax,
                       "amountIncludingTax": ln["amountExcludingTax"] + tax, "netTaxAmount": tax,
                       "netAmountIncludingTax": ln["amountExcludingTax"] + tax})
        total, tax = sum((ln["amountExcludingTax"] for ln in lines), ZERO), sum(taxes.values(), ZERO)
        row.update({"totalAmountExcludingTax": total, "totalTaxAmount": tax, "totalAmountIncludingTax": total + tax,
                    "remainingAmount": total + tax, "_open": total + tax})

    def _add_line(self, company: Company, name: str, key: str, body: Any) -> dict[str, Any]:
        """``POST …/salesInvoices({id})/salesInvoiceLines``: a line added to a draft; the document's tax is
        computed again."""
        document = company.sets[name].get(key)
        if document is None:
            raise BCError(404, "BadRequest_NotFound", f"The {ENTITY_TYPE[name]} does not exist. "
                          f"Identification fields and values: Id='{key}'")
        check_properties(LINES[name], body, LINE)
        if document["status"] != "Draft":
            raise BCError(400, "Application_DialogException", "The invoice has been posted and can no longer be "
                          "modified.")
        line = self._line(company, key, body)
        document[LINES[name]].append(line)
        self._compute_tax(company, name, document)
        self._stamp(document)
        return self._view(line)

    def _payment(self, company: Company, row: dict[str, Any], journal: str) -> None:
        row["journalId"], row["journalDisplayName"] = journal, company.journals[journal]["displayName"]
        row.setdefault("lineNumber", 10000 * (1 + len(company.sets["customerPayments"])))
        invoice = company.sets["salesInvoices"].get(str(row.get("appliesToInvoiceId", "")))
        if row.get("appliesToInvoiceId"):
            if invoice is None or invoice["status"] in ("Draft", "Canceled"):
                raise BCError(400, "Application_DialogException", "The invoice to apply the payment to is not an "
                              "open posted sales invoice.")
            if invoice["customerId"] != row["customerId"]:
                raise BCError(400, "Application_DialogException", "The payment's customer is not the invoice's.")
            # Posting applies at most what is open; the rest stays an open payment on the customer's account.
            row["_applied"] = min(Decimal(row.get("amount", 0)), invoice["remainingAmount"])
            invoice["remainingAmount"] -= row["_applied"]
            self._settle(invoice)

    def _settle(self, invoice: dict[str, Any]) -> None:
        if invoice["status"] in ("Open", "Paid"):
            invoice["status"] = "Paid" if invoice["remainingAmount"] == 0 else "Open"
        self._stamp(invoice)

    def _delete(self, company: Company, name: str, current: dict[str, Any]) -> None:
        if name == "customerPayments":
            invoice = company.sets["salesInvoices"].get(str(current.get("appliesToInvoiceId", "")))
            if invoice is not None:
                invoice["remainingAmount"] += current.get("_applied", ZERO)
                self._settle(invoice)
        elif name in LINES and current["status"] != "Draft":
            raise BCError(400, "Application_DialogException", "The invoice has been posted and can no longer be "
                          "modified.")
        elif name == "customers":
            raise BCError(400, "Application_DialogException", "Customers are not deleted by this sandbox.")
        del company.sets[name][current["id"]]

    def _action(self, company: Company, name: str, current: dict[str, Any] | None, action: str) -> None:
        if current is None or name not in LINES or action not in ("Microsoft.NAV.post", "Microsoft.NAV.cancel"):
            raise BCError(404, "BadRequest_NotFound", f"The action '{action}' is not bound to this entity.")
        if action == "Microsoft.NAV.post":
            if current["status"] != "Draft":
                raise BCError(400, "Application_DialogException", "The document has already been posted.")
            if not current[LINES[name]]:
                raise BCError(400, "Application_DialogException", "There is nothing to post.")
            current["status"] = "Open"
            current["number"] = ("PS-INV" if name == "salesInvoices" else "PS-CR") + re.sub(r"\D", "", current["number"])
            if name == "salesCreditMemos":
                self._apply_credit(company, current)
            self._stamp(current)
            return None
        if current["status"] in ("Draft", "Canceled", "Corrective"):
            raise BCError(400, "Application_DialogException", "Only a posted document can be canceled.")
        if name == "salesCreditMemos":
            # Codeunit 1339 "Cancel Posted Sales Cr. Memo" (what the action runs) cancels only the corrective credit
            # memo an invoice's cancel made (TestIfCrMemoIsCorrectiveDoc); this sandbox keeps those as "Corrective".
            raise BCError(400, "Application_DialogException", "You cannot cancel this posted sales credit memo "
                          "because it is not a corrective document.")
        if current["remainingAmount"] != current["totalAmountIncludingTax"]:
            raise BCError(400, "Application_DialogException", "You cannot cancel this posted sales invoice because it "
                          "is fully or partially applied. To reverse an applied sales invoice, you must manually "
                          "unapply all applied entries.")
        current.update(status="Canceled", remainingAmount=ZERO)
        self._stamp(current)
        if name == "salesInvoices":  # the corrective credit memo that cancels it
            memo = {k: v for k, v in current.items() if k in WRITABLE["salesCreditMemos"]} | {
                "id": str(uuid.uuid4()), "invoiceId": current["id"], "invoiceNumber": current["number"],
                "creditMemoDate": date.today().isoformat(), "status": "Corrective",
                "salesCreditMemoLines": copy.deepcopy(current["salesInvoiceLines"]), "_open": ZERO}
            for total in ("totalAmountExcludingTax", "totalTaxAmount", "totalAmountIncludingTax"):
                memo[total] = current[total]
            self._stamp(memo)
            company.sets["salesCreditMemos"][memo["id"]] = memo
        return None

    def _apply_credit(self, company: Company, memo: dict[str, Any]) -> None:
        """Posting a credit memo linked to an invoice applies it there (as far as the invoice is open)."""
        invoice = company.sets["salesInvoices"].get(memo.get("invoiceId") or "")
        if invoice is None or invoice["status"] not in ("Open", "Paid"):
            return
        applied = min(memo["_open"], invoice["remainingAmount"])
        memo["_open"] -= applied
        invoice["remainingAmount"] -= applied
        self._settle(invoice)

