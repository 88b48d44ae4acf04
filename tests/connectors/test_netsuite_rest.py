"""NetSuite over SuiteTalk REST web services: every request the connector sends checked against the official
field table, the check shown to refuse bad bodies, and the platform's rules (TBA signatures, concurrency
governance, nsError bodies, SuiteQL, upsert by external id, the void by a transformed credit memo).

NetSuite publishes no static OpenAPI (each account serves its own), so the validator is built at test time
from ``$LEDGERWIRE_SPECS_DIR/netsuite/rest/SOURCE.md``: its field table gives each record's fields, which are
references (``{id}``), sublists (``{items: [...]}``, with their line fields) and which are required (this
sandbox account is OneWorld with auto-numbering off, so ``subsidiary`` and ``entityId`` are). The table
abbreviates a record's header (the credit memo's row lists only entity, item and apply): a field the table
does not list must be an element (or attribute, ``externalId``) of the same record in the official SuiteTalk
2023_2 XSD (``netsuite/suitetalk-soap/xsd``), with the JSON type of its XSD type. Anything else is refused.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import (AuthError, ClosedPeriodError, ExternalRef, PermanentError, RateLimitedError,
                             RetryableError, UncertainOutcomeError)
from connectors.engine_state import DocKind
from connectors.netsuite_common import mapping as records
from connectors.netsuite_common.settings import NetSuiteSettings, realm
from connectors.netsuite_rest import Sandbox
from connectors.netsuite_rest.client import classify
from connectors.netsuite_rest.mapping import render
from connectors.testing import dead_lettered_before_any_write, refund
from connectors.testing import MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment, \
    tax_inclusive_event
from daemon.canonical import Customer, Refund
from daemon.config import MappingConfig

REST = "/services/rest"
XS = "{http://www.w3.org/2001/XMLSchema}"
XSD_RECORDS = {"customer": ("lists.relationships.xsd", "Customer"), "invoice": ("transactions.sales.xsd", "Invoice"),
               "creditMemo": ("transactions.customers.xsd", "CreditMemo"),
               "customerPayment": ("transactions.customers.xsd", "CustomerPayment"),
               "customerRefund": ("transactions.customers.xsd", "CustomerRefund")}
XSD_JSON = {"RecordRef": "ref", "dateTime": "date", "double": "number", "boolean": "boolean", "string": "string",
            "long": "number"}
# The operations the connector may use, each as SOURCE.md's "Operations" section names it.
OPERATIONS = [("GET", r"/record/v1/(customer|invoice|creditMemo|customerPayment)/(\d+|eid:[^/]+)", "GET, PATCH"),
              ("PUT", r"/record/v1/(customer|invoice|creditMemo|customerPayment)/eid:[^/]+", "PUT (insert-or-update"),
              ("PATCH", r"/record/v1/(customer|invoice|creditMemo)/\d+", "PATCH (update)"),
              ("DELETE", r"/record/v1/customerPayment/\d+", "DELETE"),
              ("POST", r"/record/v1/invoice/\d+/!transform/creditMemo", "/!transform/creditMemo"),
              # Not in SOURCE.md: Oracle's help "Customer Refund" (REST, article_0830082954): record id
              # ``customerRefund``, an ``apply`` sublist keyed by ``doc``; the record API's usual GET/PUT/DELETE.
              ("GET", r"/record/v1/customerRefund/(\d+|eid:[^/]+)", None),
              ("PUT", r"/record/v1/customerRefund/eid:[^/]+", None),
              ("DELETE", r"/record/v1/customerRefund/\d+", None),
              # Not in SOURCE.md: Oracle's help "Using SuiteQL with SuiteTalk REST Web Services"
              # (section_158394344595) — POST /services/rest/query/v1/suiteql, Prefer: transient, body {"q": ...}.
              ("POST", r"/query/v1/suiteql", None)]


class FieldTable:
    """The REST field table of SOURCE.md (and the SuiteTalk XSD for header fields it abbreviates)."""

    def __init__(self, source: str, xsd_dir: Path) -> None:
        self.source = source
        self.fields: dict[str, dict[str, Any]] = {r: {} for r in XSD_RECORDS}
        self.required: dict[str, set[str]] = {r: set() for r in XSD_RECORDS}
        for row in re.findall(r"^\|\s*(customer|invoice|customerPayment|creditMemo)\s*\|\s*(.+?)\s*\|\s*(.*?)\s*\|"
                              r"\s*(.*?)\s*\|", source, re.MULTILINE):
            record, cell, kind, required = row
            parsed = _parse_fields(cell)
            for n, (name, shape) in enumerate(parsed.items()):  # the type column types the row's first field
                self.fields[record][name] = "string" if n == 0 and shape == "scalar" and kind.strip() == "string" else shape
            if re.search(r"\byes\b|mandatory|at least one line", required):  # said of the row's first field
                self.required[record].add(next(iter(parsed)))
            self.required[record] |= set(re.findall(r"(\w+)(?= \+| required)", required))
        self.xsd = {record: _xsd_fields(xsd_dir / f, name) for record, (f, name) in XSD_RECORDS.items()}

    def problems(self, record: str, body: Any, create: bool) -> list[str]:
        if not isinstance(body, dict):
            return ["the body is not an object"]
        out = [f"{record}: required field {name} missing" for name in sorted(self.required[record])
               if create and name not in body]
        for name, value in body.items():
            shape = self.fields[record].get(name) or self.xsd[record].get(name)
            if shape == "scalar":  # the table gives no type: the XSD's element type, where it has one
                shape = self.xsd[record].get(name, "scalar")
            if shape is None:
                out.append(f"{record}: {name} is in neither the field table nor the record's XSD")
            else:
                out += _shape_problems(f"{record}.{name}", shape, value)
        return out


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "{[(" and 1 or -(char in "}])" and 1)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in parts + [current] if p.strip()]


def _parse_fields(cell: str) -> dict[str, Any]:
    """``entity {id}`` → a reference, ``item {items: [ {...} ]}`` → a sublist of lines, ``a/b`` and ``x or y``
    → both names, ``(or isPerson=true + firstName/lastName)`` → those names too."""
    out: dict[str, Any] = {}
    for token in _split(cell.replace("…", "")):
        if token.startswith("("):
            continue
        sublist = re.match(r"(\w+) \{items: ?\[ ?\{(.*)\} ?\]\}", token)
        if sublist:
            out[sublist.group(1)] = {"lines": _parse_fields(sublist.group(2))} if sublist.group(2).strip() else {
                "lines": None}
            continue
        if re.match(r"(\w+) \{items: ?\[", token):  # "(same line shape as invoice)": filled in below
            out[token.split()[0]] = {"lines": None}
            continue
        head = re.sub(r"\(.*?\)", "", token).replace(": true", "")
        for alternative in head.split(" or "):  # "account {id} or undepFunds": each its own shape
            for name in alternative.replace("{id}", "").split("/"):  # "a/b {id}": both references
                if re.fullmatch(r"\w+", name.strip()):
                    out[name.strip()] = "ref" if "{id}" in alternative else "scalar"
        note = re.search(r"\((or [^)]*)\)", token)
        for name in re.findall(r"[A-Za-z]+", note.group(1)) if note else ():
            if name not in ("or", "true"):
                out.setdefault(name, "scalar")
    return out


def _xsd_fields(path: Path, type_name: str) -> dict[str, str]:
    root = ET.parse(path).getroot()
    record = next(c for c in root.iter(f"{XS}complexType") if c.get("name") == type_name)
    out = {e.get("name"): XSD_JSON.get(e.get("type", "").split(":")[-1], "object") for e in record.iter(f"{XS}element")}
    return out | {a.get("name"): "string" for a in record.iter(f"{XS}attribute")}


def _shape_problems(where: str, shape: Any, value: Any) -> list[str]:
    if shape == "ref":
        ok = isinstance(value, dict) and set(value) <= {"id", "externalId", "refName"} and any(
            isinstance(value.get(k), str) and value[k] for k in ("id", "externalId"))
        return [] if ok else [f"{where}: a reference must be {{\"id\": \"...\"}}"]
    if isinstance(shape, dict):
        if not isinstance(value, dict) or set(value) != {"items"} or not isinstance(value["items"], list):
            return [f"{where}: a sublist must be {{\"items\": [...]}}"]
        out = []
        for n, item in enumerate(value["items"]):
            for name, field_value in (item.items() if isinstance(item, dict) else [("", None)]):
                line_shape = (shape["lines"] or {}).get(name)
                out += ([f"{where}.items[{n}]: {name or 'line'} is not a line field of the table"] if line_shape is None
                        else _shape_problems(f"{where}.items[{n}].{name}", line_shape, field_value))
        return out
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, Decimal)) and not isinstance(v, bool),
              "date": lambda v: isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None,
              "scalar": lambda v: not isinstance(v, (dict, list))}
    return [] if checks.get(shape, lambda v: False)(value) else [f"{where}: not a {shape}"]


@pytest.fixture(scope="module")
def table(specs) -> FieldTable:
    built = FieldTable((specs / "netsuite" / "rest" / "SOURCE.md").read_text(), specs / "netsuite" / "suitetalk-soap" / "xsd")
    # The credit memo's lines have "the same line shape as invoice" (the table says so).
    built.fields["creditMemo"]["item"] = built.fields["invoice"]["item"]
    # The customer refund has no row: its header is the XSD's CustomerRefund; its ``apply`` sublist (Oracle's help
    # "Customer Refund": lines keyed by ``doc``) has the payment's apply line shape; it names a customer and what
    # it refunds (the bank ``account`` is mandatory on NetSuite's form).
    built.fields["customerRefund"]["apply"] = built.fields["customerPayment"]["apply"]
    built.required["customerRefund"] = {"customer", "account", "apply"}
    # The customer's ``currencyList`` sublist (no row in the table): the XSD's CustomerCurrencyList, whose lines
    # (CustomerCurrency) name a ``currency`` RecordRef; REST writes a sublist as ``{"items": [...]}``.
    built.fields["customer"]["currencyList"] = {"lines": {"currency": "ref"}}
    return built


@pytest.fixture
def netsuite():
    """(sandbox, connector, every request the connector sent)."""
    sandbox = Sandbox()
    with connectors_on(sandbox, "ns") as build:
        connector = build()
        sent: list[httpx.Request] = []
        connector.http.client.event_hooks["request"].append(sent.append)
        yield sandbox, connector, sent


def _problems(table: FieldTable, request: httpx.Request) -> list[str]:
    path = request.url.path.removeprefix(REST)
    operation = next((o for o in OPERATIONS if o[0] == request.method and re.fullmatch(o[1], path)), None)
    if operation is None:
        return [f"{request.method} {path}: not an operation SOURCE.md lists"]
    assert operation[2] is None or operation[2] in table.source, f"SOURCE.md no longer names {operation[2]!r}"
    body = jsonmoney.loads(request.content) if request.content else None
    if path.endswith("/suiteql"):
        return [] if request.headers.get("Prefer") == "transient" and set(body) == {"q"} else ["SuiteQL request shape"]
    if request.method not in ("PUT", "PATCH", "POST"):
        return [] if body is None else ["a body the operation does not take"]
    record = "creditMemo" if "!transform" in path else path.split("/")[3]
    return table.problems(record, body, create=request.method == "PUT")


def _every_kind_of_write(sandbox: Sandbox, connector) -> None:
    entities = MemoryEntities()
    paid_back = refund(2, 1, "10.00", "0.50").model_copy(update={"payment_id": 1})  # a customer refund
    v1 = invoice_event(1, payments=[payment(1, "100.00")], refunds=[refund(1, 2, "289.95", "14.50"), paid_back])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:3] + [line(6, "part", "Battery terminal", "2", "4.75")], payments=[],
                      refunds=[])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, status="void"), doc)
    other = invoice_event(2, customer=Customer(id=88, name="Fleet 88", email="f@example.com", payment_terms_days=30))
    doc = deliver(connector, entities, other)
    deliver(connector, entities, invoice_event(3, currency="CAD", payments=[payment(3, "20.00")]))  # currencyList
    sandbox.close_periods(date(2026, 11, 30))
    deliver(connector, entities, next_version(other, lines=list(other.lines) + [line(6, "part", "Fuse", "1", "3.00")]), doc)


def test_every_request_matches_the_field_table(netsuite, table):
    sandbox, connector, captured = netsuite
    _every_kind_of_write(sandbox, connector)
    methods = {r.method for r in captured}
    assert methods >= {"GET", "PUT", "PATCH", "DELETE", "POST"}
    assert {r.method for r in captured if "/customerRefund/" in r.url.path} >= {"PUT", "DELETE"}
    problems = [p for r in captured for p in _problems(table, r)]
    assert problems == [], problems


def test_the_field_table_check_rejects_bad_bodies(table):
    event = invoice_event(5)
    settings = NetSuiteSettings(account_id="1234567_SB1", subsidiary_id="1")
    mapping = MappingConfig(items={"part": "10", "labour": "11", "fee": "12"}, tax_codes={"GST": "5", "none": "-7"})
    good = render(records.invoice_record(event, "7", settings, mapping))
    assert table.problems("invoice", good, create=True) == []
    bad_bodies = [
        ({k: v for k, v in good.items() if k != "entity"}, "required field entity"),
        ({k: v for k, v in good.items() if k != "item"}, "required field item"),
        (good | {"entity": "7"}, "a reference"),
        (good | {"entityRef": {"id": "7"}}, "neither the field table"),
        (good | {"item": good["item"]["items"]}, "a sublist"),
        (good | {"item": {"items": [good["item"]["items"][0] | {"unitPrice": 1}]}}, "not a line field"),
        (good | {"tranDate": "20/11/2026"}, "not a date"),
        (good | {"externalId": 5}, "not a string"),
    ]
    for body, expected in bad_bodies:
        assert any(expected in p for p in table.problems("invoice", body, create=True)), expected
    customer = render(records.customer_record(event.customer, settings, mapping))
    assert table.problems("customer", customer, create=True) == []
    assert any("subsidiary" in p for p in table.problems("customer", customer | {"subsidiary": None}, create=True)
               if "reference" in p)
    without = {k: v for k, v in customer.items() if k != "companyName"}
    assert any("companyName" in p for p in table.problems("customer", without, create=True))
    pay = render(records.payment_record(event, payment(1, "5.00"), "9", "7", settings, mapping))
    assert table.problems("customerPayment", pay, create=True) == []
    assert table.problems("customerPayment", pay | {"apply": {"items": [{"doc": {"id": "9"}, "applied": True}]}},
                          create=True)
    assert any("required field payment" in p for p in table.problems(
        "customerPayment", {k: v for k, v in pay.items() if k != "payment"}, create=True))
    paid_back = refund(3, 1, "20.00", "1.00").model_copy(update={"payment_id": 1})
    event = event.model_copy(update={"payments": [payment(1, "50.00")], "refunds": [paid_back]})
    back = render(records.customer_refund_record(event, paid_back, "31", Decimal("21.00"), "LWP3", "7", settings,
                                                 mapping.model_copy(update={"payment_accounts": {"card": "2"}})))
    assert table.problems("customerRefund", back, create=True) == []
    for body, expected in [({k: v for k, v in back.items() if k != "account"}, "required field account"),
                           ({k: v for k, v in back.items() if k != "apply"}, "required field apply"),
                           (back | {"payment": Decimal("21.00")}, "neither the field table"),
                           (back | {"apply": {"items": [{"doc": "31", "amount": Decimal("21.00")}]}}, "a reference"),
                           (back | {"apply": {"items": [{"doc": {"id": "31"}, "refund": True}]}}, "not a line field")]:
        assert any(expected in p for p in table.problems("customerRefund", body, create=True)), expected
    for body, expected in [(good | {"currency": "3"}, "a reference"), (good | {"exchangeRate": "0.73"}, "not a number"),
                           (good | {"currencyCode": "CAD"}, "neither the field table")]:
        assert any(expected in p for p in table.problems("invoice", body, create=True)), expected
    takes = render(records.customer_currency("3"))
    assert takes == {"currencyList": {"items": [{"currency": {"id": "3"}}]}}
    assert table.problems("customer", takes, create=False) == []
    for body, expected in [({"currencyList": {"items": [{"currency": "3"}]}}, "a reference"),
                           ({"currencyList": [{"currency": {"id": "3"}}]}, "a sublist"),
                           ({"currencyList": {"items": [{"symbol": "CAD"}]}}, "not a line field")]:
        assert any(expected in p for p in table.problems("customer", body, create=False)), expected


def test_the_sandbox_validates_as_the_field_table_says(netsuite):
    sandbox, connector, _ = netsuite
    entities = MemoryEntities()
    doc = deliver(connector, entities, invoice_event(3))
    body = render(records.invoice_record(invoice_event(4), connector.client.get("invoice", doc.external_id)["entity"]["id"],
                                         connector.settings, connector.mapping))
    for bad, code in [({k: v for k, v in body.items() if k != "entity"}, "USER_ERROR"),
                      (body | {"entity": {"id": "999999"}}, "INVALID_KEY_OR_REF"),
                      (body | {"tranDate": "2026/11/20"}, "USER_ERROR"),
                      (body | {"unknownField": "x"}, "USER_ERROR"),
                      (body | {"item": {"items": [body["item"]["items"][0] | {"amount": "1.00"}]}}, "USER_ERROR"),
                      (body | {"item": {"items": [body["item"]["items"][0] | {"taxCode": {"id": "77"}}]}},
                       "INVALID_KEY_OR_REF")]:
        with pytest.raises(PermanentError) as refused:
            connector.client.write("PUT", "/invoice/eid:LWI-bad", bad)
        assert refused.value.platform_code == code and refused.value.status == 400
    # NetSuite's default X-NetSuite-PropertyNameValidation is Warning: an unknown field is ignored, not refused.
    response = connector.http.request("PUT", "/record/v1/invoice/eid:LWI-lenient", content=jsonmoney.dumps(
        body | {"externalId": "LWI-lenient", "unknownField": "x"}), headers={"Content-Type": "application/json"})
    assert response.status_code == 204 and "unknownField" not in connector.client.get("invoice", "eid:LWI-lenient")


def test_tba_signatures_realm_and_nonces(netsuite):
    sandbox, connector, captured = netsuite
    connector.books_closed_through()
    header = captured[-1].headers["Authorization"]
    assert f'realm="{realm("1234567_SB1")}"' in header and 'oauth_signature_method="HMAC-SHA256"' in header
    url = str(captured[-1].url)
    with httpx.Client() as plain:
        replayed = plain.post(url, headers={"Authorization": header, "Prefer": "transient"}, content=b'{"q": "x"}')
        forged = plain.post(url, headers={"Authorization": re.sub(r'oauth_signature="[^"]+"', 'oauth_signature="AAAA"',
                                                                      header), "Prefer": "transient"})
        wrong_realm = plain.post(url, headers={"Authorization": header.replace("1234567_SB1", "7654321")})
    for answer in (replayed, forged, wrong_realm):  # a nonce is used once; the signature and realm must match
        assert answer.status_code == 401 and answer.json()["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"
    assert isinstance(classify(replayed), AuthError)


def test_over_the_concurrency_limit_netsuite_answers_429(netsuite):
    sandbox, connector, _ = netsuite
    sandbox.concurrency_limit = 0  # every slot of the account taken by other integrations
    with pytest.raises(RateLimitedError) as refused:
        connector.books_closed_through()
    assert refused.value.platform_code == "CONCURRENCY_LIMIT_EXCEEDED" and refused.value.retry_after == 1
    assert sandbox.rate_limit_breaches() >= 1
    sandbox.concurrency_limit = 5
    assert connector.books_closed_through() is None


@pytest.mark.parametrize("status, code, detail, kind", [
    (400, "USER_ERROR", "Please enter value(s) for: entity.", PermanentError),
    (400, "INVALID_KEY_OR_REF", "Invalid item reference key 77.", PermanentError),
    (401, "INVALID_LOGIN", "Invalid login attempt.", AuthError),
    (429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded.", RateLimitedError),
    (400, "USER_ERROR", "The accounting period is closed for 2026-11-20 (Nov 2026).", ClosedPeriodError),
    (400, "USER_ERROR", "The accounting period is locked for A/R for 2026-11-20 (Nov 2026).", ClosedPeriodError),
    (400, "IDEMPOTENCY_ERROR", "A request with this idempotency key was already processed.", UncertainOutcomeError),
    (500, "UNEXPECTED_ERROR", "An unexpected error occurred.", RetryableError),
])
def test_netsuites_error_body_is_classified(status, code, detail, kind):
    body = {"type": "https://www.rfc-editor.org/rfc/rfc9110.html", "title": "x", "status": status,
            "o:errorDetails": [{"detail": detail, "o:errorCode": code}]}
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "1"}))
    assert type(error) is kind and error.platform_code == code


def test_suiteql_needs_prefer_transient_and_is_read_page_by_page(netsuite):
    sandbox, connector, captured = netsuite
    connector.client.page_size = 2
    assert len(connector.client.query("SELECT id FROM accountingperiod WHERE isyear = 'F'")) == 36
    assert sum(1 for r in captured if r.url.path.endswith("/suiteql")) == 18
    with pytest.raises(PermanentError) as refused:
        connector.http.request("POST", "/query/v1/suiteql", content=b'{"q": "SELECT id FROM customer"}',
                               headers={"Content-Type": "application/json"})
    assert refused.value.platform_code == "INVALID_HEADER"


def test_a_repeated_create_is_an_upsert_by_external_id(netsuite):
    sandbox, connector, _ = netsuite
    entities = MemoryEntities()
    event = invoice_event(11)
    doc = deliver(connector, entities, event)
    body = render(records.invoice_record(event, connector.client.get("invoice", doc.external_id)["entity"]["id"],
                                         connector.settings, connector.mapping))
    again = connector.client.write("PUT", f"/invoice/eid:{records.invoice_external_id(event)}", body)
    assert again == doc.external_id and len([b for b in sandbox.booked_invoices() if b.number == event.number]) == 1


def test_a_void_is_a_credit_memo_transformed_from_the_invoice(netsuite):
    sandbox, connector, captured = netsuite
    entities = MemoryEntities()
    event = invoice_event(12)
    doc = deliver(connector, entities, event)
    doc = deliver(connector, entities, next_version(event, status="void"), doc)
    (memo,) = sandbox.records("creditMemo")
    assert memo["externalId"] == "LWI12-V" and memo["createdFrom"] == {"id": doc.external_id}
    assert memo["total"] == event.computed.total and memo["unapplied"] == 0
    remote = connector.read_invoice(doc.external_id)
    assert remote.status == "void" and remote.balance == 0 and doc.status == "voided"
    (transform,) = [r for r in captured if "!transform" in r.url.path]
    assert uuid.UUID(transform.headers["X-NetSuite-Idempotency-Key"])
    assert connector.void_invoice(ExternalRef(external_id=doc.external_id), "again").status == "void"
    assert len(sandbox.records("creditMemo")) == 1  # a second void makes nothing
    with pytest.raises(UncertainOutcomeError) as refused:  # the same key again: NetSuite did that request already
        connector.http.request("POST", transform.url.path.removeprefix(REST), content=transform.content, headers={
            "Content-Type": "application/json", "X-NetSuite-Idempotency-Key": transform.headers["X-NetSuite-Idempotency-Key"]})
    assert refused.value.platform_code == "IDEMPOTENCY_ERROR" and len(sandbox.records("creditMemo")) == 1


def test_a_paid_back_refund_is_a_customer_refund_of_its_credit_memo(netsuite):
    """The sandbox's customerRefund: applied to a credit memo of its customer, never more than the memo has left,
    the memo's unapplied amount going to 0; the memo cannot be deleted while refunded; DELETE reopens it."""
    sandbox, connector, _ = netsuite
    entities = MemoryEntities()
    paid_back = refund(8, 1, "20.00", "1.00").model_copy(update={"payment_id": 1})
    v1 = invoice_event(14, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[paid_back])
    doc = deliver(connector, entities, v2, doc)
    (memo,) = sandbox.records("creditMemo")
    (back,) = sandbox.records("customerRefund")
    assert (memo["total"], memo["unapplied"], back["total"], back["account"]) == (
        Decimal("21.00"), Decimal("0.00"), Decimal("21.00"), {"id": "2"})  # card: the card clearing account
    assert connector.read_invoice(doc.external_id).balance == 0  # never set against the paid invoice
    body = {"customer": back["customer"], "account": {"id": "1"}, "tranDate": "2026-11-20",
            "apply": {"items": [{"doc": {"id": memo["id"]}, "apply": True, "amount": Decimal("0.01")}]}}
    other = connector.client.write("PUT", "/customer/eid:LWC999", render(records.customer_record(
        Customer(id=999, name="Someone else"), connector.settings, connector.mapping)))
    for bad, code in [(body, "USER_ERROR"),  # nothing left to refund on the memo
                      (body | {"customer": {"id": other}}, "USER_ERROR"),  # another customer's credit
                      ({k: v for k, v in body.items() if k != "account"}, "USER_ERROR"),
                      (body | {"account": {"id": "99"}}, "INVALID_KEY_OR_REF"),
                      (body | {"apply": {"items": [{"doc": {"id": doc.external_id}, "amount": Decimal("1")}]}},
                       "INVALID_KEY_OR_REF"),  # an invoice is not a credit to refund
                      (body | {"payment": Decimal("21.00")}, "USER_ERROR")]:  # not a field of the record
        with pytest.raises(PermanentError) as refused:
            connector.client.write("PUT", "/customerRefund/eid:LWP-bad", bad)
        assert refused.value.platform_code == code, bad
    with pytest.raises(PermanentError, match="dependent records"):
        connector.client.write("DELETE", f"/creditMemo/{memo['id']}")
    assert connector.find(DocKind.REFUND_PAYMENT, "LWP8")[0].external_id == back["id"]
    deliver(connector, entities, next_version(v2, refunds=[]), doc)
    assert sandbox.records("customerRefund") == [] and connector.find(DocKind.REFUND_PAYMENT, "LWP8") == []


def test_closed_and_ar_locked_periods(netsuite):
    sandbox, connector, _ = netsuite
    sandbox.close_periods(date(2026, 10, 31))
    sandbox.close_periods(date(2026, 11, 30), ar_only=True)
    assert connector.books_closed_through() == date(2026, 11, 30)
    body = render(records.customer_record(Customer(id=5, name="Pat"), connector.settings, connector.mapping))
    customer_id = connector.client.write("PUT", "/customer/eid:LWC5", body)
    invoice = render(records.invoice_record(invoice_event(13), customer_id, connector.settings, connector.mapping))
    with pytest.raises(ClosedPeriodError):
        connector.client.write("PUT", "/invoice/eid:LWI13", invoice)


def test_mapping_rules():
    settings = NetSuiteSettings(account_id="1234567_SB1", subsidiary_id="1", currency_ids={"USD": "1"},
                                adjustment_item_id="16")
    mapping = MappingConfig(items={"part": "10", "labour": "11", "fee": "12"},
                            tax_codes={"GST": "5", "GST+PST": "7", "none": "-7"}, payment_accounts={"card": "2"}, location_tracking={"MAIN": "location:1,class:3"})
    inclusive = tax_inclusive_event(20)
    record = records.invoice_record(inclusive, "7", settings, mapping)
    for sent, shop in zip(record.item, inclusive.lines):  # tax-inclusive: net amounts, no rate
        assert sent.rate is None and sent.amount == shop.amount - sum(t.amount for t in shop.taxes)
    event = invoice_event(21)
    rendered = render(records.invoice_record(event, "7", settings, mapping))
    assert rendered["location"] == {"id": "1"} and rendered["class"] == {"id": "3"} and rendered["currency"] == {"id": "1"}
    cash = records.payment_record(event, payment(1, "5.00", method="cash"), "9", "7", settings, mapping)
    card = records.payment_record(event, payment(2, "5.00", method="card"), "9", "7", settings, mapping)
    assert (cash.undepFunds, cash.account) == (True, None) and (card.undepFunds, card.account) == (False, records.Ref(id="2"))
    # A refund whose tax is not its net × the rate: a taxed part and an untaxed rest, so NetSuite's tax is the shop's.
    memo = records.credit_memo_record(event, refund(1, 2, "100.00", "3.00"), "7", settings, mapping)
    assert [(ln.amount, ln.taxCode.id) for ln in memo.item] == [(Decimal("60.00"), "5"), (Decimal("40.00"), "-7")]
    with pytest.raises(PermanentError):
        records.segments(event, MappingConfig(location_tracking={"MAIN": "region:4"}))


# -- currencies (issue #20) --

def _writes(sandbox: Sandbox, method: str, record: str) -> list[Any]:
    return [body for m, path, body in sandbox.requests if m == method and path.startswith(f"/{record}/")]


def test_an_invoice_in_another_currency_goes_in_it_on_its_customer_which_is_made_to_take_it(netsuite, table):
    """The currency by internal id (the account's currency record whose ISO code it is), no exchangeRate (NetSuite
    applies its own); the customer keeps its primary currency and gets CAD on its currencyList; the payment and
    the credit memo of that invoice in CAD too."""
    sandbox, connector, captured = netsuite
    entities = MemoryEntities()
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"  # the subsidiary's
    deliver(connector, entities, invoice_event(30))
    assert _writes(sandbox, "PUT", "invoice")[-1]["currency"] == {"id": "1"} and not _writes(sandbox, "PATCH", "customer")
    event = invoice_event(31, currency="CAD", payments=[payment(1, "50.00")], refunds=[refund(1, 2, "10.00", "0.50")])
    deliver(connector, entities, event)
    customer_id = sandbox.records("customer")[0]["id"]
    assert [(path, body) for method, path, body in sandbox.requests if method == "PATCH" and "/customer/" in path] == [
        (f"/customer/{customer_id}", {"currencyList": {"items": [{"currency": {"id": "3"}}]}})]
    for record in ("invoice", "customerPayment", "creditMemo"):
        body = _writes(sandbox, "PUT", record)[-1]
        assert body["currency"] == {"id": "3"} and "exchangeRate" not in body, record
    invoice = next(i for i in sandbox.records("invoice") if i["tranId"] == event.number)
    assert invoice["exchangeRate"] == Decimal("0.73")  # the account's rate, filled in by NetSuite
    assert sandbox.records("customer")[0]["currency"] == {"id": "1"}  # its primary currency unchanged
    assert [b.currency for b in sandbox.booked_invoices() if b.number == event.number] == ["CAD"]
    assert [p for r in captured for p in _problems(table, r)] == []
    deliver(connector, entities, invoice_event(32, currency="CAD"))  # the customer takes CAD now: no second PATCH
    assert len(_writes(sandbox, "PATCH", "customer")) == 1


def test_an_invoice_in_a_currency_netsuite_does_not_have_is_dead_lettered_before_any_write(netsuite):
    sandbox, connector, _ = netsuite
    dead_lettered_before_any_write(connector, MemoryEntities(), lambda: sandbox.requests, invoice_event(33),
                                   invoice_event(34, currency="EUR"), "EUR.*not set up in NetSuite")


def test_the_sandbox_refuses_a_currency_the_customer_does_not_take_and_bad_currency_fields(netsuite):
    """NetSuite's rules the connector relies on: a transaction in a currency neither the customer's primary one nor
    on its currencyList is refused; currency references must exist; field names and types are checked."""
    sandbox, connector, _ = netsuite
    doc = deliver(connector, MemoryEntities(), invoice_event(35))
    customer_id = connector.client.get("invoice", doc.external_id)["entity"]["id"]
    cad = render(records.invoice_record(invoice_event(36, currency="CAD"), customer_id,
                                        connector.currencies.settings_for("CAD"), connector.mapping))
    with pytest.raises(PermanentError, match="currency reference key 3") as refused:
        connector.client.write("PUT", "/invoice/eid:LWI36", cad)
    assert refused.value.platform_code == "INVALID_KEY_OR_REF"
    for bad, code in [({"currencyList": {"items": [{"currency": {"id": "99"}}]}}, "INVALID_KEY_OR_REF"),
                      ({"currencyList": {"items": [{"currency": "3"}]}}, "USER_ERROR"),
                      ({"currencyList": {"items": [{"symbol": "CAD"}]}}, "USER_ERROR")]:
        with pytest.raises(PermanentError) as refused:
            connector.client.write("PATCH", f"/customer/{customer_id}", bad)
        assert refused.value.platform_code == code, bad
    for bad, code in [(cad | {"currency": {"id": "99"}}, "INVALID_KEY_OR_REF"), (cad | {"exchangeRate": "0.7"}, "USER_ERROR")]:
        with pytest.raises(PermanentError) as refused:
            connector.client.write("PUT", "/invoice/eid:LWI36", bad)
        assert refused.value.platform_code == code, bad
    assert sandbox.records("customer")[0].get("currencyList") is None


def test_an_account_without_multiple_currencies_gets_no_currency_field_and_refuses_another_currency(netsuite):
    """No currency records to read (Multiple Currencies off): the home currency goes without a currency field
    (NetSuite's default, as before); another currency than ``mapping.home_currency`` is dead-lettered, unwritten."""
    sandbox, connector, _ = netsuite
    sandbox.multiple_currencies = False
    connector.mapping = connector.mapping.model_copy(update={"home_currency": "USD"})
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(37))
    assert "currency" not in _writes(sandbox, "PUT", "invoice")[-1]
    before = len(sandbox.requests)
    with pytest.raises(PermanentError, match="CAD.*not set up in NetSuite"):
        deliver(connector, entities, invoice_event(38, currency="CAD"))
    assert len(sandbox.requests) == before
