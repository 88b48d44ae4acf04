"""A local Wave (public GraphQL API) for the demo and the tests.

The schema is ``schema.SDL`` executed by graphql-core, so every operation is parsed, validated and its
variables coerced as a GraphQL server does: an unknown field or input field, a missing non-null argument or a
wrong scalar is refused in ``errors`` (``GRAPHQL_VALIDATION_FAILED`` / ``BAD_USER_INPUT``, HTTP 400). On top:
OAuth2 (refresh-token grant at ``/oauth2/token/``, client id and secret in the form body, rotating refresh
tokens, access tokens expiring — lifetimes not published by Wave: 2 hours here), ``Authorization: Bearer`` on
the one endpoint (401 ``UNAUTHENTICATED`` otherwise), mutations answering ``didSucceed`` / ``inputErrors``
(``code``, ``message``, ``path``) with HTTP 200 as Wave's portal shows, ``businessId`` checked on every write,
invoice lines that must name a sellable product, tax computed by Wave from the named sales taxes (per line, per
tax, to the cent; the deprecated tax ``amount`` is ignored), no concurrency token (last write wins), the
``invoiceNumber`` filter matching a part of the number, ``invoiceDelete`` (Wave has no void), manual payments
(``invoicePaymentCreateManual``; a draft cannot be paid; a negative amount reverses, never below zero paid),
currencies (``business.currency``, USD here; an invoice in any ``CurrencyCode`` — another code is refused by the
schema — at the ``exchangeRate`` sent, else Wave's own rate for the currency, which the invoice then holds; a
payment's required ``exchangeRate`` must be positive and, on an invoice in the business currency, 1 (sandbox)),
``invoiceSend`` refused while the business cannot send email, and a request limit (Wave publishes none: 60 per
minute here; 429 ``THROTTLED`` with Retry-After). Rules marked "sandbox" in the errors are this sandbox's
reading where no Wave page says (a payment delete does not exist; deleting an invoice with money on it).
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import graphql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, TokenIssuer, WindowLimit, new_client, refresh_grant
from connectors.wave.schema import schema as strict_schema

ENDPOINT = "/graphql/public"
CENT, ZERO = Decimal("0.01"), Decimal("0")
PAGE_MAX = 100
# Wave's own rates (business currency units per unit of the invoice's currency; Wave's help: mid-market rates).
RATES = {"CAD": Decimal("0.7219"), "EUR": Decimal("1.0946"), "GBP": Decimal("1.2684"), "AUD": Decimal("0.6512"),
         "NZD": Decimal("0.5893"), "USD": Decimal("1")}


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _rate(home: str, code: str) -> Decimal:
    """Wave's own rate from ``code`` to the business's currency (``home``)."""
    return (RATES[code] / RATES[home]).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _global_id(kind: str) -> str:
    import base64

    return base64.b64encode(f"{kind}:{secrets.token_hex(8)}".encode()).decode()


class Refused(Exception):
    """A mutation's business-rule refusal: ``didSucceed: false`` with one input error."""

    def __init__(self, code: str, message: str, *path: str) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "path": ["input", *path]}


@dataclass
class Business:
    id: str
    name: str
    currency: str = "USD"
    email_send_enabled: bool = False
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {name, subtype}
    sales_taxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))


class Sandbox:
    """Wave as a local server. ``faults`` injects 500s, 429s and timeouts (drawn once per mutation)."""

    def __init__(self, faults: Faults | None = None, access_ttl_s: float = 7200.0, *, minute_limit: int = 60) -> None:
        self.faults = faults or Faults()
        self.issuer = TokenIssuer(access_ttl_s=access_ttl_s)
        self.minute_limit = minute_limit
        self.window = WindowLimit(minute_limit, 60.0)
        self.businesses: dict[str, Business] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every mutation: (field name, its input)
        self.schema = strict_schema()
        self._lock = threading.RLock()
        self.app = Starlette(routes=[Route("/oauth2/token/", self._token, methods=["POST"]),
                                     Route(ENDPOINT, self._graphql, methods=["POST"])])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        client_id, client_secret, refresh = new_client(self.issuer)
        with self._lock:
            if not self.businesses:
                business = Business(id=_global_id("Business"), name="Main St Auto Electric")
                for key, name, subtype in (("acct-parts", "Sales - parts", "INCOME"), ("acct-labour", "Sales - labour", "INCOME"),
                                           ("acct-fees", "Sales - fees", "INCOME"), ("acct-core", "Core deposits", "OTHER_INCOME"),
                                           ("acct-undeposited", "Payments received", "CASH_AND_BANK"),
                                           ("acct-checking", "Checking", "CASH_AND_BANK"),
                                           ("acct-credit", "Customer credit", "CUSTOMER_PREPAYMENTS_AND_CREDITS")):
                    business.accounts[key] = {"id": key, "name": name, "subtype": subtype}
                for key, name, rate in (("tax-gst", "GST", "0.05"), ("tax-pst", "PST", "0.07"),
                                        ("tax-state", "State", "0.0625"), ("tax-county", "County", "0.01")):
                    business.sales_taxes[key] = {"id": key, "name": name, "rate": Decimal(rate)}
                self.businesses[business.id] = business
        return {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "wave", "base_url": f"{base_url}{ENDPOINT}",
            "settings": {"token_url": f"{base_url}/oauth2/token/", "requests_per_minute": self.minute_limit,
                         "customer_credit_account_id": "acct-credit"},
            "mapping": {"income_accounts": {"part": "acct-parts", "labour": "acct-labour", "fee": "acct-fees",
                                            "sublet": "acct-labour", "discount": "acct-parts"},
                        "core_account": "acct-core",
                        "tax_codes": {"GST": "tax-gst", "PST": "tax-pst", "STATE": "tax-state", "COUNTY": "tax-county"},
                        "payment_accounts": {"card": "acct-undeposited", "cash": "acct-undeposited",
                                             "check": "acct-undeposited", "eft": "acct-checking"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.window.breaches

    def invoices(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(self._view(b, i)) for b in self.businesses.values()
                    for i in [*b.invoices.values(), *(b.deleted.values() if include_deleted else ())]]

    def customers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c) for b in self.businesses.values() for c in b.customers.values()]

    def booked_invoices(self) -> list[BookedInvoice]:
        """Every invoice, deleted ones as voided; a negative invoice is a refund's credit note, not listed.
        Payments: money received (not the customer credit account's transfers), a reversal cancelling one."""
        out = []
        with self._lock:
            for business in self.businesses.values():
                for invoice, deleted in [*((i, False) for i in business.invoices.values()),
                                         *((i, True) for i in business.deleted.values())]:
                    view = self._view(business, invoice)
                    if view["total"]["value"] < 0:
                        continue
                    money = [p["amount"] for p in invoice["payments"] if not self._is_credit(business, p)]
                    out.append(BookedInvoice(
                        number=invoice["invoiceNumber"], external_id=invoice["id"], voided=deleted,
                        total=view["total"]["value"], tax_total=view["taxTotal"]["value"], line_count=len(invoice["items"]),
                        payments_applied=sum(money, ZERO), currency=invoice["currency"]["code"],
                        payment_count=sum(1 for a in money if a > 0) - sum(1 for a in money if a < 0)))
        return out

    @staticmethod
    def _is_credit(business: Business, payment: dict[str, Any]) -> bool:
        return business.accounts[payment["paymentAccountId"]]["subtype"] == "CUSTOMER_PREPAYMENTS_AND_CREDITS"

    # -- OAuth2 --
    async def _token(self, request: Request) -> Response:
        return await refresh_grant(self.issuer, request, lambda _: {"scope": "invoice:* customer:* product:* business:read"})

    # -- the endpoint --
    @staticmethod
    def _errors(status: int, code: str, message: str) -> Response:
        body = {"errors": [{"message": message, "extensions": {"code": code}}]}
        return Response(jsonmoney.dumps(body), status_code=status, media_type="application/json")

    async def _graphql(self, request: Request) -> Response:
        if not self.issuer.valid(request.headers.get("authorization")):
            return self._errors(401, "UNAUTHENTICATED", "Invalid or expired access token")
        wait = self.window.hit("app")
        if wait is not None:
            throttled = self._errors(429, "THROTTLED", "Too many requests")
            throttled.headers["Retry-After"] = str(max(1, round(wait)))
            return throttled
        try:
            body = jsonmoney.loads(await request.body())
            document = graphql.parse(body["query"])
        except (ValueError, KeyError, TypeError, graphql.GraphQLError) as error:
            return self._errors(400, "GRAPHQL_PARSE_FAILED", f"Cannot parse the request: {error}")
        problems = graphql.validate(self.schema, document)
        if problems:
            return self._errors(400, "GRAPHQL_VALIDATION_FAILED", "; ".join(p.message for p in problems))
        variables = body.get("variables") or {}
        writing = any(getattr(d, "operation", None) == graphql.OperationType.MUTATION for d in document.definitions)
        decided = None
        if writing:
            for selection in graphql.get_operation_ast(document).selection_set.selections:  # type: ignore[union-attr]
                self.requests.append((selection.name.value, copy.deepcopy((variables or {}).get("input"))))
            decided = self.faults.draw()
            if decided == "500":
                return self._errors(500, "INTERNAL_SERVER_ERROR", "Internal server error")
            if decided == "429":
                throttled = self._errors(429, "THROTTLED", "Too many requests")
                throttled.headers["Retry-After"] = "1"
                return throttled
        with self._lock:
            result = graphql.execute_sync(self.schema, document, root_value=self._root(), variable_values=variables)
        if result.errors and result.data is None:
            response = self._errors(400, "BAD_USER_INPUT", "; ".join(e.message for e in result.errors))
        else:
            answer: dict[str, Any] = {"data": result.data}
            if result.errors:
                answer["errors"] = [{"message": e.message, "path": e.path, "extensions": {"code": "NOT_FOUND"}}
                                    for e in result.errors]
            response = Response(jsonmoney.dumps(answer), media_type="application/json")
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    def _root(self) -> dict[str, Any]:
        def mutation(apply):
            def resolve(_info, input):  # noqa: A002 - the GraphQL argument's name
                try:
                    return {"didSucceed": True, "inputErrors": [], **apply(input)}
                except Refused as refused:
                    return {"didSucceed": False, "inputErrors": [refused.error]}
            return resolve

        return {"business": lambda _info, id: self._business_view(self.businesses.get(id)),  # noqa: A006
                "businesses": lambda _info, page=1, pageSize=10: self._page(
                    [self._business_view(b) for b in self.businesses.values()], page, pageSize),
                "customerCreate": mutation(self._customer_create), "customerPatch": mutation(self._customer_patch),
                "productCreate": mutation(self._product_create), "invoiceCreate": mutation(self._invoice_create),
                "invoicePatch": mutation(self._invoice_patch), "invoiceDelete": mutation(self._invoice_delete),
                "invoiceApprove": mutation(lambda i: self._invoice_status(i, "DRAFT", "SAVED")),
                "invoiceMarkSent": mutation(lambda i: self._invoice_status(i, None, "SENT")),
                "invoiceSend": mutation(self._invoice_send),
                "invoicePaymentCreateManual": mutation(self._payment_create)}

    # -- reads --
    @staticmethod
    def _page(rows: list[Any], page: int, size: int) -> dict[str, Any]:
        size = max(1, min(size, PAGE_MAX))
        pages = max(1, -(-len(rows) // size))
        return {"pageInfo": {"currentPage": page, "totalPages": pages, "totalCount": len(rows)},
                "edges": [{"node": row} for row in rows[(page - 1) * size: page * size]]}

    def _business_view(self, business: Business | None) -> dict[str, Any] | None:
        if business is None:
            return None
        invoice = lambda _info, id: self._view(business, business.invoices[id]) if id in business.invoices else None  # noqa: E731,A006
        return {"id": business.id, "name": business.name, "invoice": invoice, "currency": {"code": business.currency},
                "invoices": lambda _info, page=1, pageSize=10, invoiceNumber=None: self._page(
                    [self._view(business, i) for i in business.invoices.values()
                     if not invoiceNumber or invoiceNumber in i["invoiceNumber"]], page, pageSize),
                "customers": lambda _info, page=1, pageSize=20, email=None: self._page(
                    [c for c in business.customers.values() if not email or c.get("email") == email], page, pageSize),
                "products": lambda _info, page=1, pageSize=20: self._page(list(business.products.values()), page, pageSize)}

    def _view(self, business: Business, invoice: dict[str, Any]) -> dict[str, Any]:
        """An invoice as Wave answers it: totals computed from its items and the taxes named on them."""
        items, subtotal, tax_total = [], ZERO, ZERO
        for item in invoice["items"]:
            line = _money(item["quantity"] * item["unitPrice"])
            taxes = [{"salesTax": business.sales_taxes[t["salesTaxId"]],
                      "amount": {"value": _money(line * business.sales_taxes[t["salesTaxId"]]["rate"])}}
                     for t in item["taxes"]]
            line_tax = sum((t["amount"]["value"] for t in taxes), ZERO)
            subtotal, tax_total = subtotal + line, tax_total + line_tax
            items.append({**item, "product": business.products[item["productId"]], "subtotal": {"value": line},
                          "total": {"value": line + line_tax}, "taxes": taxes})
        paid = sum((p["amount"] for p in invoice["payments"]), ZERO)
        total = subtotal + tax_total
        status = invoice["status"]
        if status not in ("DRAFT",) and paid:
            status = "PAID" if paid == total else "OVERPAID" if abs(paid) > abs(total) else "PARTIAL"
        return {**invoice, "items": items, "status": status, "customer": business.customers[invoice["customerId"]],
                "subtotal": {"value": subtotal}, "taxTotal": {"value": tax_total}, "total": {"value": total},
                "amountPaid": {"value": paid}, "amountDue": {"value": total - paid},
                "payments": [{**p, "paymentAccount": business.accounts[p["paymentAccountId"]]} for p in invoice["payments"]]}

    # -- writes --
    def _business_of(self, fields: dict[str, Any]) -> Business:
        business = self.businesses.get(fields["businessId"])
        if business is None:
            raise Refused("NOT_FOUND", "Business not found", "businessId")
        return business

    def _owner(self, invoice_id: str, path: str = "id") -> tuple[Business, dict[str, Any]]:
        for business in self.businesses.values():
            if invoice_id in business.invoices:
                return business, business.invoices[invoice_id]
        raise Refused("NOT_FOUND", "Invoice not found", path)

    def _customer_create(self, fields: dict[str, Any]) -> dict[str, Any]:
        business = self._business_of(fields)
        if not fields["name"].strip():
            raise Refused("REQUIRED", "This field is required.", "name")
        customer = {k: v for k, v in fields.items() if k != "businessId"} | {
            "id": _global_id("Customer"), "modifiedAt": _now()}
        business.customers[customer["id"]] = customer
        return {"customer": customer}

    def _customer_patch(self, fields: dict[str, Any]) -> dict[str, Any]:
        customer = next((b.customers[fields["id"]] for b in self.businesses.values() if fields["id"] in b.customers), None)
        if customer is None:
            raise Refused("NOT_FOUND", "Customer not found", "id")
        if "name" in fields and not (fields["name"] or "").strip():
            raise Refused("REQUIRED", "This field is required.", "name")
        customer.update({k: v for k, v in fields.items() if k != "id"} | {"modifiedAt": _now()})
        return {"customer": customer}

    def _product_create(self, fields: dict[str, Any]) -> dict[str, Any]:
        business = self._business_of(fields)
        if not fields["name"].strip():
            raise Refused("REQUIRED", "This field is required.", "name")
        income = fields.get("incomeAccountId")
        if income is not None and (business.accounts.get(income) or {}).get("subtype") not in (
                "INCOME", "DISCOUNTS", "OTHER_INCOME"):
            raise Refused("INVALID", "The income account must be an income, discount or other income account",
                          "incomeAccountId")
        for tax in fields.get("defaultSalesTaxIds") or []:
            if tax not in business.sales_taxes:
                raise Refused("NOT_FOUND", "Sales tax not found", "defaultSalesTaxIds")
        product = {"id": _global_id("Product"), "name": fields["name"], "unitPrice": fields["unitPrice"],
                   "description": fields.get("description"), "isArchived": False,
                   "incomeAccount": business.accounts.get(income) if income else None,
                   "defaultSalesTaxIds": list(fields.get("defaultSalesTaxIds") or [])}
        business.products[product["id"]] = product
        return {"product": product}

    def _items(self, business: Business, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for n, item in enumerate(items):
            product = business.products.get(item["productId"])
            if product is None or product["isArchived"]:
                raise Refused("NOT_FOUND", "Product not found", "items", str(n), "productId")
            if product["incomeAccount"] is None:
                raise Refused("INVALID", "The product is not sold (it has no income account)", "items", str(n), "productId")
            taxes = item.get("taxes")
            if taxes is None:  # omitted: the product's default taxes apply
                taxes = [{"salesTaxId": t} for t in product["defaultSalesTaxIds"]]
            for tax in taxes:
                if tax["salesTaxId"] not in business.sales_taxes:
                    raise Refused("NOT_FOUND", "Sales tax not found", "items", str(n), "taxes", "salesTaxId")
            quantity = item.get("quantity")
            quantity = Decimal("1") if quantity is None else quantity.quantize(Decimal("1E-8"), rounding=ROUND_HALF_UP)
            price = item.get("unitPrice")
            out.append({"productId": product["id"], "description": item.get("description", product["description"]),
                        "quantity": quantity, "unitPrice": product["unitPrice"] if price is None else price,
                        "taxes": [{"salesTaxId": t["salesTaxId"]} for t in taxes]})  # a sent ``amount`` is ignored
        return out

    def _invoice_create(self, fields: dict[str, Any]) -> dict[str, Any]:
        business = self._business_of(fields)
        if fields["customerId"] not in business.customers:
            raise Refused("NOT_FOUND", "Customer not found", "customerId")
        code = fields.get("currency") or business.currency
        rate = _rate(business.currency, code) if fields.get("exchangeRate") is None else fields["exchangeRate"]
        if rate <= 0 or (code == business.currency and rate != 1):
            raise Refused("INVALID", "Must be positive (and 1 in the business currency)", "exchangeRate")
        number = fields.get("invoiceNumber") or str(next(business.numbers))
        invoice = {"id": _global_id("Invoice"), "createdAt": _now(), "modifiedAt": _now(),
                   "status": fields.get("status") or "DRAFT", "invoiceNumber": number,
                   "invoiceDate": fields.get("invoiceDate") or date.today().isoformat(), "dueDate": fields.get("dueDate"),
                   "poNumber": fields.get("poNumber"), "memo": fields.get("memo"), "customerId": fields["customerId"],
                   "items": self._items(business, fields.get("items") or []), "payments": [],
                   "currency": {"code": code}, "exchangeRate": rate}
        self._check_dates(invoice)
        business.invoices[invoice["id"]] = invoice
        return {"invoice": self._view(business, invoice)}

    @staticmethod
    def _check_dates(invoice: dict[str, Any]) -> None:
        if invoice["dueDate"] and invoice["dueDate"] < invoice["invoiceDate"]:
            raise Refused("INVALID", "The due date cannot be before the invoice date", "dueDate")

    def _invoice_patch(self, fields: dict[str, Any]) -> dict[str, Any]:
        business, invoice = self._owner(fields["id"])
        if "customerId" in fields and fields["customerId"] not in business.customers:
            raise Refused("NOT_FOUND", "Customer not found", "customerId")
        changed = copy.deepcopy(invoice)
        changed.update({k: v for k, v in fields.items() if k not in ("id", "items") and v is not None})
        if fields.get("items") is not None:
            changed["items"] = self._items(business, fields["items"])  # the item list is replaced
        self._check_dates(changed)
        changed["modifiedAt"] = _now()
        business.invoices[invoice["id"]] = changed
        return {"invoice": self._view(business, changed)}

    def _invoice_delete(self, fields: dict[str, Any]) -> dict[str, Any]:
        business, invoice = self._owner(fields["invoiceId"], "invoiceId")
        if sum((p["amount"] for p in invoice["payments"]), ZERO):
            raise Refused("INVALID", "An invoice with payments recorded cannot be deleted (sandbox)", "invoiceId")
        business.deleted[invoice["id"]] = business.invoices.pop(invoice["id"])
        return {}

    def _invoice_status(self, fields: dict[str, Any], required: str | None, status: str) -> dict[str, Any]:
        business, invoice = self._owner(fields["invoiceId"], "invoiceId")
        if required and invoice["status"] != required:
            raise Refused("INVALID", f"Only a {required.lower()} invoice can be changed this way", "invoiceId")
        invoice.update(status=status, modifiedAt=_now())
        return {"invoice": self._view(business, invoice)}

    def _invoice_send(self, fields: dict[str, Any]) -> dict[str, Any]:
        business, _ = self._owner(fields["invoiceId"], "invoiceId")
        if not business.email_send_enabled:
            raise Refused("INVALID", "This business cannot send email (Business.emailSendEnabled is false)", "invoiceId")
        return self._invoice_status(fields, None, "SENT")

    def _payment_create(self, fields: dict[str, Any]) -> dict[str, Any]:
        business, invoice = self._owner(fields["invoiceId"], "invoiceId")
        if invoice["status"] == "DRAFT":
            raise Refused("INVALID", "A draft invoice cannot be paid: approve it first", "invoiceId")
        account = business.accounts.get(fields["paymentAccountId"])
        if account is None or account["subtype"] not in ("CASH_AND_BANK", "CUSTOMER_PREPAYMENTS_AND_CREDITS"):
            raise Refused("INVALID", "The payment account must be a cash, bank or customer credit account",
                          "paymentAccountId")
        amount = fields["amount"]
        if amount == 0:
            raise Refused("INVALID", "Ensure this value is not zero", "amount")
        if fields["exchangeRate"] <= 0 or (invoice["currency"]["code"] == business.currency and fields["exchangeRate"] != 1):
            raise Refused("INVALID", "Must be positive (and 1 on an invoice in the business currency)", "exchangeRate")
        total = self._view(business, invoice)["total"]["value"]
        paid = sum((p["amount"] for p in invoice["payments"]), ZERO) + amount
        if (total >= 0 and paid < 0) or (total < 0 and paid > 0):
            raise Refused("INVALID", "The payments on an invoice cannot go past zero (sandbox)", "amount")
        payment = {"id": _global_id("InvoicePayment"), "amount": amount, "paymentDate": fields["paymentDate"],
                   "paymentMethod": fields["paymentMethod"], "paymentAccountId": account["id"], "memo": fields.get("memo"),
                   "exchangeRate": fields["exchangeRate"]}
        invoice["payments"].append(payment)
        invoice["modifiedAt"] = _now()
        return {"invoicePayment": {**payment, "paymentAccount": account}}
