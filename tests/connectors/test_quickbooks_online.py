"""QuickBooks Online connector against its sandbox, and every request body it sends validated against
Intuit's official schema (Finance.xsd via IntuitRestServiceDef.xsd)."""

from __future__ import annotations

import re

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from connectors.base import DocumentState, PermanentError, RateLimitedError, UncertainOutcomeError
from connectors.quickbooks_online import CONNECTOR, Sandbox
from connectors.testing import MemoryContext, MemoryEntities, MemoryRuntime, deliver, invoice_event, line, next_version, payment
from daemon.config import TargetConfig


@pytest.fixture
def qbo():
    sandbox = Sandbox()
    server = sandbox.serve()
    credentials = sandbox.seed_credentials()
    target = TargetConfig.model_validate(sandbox.target_config("qbo", server.url) | {"request_timeout_s": 2})
    runtime = MemoryRuntime({"qbo": credentials})
    connector = CONNECTOR(target, runtime)
    entities = MemoryEntities()
    yield sandbox, connector, entities, runtime
    connector.close()
    server.stop()


def test_create_edit_pay_reverse_void(qbo):
    sandbox, connector, entities, _ = qbo
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    (booked,) = sandbox.booked_invoices()
    assert (booked.number, booked.total, booked.tax_total, booked.line_count) == ("INV-001001", Decimal("677.58"),
                                                                                 Decimal("30.13"), 5)
    assert doc.delivered_version == 1 and doc.payload_hash == v1.content_hash() and doc.token == "0"

    # Edit after posting: a line added, a price changed.
    lines = list(v1.lines)
    lines[1] = line(2, "part", "Alternator, reman 160A", "1", "319.9500", part_number="ALT-160R")
    v2 = next_version(v1, lines=lines + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = deliver(connector, entities, v2, doc)
    (booked,) = sandbox.booked_invoices()
    # 120.00 + 319.95 + 45.00 + 180.00 + 12.50 + 9.50 = 686.95; GST 5 % per taxed line, rounded per line
    # (6.00 + 16.00 + 9.00 + 0.63 + 0.48 = 32.11); the core deposit is untaxed.
    assert booked.total == v2.computed.total == Decimal("719.06") and booked.tax_total == Decimal("32.11")
    assert booked.line_count == 6

    # Partial then full payment, each applied to this invoice; paying bumps the invoice's SyncToken.
    v3 = next_version(v2, payments=[payment(1, "300.00")])
    doc = deliver(connector, entities, v3, doc)
    v4 = next_version(v3, payments=[payment(1, "300.00"), payment(2, "419.06", method="cash")])
    doc = deliver(connector, entities, v4, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("719.06") and booked.payment_count == 2
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["Balance"] == Decimal("0.00") and int(invoice["SyncToken"]) > int(doc.token)

    # An edit now meets a stale SyncToken (the payments changed the invoice): re-read, retry once.
    v5 = next_version(v4, lines=list(v4.lines)[:-1], payments=[payment(1, "300.00"), payment(2, "397.56")])
    doc = deliver(connector, entities, v5, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.total == Decimal("709.08") and booked.payments_applied == Decimal("697.56")

    # Reversal: the payment disappears from the books and the balance returns.
    v6 = next_version(v5, payments=[payment(1, "300.00"), payment(2, "397.56", status="reversed")])
    doc = deliver(connector, entities, v6, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("300.00") and booked.payment_count == 1

    # Void: remaining payments are removed first, then the invoice is voided.
    v7 = next_version(v6, status="void", payments=[])
    doc = deliver(connector, entities, v7, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.voided and booked.payment_count == 0 and doc.status == "voided"
    assert len(sandbox.entities("Customer")) == 1


def test_concurrent_first_invoices_of_a_new_customer_create_it_once(qbo):
    sandbox, connector, entities, _ = qbo
    events = [invoice_event(2000 + n) for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        docs = list(pool.map(lambda e: deliver(connector, entities, e), events))
    assert len({d.customer_id for d in docs}) == 1
    assert len(sandbox.entities("Customer")) == 1
    assert len(sandbox.booked_invoices()) == 6
    assert len(sandbox.entities("Item")) == 4  # labour, parts, core charge, shop fees


def test_retry_after_uncertain_outcome_creates_no_duplicate(qbo):
    sandbox, connector, entities, _ = qbo
    event = invoice_event(payments=[payment(1, "100.00")])
    deliver(connector, entities, invoice_event(3000))  # customer and items exist already
    sandbox.faults.timeout = 1.0  # the next write is applied, then the answer never comes
    with pytest.raises(UncertainOutcomeError):
        deliver(connector, entities, event)
    sandbox.faults.timeout = 0.0
    doc = deliver(connector, entities, event, attempt=2)  # the worker's next attempt
    numbers = [b.number for b in sandbox.booked_invoices()]
    assert numbers.count(event.number) == 1
    assert doc.payments["1"].amount == Decimal("100.00")
    assert [b.payment_count for b in sandbox.booked_invoices() if b.number == event.number] == [1]


def test_expired_access_token_is_refreshed_and_rotation_persisted(qbo):
    sandbox, connector, entities, runtime = qbo
    deliver(connector, entities, invoice_event(4000))
    first_refresh = runtime.credentials("qbo").get()["refresh_token"]
    sandbox.issuer.expire_all()
    deliver(connector, entities, invoice_event(4001))
    assert runtime.credentials("qbo").get()["refresh_token"] != first_refresh
    assert sandbox.issuer.refresh_count == 2


def test_throttle_answers_are_rate_limit_errors(qbo):
    sandbox, connector, entities, _ = qbo
    sandbox.faults.error_429 = 1.0
    with pytest.raises(RateLimitedError):
        deliver(connector, entities, invoice_event(5000))


def test_validation_fault_is_permanent_with_the_platform_message(qbo):
    sandbox, connector, entities, _ = qbo
    connector.mapping = connector.mapping.model_copy(update={"income_accounts": {"labour": "999"}})
    with pytest.raises(PermanentError, match="Invalid Reference Id"):
        deliver(connector, entities, invoice_event(6000))


NS = "http://schema.intuit.com/finance/v3"


@pytest.fixture(scope="module")
def qbo_schema(specs):
    xmlschema = pytest.importorskip("xmlschema")
    path = specs / "quickbooks-online" / "xsd" / "IntuitRestServiceDef.xsd"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return xmlschema.XMLSchema(str(path))


def as_xsd_data(value, xsd_type):
    """A JSON body as xmlschema data in the XSD's element order: refs' "value" become element text,
    Decimals strings; keys the XSD does not declare are kept (at the end) so they fail validation."""
    if isinstance(value, list):
        return [as_xsd_data(v, xsd_type) for v in value]
    if not isinstance(value, dict):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if "value" in value and set(value) <= {"value", "name", "type"}:  # a ReferenceType (attributes name, type)
        return {"$": str(value["value"]), **{f"@{a}": value[a] for a in ("name", "type") if a in value}}
    out = {}
    if xsd_type.has_complex_content():
        for element in xsd_type.content.iter_elements():
            name = element.name.split("}")[-1]
            if name in value and name not in out:
                out[name] = as_xsd_data(value[name], element.type)
    for key, item in value.items():
        out.setdefault(key, item)
    return out


# What each operation needs, from Intuit's API reference (Finance.xsd's "Required" notes are per product, not per
# operation): a create these, an update also Id and SyncToken (a sparse one too).
REQUIRED = {"Invoice": {"CustomerRef", "Line"}, "CreditMemo": {"CustomerRef", "Line"},
            "Payment": {"CustomerRef", "TotalAmt"}, "Customer": {"DisplayName"}, "Item": {"Name", "IncomeAccountRef"},
            "Purchase": {"PaymentType", "AccountRef", "Line"}}
MAX_LENGTH = re.compile(r"max(?:imum)?\.?\s+length(?:\s+for\s+\w+)?\s*(?::|is)\s*(\d+)", re.I)
NUMBER_KINDS = {"decimal", "double", "float"}
INTEGER_KINDS = {"int", "integer", "long", "short", "positiveInteger", "nonNegativeInteger"}


def kind_problems(xsd_type, value, where):
    """What Finance.xsd's documentation and types say of a JSON body beyond its element structure: the lengths
    its documentation states ("Max length: 21 characters"), and JSON kinds (a decimal is a number, never
    ``"180.00"``; a boolean true/false; text a string)."""
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in kind_problems(xsd_type, item, f"{where}[{index}]")]
    if isinstance(value, dict):
        if "value" in value and set(value) <= {"value", "name", "type"}:  # a ReferenceType
            return [] if isinstance(value["value"], str) else [f"{where}.value: a reference id is a string"]
        children = ({e.name.split("}")[-1]: e for e in xsd_type.content.iter_elements()}
                    if xsd_type.has_complex_content() else {})
        problems = []
        for key, item in value.items():
            element = children.get(key)
            if element is None:
                continue  # an undeclared key: the XSD check refuses it
            docs = " ".join(d.text or "" for d in (element.annotation.documentation if element.annotation else []))
            limit = MAX_LENGTH.search(docs)
            if limit and isinstance(item, str) and len(item) > int(limit.group(1)):
                problems.append(f"{where}.{key}: {len(item)} characters, Finance.xsd says max {limit.group(1)}")
            problems += kind_problems(element.type, item, f"{where}.{key}")
        return problems
    primitive = getattr(getattr(xsd_type, "primitive_type", None), "local_name", "string")
    if primitive in NUMBER_KINDS:
        ok = isinstance(value, (Decimal, int, float)) and not isinstance(value, bool)
    elif primitive in INTEGER_KINDS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif primitive == "boolean":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    return [] if ok else [f"{where}: {primitive} in Finance.xsd, got JSON {type(value).__name__} {value!r}"]


def qbo_problems(schema, entity, body, operation="create"):
    """Every problem Intuit's schema finds with one entity body of ``operation`` (empty list = valid)."""
    element = schema.elements[entity]
    _, errors = element.encode(as_xsd_data({k: v for k, v in body.items() if k != "sparse"}, element.type),
                               validation="lax", namespaces={"": NS})
    problems = [str(e)[:300] for e in errors] + kind_problems(element.type, body, entity)
    needed = REQUIRED.get(entity, set()) if operation == "create" else {"Id", "SyncToken"}
    problems += [f"{entity} {operation}: {name} is required" for name in sorted(needed - set(body))]
    name = str(body.get("DisplayName", ""))
    if re.search(r"[:\t\n]", name):
        problems.append(f"{entity}.DisplayName: Intuit refuses ':', tab and newline")
    return problems


def batch_problems(schema, envelope):
    """The ``/batch`` envelope: ``BatchItemRequest``, 1 to 30 items, each a unique string ``bId``, an
    ``operation`` and exactly one entity (or a ``Query``), each entity body checked as above."""
    items = envelope.get("BatchItemRequest") if isinstance(envelope, dict) else None
    if set(envelope or {}) != {"BatchItemRequest"} or not isinstance(items, list) or not 1 <= len(items) <= 30:
        return ["batch: a BatchItemRequest of 1 to 30 items, nothing else"]
    problems, seen = [], set()
    for item in items:
        bid, entities = item.get("bId"), [k for k in item if k in schema.elements]
        if not isinstance(bid, str) or bid in seen:
            problems.append(f"batch item {bid!r}: bId must be a unique string")
        seen.add(bid)
        if "Query" in item:
            continue
        if item.get("operation") not in ("create", "update", "delete") or len(entities) != 1 or \
                set(item) - {"bId", "operation", "optionsData", entities[0] if entities else ""}:
            problems.append(f"batch item {bid!r}: an operation and exactly one entity")
            continue
        problems += qbo_problems(schema, entities[0], item[entities[0]], item["operation"])
    return problems


def test_every_request_body_is_valid_against_finance_xsd(qbo, qbo_schema):
    sandbox, connector, entities, _ = qbo
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:3], payments=[payment(1, "100.00"), payment(2, "50.00")])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, payments=[], status="void"), doc)
    # Issue #5 bodies: a refund's credit memo and its application, a fleet customer with terms, a discount
    # on the discount account, a tax-inclusive invoice, and closed-period adjustments (invoice and credit memo).
    from datetime import date, datetime, timezone

    from daemon.canonical import Customer, Refund

    returned = Refund(id=5, kind="return", amount=Decimal("289.95"), tax_amount=Decimal("14.50"), line_id=2,
                      created_at=datetime(2026, 11, 21, tzinfo=timezone.utc))
    fleet = Customer(id=90, name="Harbor Freight Lines", email="ap@harbor.example", is_fleet=True,
                     payment_terms_days=30)
    connector.mapping = connector.mapping.model_copy(update={"discount_posting": "discount_account"})
    r1 = invoice_event(9100, customer=fleet, refunds=[returned],
                       lines=list(v1.lines) + [line(7, "discount", "Fleet discount", "1", "-10.00")])
    rdoc = deliver(connector, entities, r1)
    deliver(connector, entities, invoice_event(9101, tax_inclusive=True, lines=[line(1, "labour", "Fit", "1", "105.00")]))
    sandbox.set_book_close_date(date(2026, 11, 30))
    r2 = next_version(r1, lines=list(r1.lines) + [line(8, "part", "Clip", "1", "3.00")])
    rdoc = deliver(connector, entities, r2, rdoc)
    deliver(connector, entities, next_version(r2, status="void"), rdoc)
    checked = set()
    for _, path, body in sandbox.requests:
        entity = {"/invoice": "Invoice", "/payment": "Payment", "/customer": "Customer", "/item": "Item",
                  "/creditmemo": "CreditMemo", "/preferences": "Preferences"}[path]
        problems = qbo_problems(qbo_schema, entity, body, "update" if "SyncToken" in body else "create")
        assert not problems, f"{entity} body not valid against Finance.xsd: {problems[:3]}"
        checked.add(entity)
    assert checked == {"Invoice", "Payment", "Customer", "Item", "CreditMemo"}
    bodies = [b for _, p, b in sandbox.requests]
    assert any(ln.get("DetailType") == "DiscountLineDetail" for b in bodies for ln in b.get("Line", []))
    assert any(b.get("TotalAmt") == Decimal("0") and len(b.get("Line", [])) == 2 for b in bodies)  # credit applied
    assert any(b.get("GlobalTaxCalculation") == "TaxInclusive" for b in bodies)
    assert any(b.get("SalesTermRef") for b in bodies)
    assert any(str(b.get("DocNumber", "")).startswith("A1-") for b in bodies)  # closed-period adjustment


def test_the_xsd_check_catches_what_intuit_would_refuse(qbo_schema):
    element = qbo_schema.elements["Invoice"]
    good = {"DocNumber": "INV-1", "CustomerRef": {"value": "5"}, "TxnDate": "2026-11-20"}
    assert not element.encode(as_xsd_data(good, element.type), validation="lax", namespaces={"": NS})[1]
    for bad in ({**good, "Bogus": "1"}, {**good, "TxnDate": "20/11/2026"}, {**good, "GlobalTaxCalculation": "Maybe"}):
        assert element.encode(as_xsd_data(bad, element.type), validation="lax", namespaces={"": NS})[1]


def test_batch_creates_many_invoices_in_one_request_and_isolates_a_bad_one(qbo):
    sandbox, connector, entities, _ = qbo
    deliver(connector, entities, invoice_event(7000))  # customer and the usual items exist
    from connectors.base import ExternalRef

    entities.put("item", "kind:sublet", ExternalRef(external_id="999999"))  # a mapping pointing nowhere
    events = [invoice_event(7001 + n, payments=[payment(n + 1, "25.00")] if n % 3 == 0 else []) for n in range(12)]
    bad = invoice_event(7100, lines=[line(1, "sublet", "Dealer key programming", "1", "95.00")])
    batch = [(e, DocumentState(), MemoryContext("qbo", e, entities)) for e in events[:6] + [bad] + events[6:]]
    results = connector.deliver_many(batch)
    assert sandbox.batch_requests == 1
    assert isinstance(results[6], PermanentError) and "Invalid Reference" in results[6].reason
    good = results[:6] + results[7:]
    assert all(isinstance(r, DocumentState) and r.external_id for r in good)
    booked = {b.number: b for b in sandbox.booked_invoices()}
    assert bad.number not in booked and all(e.number in booked for e in events)
    assert sum(b.payment_count for b in booked.values()) == 4  # payments still applied to their invoices


def test_batch_calls_per_invoice(qbo):
    sandbox, connector, entities, _ = qbo
    deliver(connector, entities, invoice_event(8000))
    writes_before = sum(1 for _, path, _ in sandbox.requests)
    events = [invoice_event(8001 + n) for n in range(30)]
    results = connector.deliver_many([(e, DocumentState(), MemoryContext("qbo", e, entities)) for e in events])
    assert all(isinstance(r, DocumentState) and r.delivered_version == 1 for r in results)
    assert sandbox.batch_requests == 1
    assert len(sandbox.booked_invoices()) == 31
    assert sum(1 for _, path, _ in sandbox.requests) - writes_before == 30  # 30 invoice bodies, in 1 request


def test_single_creates_when_the_batch_allowance_is_used_up_or_only_one_is_new(qbo):
    """The 40 batch requests/minute are counted apart from the 500 requests/minute: when no batch request
    is free now, the invoices go one by one at once instead of waiting for the next batch slot."""
    sandbox, connector, entities, _ = qbo
    deliver(connector, entities, invoice_event(8500))
    for _ in range(100):  # spend the batch allowance (the test runtime keeps the documented 40/min)
        with connector.batch_limiter.slot_if_free() as free:
            if not free:
                break
    else:
        raise AssertionError("the batch limiter never ran out")
    events = [invoice_event(8501 + n) for n in range(5)]
    started = time.monotonic()
    results = connector.deliver_many([(e, DocumentState(), MemoryContext("qbo", e, entities)) for e in events])
    assert time.monotonic() - started < 5  # no wait for a batch slot (the next is ~1.5 s away, then more)
    assert all(isinstance(r, DocumentState) and r.delivered_version == 1 for r in results)
    assert sandbox.batch_requests == 0 and len(sandbox.booked_invoices()) == 6
    one = invoice_event(8600)
    [result] = connector.deliver_many([(one, DocumentState(), MemoryContext("qbo", one, entities))])
    assert isinstance(result, DocumentState) and sandbox.batch_requests == 0  # a batch of one saves nothing


def test_the_finance_xsd_check_refuses_lengths_kinds_required_fields_and_display_name_characters(qbo_schema):
    """Issue #20: each stronger check proven by a bad body."""
    good = {"CustomerRef": {"value": "5"}, "TxnDate": "2026-11-20", "Line": [
        {"Amount": Decimal("180.00"), "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "3"}, "Qty": Decimal("1")}}]}
    assert qbo_problems(qbo_schema, "Invoice", good) == []
    bad_amount = {**good, "Line": [{**good["Line"][0], "Amount": "180.00"}]}
    assert any("decimal" in p for p in qbo_problems(qbo_schema, "Invoice", bad_amount))
    assert any("CustomerRef is required" in p for p in qbo_problems(
        qbo_schema, "Invoice", {k: v for k, v in good.items() if k != "CustomerRef"}))
    assert any("SyncToken is required" in p for p in qbo_problems(qbo_schema, "Invoice", {**good, "Id": "9"}, "update"))
    customer = {"DisplayName": "Dana Whitfield (#77)", "PrimaryPhone": {"FreeFormNumber": "555-0100"}}
    assert qbo_problems(qbo_schema, "Customer", customer) == []
    too_long = {**customer, "PrimaryPhone": {"FreeFormNumber": "+1 (555) 010-0199 ext. 4412"}}  # 27 > 21
    assert any("max 21" in p for p in qbo_problems(qbo_schema, "Customer", too_long))
    for bad_name in ("Fleet: North", "Fleet\tNorth", "Fleet\nNorth"):
        assert qbo_problems(qbo_schema, "Customer", {**customer, "DisplayName": bad_name}), bad_name
    assert any("boolean" in p for p in qbo_problems(qbo_schema, "Customer", {**customer, "Taxable": "true"}))


def test_the_batch_envelope_check(qbo_schema):
    invoice = {"CustomerRef": {"value": "5"}, "Line": [{"Amount": Decimal("1.00"), "DetailType": "SalesItemLineDetail",
                                                         "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}
    good = {"BatchItemRequest": [{"bId": "1", "operation": "create", "Invoice": invoice}]}
    assert batch_problems(qbo_schema, good) == []
    for bad in ({"BatchItemRequest": []}, {"BatchItemRequest": [good["BatchItemRequest"][0]] * 31},
                {"Items": good["BatchItemRequest"]},
                {"BatchItemRequest": [{"bId": 1, "operation": "create", "Invoice": invoice}]},
                {"BatchItemRequest": [{"bId": "1", "operation": "upsert", "Invoice": invoice}]},
                {"BatchItemRequest": [{"bId": "1", "operation": "create", "Invoice": invoice, "Payment": {}}]},
                {"BatchItemRequest": [{"bId": "1", "operation": "create", "Invoice": {**invoice, "TotalAmt": "1.00"}}]}):
        assert batch_problems(qbo_schema, bad), bad


def test_every_batch_request_is_a_valid_envelope(qbo, qbo_schema):
    """The connector's ``/batch`` requests (new invoices), as sent, through the envelope check."""
    sandbox, connector, entities, _ = qbo
    sent = []
    original = connector.client.batch

    def spy(items, *, request_id):
        sent.append({"BatchItemRequest": items})
        return original(items, request_id=request_id)

    connector.client.batch = spy
    events = [invoice_event(7000 + n) for n in range(3)]
    connector.deliver_many([(e, DocumentState(), MemoryContext("qbo", e, entities)) for e in events])
    assert sent and all(batch_problems(qbo_schema, envelope) == [] for envelope in sent), sent


def test_a_long_phone_and_a_colon_in_the_name_are_handled_visibly(capsys):
    """Issue #20: PrimaryPhone.FreeFormNumber is cut to Finance.xsd's 21 characters with the full number in the
    customer's Notes and a log line without it; ':' (a sub-customer path to Intuit) never reaches DisplayName."""
    from connectors.quickbooks_online import mapping
    from daemon.canonical import Customer

    phone = "+1 (555) 010-0199 ext. 4412"
    body = mapping.customer_payload(Customer(id=77, name="Fleet: North\tDepot", phone=phone))
    assert body["PrimaryPhone"]["FreeFormNumber"] == phone[:21] and phone in body["Notes"]
    assert ":" not in body["DisplayName"] and "\t" not in body["DisplayName"]
    logged = capsys.readouterr().out
    assert "value_cut_to_platform_limit" in logged and phone not in logged


def _refunded_in(currency: str, number: int):
    from datetime import datetime, timezone

    from daemon.canonical import Refund

    returned = Refund(id=number, kind="return", amount=Decimal("50.00"), line_id=2, payment_id=None,
                      created_at=datetime(2026, 11, 21, tzinfo=timezone.utc))
    return invoice_event(number, currency=currency, payments=[payment(number, "100.00")], refunds=[returned])


def test_invoice_in_another_currency_posts_with_its_money_on_the_customer_for_that_currency(qbo, qbo_schema):
    """Issue #20: a CAD invoice, its payment, credit memo and credit application carry CurrencyRef CAD and go to
    the shop customer's CAD customer (a customer's currency is fixed: the USD one cannot take them); the home
    currency is read from Preferences.CurrencyPrefs; every body is valid against Finance.xsd."""
    sandbox, connector, entities, _ = qbo
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"
    usd = deliver(connector, entities, invoice_event(7000))
    cad_event = _refunded_in("CAD", 7001)
    start = len(sandbox.requests)
    deliver(connector, entities, cad_event)
    (cad,) = [b for b in sandbox.booked_invoices() if b.number == cad_event.number]
    assert cad.currency == "CAD" and cad.payments_applied == Decimal("100.00")
    customers = {c["Id"]: c for c in sandbox.entities("Customer")}
    twin = customers[sandbox.entities("Invoice")[-1]["CustomerRef"]["value"]]
    assert twin["CurrencyRef"] == {"value": "CAD"} and "[CAD] (#" in twin["DisplayName"]
    assert customers[usd.customer_id]["CurrencyRef"] == {"value": "USD"}
    sent = [(path, body) for _, path, body in sandbox.requests[start:] if path != "/customer"]
    assert {path for path, _ in sent} >= {"/invoice", "/payment", "/creditmemo"}
    for path, body in sent:
        assert body["CurrencyRef"] == {"value": "CAD"} and body["CustomerRef"] == {"value": twin["Id"]}, path
        entity = {"/invoice": "Invoice", "/payment": "Payment", "/creditmemo": "CreditMemo"}[path]
        assert not qbo_problems(qbo_schema, entity, body, "update" if "SyncToken" in body else "create")
    assert not qbo_problems(qbo_schema, "Customer", next(b for _, p, b in sandbox.requests[start:] if p == "/customer"))


def test_a_renamed_customers_currency_customer_is_renamed_not_made_twice(qbo):
    """Issue #20: the shop customer's CAD customer was found by its whole DisplayName, so once the shop renamed
    the customer (and the process restarted, or QuickBooks' request-id memory had moved on) a second CAD customer
    was created under the new name and later CAD invoices landed there. It is found by the part of its name that
    never changes (``[CAD] (#<shop id>)``) and brought up to date: name and email, one customer per currency."""

    sandbox, connector, entities, _ = qbo
    first = invoice_event(7300, currency="CAD")
    deliver(connector, entities, first)
    renamed = first.customer.model_copy(update={"name": "Northside Fleet Services", "email": "ap@northside.example"})
    sandbox.forget_request_ids()  # Intuit keeps a request id's answer for a while, not for ever
    restarted = CONNECTOR(connector.target, connector.runtime)  # a new process: nothing kept in memory
    try:
        deliver(restarted, entities, invoice_event(7301, currency="CAD", customer=renamed))
    finally:
        restarted.close()
    twins = [c for c in sandbox.entities("Customer") if (c.get("CurrencyRef") or {}).get("value") == "CAD"]
    assert len(twins) == 1, [c["DisplayName"] for c in twins]
    (twin,) = twins
    assert twin["DisplayName"].startswith("Northside Fleet Services [CAD] (#")
    assert twin["PrimaryEmailAddr"] == {"Address": "ap@northside.example"}
    assert {i["CustomerRef"]["value"] for i in sandbox.entities("Invoice")
            if (i.get("CurrencyRef") or {}).get("value") == "CAD"} == {twin["Id"]}


def test_invoice_in_another_currency_without_multicurrency_is_dead_lettered_before_any_write(qbo):
    sandbox, connector, entities, _ = qbo
    sandbox.set_multicurrency(False)  # a company that never turned it on (once on, QuickBooks cannot turn it off)
    deliver(connector, entities, invoice_event(7100))
    before = len(sandbox.requests)
    with pytest.raises(PermanentError, match="CAD.*Multicurrency"):
        deliver(connector, entities, invoice_event(7101, currency="CAD"))
    assert [p for _, p, _ in sandbox.requests[before:] if p != "/preferences"] == []


def test_currency_the_company_has_not_added_is_refused_and_dead_lettered(qbo):
    _, connector, entities, _ = qbo
    with pytest.raises(PermanentError, match="GBP"):
        deliver(connector, entities, invoice_event(7200, currency="GBP"))


def test_sandbox_keeps_intuits_currency_rules(qbo):
    """A transaction is in its customer's currency; a customer's currency is fixed; no foreign currency
    without multicurrency (the rules the connector's per-currency customers answer)."""
    sandbox, connector, entities, _ = qbo
    doc = deliver(connector, entities, invoice_event(7300))
    invoice = sandbox.entities("Invoice")[-1]
    client = connector.client
    with pytest.raises(PermanentError, match="customer's currency"):
        client.write("Invoice", {**{k: invoice[k] for k in ("CustomerRef", "Line")}, "CurrencyRef": {"value": "CAD"}},
                     request_id="cad-on-usd")
    customer = client.read("Customer", doc.customer_id)
    with pytest.raises(PermanentError, match="currency of a customer"):
        client.write("Customer", {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
                                  "CurrencyRef": {"value": "CAD"}}, request_id="recurrency")
    sandbox.set_multicurrency(False)
    with pytest.raises(PermanentError, match="Multicurrency is not enabled"):
        client.write("Customer", {"DisplayName": "Euro customer", "CurrencyRef": {"value": "EUR"}}, request_id="eur")


def test_refund_paid_back_is_an_expense_on_receivables_linked_to_its_credit_memo(qbo, qbo_schema):
    """Issue #20: a refund the shop paid back is money out of the refunded payment's account (a cash Purchase to
    the customer on Accounts Receivable) and a zero Payment linking it and the credit memo, which leaves the memo
    nothing open; both bodies valid against Finance.xsd; the refund taken back deletes the link, then the expense."""
    from tests.conformance.test_conformance import refund

    sandbox, connector, entities, _ = qbo
    v1 = invoice_event(7100, payments=[payment(1, "100.00", method="eft")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[refund(8, 1, "20.00", "1.00", payment_id=1)])
    doc = deliver(connector, entities, v2, doc)
    (memo,) = sandbox.entities("CreditMemo")
    (expense,) = sandbox.entities("Purchase")
    assert (memo["Balance"], expense["TotalAmt"], expense["AccountRef"]["value"]) == (Decimal("0"), Decimal("21.00"), "36")
    assert expense["EntityRef"] == {**memo["CustomerRef"], "type": "Customer"} and expense["DocNumber"] == "LWP8"
    link = next(p for p in sandbox.entities("Payment") if p.get("PaymentRefNum") == "LWP8")
    assert sorted(lt["TxnType"] for ln in link["Line"] for lt in ln["LinkedTxn"]) == ["CreditMemo", "Expense"]
    for _, path, body in sandbox.requests:
        if path in ("/purchase", "/payment"):
            entity = path.strip("/").capitalize()
            assert not qbo_problems(qbo_schema, entity, body, "update" if "SyncToken" in body else "create"), body
    assert [inv.payments_applied for inv in sandbox.booked_invoices() if inv.number == v1.number] == [Decimal("100.00")]
    deliver(connector, entities, next_version(v2, refunds=[]), doc)
    assert sandbox.entities("Purchase")[0].get("_deleted") and link.get("_deleted")


def test_finance_xsd_check_refuses_a_bad_expense(qbo_schema):
    good = {"PaymentType": "Cash", "AccountRef": {"value": "36"}, "EntityRef": {"value": "5", "type": "Customer"},
            "DocNumber": "LWP8", "TxnDate": "2026-11-20", "TotalAmt": Decimal("21.00"),
            "Line": [{"Amount": Decimal("21.00"), "DetailType": "AccountBasedExpenseLineDetail",
                      "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "84"}}}]}
    assert qbo_problems(qbo_schema, "Purchase", good) == []
    assert qbo_problems(qbo_schema, "Purchase", {**good, "PaymentType": "Wire"})  # not a PaymentTypeEnum value
    assert any("AccountRef is required" in p for p in qbo_problems(
        qbo_schema, "Purchase", {k: v for k, v in good.items() if k != "AccountRef"}))
    assert any("decimal" in p for p in qbo_problems(qbo_schema, "Purchase", {**good, "TotalAmt": "21.00"}))


def test_sandbox_expense_and_its_link_keep_quickbooks_rules(qbo):
    """A/R line without a customer payee, a check from a non-bank account, a link to another customer's expense,
    and deleting an expense a payment links are all refused."""
    from connectors.quickbooks_online.sandbox import QboFault

    sandbox, connector, entities, _ = qbo
    deliver(connector, entities, invoice_event(7200))
    realm = next(iter(sandbox.realms.values()))
    customer = next(iter(realm.entities["Customer"]))
    line_ar = {"Amount": Decimal("5.00"), "DetailType": "AccountBasedExpenseLineDetail",
               "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "84"}}}
    body = {"PaymentType": "Cash", "AccountRef": {"value": "35"}, "Line": [line_ar],
            "EntityRef": {"value": customer, "type": "Customer"}}
    for bad in ({**body, "EntityRef": None}, {**body, "PaymentType": "Check"}, {**body, "AccountRef": {"value": "84"}}):
        with pytest.raises(QboFault):
            sandbox._apply(realm, "Purchase", "create", bad)
    expense = sandbox._apply(realm, "Purchase", "create", body)
    with pytest.raises(QboFault):  # another customer's payment cannot pay this customer's charge
        sandbox._apply(realm, "Payment", "create", {"CustomerRef": {"value": "nobody"}, "TotalAmt": Decimal("5.00"),
                                                   "Line": [{"Amount": Decimal("5.00"), "LinkedTxn": [
                                                       {"TxnId": expense["Id"], "TxnType": "Expense"}]}]})
    paid = sandbox._apply(realm, "Payment", "create", {"CustomerRef": {"value": customer}, "TotalAmt": Decimal("5.00"),
                                                       "Line": [{"Amount": Decimal("5.00"), "LinkedTxn": [
                                                           {"TxnId": expense["Id"], "TxnType": "Expense"}]}]})
    with pytest.raises(QboFault, match="6140|linked"):
        sandbox._apply(realm, "Purchase", "delete", {"Id": expense["Id"], "SyncToken": expense["SyncToken"]})
    sandbox._apply(realm, "Payment", "delete", {"Id": paid["Id"], "SyncToken": paid["SyncToken"]})
    sandbox._apply(realm, "Purchase", "delete", {"Id": expense["Id"], "SyncToken": expense["SyncToken"]})
