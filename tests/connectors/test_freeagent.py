"""FreeAgent API v2: every request the connector sends validated against FreeAgent's own Postman collection,
the validator shown to reject bad bodies, and the platform's rules (token refreshes, limits, paging, drafts,
payments as bank transaction explanations, account locks, FreeAgent's error body).

FreeAgent publishes no schema: its Postman collection holds example bodies only. The validator is derived from
the collection at test time: the operation (verb + path template) must be one of its requests; a body must use
the envelope its example uses (``{"invoice": {...}}``); every field the examples show must have the kind its
example value has (a URI of the same resource, a YYYY-MM-DD date, a decimal, an integer, a boolean, a string,
a list of objects checked the same way). Fields the collection's examples never show are refused, except those
named in ``DOCUMENTED`` below — each taken from FreeAgent's API pages (dev.freeagent.com/docs), which the 2022
collection predates or leaves out; ``GET /account_locks`` is one such page too.
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
from connectors.base import AuthError, ClosedPeriodError, NumberInUseError, PermanentError, RateLimitedError, RetryableError
from connectors.engine_state import DocKind
from connectors.freeagent import Sandbox, mapping
from connectors.freeagent.client import classify
from connectors.testing import refund, paid_then_goodwill
from connectors.testing import GST, PST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment
from daemon.config import MappingConfig

API = "/v2"
# Fields FreeAgent's API pages document that the collection's example bodies do not show (envelope -> kind).
DOCUMENTED: dict[str, dict[str, str]] = {
    "invoice": {"reference": "string", "comments": "string", "invoice_items": "list"},  # docs/invoices
    # price and quantity are Decimals on the page (the collection's examples happen to be whole numbers)
    "invoice_items": {"price": "decimal", "quantity": "decimal", "sales_tax_rate": "decimal",
                      "second_sales_tax_rate": "decimal", "category": "uri:categories", "url": "uri:invoice_items",
                      "_destroy": "boolean"},
    "credit_note": {"reference": "string", "comments": "string"},  # docs/credit_notes
    "credit_note_items": {"price": "decimal", "quantity": "decimal", "item_type": "string", "sales_tax_rate": "decimal", "second_sales_tax_rate": "decimal",
                          "category": "uri:categories"},
    "contact": {"organisation_name": "string", "phone_number": "string", "address1": "string",
                "default_payment_terms_in_days": "integer"},  # docs/contacts
    # docs/bank_transaction_explanations; a credit note's refund names the credit note in paid_invoice (FreeAgent's
    # staff on api-discuss.freeagent.com/t/record-manual-payment-net-off-credit-note/2026): either kind ("|").
    "bank_transaction_explanation": {"paid_invoice": "uri:invoices|uri:credit_notes"},
}
EXTRA_OPERATIONS = [("GET", "/account_locks")]  # docs/account_locks (newer than the collection)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, Decimal)):
        return "decimal"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    text = str(value)
    if match := re.search(r"/v2/([a-z_]+)/(?::?\w+)$", text):
        return f"uri:{match.group(1)}"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return "date"
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return "decimal"
    return "string"


class CollectionValidator:
    """Requests checked against the shapes FreeAgent's Postman collection shows."""

    def __init__(self, collection: dict[str, Any]) -> None:
        self.operations: list[tuple[str, re.Pattern[str]]] = []
        self.fields: dict[str, dict[str, str]] = {}  # envelope / item list -> field -> kind
        self.envelopes: dict[str, str] = {}  # path template -> envelope
        for request in _requests(collection["item"]):
            path = re.sub(r"\?.*$", "", request["url"]["raw"].replace("{{url}}", "")).replace("//", "/")
            template = path.removeprefix(API)
            self.operations.append((request["method"], re.compile(
                "^" + re.sub(r":\w+", "[^/]+", template).rstrip("/") + "/?$")))
            raw = (request.get("body") or {}).get("raw")
            if request["method"] in ("POST", "PUT") and raw:
                for envelope, inner in json.loads(raw.replace("{{url}}", "https://api.freeagent.com")).items():
                    if isinstance(inner, dict):
                        self.envelopes[f"{request['method']} {template}"] = envelope
                        self._learn(envelope, inner)
        for method, template in EXTRA_OPERATIONS:
            self.operations.append((method, re.compile(f"^{template}$")))
        for name in [n for n in self.fields if n.endswith("_item")]:  # "Create Invoice Item" shows an item
            self.fields.setdefault(f"{name}s", {}).update(self.fields[name])
        for envelope, extra in DOCUMENTED.items():
            self.fields.setdefault(envelope, {}).update(extra)

    def _learn(self, name: str, body: dict[str, Any]) -> None:
        known = self.fields.setdefault(name, {})
        for key, value in body.items():
            known[key] = _kind(value)
            if isinstance(value, list) and value and isinstance(value[0], dict):
                for element in value:
                    self._learn(key, element)

    def problems(self, method: str, path: str, body: Any, base: str) -> list[str]:
        if not any(verb == method and pattern.match(path) for verb, pattern in self.operations):
            return [f"no request {method} {path} in the collection"]
        if body is None:
            return []
        template = next((t for t in self.envelopes if t.split(" ")[0] == method and re.fullmatch(
            re.sub(r":\w+", "[^/]+", t.split(" ", 1)[1]), path)), None)
        envelope = self.envelopes.get(template or "")
        if envelope is None or set(body) != {envelope}:
            return [f"envelope {sorted(body)} is not the collection's {envelope!r}"]
        return self._check(envelope, body[envelope], base)

    def _check(self, name: str, body: dict[str, Any], base: str) -> list[str]:
        out = []
        for key, value in body.items():
            kind = self.fields.get(name, {}).get(key)
            if kind is None:
                out.append(f"{name}.{key}: not in the collection's examples nor FreeAgent's pages")
            elif kind == "list":
                if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                    out.append(f"{name}.{key}: not a list of objects")
                else:
                    out += [p for element in value for p in self._check(key, element, base)]
            elif (found := _kind(value).replace(base, "")) not in kind.split("|") and not (
                    kind == "decimal" and found == "integer"):
                out.append(f"{name}.{key}: {found}, the collection has {kind}")
        return out


def _requests(items: list[dict[str, Any]]):
    for item in items:
        if "item" in item:
            yield from _requests(item["item"])
        else:
            yield item["request"]


@pytest.fixture(scope="module")
def collection(specs) -> CollectionValidator:
    return CollectionValidator(json.loads((specs / "freeagent" / "FreeAgent.postman_collection.json").read_text()))


class Captured:
    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def requests(self) -> list[tuple[str, str, dict[str, str], Any]]:
        return [(r.method, r.url.path.removeprefix(API), dict(r.url.params),
                 jsonmoney.loads(r.content) if r.content else None) for r in self.sent]


@pytest.fixture
def freeagent():
    sandbox = Sandbox(minute_limit=6000, hour_limit=100_000)  # the limits have tests of their own
    with connectors_on(sandbox, "fa", requests_per_minute=6000, requests_per_hour=100_000) as build:
        connector = build()
        captured = Captured()
        connector.http.client.event_hooks["request"].append(captured)
        yield sandbox, connector, captured


def test_every_request_matches_freeagents_collection(freeagent, collection):
    sandbox, connector, captured = freeagent
    entities = MemoryEntities()
    v1 = invoice_event(7001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status == "voided"
    deliver(connector, entities, invoice_event(7002, customer=v1.customer.model_copy(update={"phone": "555-0199"})))
    locked = invoice_event(7003)
    doc = deliver(connector, entities, locked)
    sandbox.set_lock_date(date(2026, 11, 30))
    smaller = next_version(locked, lines=list(locked.lines)[:2])
    doc = deliver(connector, entities, smaller, doc)  # a decrease
    doc = deliver(connector, entities, next_version(smaller, lines=list(locked.lines)), doc)  # and an increase
    assert [a.kind for a in doc.engine.adjustments] == ["decrease", "increase"]
    sandbox.set_lock_date(None)
    paid = invoice_event(7004, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, paid)
    paid_back = next_version(paid, refunds=[refund(4, 2, "20.00", "1.00").model_copy(update={"payment_id": 1})])
    doc = deliver(connector, entities, paid_back, doc)  # money out explained as the credit note's refund
    deliver(connector, entities, next_version(paid_back, refunds=[]), doc)  # taken back: the explanation deleted
    assert any("/credit_notes/" in str((body or {}).get("bank_transaction_explanation", {}).get("paid_invoice"))
               for _, _, _, body in captured.requests())
    sent = captured.requests()
    seen = {(method, re.sub(r"/\d+", "/{id}", path)) for method, path, *_ in sent}
    for expected in [("POST", "/contacts"), ("PUT", "/contacts/{id}"), ("POST", "/invoices"),
                     ("PUT", "/invoices/{id}"), ("PUT", "/invoices/{id}/transitions/mark_as_sent"),
                     ("PUT", "/invoices/{id}/transitions/mark_as_cancelled"), ("POST", "/bank_transaction_explanations"),
                     ("DELETE", "/bank_transaction_explanations/{id}"), ("POST", "/credit_notes"),
                     ("PUT", "/credit_notes/{id}/transitions/mark_as_sent"), ("POST", "/credit_note_reconciliations"),
                     ("DELETE", "/credit_note_reconciliations/{id}"), ("GET", "/account_locks"), ("GET", "/contacts")]:
        assert expected in seen, f"{expected} never sent"
    base = connector.client.base_url
    problems = {f"{method} {path}": found for method, path, _, body in sent
                if (found := collection.problems(method, path, body, base.removesuffix(API)))}
    assert not problems
    assert all(r.headers["user-agent"] == "Ledgerwire" for r in captured.sent)


def test_the_collection_check_rejects_bad_bodies(collection):
    base = "https://api.freeagent.com"
    good = {"invoice": {"contact": f"{base}/v2/contacts/4", "dated_on": "2026-11-20", "payment_terms_in_days": 30,
                        "reference": "INV-1", "invoice_items": [
                            {"item_type": "Hours", "quantity": "1.5", "price": "120.00", "description": "Labour",
                             "sales_tax_rate": "5", "category": f"{base}/v2/categories/002"}]}}
    assert collection.problems("POST", "/invoices", good, base) == []
    for change, expected in [
        (lambda b: b["invoice"].update(contact="4"), "invoice.contact: decimal, the collection has uri:contacts"),
        (lambda b: b["invoice"].update(contact=f"{base}/v2/users/4"), "invoice.contact: uri:users"),
        (lambda b: b["invoice"].update(dated_on="20/11/2026"), "invoice.dated_on: string, the collection has date"),
        (lambda b: b["invoice"].update(payment_terms_in_days="thirty"), "invoice.payment_terms_in_days: string"),
        (lambda b: b["invoice"]["invoice_items"][0].update(price="£120"), "invoice_items.price: string"),
        (lambda b: b["invoice"]["invoice_items"][0].update(tax_rate="5"), "invoice_items.tax_rate: not in"),
        (lambda b: b["invoice"].update(invoice_items={"item_type": "Hours"}), "invoice.invoice_items: not a list"),
    ]:
        body = copy.deepcopy(good)
        change(body)
        assert any(expected in p for p in collection.problems("POST", "/invoices", body, base)), expected
    assert collection.problems("POST", "/invoices", {"sales_invoice": good["invoice"]}, base) == [
        "envelope ['sales_invoice'] is not the collection's 'invoice'"]
    assert collection.problems("POST", "/invoices/9/void", None, base) == [
        "no request POST /invoices/9/void in the collection"]
    explanation = {"bank_transaction_explanation": {"bank_account": f"{base}/v2/bank_accounts/1", "dated_on": "2026-11-20",
                                                    "gross_value": "10.00", "paid_invoice": f"{base}/v2/invoices/3"}}
    assert collection.problems("POST", "/bank_transaction_explanations", explanation, base) == []
    explanation["bank_transaction_explanation"]["paid_invoice"] = f"{base}/v2/bills/3"
    assert collection.problems("POST", "/bank_transaction_explanations", explanation, base) == [
        "bank_transaction_explanation.paid_invoice: uri:bills, the collection has uri:invoices|uri:credit_notes"]
    refund_out = mapping.refund_explanation_payload(
        invoice_event(7010, payments=[payment(1, "50.00")]), refund(4, 2, "20.00", "1.00").model_copy(
            update={"payment_id": 1}), "5", Decimal("21.00"), "LWP4", MappingConfig(payment_accounts={"card": "1"}),
        lambda kind, key: f"{base}/v2/{kind}/{key}", date(2026, 11, 20))
    assert refund_out["bank_transaction_explanation"]["gross_value"] == "-21.00"  # money out
    assert collection.problems("POST", "/bank_transaction_explanations", refund_out, base) == []
    refund_out["bank_transaction_explanation"]["paid_credit_note"] = refund_out["bank_transaction_explanation"].pop(
        "paid_invoice")
    assert collection.problems("POST", "/bank_transaction_explanations", refund_out, base) == [
        "bank_transaction_explanation.paid_credit_note: not in the collection's examples nor FreeAgent's pages"]


def test_invoices_are_drafts_until_marked_as_sent_and_payments_explain_bank_transactions(freeagent):
    sandbox, connector, _ = freeagent
    v1 = invoice_event(7100, payments=[payment(1, "100.00", method="card")])
    doc = deliver(connector, MemoryEntities(), v1)
    invoice = sandbox.company.tables["invoices"][doc.external_id]
    assert invoice["status"] == "Open" and invoice["due_value"] == v1.computed.total - Decimal("100.00")
    (explanation,) = sandbox.records("bank_transaction_explanations")
    assert (explanation["paid_invoice"], explanation["bank_account"], explanation["gross_value"]) == (
        doc.external_id, "2", Decimal("100.00"))  # card takings, as the mapping says
    (transaction,) = sandbox.records("bank_transactions")  # the explanation made its manual bank transaction
    assert transaction["amount"] == Decimal("100.00") and transaction["is_manual"]
    writes = [f"{m} {re.sub(r'/[0-9]+', '/{id}', p)}" for m, p, _ in sandbox.requests]
    assert writes.index("PUT /invoices/{id}/transitions/mark_as_sent") < writes.index("POST /bank_transaction_explanations")


def test_a_payment_on_a_draft_is_refused_by_the_sandbox(freeagent):
    sandbox, connector, _ = freeagent
    doc = deliver(connector, MemoryEntities(), invoice_event(7110))
    sandbox.company.tables["invoices"][doc.external_id]["status"] = "Draft"
    body = mapping.explanation_payload(payment(1, "5.00"), doc.external_id, connector.mapping, connector.client.uri)
    with pytest.raises(PermanentError, match="Paid invoice must be sent"):
        connector.client.write("POST", "/bank_transaction_explanations", body)


def test_token_refreshes_rotate_and_the_sixth_in_a_minute_is_refused(freeagent):
    sandbox, connector, _ = freeagent
    store = connector.runtime.credentials("fa")
    deliver(connector, MemoryEntities(), invoice_event(7200))
    first = store.get()["refresh_token"]
    sandbox.issuer.expire_all()
    deliver(connector, MemoryEntities(), invoice_event(7201))
    assert store.get()["refresh_token"] != first
    cred = store.get()
    answers = [httpx.post(connector.settings.token_url, auth=(cred["client_id"], cred["client_secret"]),
                          data={"grant_type": "refresh_token", "refresh_token": "rt-unknown"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]  # 2 refreshes + 3 refused grants = 5
    assert answers[-1].json() == {"errors": {"error": {"message": "You must not exceed 5 token refreshes per 60 seconds"}}}
    assert sandbox.rate_limit_breaches() == 1


def test_the_minute_limit_answers_429_with_retry_after():
    sandbox = Sandbox(minute_limit=3)
    with connectors_on(sandbox, "fa", requests_per_minute=1000, requests_per_hour=100_000) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            for _ in range(5):
                connector.books_closed_through()
        assert raised.value.retry_after and raised.value.retry_after >= 1
        assert "You must not exceed 3 requests per 60 seconds" in raised.value.reason
        assert sandbox.rate_limit_breaches() >= 1


def test_the_connector_paces_to_the_hour_limit(monkeypatch):
    """3,600/hour is 60/minute sustained: the limiter never runs at the documented 120/minute for an hour."""
    from connectors.testing import MemoryRuntime

    asked: list[float | None] = []
    original = MemoryRuntime.limiter

    def spy(self, target, **limits):
        asked.append(limits.get("per_minute"))
        return original(self, target, **limits)

    monkeypatch.setattr(MemoryRuntime, "limiter", spy)
    with connectors_on(Sandbox(), "fa") as build:
        build()
    with connectors_on(Sandbox(), "fa", requests_per_hour=36_000) as build:
        build()
    assert asked == [60, 120]


def test_lists_are_read_page_by_page(freeagent):
    sandbox, connector, _ = freeagent
    connector.client.settings = connector.settings.model_copy(update={"per_page": 2})
    entities = MemoryEntities()
    for n in range(5):
        deliver(connector, entities, invoice_event(7300 + n, customer=invoice_event().customer.model_copy(
            update={"id": 900 + n, "name": f"Paged {n}"})))
    assert connector.find_customer(invoice_event().customer.model_copy(update={"id": 904, "name": "Paged 4"}))
    assert len(connector.find(DocKind.INVOICE, "INV-007304")) == 1


@pytest.mark.parametrize(("status", "body", "kind"), [
    (401, {"errors": {"error": {"message": "Access token not recognised"}}}, AuthError),
    (429, {"errors": {"error": {"message": "You must not exceed 120 requests per 60 seconds"}}}, RateLimitedError),
    (422, {"errors": {"error": {"message": "dated_on is in a locked period"}}}, ClosedPeriodError),
    (422, {"errors": [{"message": "Contact can't be blank"}, {"message": "Dated on can't be blank"}]}, PermanentError),
    (500, {"errors": {"error": {"message": "Internal server error"}}}, RetryableError),
])
def test_freeagents_error_body_is_classified(status, body, kind):
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind and error.status == status
    errors = body["errors"]
    first = errors["error"]["message"] if isinstance(errors, dict) else errors[0]["message"]
    assert first in error.reason
    if kind is RateLimitedError:
        assert error.retry_after == 7
    assert classify(httpx.Response(502, text="<html>bad gateway</html>")) is None  # the default rules apply


def test_two_tax_components_go_to_freeagents_first_and_second_sales_tax():
    rules = MappingConfig(income_accounts={"part": "001"}, tax_codes={"GST": "5", "PST": "second:7"})
    event = invoice_event(7400, lines=[line(1, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    (item,) = mapping.invoice_payload(event, "4", rules, lambda r, k: f"/v2/{r}/{k}")["invoice"]["invoice_items"]
    assert (item["sales_tax_rate"], item["second_sales_tax_rate"], Decimal(item["quantity"]), Decimal(item["price"])
            ) == ("5", "7", 2, Decimal("11.20"))
    assert item["category"] == "/v2/categories/001" and item["item_type"] == "Products"
    with pytest.raises(PermanentError, match="names no FreeAgent sales tax rate for 'PST'"):
        mapping.invoice_payload(event, "4", MappingConfig(income_accounts={"part": "001"}, tax_codes={"GST": "5"}),
                                lambda r, k: k)


def test_an_edit_replaces_the_items_and_the_shops_tax_is_what_freeagent_computes(freeagent):
    sandbox, connector, _ = freeagent
    v1 = invoice_event(7500)
    doc = deliver(connector, MemoryEntities(), v1)
    v2 = next_version(v1, lines=list(v1.lines)[:2] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    doc = deliver(connector, MemoryEntities(), v2, doc)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert (booked.line_count, booked.total, booked.tax_total) == (3, v2.computed.total, v2.computed.tax_total)
    assert doc.engine.tax_difference is None


def test_a_bookkeepers_contact_is_used_but_another_shop_customers_never(freeagent):
    sandbox, connector, _ = freeagent
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    event = invoice_event(7600)
    sandbox.company.tables["contacts"]["900"] = {"id": "900", "first_name": "Dana", "last_name": "Whitfield",
                                                 "email": "dana@example.com"}
    assert deliver(connector, MemoryEntities(), event).customer_id == "900"
    sandbox.company.tables["contacts"]["900"]["organisation_name"] = "Dana Whitfield (#78)"  # shop customer 78's
    assert deliver(connector, MemoryEntities(), invoice_event(7601)).customer_id != "900"


def test_a_payment_and_a_refund_in_locked_accounts_post_on_the_first_open_day(freeagent):
    sandbox, connector, _ = freeagent
    entities = MemoryEntities()
    v1 = invoice_event(7700)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(date(2026, 11, 30))
    doc = deliver(connector, entities, next_version(v1, payments=[payment(1, "100.00")],
                                                    refunds=[refund(3, 2, "289.95", "14.50")]), doc)
    (explanation,) = sandbox.records("bank_transaction_explanations")
    (note,) = sandbox.records("credit_notes")
    (reconciliation,) = sandbox.records("credit_note_reconciliations")
    assert explanation["dated_on"] == note["dated_on"] == "2026-12-01" and reconciliation["dated_on"] >= "2026-12-01"
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("100.00") - Decimal("304.45")


def test_the_sandbox_validates_as_freeagent_does(freeagent):
    sandbox, connector, _ = freeagent
    client = connector.client

    def refused(path: str, body: dict) -> Any:
        with pytest.raises(PermanentError) as raised:
            client.write("POST", path, body)
        assert raised.value.status in (400, 422)
        return raised.value.detail

    assert refused("/invoices", {"invoice": {"dated_on": "2026-11-20"}}) == [
        "Contact can't be blank", "Payment terms in days can't be blank"]
    contact = client.write("POST", "/contacts", {"contact": {"organisation_name": "Val"}})
    item = {"item_type": "Hours", "quantity": "1", "price": "10.00", "description": "Labour"}
    body = {"invoice": {"contact": contact["url"], "dated_on": "2026-11-20", "payment_terms_in_days": 0,
                        "invoice_items": [item | {"sales_tax_rate": "20"}]}}
    assert refused("/invoices", body) == ["Sales tax rate is not valid for this company"]
    body["invoice"]["invoice_items"] = [item | {"item_type": "Widgets"}]
    assert refused("/invoices", body) == ["Item type Widgets is not included in the list"]
    body["invoice"].update(invoice_items=[item], dated_on="20/11/2026")
    assert refused("/invoices", body) == ["Dated on is not a valid date"]
    assert refused("/invoices", {"sales_invoice": {}}) == ["Missing parameter: invoice"]
    assert refused("/contacts", {"contact": {"first_name": "Val"}}) == [
        "Organisation name or first and last name must be present"]
    body["invoice"].update(dated_on="2026-11-20", reference="X-1")
    client.write("POST", "/invoices", body)
    with pytest.raises(NumberInUseError) as in_use:  # retryable: another invoice's void may free it (issue #20)
        client.write("POST", "/invoices", body)
    assert in_use.value.status in (400, 422) and in_use.value.detail == ["Reference is already in use by another invoice"]
    sandbox.set_lock_date(date(2026, 11, 30))
    body["invoice"]["reference"] = "X-2"
    assert refused("/invoices", body) == ["dated_on is in a locked period"]


def test_a_refund_paid_back_is_money_out_explained_as_the_credit_notes_refund(freeagent):
    """Money out on the refunded payment's bank account, ``paid_invoice`` naming the credit note: the credit note is
    left with nothing due; the sandbox refuses money in, or more than is left, on a credit note; deleting the
    explanation gives the credit back. A goodwill refund's tax is at the main taxed line's rate (5%)."""
    sandbox, connector, _ = freeagent
    v1, goodwill, doc = paid_then_goodwill(connector, 7800)
    (note,) = sandbox.records("credit_notes")
    assert (note["total_value"], note["sales_tax_value"], note["due_value"]) == (
        Decimal("-42.00"), Decimal("-2.00"), Decimal("0.00"))
    (out,) = [e for e in sandbox.records("bank_transaction_explanations") if e["gross_value"] < 0]
    assert (out["paid_invoice"], out["bank_account"], out["gross_value"], out["is_money_in"]) == (
        note["id"], "2", Decimal("-42.00"), False)
    assert connector.find(DocKind.REFUND_PAYMENT, "LWP9")[0].external_id == out["id"]
    assert connector.read_invoice(doc.external_id).balance == 0  # the invoice keeps its payment
    body = mapping.refund_explanation_payload(v1, goodwill, note["id"], Decimal("1.00"), "LWP9", connector.mapping,
                                              connector.client.uri, date(2026, 11, 20))
    with pytest.raises(PermanentError, match="no more than is left"):  # nothing is left on it
        connector.client.write("POST", "/bank_transaction_explanations", body)
    connector.client.write("DELETE", f"/bank_transaction_explanations/{out['id']}")
    assert sandbox.records("credit_notes")[0]["due_value"] == Decimal("-42.00")
    body["bank_transaction_explanation"]["gross_value"] = "1.00"  # money in is no refund
    with pytest.raises(PermanentError, match="money out"):
        connector.client.write("POST", "/bank_transaction_explanations", body)
