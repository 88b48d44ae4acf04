"""Reckon One API v2: every request the connector sends validated against Reckon's own OpenAPI 3.0 export
(``$LEDGERWIRE_SPECS_DIR/reckon-one/reckon-one-api-v2.openapi.yaml``) with openapi-core, the validator shown to
refuse bad bodies, the sandbox's validation table checked against the same file, and the platform's own rules
(subscription key, book discovery, rotating refresh tokens, drafts approved by merge-patch, transaction links,
the lock-off date, deletes refused while something is linked, Reckon's and API Management's error bodies).

How the spec is read (its quirks, as OpenAPI 3.0 says to read them): a ``$ref`` replaces its siblings (Reckon's
export writes ``type: object`` beside ``$ref`` to its string enums); the spec's own ``PATCH`` description and
its 415 answer require ``application/merge-patch+json`` while its ``requestBody`` lists the schema under
``application/json``, so a PATCH is checked against that schema and its content type separately; ``format:
guid`` (not an OpenAPI format) is checked here on path ids. Stricter than Reckon: an object may hold only the
properties the schema declares (a misspelt field would be silently dropped by Reckon).
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import (
    AuthError,
    ClosedPeriodError,
    DocumentState,
    PermanentError,
    RateLimitedError,
    ReauthorizationRequired,
    RetryableError,
    UncertainOutcomeError,
)
from connectors.engine_state import DocKind
from connectors.reckon_one import Sandbox, mapping
from connectors.reckon_one.client import classify
from connectors.reckon_one.sandbox import API, INPUTS
from connectors.testing import refund
from connectors.testing import (
    GST,
    PST,
    MemoryContext,
    MemoryEntities,
    connectors_on,
    deliver,
    invoice_event,
    line,
    next_version,
    payment,
    tax_inclusive_event,
)
from daemon.canonical import Customer, Refund
from daemon.config import MappingConfig

yaml = pytest.importorskip("yaml")
openapi_core = pytest.importorskip("openapi_core")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MERGE_PATCH = "application/merge-patch+json"


def _drop_ref_siblings(node: Any) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return {"$ref": node["$ref"]}
        return {k: _drop_ref_siblings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_drop_ref_siblings(v) for v in node]
    return node


class SpecValidator:
    """openapi-core over Reckon's OpenAPI 3.0, plus the checks the spec states in prose (see the docstring)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.raw = spec
        self.spec = _drop_ref_siblings(spec)
        self.api = openapi_core.OpenAPI.from_dict(self.spec, config=openapi_core.Config(spec_validator_cls=None))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        for template, item in self.spec["paths"].items():
            if re.match("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$", path) and method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"no operation {method} {path} in the spec")

    def validate(self, method: str, path: str, query: dict[str, str], body: Any, content_type: str = "application/json"
                 ) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        template, operation = self.operation(method, path)
        values = re.match("^" + re.sub(r"\{[^}]+\}", "([^/]+)", template) + "$", path).groups()
        for name, value in zip(re.findall(r"\{([^}]+)\}", template), values):
            declared = next((p for p in operation.get("parameters") or [] if p["name"] == name), {})
            if declared.get("schema", {}).get("format") == "guid":
                assert GUID.match(value), f"{method} {path}: {name} {value!r} is not a guid"
        if method == "PATCH":
            assert content_type == MERGE_PATCH, f"PATCH {path} must be sent as {MERGE_PATCH}"
            content_type = "application/json"  # the spec lists the schema under application/json

        class _Request:
            host_url = "https://api-v2.reckonone.com"

        request = _Request()
        request.path, request.method = path, method.lower()
        request.full_url_pattern = request.host_url + path
        request.parameters = RequestParameters(query=ImmutableMultiDict(query), header=Headers({
            "Authorization": "Bearer x"}), cookie=ImmutableMultiDict(), path={})
        request.content_type = content_type
        request.body = None if body is None else jsonmoney.dumps(body)
        self.api.validate_request(request)
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            unknown = self.unknown_keys(body, schema)
            assert not unknown, f"{method} {path}: keys the spec does not declare: {unknown}"

    def unknown_keys(self, value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
        while "$ref" in schema or "allOf" in schema:
            schema = self._deref(schema["$ref"]) if "$ref" in schema else schema["allOf"][0]
        problems: list[str] = []
        if isinstance(value, dict) and "properties" in schema:
            for key, item in value.items():
                if key not in schema["properties"]:
                    problems.append(f"{where}.{key}")
                else:
                    problems += self.unknown_keys(item, schema["properties"][key], f"{where}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for n, item in enumerate(value):
                problems += self.unknown_keys(item, schema["items"], f"{where}[{n}]")
        return problems

    def _deref(self, ref: str) -> dict[str, Any]:
        return self.spec["components"]["schemas"][ref.split("/")[-1]]


@pytest.fixture(scope="module")
def reckon_spec(specs) -> SpecValidator:
    path = specs / "reckon-one" / "reckon-one-api-v2.openapi.yaml"
    if not path.exists():
        pytest.skip(f"{path} not found")
    spec = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert spec["openapi"].startswith("3.0") and spec["info"]["title"] == "Reckon One API v2"
    return SpecValidator(spec)


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
def reckon():
    sandbox = Sandbox()
    with connectors_on(sandbox, "reckon") as build:
        connector = build()
        captured = Captured()
        connector.http.client.event_hooks["request"].append(captured)
        yield sandbox, connector, captured


def _every_kind_of_write(sandbox, connector) -> None:
    """Create (customer, invoice, approval, receipt, credit note and its approval, link), edit, remove a
    receipt, unlink, delete; then a locked book: a re-dated create, a decrease and an increase."""
    entities = MemoryEntities()
    v1 = invoice_event(5001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status == "voided"
    moved = v1.customer.model_copy(update={"phone": "555-0199", "billing_address": "9 Depot Rd"})
    deliver(connector, entities, invoice_event(5004, customer=moved))  # the customer is updated
    sandbox.set_lock_off_date(date(2026, 11, 30))
    late = deliver(connector, entities, invoice_event(5002))  # dated 2026-11-20: posted on 2026-12-01
    assert late.engine.posted_on == date(2026, 12, 1)
    sandbox.set_lock_off_date(None)
    v1 = invoice_event(5003)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_off_date(date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    doc = deliver(connector, entities, v2, doc)  # a decrease: a credit note
    doc = deliver(connector, entities, next_version(v2, lines=list(v1.lines)), doc)  # an increase: an invoice
    assert [a.kind for a in doc.engine.adjustments] == ["decrease", "increase"]


def test_every_request_matches_reckons_openapi(reckon, reckon_spec):
    sandbox, connector, captured = reckon
    _every_kind_of_write(sandbox, connector)
    sent = captured.requests()
    seen = {(method, reckon_spec.operation(method, path)[0]) for method, path, *_ in sent}
    for expected in [("GET", "/books"), ("POST", "/{bookId}/customers"), ("PUT", "/{bookId}/customers/{customerId}"),
                     ("GET", "/{bookId}/customers"), ("POST", "/{bookId}/invoices"),
                     ("PUT", "/{bookId}/invoices/{invoiceId}"), ("PATCH", "/{bookId}/invoices/{invoiceId}"),
                     ("DELETE", "/{bookId}/invoices/{invoiceId}"), ("POST", "/{bookId}/receipts"),
                     ("DELETE", "/{bookId}/receipts/{receiptId}"), ("POST", "/{bookId}/creditNotes"),
                     ("PATCH", "/{bookId}/creditNotes/{creditNoteId}"),
                     ("POST", "/{bookId}/creditNotes/{creditNoteId}/transactionLinks"),
                     ("DELETE", "/{bookId}/creditNotes/{creditNoteId}/transactionlinks/{linkId}"),
                     ("GET", "/{bookId}/settings"), ("GET", "/{bookId}/invoices/{invoiceId}")]:
        assert expected in seen, f"{expected} never sent"
    for method, path, query, body, headers in sent:
        reckon_spec.validate(method, path, query, body, headers.get("content-type", "application/json"))
    # Both credentials on every API call: the bearer token and API Management's subscription key.
    key = connector.runtime.credentials("reckon").get()["subscription_key"]
    assert all(h.get("ocp-apim-subscription-key") == key and h.get("authorization", "").startswith("Bearer ")
               for *_, h in sent)


def test_the_openapi_check_refuses_bad_bodies(reckon_spec):
    from openapi_core.validation.request.exceptions import RequestValidationError

    book, invoice = str(uuid.uuid4()), str(uuid.uuid4())
    good = {"customer": str(uuid.uuid4()), "invoiceDate": "2026-11-20T00:00:00Z", "amountTaxStatus": "Exclusive",
            "reference": "INV-1", "lineItems": [{"lineNumber": 1, "description": "Labour", "taxRate": "GST",
                                                 "taxAmount": Decimal("9.00"),
                                                 "accountDetails": {"ledgerAccount": "Sales", "amount": Decimal("90")}}]}
    reckon_spec.validate("POST", f"/{book}/invoices", {}, good)
    bad = {"customer missing": {k: v for k, v in good.items() if k != "customer"},
           "amount as text": _with(good, lambda b: b["lineItems"][0]["accountDetails"].update(amount="90.00")),
           "unknown tax status": dict(good, amountTaxStatus="Gross"),
           "not a date-time": dict(good, invoiceDate="20/11/2026"),
           "line number as text": _with(good, lambda b: b["lineItems"][0].update(lineNumber="1")),
           "no ledger account": _with(good, lambda b: b["lineItems"][0]["accountDetails"].pop("ledgerAccount"))}
    for why, body in bad.items():
        with pytest.raises(RequestValidationError):
            reckon_spec.validate("POST", f"/{book}/invoices", {}, body)
            pytest.fail(why)
    with pytest.raises(AssertionError, match="taxCode"):  # a misspelt field Reckon would silently drop
        reckon_spec.validate("POST", f"/{book}/invoices", {}, _with(good, lambda b: b["lineItems"][0].update(taxCode="G")))
    with pytest.raises(AssertionError, match="not a guid"):
        reckon_spec.validate("PUT", f"/{book}/invoices/INV0001", {}, good)
    with pytest.raises(AssertionError, match="merge-patch"):
        reckon_spec.validate("PATCH", f"/{book}/invoices/{invoice}", {}, {"status": "Approved"})
    reckon_spec.validate("PATCH", f"/{book}/invoices/{invoice}", {}, {"status": "Approved"}, MERGE_PATCH)
    with pytest.raises(RequestValidationError):
        reckon_spec.validate("PATCH", f"/{book}/invoices/{invoice}", {}, {"status": "Posted"}, MERGE_PATCH)
    link = {"transactionId": invoice, "transactionAmount": Decimal("5"), "transactionType": "Invoice"}
    receipt = {"customer": "c", "receiptDate": "2026-11-20T00:00:00Z", "totalAmount": Decimal("5"),
               "reference": "LW1", "transactionLinks": [link]}
    reckon_spec.validate("POST", f"/{book}/receipts", {}, receipt)
    for body in (_with(receipt, lambda b: b["transactionLinks"][0].pop("transactionType")),
                 dict(receipt, reference="x" * 201), {k: v for k, v in receipt.items() if k != "totalAmount"}):
        with pytest.raises(RequestValidationError):
            reckon_spec.validate("POST", f"/{book}/receipts", {}, body)
    with pytest.raises(AssertionError, match="no operation POST"):  # Reckon has no void endpoint
        reckon_spec.validate("POST", f"/{book}/invoices/{invoice}/void", {}, None)


def _with(body: dict[str, Any], change) -> dict[str, Any]:
    copied = copy.deepcopy(body)
    change(copied)
    return copied


def test_the_sandbox_validation_table_is_the_specs(reckon_spec):
    """The sandbox's INPUTS (required fields, properties, enums, lengths) say what Reckon's spec says."""
    schemas = reckon_spec.spec["components"]["schemas"]
    names = {"LineItem": "InvoiceLineItemInput", "ItemDetails": "InvoiceLineItemItemDetailsInput",
             "AccountDetails": "InvoiceLineItemAccountDetailsInput",
             "TransactionLinkInput": "ReceiptTransactionLinkInput"}
    for entry, (required, fields) in INPUTS.items():
        schema = schemas[names.get(entry, entry)]
        assert sorted(required) == sorted(schema.get("required") or []), entry
        declared = {k for k, v in schema["properties"].items() if not v.get("readOnly")}
        assert set(fields) <= declared, (entry, set(fields) - declared)
        for name, kind in fields.items():
            prop = schema["properties"][name]
            while "$ref" in prop:
                prop = schemas[prop["$ref"].split("/")[-1]]
            if isinstance(kind, tuple) and not isinstance(kind[1], int):
                assert tuple(prop["enum"]) == kind, (entry, name)
            elif isinstance(kind, tuple):
                assert prop.get("maxLength") == kind[1], (entry, name)
            elif kind in ("number", "integer", "string", "boolean"):
                assert prop.get("type") == kind and "maxLength" not in prop, (entry, name)
            elif kind == "date-time":
                assert prop.get("format") == "date-time", (entry, name)


def test_the_sandbox_refuses_what_the_spec_refuses(reckon):
    _, connector, _ = reckon
    client = connector.client

    def refused(path: str, body: dict) -> dict:
        with pytest.raises(PermanentError) as raised:
            client.write("POST", path, body)
        assert raised.value.status == 400
        return raised.value.detail

    customer = client.write("POST", "/customers", {"name": "Val"})
    good = {"customer": customer, "invoiceDate": "2026-11-20T00:00:00Z", "amountTaxStatus": "Exclusive",
            "lineItems": [{"lineNumber": 1, "accountDetails": {"ledgerAccount": "Sales - parts", "amount": Decimal("10")}}]}
    assert refused("/invoices", {k: v for k, v in good.items() if k != "customer"}) == {
        "code": 400, "message": "The customer field is required.",
        "errors": [{"location": "customer", "message": "The customer field is required."}]}
    assert refused("/invoices", dict(good, amountTaxStatus="Gross"))["errors"][0]["location"] == "amountTaxStatus"
    as_text = _with(good, lambda b: b["lineItems"][0]["accountDetails"].update(amount="10.00"))
    assert refused("/invoices", as_text)["errors"][0]["location"] == "lineItems[0].accountDetails.amount"
    unknown_account = _with(good, lambda b: b["lineItems"][0]["accountDetails"].update(ledgerAccount="Nope"))
    assert refused("/invoices", unknown_account)["message"] == "'Nope' was not found."
    assert refused("/customers", {"name": "x" * 101})["errors"][0]["location"] == "name"


def test_drafts_are_approved_by_merge_patch_and_only_then_take_receipts(reckon):
    sandbox, connector, _ = reckon
    client = connector.client
    customer = client.write("POST", "/customers", {"name": "Val"})
    invoice = client.write("POST", "/invoices", {
        "customer": customer, "invoiceDate": "2026-11-20T00:00:00Z", "amountTaxStatus": "Exclusive",
        "lineItems": [{"lineNumber": 1, "accountDetails": {"ledgerAccount": "Sales - parts", "amount": Decimal("10")}}]})
    assert client.get(f"/invoices/{invoice}")["status"] == "Draft"
    receipt = {"customer": customer, "receiptDate": "2026-11-20T00:00:00Z", "totalAmount": Decimal("4"),
               "transactionLinks": [mapping.link_payload(invoice, Decimal("4"))]}
    with pytest.raises(PermanentError, match="draft transaction cannot be linked"):
        client.write("POST", "/receipts", receipt)
    raw = connector.http.client.patch(f"/{client.book()}/invoices/{invoice}", auth=connector.http.auth,
                                      content=b'{"status": "Approved"}', headers={"Content-Type": "application/json"})
    assert raw.status_code == 415 and raw.json()["code"] == 415
    client.write("PATCH", f"/invoices/{invoice}", {"status": "Approved"})
    client.write("POST", "/receipts", receipt)
    held = client.get(f"/invoices/{invoice}")
    assert (held["status"], held["balance"]) == ("Approved", Decimal("6"))
    with pytest.raises(PermanentError, match="could not be deleted"):
        client.write("DELETE", f"/invoices/{invoice}")


def test_the_subscription_key_is_checked_before_the_token(reckon):
    sandbox, connector, _ = reckon
    connector.client.book()
    bare = connector.http.client.get(f"/{connector.client.book()}/invoices")
    assert bare.status_code == 401 and bare.json()["message"].startswith("Access denied due to missing subscription key")
    assert isinstance(classify(bare), ReauthorizationRequired)
    wrong = connector.http.client.get(f"/{connector.client.book()}/invoices",
                                      headers={"Ocp-Apim-Subscription-Key": "0" * 32})
    assert "invalid subscription key" in wrong.json()["message"]
    no_token = connector.http.client.get(f"/{connector.client.book()}/invoices", headers={
        "Ocp-Apim-Subscription-Key": connector.runtime.credentials("reckon").get()["subscription_key"]})
    assert no_token.status_code == 401 and no_token.json() == {
        "code": 401, "message": "Authorization has been denied for this request."}
    assert type(classify(no_token)) is AuthError


def test_refresh_tokens_rotate_with_basic_client_auth(reckon):
    sandbox, connector, _ = reckon
    store = connector.runtime.credentials("reckon")
    deliver(connector, MemoryEntities(), invoice_event(5200))
    first = store.get()["refresh_token"]
    sandbox.issuer.expire_all()  # 180-minute access tokens: the next call refreshes
    deliver(connector, MemoryEntities(), invoice_event(5201))
    assert store.get()["refresh_token"] != first and sandbox.issuer.refresh_count == 2
    cred = store.get()
    reused = httpx.post(connector.settings.token_url, data={"grant_type": "refresh_token", "refresh_token": first},
                        auth=(cred["client_id"], cred["client_secret"]))
    assert reused.status_code == 400 and reused.json() == {"error": "invalid_grant"}
    in_body = httpx.post(connector.settings.token_url, data={  # Reckon's identity server wants HTTP Basic
        "grant_type": "refresh_token", "refresh_token": cred["refresh_token"], "client_id": cred["client_id"],
        "client_secret": cred["client_secret"]})
    assert in_body.status_code == 401 and in_body.json() == {"error": "invalid_client"}


def test_a_refresh_token_unused_for_45_days_pauses_the_target(reckon):
    sandbox, connector, _ = reckon
    deliver(connector, MemoryEntities(), invoice_event(5210))
    sandbox.age_refresh_tokens(46 * 86400)
    sandbox.issuer.expire_all()
    with pytest.raises(ReauthorizationRequired):
        deliver(connector, MemoryEntities(), invoice_event(5211))


def test_several_books_need_one_configured():
    sandbox = Sandbox()
    with connectors_on(sandbox, "reckon") as build:
        connector = build()
        other = copy.deepcopy(next(iter(sandbox.books.values())))
        other.id = str(uuid.uuid4())
        sandbox.books[other.id] = other
        with pytest.raises(PermanentError, match="reaches 2 books: set settings.book_id"):
            deliver(connector, MemoryEntities(), invoice_event(5110))
    with connectors_on(sandbox, "reckon", book_id=other.id) as build:
        doc = deliver(build(), MemoryEntities(), invoice_event(5111))
        assert doc.external_id in sandbox.books[other.id].tables["invoices"]


def test_a_minute_limit_answers_api_managements_429_with_retry_after():
    sandbox = Sandbox(minute_limit=3)
    with connectors_on(sandbox, "reckon", requests_per_minute=1000) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            for _ in range(6):
                connector.books_closed_through()
        assert raised.value.retry_after and raised.value.retry_after >= 1
        assert raised.value.detail["message"].startswith("Rate limit is exceeded") and sandbox.rate_limit_breaches() >= 1
    assert Sandbox().rate_limit_breaches() == 0


def test_lists_are_filtered_and_read_page_by_page(reckon):
    sandbox, connector, captured = reckon
    connector.client.settings = connector.settings.model_copy(update={"per_page": 2})
    entities = MemoryEntities()
    for n in range(5):
        deliver(connector, entities, invoice_event(5300 + n, number="INV-PAGED"))
    deliver(connector, entities, invoice_event(5310, number="INV-OTHER"))
    assert len(connector.find(DocKind.INVOICE, "INV-PAGED")) == 5
    pages = [q for m, p, q, *_ in captured.requests() if p.endswith("/invoices") and m == "GET"]
    assert pages[-1] == {"page": "3", "perPage": "2", "filter": 'reference eq "INV-PAGED"'}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (401, {"code": 401, "message": "Authorization has been denied for this request."}, AuthError),
    (401, {"statusCode": 401, "message": "Access denied due to invalid subscription key."}, ReauthorizationRequired),
    (403, {"code": 403, "message": "The user does not have permission to create invoices."}, ReauthorizationRequired),
    (429, {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 7 seconds."}, RateLimitedError),
    (400, {"code": 400, "message": "The transaction could not be saved.", "errors": [
        {"location": "date", "message": "The date is on or before the lock off date (2026-11-30)."}]}, ClosedPeriodError),
    (400, {"code": 400, "message": "The customer field is required.", "errors": [
        {"location": "customer", "message": "The customer field is required."}]}, PermanentError),
    (500, {"code": 500, "message": "An unexpected error occurred."}, RetryableError),
])
def test_reckons_error_bodies_are_classified(status, body, kind):
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind and body["message"] in error.reason and error.detail == body
    if kind is RateLimitedError:
        assert error.retry_after == 7
    assert classify(httpx.Response(502, text="<html>bad gateway</html>")) is None  # the default rules apply


def test_lines_carry_the_shops_tax_and_the_invoices_tax_status():
    rules = MappingConfig(income_accounts={"part": "Sales"}, tax_codes={"GST+PST": "GST+PST", "GST": "GST 5%"})
    event = invoice_event(5400, lines=[line(1, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    body = mapping.invoice_payload(event, "c1", rules)
    (body_line,) = body["lineItems"]
    assert body["amountTaxStatus"] == "Exclusive" and body["reference"] == event.number
    assert body_line["taxRate"] == "GST+PST" and body_line["taxAmount"] == Decimal("2.69")
    assert body_line["accountDetails"] == {"ledgerAccount": "Sales", "quantity": Decimal("2"), "amount": Decimal("22.40")}
    inclusive = mapping.invoice_payload(tax_inclusive_event(5401), "c1", MappingConfig(
        income_accounts={"part": "Sales"}, tax_codes={"GST": "GST 5%", "GST+PST": "GST+PST"}))
    assert inclusive["amountTaxStatus"] == "Inclusive"
    with pytest.raises(PermanentError, match="names no Reckon One tax rate for 'PST'"):
        mapping.invoice_payload(invoice_event(5402, lines=[line(1, "part", "x", "1", "1.00", taxes=(PST,))]), "c", rules)


def test_a_goodwill_refunds_tax_is_on_the_main_taxed_lines_code():
    """A refund with no line that carries tax is credited on the tax code of the invoice's largest taxed line, never
    with its tax on the untaxed code (issue #20)."""
    rules = MappingConfig(income_accounts={"part": "Sales"}, tax_codes={"GST": "GST 5%", "none": "NT"})
    event = invoice_event(5403, lines=[line(1, "part", "Relay", "1", "10.00", taxes=(GST,)),
                                       line(2, "part", "Pump", "1", "80.00", taxes=(GST,)),
                                       line(3, "part", "Core", "1", "45.00")])
    goodwill = Refund(id=7, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"), line_id=None,
                      reason="Goodwill", created_at=event.emitted_at)
    (credited,) = mapping.credit_note_payload(event, goodwill, "c1", rules)["lineItems"]
    assert (credited["taxRate"], credited["taxAmount"], credited["accountDetails"]["amount"]) == (
        "GST 5%", Decimal("2.00"), Decimal("40.00"))
    untaxed = goodwill.model_copy(update={"tax_amount": Decimal("0")})
    assert mapping.credit_note_payload(event, untaxed, "c1", rules)["lineItems"][0]["taxRate"] == "NT"


def test_a_tax_inclusive_invoice_totals_as_the_shops(reckon):
    sandbox, connector, _ = reckon
    event = tax_inclusive_event(5450)
    doc = deliver(connector, MemoryEntities(), event)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == event.number]
    assert (booked.total, booked.tax_total) == (event.computed.total, event.computed.tax_total)
    assert doc.engine.tax_difference is None or doc.engine.tax_difference == 0


def test_a_bookkeepers_customer_is_used_but_another_shop_customers_never(reckon):
    sandbox, connector, _ = reckon
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    book = next(iter(sandbox.books.values()))
    mine = str(uuid.uuid4())
    book.tables["customers"][mine] = {"id": mine, "name": "Dana Whitfield", "notes": "Good customer"}
    event = invoice_event(5500)
    assert deliver(connector, MemoryEntities(), event).customer_id == mine
    # Adopted and brought up to date: marked as this shop customer's, the bookkeeper's notes kept.
    assert book.tables["customers"][mine]["notes"].splitlines() == ["Ledgerwire customer 77", "Good customer"]
    other = invoice_event(5501, customer=Customer(id=78, name="Dana Whitfield"))
    assert deliver(connector, MemoryEntities(), other).customer_id != mine


def test_a_receipt_and_a_refund_dated_in_a_locked_book_post_on_the_first_open_day(reckon):
    sandbox, connector, _ = reckon
    entities = MemoryEntities()
    v1 = invoice_event(5600)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_off_date(date(2026, 11, 30))
    v2 = next_version(v1, payments=[payment(1, "100.00")], refunds=[refund(3, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v2, doc)
    (receipt,) = sandbox.records("receipts")
    (note,) = sandbox.records("creditNotes")
    assert receipt["receiptDate"][:10] == note["creditNoteDate"][:10] == "2026-12-01"
    assert note["status"] == "Approved" and note["balance"] == 0
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("100.00") - Decimal("304.45")
    with pytest.raises(ClosedPeriodError):  # the lock-off date refuses a change on the day itself
        connector.client.write("DELETE", f"/invoices/{doc.external_id}")


def test_a_credit_note_left_in_draft_is_approved_when_adopted(reckon):
    """The credit note's create was applied but its answer lost (so its approval never went): the retry finds it
    by its reference, approves it, and links it to the invoice — one credit note, no duplicate."""
    sandbox, connector, _ = reckon
    sandbox.faults.hang_s = 2.5  # longer than the connector's 2 s timeout
    entities = MemoryEntities()
    v1 = invoice_event(5700, refunds=[refund(4, 2, "289.95", "14.50")])
    sandbox.faults.fault_at(4)  # customer, invoice, its approval, then the credit note
    ctx = MemoryContext(connector.target.name, v1, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v1, DocumentState(), ctx)
    (note,) = sandbox.records("creditNotes")
    assert note["status"] == "Draft" and ctx.checkpoints[-1].engine.intent is not None
    doc = deliver(connector, entities, v1, ctx.checkpoints[-1], attempt=2)
    (note,) = sandbox.records("creditNotes")
    assert (note["status"], note["balance"], len(note["transactionLinks"])) == ("Approved", 0, 1)
    assert doc.refunds["4"].external_id == note["id"] and doc.engine.intent is None
