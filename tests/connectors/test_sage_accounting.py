"""Sage Business Cloud Accounting v3.1: every request the connector sends validated against Sage's official
Swagger 2.0, the validator shown to reject bad bodies, and the platform's own rules (X-Business, business
discovery, rotating refresh tokens, limits, paging, Sage's error body, tax-rate mapping).

openapi-core reads OpenAPI 3 only (it answers Sage's Swagger 2.0 with "Validator class not found"), so the
Swagger is read here directly: the operation must exist (path template and method), every query parameter must
be one the operation declares, and the ``in: body`` parameter's schema — a JSON Schema draft 4 subset — is
checked with jsonschema's Draft4Validator (date formats checked). Stricter than Sage: an object may hold only
the properties the Swagger declares (``additionalProperties: false`` added), so a misspelt field fails here.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import AuthError, ClosedPeriodError, PermanentError, RateLimitedError, RetryableError
from connectors.sage_accounting import Sandbox, mapping
from connectors.sage_accounting.client import classify
from connectors.testing import goodwill_refund, refund, paid_then_goodwill
from connectors.testing import (
    GST,
    PST,
    MemoryEntities,
    connectors_on,
    deliver,
    invoice_event,
    line,
    next_version,
    payment,
)
from daemon.config import MappingConfig

jsonschema = pytest.importorskip("jsonschema")

API = "/v3.1"


class SwaggerValidator:
    """Requests checked against Sage's Swagger 2.0 documents (accounts + core businesses)."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.operations: list[tuple[re.Pattern[str], str, dict[str, Any], dict[str, Any]]] = []
        for document in documents:
            for template, item in document["paths"].items():
                pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
                for method, operation in item.items():
                    if not method.startswith("x-"):
                        self.operations.append((pattern, method.upper(), operation, document))

    def problems(self, method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
        matches = [(op, doc) for pattern, verb, op, doc in self.operations if verb == method and pattern.match(path)]
        if not matches:
            return [f"no operation {method} {path} in the Swagger"]
        operation, document = matches[0]
        parameters = operation.get("parameters") or []
        declared = {p["name"] for p in parameters if p["in"] == "query"}
        out = [f"query parameter {name!r} not declared" for name in query if name not in declared]
        out += [f"required query parameter {p['name']!r} missing" for p in parameters
                if p["in"] == "query" and p.get("required") and p["name"] not in query]
        body_parameter = next((p for p in parameters if p["in"] == "body"), None)
        if body_parameter is None:
            return out + (["a body the operation does not take"] if body is not None else [])
        if body is None:
            return out + ["the operation's body is missing"]
        schema = _strict(_resolve(body_parameter["schema"], document)) | {"definitions": {}}
        validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
        return out + [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def _resolve(schema: Any, document: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _resolve(document["definitions"][schema["$ref"].split("/")[-1]], document)
        return {k: _resolve(v, document) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolve(v, document) for v in schema]
    return schema


def _strict(schema: Any) -> Any:
    """Every object may hold only what the Swagger declares."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and out.get("type", "object") == "object":
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def swagger(specs) -> SwaggerValidator:
    folder = specs / "sage-accounting"
    documents = [json.loads((folder / name).read_text()) for name in (
        "swagger-accounts-v3.1.json", "swagger-core-user-businesses-v3.1.json")]
    assert all(d["swagger"] == "2.0" and d["basePath"] == API for d in documents)
    return SwaggerValidator(*documents)


class Captured:
    """Every request a connector sends (an httpx event hook on its client)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def requests(self) -> list[tuple[str, str, dict[str, str], Any, httpx.Headers]]:
        return [(r.method, r.url.path.removeprefix(API), dict(r.url.params),
                 jsonmoney.loads(r.content) if r.content else None, r.headers) for r in self.sent]


@pytest.fixture
def sage():
    sandbox = Sandbox()
    with connectors_on(sandbox, "sage") as build:
        connector = build()
        captured = Captured()
        connector.http.client.event_hooks["request"].append(captured)
        yield sandbox, connector, captured


def _every_kind_of_write(sandbox, connector) -> None:
    """Create (customer, invoice, receipt, credit note, allocation), edit, remove a receipt, release the
    allocation, void; then closed books: a re-dated create, an increase and a decrease."""
    entities = MemoryEntities()
    v1 = invoice_event(5001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status == "voided"
    moved = v1.customer.model_copy(update={"phone": "555-0199", "billing_address": "9 Depot Rd"})
    deliver(connector, entities, invoice_event(5004, customer=moved))  # the contact is updated
    sandbox.set_lockdown_date(date(2026, 11, 30))
    late = deliver(connector, entities, invoice_event(5002))  # dated 2026-11-20: posted on 2026-12-01
    assert late.engine.posted_on == date(2026, 12, 1)
    sandbox.set_lockdown_date(None)
    v1 = invoice_event(5003)
    doc = deliver(connector, entities, v1)
    sandbox.set_lockdown_date(date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    doc = deliver(connector, entities, v2, doc)  # a decrease: a credit note
    doc = deliver(connector, entities, next_version(v2, lines=list(v1.lines)), doc)  # an increase: an invoice
    kinds = [a.kind for a in doc.engine.adjustments]
    assert kinds == ["decrease", "increase"]
    sandbox.set_lockdown_date(None)
    paid = invoice_event(5005, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, paid)
    paid_back = next_version(paid, refunds=[refund(4, 2, "20.00", "1.00").model_copy(update={"payment_id": 1})])
    doc = deliver(connector, entities, paid_back, doc)  # a customer refund settles the credit note
    deliver(connector, entities, next_version(paid_back, refunds=[]), doc)  # taken back: the refund is deleted


def test_every_request_matches_sages_swagger(sage, swagger):
    sandbox, connector, captured = sage
    _every_kind_of_write(sandbox, connector)
    sent = captured.requests()
    seen = {(method, re.sub(r"/[0-9a-f]{32}", "/{key}", path)) for method, path, *_ in sent}
    for expected in [("POST", "/contacts"), ("PUT", "/contacts/{key}"), ("POST", "/sales_invoices"), ("PUT", "/sales_invoices/{key}"),
                     ("DELETE", "/sales_invoices/{key}"), ("POST", "/contact_payments"),
                     ("DELETE", "/contact_payments/{key}"), ("POST", "/sales_credit_notes"),
                     ("POST", "/contact_allocations"), ("DELETE", "/contact_allocations/{key}"),
                     ("GET", "/financial_settings"), ("GET", "/businesses"), ("GET", "/contacts")]:
        assert expected in seen, f"{expected} never sent"
    problems = {f"{method} {path} {query}": found for method, path, query, body, _ in sent
                if (found := swagger.problems(method, path, query, body))}
    assert not problems
    money = [body["contact_payment"]["transaction_type_id"] for method, path, _, body, _ in sent
             if (method, path) == ("POST", "/contact_payments")]
    assert "CUSTOMER_REFUND" in money, "a refund paid back never sent"
    # X-Business on every request but the one that finds the business.
    assert all(headers.get("x-business") for _, path, _, _, headers in sent if path != "/businesses")


def test_the_swagger_check_rejects_bad_bodies(swagger):
    good = {"sales_invoice": {"contact_id": "c1", "date": "2026-11-20", "invoice_lines": [
        {"description": "Labour", "ledger_account_id": "4010", "unit_price": Decimal("120.00"),
         "quantity": Decimal("1.5"), "tax_rate_id": "CA_GST", "tax_amount": Decimal("9.00")}]}}
    assert swagger.problems("POST", "/sales_invoices", {}, good) == []
    missing = copy.deepcopy(good)
    del missing["sales_invoice"]["contact_id"]
    text = copy.deepcopy(good)
    text["sales_invoice"]["invoice_lines"][0]["unit_price"] = "120.00"  # money as a string
    misspelt = copy.deepcopy(good)
    misspelt["sales_invoice"]["invoice_lines"][0]["tax_rate"] = "CA_GST"
    bad_date = copy.deepcopy(good)
    bad_date["sales_invoice"]["date"] = "20/11/2026"
    for body, expected in ((missing, "'contact_id' is a required property"), (text, "is not of type 'number'"),
                           (misspelt, "'tax_rate' was unexpected"), (bad_date, "is not a 'date'"),
                           ({"invoice": good["sales_invoice"]}, "'sales_invoice' is a required property")):
        assert any(expected in p for p in swagger.problems("POST", "/sales_invoices", {}, body)), expected
    assert swagger.problems("DELETE", "/sales_invoices/abc", {"reason": "x"}, None) == [
        "query parameter 'reason' not declared"]
    assert swagger.problems("POST", "/sales_invoices/abc/void", {}, None) == [
        "no operation POST /sales_invoices/abc/void in the Swagger"]
    payment_body = {"contact_payment": {"transaction_type_id": "CUSTOMER_RECEIPT", "contact_id": "c",
                                        "bank_account_id": "b", "date": "2026-11-20", "total_amount": Decimal("5"),
                                        "allocated_artefacts": [{"artefact_id": "i", "amount": Decimal("5")}]}}
    assert swagger.problems("POST", "/contact_payments", {}, payment_body) == []
    del payment_body["contact_payment"]["bank_account_id"]
    assert swagger.problems("POST", "/contact_payments", {}, payment_body) == [
        "contact_payment: 'bank_account_id' is a required property"]
    refund_body = mapping.refund_payment_payload(
        invoice_event(5010, payments=[payment(1, "50.00")]), refund(4, 2, "20.00", "1.00").model_copy(
            update={"payment_id": 1}), "cn1", "c", Decimal("21.00"), "LWP4", MappingConfig(payment_accounts={"card": "b"}),
        date(2026, 11, 20))
    assert swagger.problems("POST", "/contact_payments", {}, refund_body) == []
    refund_body["contact_payment"]["allocated_artefacts"][0]["amount"] = "21.00"  # money as a string
    refund_body["contact_payment"]["refund_method"] = "card"  # not a field Sage declares
    assert sorted(swagger.problems("POST", "/contact_payments", {}, refund_body)) == [
        "contact_payment/allocated_artefacts/0/amount: '21.00' is not of type 'number'",
        "contact_payment: Additional properties are not allowed ('refund_method' was unexpected)"]


def test_the_business_is_found_once_and_sent_on_every_request(sage):
    sandbox, connector, captured = sage
    deliver(connector, MemoryEntities(), invoice_event(5100))
    paths = [path for _, path, *_ in captured.requests()]
    assert paths.count("/businesses") == 1 and paths[0] == "/businesses"
    (business,) = sandbox.businesses
    assert connector.client.business_id == business


def test_several_businesses_need_one_configured():
    sandbox = Sandbox()
    with connectors_on(sandbox, "sage") as build:
        connector = build()
        sandbox.businesses["b" * 32] = copy.deepcopy(next(iter(sandbox.businesses.values())))
        sandbox.businesses["b" * 32].id = "b" * 32
        with pytest.raises(PermanentError, match="reaches 2 businesses: set settings.business_id"):
            deliver(connector, MemoryEntities(), invoice_event(5110))
    with connectors_on(sandbox, "sage", business_id="b" * 32) as build:
        doc = deliver(build(), MemoryEntities(), invoice_event(5111))
        assert doc.external_id in sandbox.businesses["b" * 32].tables["sales_invoices"]


def test_sandbox_refuses_a_request_without_x_business(sage):
    sandbox, connector, _ = sage
    connector.client.business()
    response = connector.http.client.get("/contacts", auth=connector.http.auth)
    assert response.status_code == 400
    assert response.json() == [{"$severity": "error", "$dataCode": "BusinessNotFound",
                                "$message": "X-Business header missing", "$source": "X-Business"}]


def test_refresh_tokens_rotate_and_the_old_one_dies(sage):
    sandbox, connector, _ = sage
    store = connector.runtime.credentials("sage")
    deliver(connector, MemoryEntities(), invoice_event(5200))
    first = store.get()["refresh_token"]
    sandbox.issuer.expire_all()  # 5-minute access tokens: the next call refreshes
    deliver(connector, MemoryEntities(), invoice_event(5201))
    second = store.get()["refresh_token"]
    assert second != first and store.get()["access_token_expires_at"] > 0
    answer = httpx.post(connector.settings.token_url, data={
        "grant_type": "refresh_token", "refresh_token": first, "client_id": store.get()["client_id"],
        "client_secret": store.get()["client_secret"]})
    assert answer.status_code == 400 and answer.json() == {"error": "invalid_grant"}


def test_the_minute_limit_answers_429_with_retry_after():
    sandbox = Sandbox(minute_limit=3)
    with connectors_on(sandbox, "sage", requests_per_minute=1000) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            for _ in range(5):
                connector.books_closed_through()
        assert raised.value.retry_after and raised.value.retry_after >= 1
        assert raised.value.platform_code == "TooManyRequests" and sandbox.minute_window.breaches >= 1
    assert sandbox.rate_limit_breaches() == sandbox.minute_window.breaches  # the uniform count the chaos test reads


def test_lists_are_read_page_by_page(sage):
    sandbox, connector, _ = sage
    connector.client.settings = connector.settings.model_copy(update={"items_per_page": 2})
    entities = MemoryEntities()
    for n in range(5):
        deliver(connector, entities, invoice_event(5300 + n, number="INV-PAGED"))
    assert len(connector.find(mapping_kind("invoice"), "INV-PAGED")) == 5


def mapping_kind(value: str):
    from connectors.engine_state import DocKind

    return DocKind(value)


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (401, [{"$severity": "error", "$dataCode": "AuthenticationFailed", "$message": "expired", "$source": ""}],
     AuthError, "AuthenticationFailed"),
    (429, [{"$severity": "error", "$dataCode": "TooManyRequests", "$message": "slow down", "$source": ""}],
     RateLimitedError, "TooManyRequests"),
    (422, [{"$severity": "error", "$dataCode": "RecordInvalid",
            "$message": "Date must be after the year end lockdown date (2026-11-30)", "$source": "date"}],
     ClosedPeriodError, "RecordInvalid"),
    (422, [{"$severity": "error", "$dataCode": "RecordInvalid", "$message": "can't be blank", "$source": "contact_id"}],
     PermanentError, "RecordInvalid"),
    (500, [{"$severity": "error", "$dataCode": "UnexpectedError", "$message": "boom", "$source": ""}],
     RetryableError, "UnexpectedError"),
])
def test_sages_error_body_is_classified(status, body, kind, code):
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind and error.platform_code == code and body[0]["$message"] in error.reason
    assert error.detail == body
    if kind is RateLimitedError:
        assert error.retry_after == 7
    assert classify(httpx.Response(502, text="<html>bad gateway</html>")) is None  # the default rules apply


def test_a_line_with_two_tax_components_uses_the_combined_rate_and_the_shops_amounts():
    rules = MappingConfig(income_accounts={"part": "4000"}, tax_codes={"GST+PST": "CA_GST_PST", "GST": "CA_GST"})
    event = invoice_event(5400, lines=[line(1, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    (body_line,) = mapping.invoice_payload(event, "c1", rules)["sales_invoice"]["invoice_lines"]
    assert body_line["tax_rate_id"] == "CA_GST_PST"
    assert (body_line["net_amount"], body_line["tax_amount"], body_line["total_amount"]) == (
        Decimal("22.40"), Decimal("2.69"), Decimal("25.09"))
    assert all(isinstance(v, Decimal) for v in (body_line["unit_price"], body_line["quantity"]))
    with pytest.raises(PermanentError, match="names no Sage tax rate for 'PST'"):
        mapping.invoice_payload(invoice_event(5401, lines=[line(1, "part", "x", "1", "1.00", taxes=(PST,))]), "c", rules)


def test_a_bookkeepers_contact_is_used_but_another_shop_customers_never(sage):
    sandbox, connector, _ = sage
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    entities = MemoryEntities()
    event = invoice_event(5500)
    business = next(iter(sandbox.businesses.values()))
    business.tables["contacts"]["k" * 32] = {"id": "k" * 32, "name": "Dana Whitfield", "reference": "DANA01",
                                             "contact_type_ids": ["CUSTOMER"],
                                             "main_contact_person": {"email": "dana@example.com"}}
    assert deliver(connector, entities, event).customer_id == "k" * 32
    other = invoice_event(5501, customer=event.customer.model_copy(update={"id": 78}))
    business.tables["contacts"]["k" * 32]["reference"] = "LWC77"  # now claimed by shop customer 77
    assert deliver(connector, MemoryEntities(), other).customer_id != "k" * 32


def test_a_payment_and_a_refund_dated_in_locked_books_post_on_the_first_open_day(sage):
    sandbox, connector, _ = sage
    entities = MemoryEntities()
    v1 = invoice_event(5600)
    doc = deliver(connector, entities, v1)
    sandbox.set_lockdown_date(date(2026, 11, 30))  # the receipt (Nov 20) and the return (Nov 20) are locked
    v2 = next_version(v1, payments=[payment(1, "100.00")], refunds=[refund(3, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v2, doc)
    (receipt,) = sandbox.records("contact_payments")
    (credit_note,) = sandbox.records("sales_credit_notes")
    (allocation,) = sandbox.records("contact_allocations")
    assert receipt["date"] == credit_note["date"] == allocation["date"] == "2026-12-01"
    invoice = connector.read_invoice(doc.external_id)
    assert invoice.balance == v1.computed.total - Decimal("100.00") - Decimal("304.45")


def test_the_sandbox_validates_as_the_swagger_says(sage):
    _, connector, _ = sage
    client = connector.client

    def post(body: dict) -> list[dict]:
        with pytest.raises(PermanentError) as refused:
            client.write("POST", "/sales_invoices", body)
        assert refused.value.status in (400, 422)
        return refused.value.detail

    line_ok = {"description": "Labour", "ledger_account_id": "4010", "unit_price": Decimal("10.00"),
               "tax_rate_id": "US_NO_TAX"}
    assert post({"sales_invoice": {"date": "2026-11-20", "invoice_lines": [line_ok]}}) == [
        {"$severity": "error", "$dataCode": "RecordInvalid", "$message": "can't be blank", "$source": "contact_id"}]
    contact = client.write("POST", "/contacts", {"contact": {"name": "Val", "contact_type_ids": ["CUSTOMER"]}})
    as_text = {**line_ok, "unit_price": "10.00"}
    assert post({"sales_invoice": {"contact_id": contact["id"], "date": "2026-11-20", "invoice_lines": [as_text]}}
                )[0]["$message"] == "is not a number"
    taxed = {**line_ok, "tax_rate_id": "CA_GST"}  # v3.1: a non-zero rate needs the line's tax amount
    assert post({"sales_invoice": {"contact_id": contact["id"], "date": "2026-11-20", "invoice_lines": [taxed]}}
                )[0]["$source"] == "tax_amount"
    assert post({"invoice": {}})[0]["$dataCode"] == "ParamMissing"


def test_a_refund_paid_back_is_a_customer_refund_on_its_credit_note_only(sage):
    """Sage's customer refund (``CUSTOMER_REFUND``) takes the credit note's outstanding amount to 0, is refused on
    an invoice, and deleted gives the credit back; a goodwill refund's tax goes on the main taxed line's rate."""
    sandbox, connector, _ = sage
    v1, goodwill, doc = paid_then_goodwill(connector, 5700)
    (credit_note,) = sandbox.records("sales_credit_notes")
    assert credit_note["outstanding_amount"] == 0 and credit_note["tax_amount"] == Decimal("2.00")
    assert credit_note["credit_note_lines"][0]["tax_rate_id"] == mapping.tax_rate_id(
        max((ln for ln in v1.lines if ln.taxes), key=lambda ln: ln.amount).taxes, connector.mapping)
    (refund_payment,) = [p for p in sandbox.records("contact_payments") if p["transaction_type_id"] == "CUSTOMER_REFUND"]
    assert refund_payment["total_amount"] == Decimal("42.00") and refund_payment["reference"] == "LWP9"
    assert refund_payment["bank_account_id"] == connector.mapping.payment_accounts["card"]
    body = copy.deepcopy({"contact_payment": {k: refund_payment[k] for k in (
        "transaction_type_id", "contact_id", "bank_account_id", "date", "total_amount")}})
    body["contact_payment"]["allocated_artefacts"] = [{"artefact_id": doc.external_id, "amount": Decimal("1.00")}]
    with pytest.raises(PermanentError) as refused:  # a refund pays back a credit, never an invoice
        connector.client.write("POST", "/contact_payments", body)
    assert refused.value.detail[0]["$source"] == "allocated_artefacts.artefact_id"
    connector.client.write("DELETE", f"/contact_payments/{refund_payment['id']}")
    (credit_note,) = sandbox.records("sales_credit_notes")
    assert credit_note["outstanding_amount"] == Decimal("42.00")


RATE_CAD = Decimal("1.385200")  # the sandbox's Sage rate for CAD (GET /exchange_rates)


def test_invoice_in_another_currency_goes_with_its_money_on_the_contact_for_that_currency(sage, swagger):
    """Issue #20: a CAD invoice, its receipt, credit note, allocation, customer refund and a closed-period
    adjustment all go to the shop customer's CAD contact (Sage locks a contact's currency), each document with
    ``currency_id`` CAD and Sage's own rate from ``GET /exchange_rates``; the base currency is read from
    ``financial_settings``; a base-currency invoice carries no currency field; every request is Swagger-valid."""
    sandbox, connector, captured = sage
    entities = MemoryEntities()
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"
    deliver(connector, entities, invoice_event(7000))
    start = len(captured.sent)
    returned = invoice_event(7001, currency="CAD", payments=[payment(1, "100.00")],
                             refunds=[refund(2, 2, "289.95", "14.50")])
    deliver(connector, entities, returned)
    paid = invoice_event(7002, currency="CAD", payments=[payment(1, "677.58")])
    deliver(connector, entities, next_version(paid, refunds=[goodwill_refund(payment_id=1)]),
            deliver(connector, entities, paid))
    late = invoice_event(7003, currency="CAD")
    doc = deliver(connector, entities, late)
    edited = next_version(late, lines=list(late.lines)[:3])
    doc = deliver(connector, entities, edited, doc)  # an edit: a PUT
    sandbox.set_lockdown_date(date(2026, 11, 30))
    doc = deliver(connector, entities, next_version(edited, lines=list(late.lines)[:2]), doc)
    assert [a.kind for a in doc.engine.adjustments] == ["decrease"]
    sandbox.set_lockdown_date(None)
    booked = {b.number: b for b in sandbox.booked_invoices()}
    assert booked[invoice_event(7000).number].currency == "USD"
    assert {booked[e.number].currency for e in (returned, paid, late)} == {"CAD"}
    (twin,) = [c for c in sandbox.records("contacts") if c["currency"]["id"] == "CAD"]
    assert twin["reference"] == f"LWC{returned.customer.id}-CAD" and twin["name"].endswith(" [CAD]")
    sent = captured.requests()[start:]
    assert not {f"{m} {p}": found for m, p, q, body, _ in sent if (found := swagger.problems(m, p, q, body))}
    writes = [(m, p.split("/")[1], body) for m, p, _, body, _ in sent if m in ("POST", "PUT")]
    assert {p for _, p, _ in writes} >= {"sales_invoices", "contact_payments", "sales_credit_notes", "contact_allocations"}
    assert ("PUT", "sales_invoices") in {(m, p) for m, p, _ in writes}
    types = set()
    for method, resource, body in writes:
        (envelope, fields), = body.items()
        if resource == "contacts":
            assert fields["currency_id"] == "CAD"
            continue
        assert fields["contact_id"] == twin["id"], resource
        if method == "PUT":  # an edit keeps the rate the invoice was booked at
            assert fields["currency_id"] == "CAD" and "exchange_rate" not in fields
        elif resource != "contact_allocations":  # an allocation has no currency of its own in the Swagger
            assert (fields["currency_id"], fields["exchange_rate"]) == ("CAD", RATE_CAD), resource
        types.add(fields.get("transaction_type_id"))
    assert {"CUSTOMER_RECEIPT", "CUSTOMER_REFUND"} <= types
    usd_body = next(body for m, p, _, body, _ in captured.requests()[:start] if (m, p) == ("POST", "/sales_invoices"))
    assert "currency_id" not in usd_body["sales_invoice"] and "exchange_rate" not in usd_body["sales_invoice"]
    assert all(r["exchange_rate"] == RATE_CAD for r in sandbox.records("sales_invoices") if r["currency"]["id"] == "CAD")


def _writes(captured: Captured) -> list[tuple[str, str]]:
    return [(m, p) for m, p, *_ in captured.requests() if m != "GET"]


@pytest.mark.parametrize(("multi_currency", "currency", "reason"), [
    (False, "CAD", "CAD.*multi-currency"),  # a business that never turned multi-currency on
    (True, "JPY", "no exchange rate for JPY"),  # a currency Sage has no rate for
])
def test_invoice_sage_cannot_take_in_its_currency_is_dead_lettered_before_any_write(sage, multi_currency, currency,
                                                                                    reason):
    sandbox, connector, captured = sage
    entities = MemoryEntities()
    sandbox.set_multi_currency(multi_currency)
    deliver(connector, entities, invoice_event(7100))
    before = len(_writes(captured))
    with pytest.raises(PermanentError, match=reason):
        deliver(connector, entities, invoice_event(7101, currency=currency))
    assert _writes(captured)[before:] == []


def test_a_renamed_customers_currency_contact_follows_the_shop(sage):
    """Issue #20: the shop customer's CAD contact was created once and never updated: after the shop renamed the
    customer and changed its email, CAD invoices kept going to a contact under the old name and address (the
    home contact was updated). It follows the shop now: one contact per currency, brought up to date."""
    sandbox, connector, _ = sage
    entities = MemoryEntities()
    first = invoice_event(7400, currency="CAD")
    deliver(connector, entities, first)
    renamed = first.customer.model_copy(update={"name": "Northside Fleet Services", "email": "ap@northside.example"})
    deliver(connector, entities, invoice_event(7401, currency="CAD", customer=renamed))
    (twin,) = [c for c in sandbox.records("contacts") if c["currency"]["id"] == "CAD"]
    assert twin["name"] == "Northside Fleet Services [CAD]"
    assert twin["main_contact_person"]["email"] == "ap@northside.example"
    assert {r["contact"]["id"] for r in sandbox.records("sales_invoices") if r["currency"]["id"] == "CAD"} == {twin["id"]}


def test_sandbox_keeps_sages_currency_rules(sage):
    """A document is in its contact's currency; a contact's currency is locked once it has an invoice; an unknown
    currency, or a foreign one with multi-currency off, is refused; a receipt settles only its own currency."""
    sandbox, connector, _ = sage
    doc = deliver(connector, MemoryEntities(), invoice_event(7300))
    client = connector.client
    held = client.get(f"/sales_invoices/{doc.external_id}")
    body = {"sales_invoice": {"contact_id": doc.customer_id, "date": "2026-11-20", "currency_id": "CAD",
                              "invoice_lines": [{k: ln[k] for k in ("description", "ledger_account_id", "unit_price",
                                                                     "tax_rate_id", "tax_amount")}
                                                for ln in held["invoice_lines"]]}}

    def refused(method: str, path: str, payload: dict) -> dict:
        with pytest.raises(PermanentError) as error:
            client.write(method, path, payload)
        return error.value.detail[0]

    assert refused("POST", "/sales_invoices", body)["$message"] == "The currency must be the contact's currency (USD)"
    assert refused("PUT", f"/contacts/{doc.customer_id}", {"contact": {"currency_id": "CAD"}})["$source"] == "currency_id"
    assert refused("POST", "/contacts", {"contact": {"name": "Zed", "contact_type_ids": ["CUSTOMER"],
                                                     "currency_id": "XXX"}})["$message"] == "Currency not found"
    cad = client.write("POST", "/contacts", {"contact": {"name": "Cad", "contact_type_ids": ["CUSTOMER"],
                                                         "currency_id": "CAD"}})
    receipt = {"contact_payment": {"transaction_type_id": "CUSTOMER_RECEIPT", "contact_id": cad["id"],
                                   "bank_account_id": "1200", "date": "2026-11-20", "total_amount": Decimal("5.00"),
                                   "allocated_artefacts": [{"artefact_id": doc.external_id, "amount": Decimal("5.00")}]}}
    assert refused("POST", "/contact_payments", receipt)["$message"] == "The artefact is in USD, not CAD"
    sandbox.set_multi_currency(False)
    assert "Multi-currency is not enabled" in refused(
        "POST", "/contacts", {"contact": {"name": "Eu", "contact_type_ids": ["CUSTOMER"], "currency_id": "EUR"}})["$message"]


def test_the_swagger_check_rejects_bad_currency_fields(swagger):
    good = {"sales_invoice": {"contact_id": "c1", "date": "2026-11-20", "currency_id": "CAD",
                              "exchange_rate": RATE_CAD, "invoice_lines": [
                                  {"description": "Labour", "ledger_account_id": "4010", "unit_price": Decimal("1")}]}}
    assert swagger.problems("POST", "/sales_invoices", {}, good) == []
    as_text = copy.deepcopy(good)
    as_text["sales_invoice"]["exchange_rate"] = "1.3852"
    misnamed = copy.deepcopy(good)
    misnamed["sales_invoice"]["currency"] = misnamed["sales_invoice"].pop("currency_id")
    assert swagger.problems("POST", "/sales_invoices", {}, as_text) == [
        "sales_invoice/exchange_rate: '1.3852' is not of type 'number'"]
    assert swagger.problems("POST", "/sales_invoices", {}, misnamed) == [
        "sales_invoice: Additional properties are not allowed ('currency' was unexpected)"]
