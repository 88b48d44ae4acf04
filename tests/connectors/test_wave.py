"""Wave (public GraphQL API): the hand-written SDL checked against the field table Wave's portal gives (read from
``$LEDGERWIRE_SPECS_DIR/wave/SOURCE.md`` — Wave publishes no schema file), every operation the connector sends
validated against that SDL with graphql-core (document and variables), the validators shown to refuse bad
bodies, the sandbox's auth / limits / errors, and Wave's own rules: products on every line, taxes computed by
Wave, void = delete, payments removed by reversal, refunds as negative invoices applied through the customer
credit account."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest

from connectors import jsonmoney
from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError, UncertainOutcomeError
from connectors.engine_state import DocKind
from connectors.testing import refund
from connectors.testing import GST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment
from connectors.wave import Sandbox, mapping, operations
from connectors.wave.client import classify, graphql_error
from connectors.wave.schema import SDL, operation_errors, schema
from daemon.canonical import Customer, Refund
from daemon.config import MappingConfig

# Input types in the table that the connector never sends, so the SDL leaves them out (the table itself says
# their fields are not verified).
NOT_SENT = {"SalesTaxCreateInput", "MoneyTransactionCreateInput", "InvoiceCloneInput"}


# --- the SDL against SOURCE.md's field table ------------------------------------------------------------

def _split(text: str) -> list[str]:
    """Comma-separated entries, commas inside (), [] or {} kept."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def _names(entry: str) -> list[str]:
    """``hideName/Description/Unit`` → hideName, hideDescription, hideUnit."""
    first, *rest = entry.split("/")
    prefix = re.match(r"[a-z]+", first).group(0)
    return [first, *(prefix + r for r in rest)]


def table_expectations(source: str) -> list[tuple[str, str, str]]:
    """(input type, field, expectation) from the table: an exact SDL type (``ID!``), ``required``, ``exists``,
    ``enum:A,B`` or ``fields:a,b`` (the field's input type has those fields)."""
    expected: list[tuple[str, str, str]] = []
    types: list[str] = []
    for raw in source.splitlines():
        if not raw.startswith("|") or raw.startswith("|---") or "Mutation → input" in raw:
            continue
        cells = [c.strip().replace("\u0000", "|") for c in raw.replace("\\|", "\u0000").strip("|").split("|")]
        head, fields, kind = cells[0], cells[1], cells[2] if len(cells) > 2 else ""
        if head:
            if "→" in head:
                types = [head.split("→")[1].strip()]
            elif " / " in head:  # invoiceApprove / invoiceSend / …: one input each
                types = [name.strip()[0].upper() + name.strip()[1:] + "Input" for name in head.split(" / ")]
            else:
                types = [head]
        for type_name in types:
            if kind:
                type_token = re.match(r"\[?[A-Za-z]+!?\]?!?", kind).group(0) if not kind.startswith("{") else ""
                for name in (n for entry in _split(fields) for n in _names(entry)):
                    expected.append((type_name, name, type_token or "exists"))
                    if "(" in kind and "|" in kind:  # InvoiceCreateStatus (DRAFT | SAVED)
                        values = re.search(r"\(([^)]*)\)", kind).group(1)
                        expected.append((type_name, name, "enum:" + ",".join(v.strip() for v in values.split("|"))))
                    if "{" in kind:  # AddressInput {addressLine1, …} / {salesTaxId: ID!}
                        inner = re.search(r"\{([^}]*)\}", kind).group(1)
                        expected.append((type_name, name, "fields:" + ",".join(
                            e.split(":")[0].strip() for e in _split(inner))))
                continue
            for entry in _split(fields):
                name = re.match(r"[A-Za-z/]+", entry).group(0)
                rest = entry[len(name):].strip()
                note = re.search(r"\((.*)\)", rest)
                token = re.match(r"\[?[A-Za-z]+!?\]?!?", rest) if rest and not rest.startswith("(") else None
                for field_name in _names(name):
                    expected.append((type_name, field_name, token.group(0) if token else
                                     "required" if note and note.group(1) == "required" else "exists"))
                if note and note.group(1).startswith("+ ") and " for " in note.group(1):  # (+ to …, message … for send)
                    extra, _, verb = note.group(1)[2:].rpartition(" for ")
                    for extra_entry in _split(extra):
                        extra_name, *extra_type = extra_entry.split()
                        expected.append((f"Invoice{verb.strip().title()}Input", extra_name,
                                         extra_type[0] if extra_type else "exists"))
    return expected


def sdl_problems(built: graphql.GraphQLSchema, expected: list[tuple[str, str, str]]) -> list[str]:
    problems = []
    for type_name, field_name, expectation in expected:
        if type_name in NOT_SENT:
            continue
        input_type = built.type_map.get(type_name)
        if not isinstance(input_type, graphql.GraphQLInputObjectType):
            problems.append(f"{type_name}: not an input type in the SDL")
            continue
        field = input_type.fields.get(field_name)
        if field is None:
            problems.append(f"{type_name}.{field_name}: missing")
            continue
        named = graphql.get_named_type(field.type)
        if expectation == "required" and not graphql.is_non_null_type(field.type):
            problems.append(f"{type_name}.{field_name}: required in the table, nullable in the SDL")
        elif expectation.startswith("enum:"):
            values = set(expectation[5:].split(","))
            if not isinstance(named, graphql.GraphQLEnumType) or set(named.values) != values:
                problems.append(f"{type_name}.{field_name}: enum values differ from {sorted(values)}")
        elif expectation.startswith("fields:"):
            wanted = set(expectation[7:].split(","))
            if not isinstance(named, graphql.GraphQLInputObjectType) or not wanted <= set(named.fields):
                problems.append(f"{type_name}.{field_name}: {named} lacks {sorted(wanted - set(getattr(named, 'fields', {})))}")
        elif expectation not in ("exists", "required") and str(field.type) != expectation:
            problems.append(f"{type_name}.{field_name}: {field.type} in the SDL, {expectation} in the table")
    return problems


@pytest.fixture(scope="module")
def table(specs: Path) -> list[tuple[str, str, str]]:
    return table_expectations((specs / "wave" / "SOURCE.md").read_text())


def test_the_sdl_matches_the_field_table_in_source_md(table):
    checked = {(t, f) for t, f, _ in table if t not in NOT_SENT}
    assert len(checked) >= 55 and ("InvoiceCreateItemInput", "productId") in checked
    assert ("InvoicePaymentCreateManualInput", "paymentMethod") in checked and ("InvoiceSendInput", "attachPDF") in checked
    assert ("InvoiceSendInput", "to", "[String]") in table
    assert sdl_problems(schema(), table) == []


@pytest.mark.parametrize(("change", "expected"), [
    (("  productId: ID!\n  description: String\n  quantity", "  productId: ID\n  description: String\n  quantity"),
     "InvoiceCreateItemInput.productId: ID in the SDL, ID! in the table"),
    (("  name: String!\n  unitPrice: Decimal!", "  name: String\n  unitPrice: Decimal!"),
     "ProductCreateInput.name: required in the table, nullable in the SDL"),
    (("enum InvoiceCreateStatus { DRAFT SAVED }", "enum InvoiceCreateStatus { DRAFT SAVED SENT }"),
     "InvoiceCreateInput.status: enum values differ"),
    (("  provinceCode: String\n", ""), "CustomerCreateInput.address: AddressInput lacks ['provinceCode']"),
    (("  attachPDF: Boolean\n", ""), "InvoiceSendInput.attachPDF: missing"),
])
def test_the_table_check_refuses_an_sdl_that_departs_from_the_table(table, change, expected):
    assert change[0] in SDL
    problems = sdl_problems(graphql.build_schema(SDL.replace(change[0], change[1], 1)), table)
    assert any(p.startswith(expected) for p in problems), problems


# --- every operation the connector sends, against the SDL -------------------------------------------------

class Captured:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/graphql/public"):
            self.sent.append(jsonmoney.loads(request.content))


@pytest.fixture
def wave():
    sandbox = Sandbox(minute_limit=6000)
    with connectors_on(sandbox, "wave") as build:
        connector = build()
        captured = Captured()
        connector.http.client.event_hooks["request"].append(captured)
        yield sandbox, connector, captured


def test_every_operation_sent_is_valid_against_the_sdl(wave):
    sandbox, connector, captured = wave
    entities = MemoryEntities()
    v1 = invoice_event(7001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4], payments=[], refunds=[])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, status="void"), doc)
    moved = v1.customer.model_copy(update={"phone": "555-0199"})
    deliver(connector, entities, invoice_event(7002, customer=moved))  # the customer is patched
    for kind, key in ((DocKind.INVOICE, ""), (DocKind.PAYMENT, "1"), (DocKind.CREDIT_NOTE, "2"),
                      (DocKind.CREDIT_APPLICATION, "2")):  # the look-ups a retry after an uncertain write makes
        connector.find(kind, connector.reference(kind, v1, key))
    sent = {operation_name(body["query"]) for body in captured.sent}
    assert set(operations.ALL) <= sent, set(operations.ALL) - sent
    problems = {body["query"][:60]: found for body in captured.sent
                if (found := operation_errors(body["query"], body.get("variables")))}
    assert not problems
    items = [item for body in captured.sent for item in (body.get("variables", {}).get("input") or {}).get("items", [])]
    assert items and all(item["productId"] for item in items)  # no free-text line
    assert all("amount" not in tax for item in items for tax in item["taxes"])  # the deprecated tax amount


def operation_name(query: str) -> str:
    document = graphql.parse(query)
    operation = graphql.get_operation_ast(document)
    if query == operations.BUSINESS_CURRENCY:
        return "businessCurrency"
    return operation.selection_set.selections[0].name.value if operation.operation.value == "mutation" else {
        "businesses": "businesses"}.get(operation.selection_set.selections[0].name.value) or next(
        name for name in ("invoices", "invoice", "customers", "products")
        if re.search(rf"\b{name}\(", query))


GOOD_INVOICE = {"businessId": "b", "customerId": "c", "status": "SAVED", "invoiceNumber": "INV-1",
                "invoiceDate": "2026-11-20", "items": [{"productId": "p", "quantity": Decimal("1.5"),
                                                         "unitPrice": Decimal("120.00"), "taxes": [{"salesTaxId": "t"}]}]}


@pytest.mark.parametrize(("change", "expected"), [
    (lambda i: i["items"][0].pop("productId"), "Field 'productId' of required type 'ID!' was not provided"),
    (lambda i: i["items"][0].update(unitPrice=120.0), "Decimal cannot represent 120.0"),
    (lambda i: i["items"][0].update(quantity=True), "Decimal cannot represent True"),
    (lambda i: i["items"][0]["taxes"][0].update(rate="5%"), "Field 'rate' is not defined by type 'InvoiceCreateItemTaxInput'"),
    (lambda i: i.update(status="VOID"), "Value 'VOID' does not exist in 'InvoiceCreateStatus' enum"),
    (lambda i: i.update(invoiceDate="20/11/2026"), "Expected type 'Date'"),
    (lambda i: i.pop("customerId"), "Field 'customerId' of required type 'ID!' was not provided"),
    (lambda i: i.update(lines=[]), "Field 'lines' is not defined by type 'InvoiceCreateInput'"),
    (lambda i: i.update(currency="XTS"), "Value 'XTS' does not exist in 'CurrencyCode' enum"),
    (lambda i: i.update(currencyCode="CAD"), "Field 'currencyCode' is not defined by type 'InvoiceCreateInput'"),
    (lambda i: i.update(exchangeRate=1.3852), "Decimal cannot represent 1.3852"),
])
def test_the_sdl_check_refuses_bad_bodies(change, expected):
    assert operation_errors(operations.INVOICE_CREATE, {"input": GOOD_INVOICE}) == []
    bad = jsonmoney.loads(jsonmoney.dumps(GOOD_INVOICE))
    change(bad)
    assert any(expected in p for p in operation_errors(operations.INVOICE_CREATE, {"input": bad})), expected


def test_the_sdl_check_refuses_unknown_fields_in_a_query_and_a_missing_business():
    (problem,) = operation_errors("query { business(id: \"b\") { invoice(id: \"i\") { voidedAt } } }")
    assert problem.startswith("Cannot query field 'voidedAt' on type 'Invoice'.")
    (problem,) = operation_errors(operations.CUSTOMER_CREATE, {"input": {"businessId": "b"}})
    assert "Field 'name' of required type 'String!' was not provided" in problem


def test_the_sandbox_refuses_what_the_sdl_refuses(wave):
    _, connector, _ = wave
    bad = dict(GOOD_INVOICE, businessId=connector.client.business(), lines=[])
    with pytest.raises(PermanentError) as raised:
        connector.client.mutate("invoiceCreate", operations.INVOICE_CREATE, bad, "invoice")
    assert raised.value.status == 400 and raised.value.platform_code == "BAD_USER_INPUT"


# --- auth, limits, errors ------------------------------------------------------------------------------

def test_no_token_is_refused_with_401_unauthenticated(wave):
    _, connector, _ = wave
    answer = httpx.post(connector.target.base_url, json={"query": operations.BUSINESSES})
    assert answer.status_code == 401 and answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert isinstance(classify(answer), AuthError)


def test_refresh_tokens_rotate_and_the_old_one_dies(wave):
    sandbox, connector, _ = wave
    store = connector.runtime.credentials("wave")
    deliver(connector, MemoryEntities(), invoice_event(7100))
    first = store.get()["refresh_token"]
    sandbox.issuer.expire_all()
    deliver(connector, MemoryEntities(), invoice_event(7101))
    assert store.get()["refresh_token"] != first
    answer = httpx.post(connector.settings.token_url, data={
        "grant_type": "refresh_token", "refresh_token": first, "client_id": store.get()["client_id"],
        "client_secret": store.get()["client_secret"]})
    assert answer.status_code == 400 and answer.json() == {"error": "invalid_grant"}


def test_the_request_limit_answers_429_throttled_with_retry_after():
    sandbox = Sandbox(minute_limit=3)
    with connectors_on(sandbox, "wave", requests_per_minute=1000) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            for n in range(5):
                connector.find(DocKind.INVOICE, f"INV-{n}")
        assert raised.value.retry_after and raised.value.retry_after >= 1
        assert raised.value.platform_code == "THROTTLED" and sandbox.rate_limit_breaches() >= 1


@pytest.mark.parametrize(("status", "code", "write", "kind"), [
    (200, "UNAUTHENTICATED", False, AuthError),
    (429, "THROTTLED", False, RateLimitedError),
    (200, "INTERNAL_SERVER_ERROR", True, UncertainOutcomeError),
    (500, "INTERNAL_SERVER_ERROR", False, RetryableError),
    (400, "GRAPHQL_VALIDATION_FAILED", True, PermanentError),
    (200, "NOT_FOUND", False, PermanentError),
])
def test_graphql_errors_are_classified(status, code, write, kind):
    error = graphql_error([{"message": "m", "extensions": {"code": code}}], status, write=write, retry_after=3)
    assert type(error) is kind and error.platform_code == code
    if kind is RateLimitedError:
        assert error.retry_after == 3


def test_input_errors_with_http_200_are_a_permanent_refusal(wave):
    _, connector, _ = wave
    fields = dict(GOOD_INVOICE, businessId=connector.client.business(), customerId="Q3VzdG9tZXI6bm9uZQ==")
    with pytest.raises(PermanentError) as raised:
        connector.client.mutate("invoiceCreate", operations.INVOICE_CREATE, fields, "invoice")
    assert raised.value.status == 200 and raised.value.platform_code == "NOT_FOUND"
    assert "input.customerId" in raised.value.reason


def test_invoice_send_is_refused_while_the_business_cannot_email(wave):
    _, connector, _ = wave
    doc = deliver(connector, MemoryEntities(), invoice_event(7150))
    send = operations.mutation("invoiceSend", "InvoiceSendInput")
    with pytest.raises(PermanentError, match="emailSendEnabled"):
        connector.client.mutate("invoiceSend", send, {"invoiceId": doc.external_id, "to": ["x@example.com"]})


# --- Wave's rules -------------------------------------------------------------------------------------

def test_every_line_names_a_product_and_taxes_are_always_sent():
    mapping_config = MappingConfig(tax_codes={"GST": "tax-gst"})
    event = invoice_event(7200)
    fields = mapping.invoice_create_input(event, "b", "c", {ln.id: f"p{ln.id}" for ln in event.lines}, mapping_config)
    assert fields["status"] == "SAVED" and [i["productId"] for i in fields["items"]] == ["p1", "p2", "p3", "p4", "p5"]
    core = fields["items"][2]
    assert core["taxes"] == []  # an omitted list would apply the product's default taxes
    assert fields["items"][0]["taxes"] == [{"salesTaxId": "tax-gst"}]
    with pytest.raises(PermanentError, match="no Wave sales tax for 'PST'"):
        mapping.sales_taxes(line(1, "part", "Relay", "1", "1.00", taxes=({**GST, "code": "PST"},)), mapping_config)


def test_wave_computes_tax_and_the_books_match_the_shop(wave):
    sandbox, connector, _ = wave
    event = invoice_event(7210)
    doc = deliver(connector, MemoryEntities(), event)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == event.number]
    assert (booked.total, booked.tax_total) == (event.computed.total, event.computed.tax_total)
    assert doc.engine.tax_difference is None


def test_a_void_deletes_the_invoice_after_reversing_its_payment(wave):
    sandbox, connector, _ = wave
    entities = MemoryEntities()
    v1 = invoice_event(7300, payments=[payment(1, "300.00")])
    doc = deliver(connector, entities, v1)
    with pytest.raises(PermanentError, match="cannot be deleted"):  # money on it: Wave keeps it
        connector.client.mutate("invoiceDelete", operations.INVOICE_DELETE, {"invoiceId": doc.external_id})
    doc = deliver(connector, entities, next_version(v1, status="void"), doc)
    assert doc.status == "voided" and connector.read_invoice(doc.external_id) is None
    (deleted,) = [i for i in sandbox.invoices(include_deleted=True) if i["invoiceNumber"] == v1.number]
    assert [p["amount"] for p in deleted["payments"]] == [Decimal("300.00"), Decimal("-300.00")]
    assert deleted["payments"][1]["memo"] == mapping.REVERSAL + deleted["payments"][0]["id"]
    assert connector.find(DocKind.PAYMENT, mapping.payment_reference(v1, "1")) == []


def test_a_refund_is_a_negative_invoice_applied_through_the_customer_credit_account(wave):
    sandbox, connector, _ = wave
    entities = MemoryEntities()
    v1 = invoice_event(7400, refunds=[refund(5, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    (note,) = [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v1, "5")]
    assert (note["total"]["value"], note["amountDue"]["value"]) == (Decimal("-304.45"), Decimal("0.00"))
    assert note["items"][0]["product"]["name"] == "Parts"  # the returned line's product
    credit = [p["amount"] for i in sandbox.invoices() for p in i["payments"] if p["paymentAccount"]["id"] == "acct-credit"]
    assert sorted(credit) == [Decimal("-304.45"), Decimal("304.45")]  # the credit account nets to zero
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("304.45")
    # The refund taken back in the shop: both halves reversed, then the negative invoice deleted.
    doc = deliver(connector, entities, next_version(v1, refunds=[]), doc)
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total and not doc.engine.applications
    assert not [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v1, "5")]
    (gone,) = [i for i in sandbox.invoices(include_deleted=True) if i["invoiceNumber"] == mapping.credit_note_number(v1, "5")]
    assert sum(p["amount"] for p in gone["payments"]) == 0 and doc.refunds["5"].status == "voided"


def test_an_application_cut_short_between_its_two_payments_is_finished(wave):
    sandbox, connector, _ = wave
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(7500))  # customer and products exist: four writes follow
    v1 = invoice_event(7501, refunds=[refund(6, 2, "289.95", "14.50")])
    sandbox.faults.fault_at(4, "500")  # invoice, negative invoice, the invoice's half … the credit's half fails
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v1, doc := __import__("connectors.base", fromlist=["DocumentState"]).DocumentState(),
                          ctx := _ctx(connector, v1, entities))
    saved = ctx.checkpoints[-1]
    assert saved.engine.intent is not None and doc.external_id is None
    doc = deliver(connector, entities, v1, saved, attempt=2)
    (note,) = [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v1, "6")]
    assert note["amountDue"]["value"] == Decimal("0.00") and len(note["payments"]) == 1
    (application,) = doc.engine.applications.values()
    assert application.external_id.count("/") == 2 and not application.external_id.endswith("/")
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("304.45")


def _ctx(connector, event, entities):
    from connectors.testing import MemoryContext

    return MemoryContext(connector.target.name, event, entities)


def test_find_compares_numbers_exactly_although_wave_filters_by_part_of_it(wave):
    _, connector, _ = wave
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(7600, number="INV-12"))
    deliver(connector, entities, invoice_event(7601, number="INV-112"))
    assert len(connector.find(DocKind.INVOICE, "INV-12")) == 1


def test_a_bookkeepers_customer_is_used_but_another_shop_customers_never(wave):
    sandbox, connector, _ = wave
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    business = connector.client.business()
    connector.client.mutate("customerCreate", operations.CUSTOMER_CREATE,
                            {"businessId": business, "name": "Fleet Co", "email": "fleet@example.com"}, "customer")
    connector.client.mutate("customerCreate", operations.CUSTOMER_CREATE,
                            {"businessId": business, "name": "Pat Doe", "internalNotes": "LWC999"}, "customer")
    bookkeepers = connector.find_customer(Customer(id=801, name="Fleet Co", email="fleet@example.com"))
    assert bookkeepers is not None
    assert connector.find_customer(Customer(id=802, name="Pat Doe")) is None


def test_a_deleted_invoice_answered_with_not_found_reads_as_gone(wave):
    _, connector, _ = wave
    doc = deliver(connector, MemoryEntities(), invoice_event(7700))
    connector.client.mutate("invoiceDelete", operations.INVOICE_DELETE, {"invoiceId": doc.external_id})
    assert connector.read_invoice(doc.external_id) is None
    not_found = httpx.Response(200, json={"data": {"business": {"invoice": None}}, "errors": [
        {"message": "Invoice not found", "path": ["business", "invoice"], "extensions": {"code": "NOT_FOUND"}}]})
    connector.http.client._transport = httpx.MockTransport(lambda request: not_found)
    assert connector.read_invoice(doc.external_id) is None
    connector.http.client._transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(UncertainOutcomeError):
        connector.client.mutate("invoiceDelete", operations.INVOICE_DELETE, {"invoiceId": doc.external_id})


# --- issue #20: a refund paid back, a goodwill refund's tax ------------------------------------------------

def test_a_refund_paid_back_is_money_out_on_its_negative_invoice(wave):
    """A refund the shop paid back: a negative payment on its negative invoice out of the refunded payment's
    account (Wave's "Refund Sent for an Invoice in Wave"), nothing left due on it, never through the customer
    credit account and never on the invoice; every operation valid against the SDL; the refund taken back
    reverses it (money back in) before the negative invoice is deleted."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    sandbox, connector, captured = wave
    entities = MemoryEntities()
    v1 = invoice_event(7600, payments=[payment(1, "100.00", method="eft")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[paid_back_refund(8, 1, "20.00", "1.00", payment_id=1)])
    doc = deliver(connector, entities, v2, doc)
    (note,) = [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v2, "8")]
    assert (note["total"]["value"], note["amountDue"]["value"]) == (Decimal("-21.00"), Decimal("0.00"))
    (out,) = note["payments"]
    eft = connector.mapping.payment_accounts["eft"]
    assert (out["amount"], out["paymentAccount"]["id"], out["memo"]) == (Decimal("-21.00"), eft, "CN8-INV-007600#LWP8")
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("100.00")
    assert [r.amount for r in connector.find(DocKind.REFUND_PAYMENT, "CN8-INV-007600#LWP8")] == [Decimal("21.00")]
    assert not [b for b in captured.sent if operation_errors(b["query"], b.get("variables"))]
    doc = deliver(connector, entities, next_version(v2, refunds=[]), doc)
    assert not doc.engine.settlements and connector.find(DocKind.REFUND_PAYMENT, "CN8-INV-007600#LWP8") == []
    (gone,) = [i for i in sandbox.invoices(include_deleted=True) if i["invoiceNumber"] == "CN8-INV-007600"]
    assert sum(p["amount"] for p in gone["payments"]) == 0


def test_the_sdl_and_the_sandbox_refuse_a_bad_refund_payment(wave):
    """The money-out request's bad bodies: an amount as a float, no account; and an account that is not a cash,
    bank or customer credit account (an income account, or none), refused by the sandbox."""
    sandbox, connector, _ = wave
    good = {"invoiceId": "i", "paymentAccountId": "a", "amount": Decimal("-21.00"), "paymentDate": "2026-11-21",
            "paymentMethod": "BANK_TRANSFER", "exchangeRate": Decimal("1"), "memo": "CN8-INV-1#LWP8"}
    assert operation_errors(operations.PAYMENT_CREATE, {"input": good}) == []
    assert any("Decimal cannot represent -21.0" in p for p in operation_errors(
        operations.PAYMENT_CREATE, {"input": {**good, "amount": -21.0}}))
    assert any("paymentAccountId" in p for p in operation_errors(
        operations.PAYMENT_CREATE, {"input": {k: v for k, v in good.items() if k != "paymentAccountId"}}))
    entities = MemoryEntities()
    v1 = invoice_event(7700, refunds=[refund(9, 2, "10.00", "0.50")])
    deliver(connector, entities, v1)
    (note,) = [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v1, "9")]
    for account in ("acct-parts", "acct-nowhere"):
        with pytest.raises(PermanentError, match="cash, bank or customer credit"):
            connector.client.mutate("invoicePaymentCreateManual", operations.PAYMENT_CREATE,
                                    {**good, "invoiceId": note["id"], "paymentAccountId": account}, "invoicePayment")


def test_a_goodwill_refund_is_taxed_like_the_invoices_main_taxed_line(wave):
    sandbox, connector, _ = wave
    v1 = invoice_event(7800, refunds=[Refund(id=17, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"),
                                             line_id=None, reason="Goodwill: late job",
                                             created_at=invoice_event().emitted_at)])
    deliver(connector, MemoryEntities(), v1)
    (note,) = [i for i in sandbox.invoices() if i["invoiceNumber"] == mapping.credit_note_number(v1, "17")]
    assert (note["total"]["value"], note["taxTotal"]["value"]) == (Decimal("-42.00"), Decimal("-2.00"))


# --- currencies (issue #20) -----------------------------------------------------------------------------

def _inputs(sandbox, start: int, name: str) -> list[dict[str, Any]]:
    return [fields for mutation, fields in sandbox.requests[start:] if mutation == name]


def test_invoice_in_another_currency_carries_it_and_its_payments_carry_waves_rate(wave):
    """Issue #20: a CAD invoice (and its refunds' negative invoices) carries ``currency`` CAD and no
    ``exchangeRate`` — Wave applies its own and holds it on the invoice; every payment on them (received, credit
    application, refund paid back) carries that rate, read from Wave, where the business-currency ones carry 1;
    the business's currency is read from ``business.currency``; every operation is valid against the SDL."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    sandbox, connector, captured = wave
    entities = MemoryEntities()
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"
    deliver(connector, entities, invoice_event(7900, payments=[payment(1, "100.00")]))
    start = len(sandbox.requests)
    v1 = invoice_event(7901, currency="CAD", payments=[payment(1, "100.00", method="eft")],
                       refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    deliver(connector, entities, next_version(v1, refunds=[*v1.refunds, paid_back_refund(8, 1, "20.00", "1.00",
                                                                                         payment_id=1)]), doc)
    held = {i["invoiceNumber"]: i for i in sandbox.invoices()}
    assert held[v1.number]["currency"] == {"code": "CAD"} and held[v1.number]["exchangeRate"] == Decimal("0.721900")
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert booked.currency == "CAD" and booked.payments_applied == Decimal("100.00")
    created = _inputs(sandbox, start, "invoiceCreate")
    assert len(created) == 3 and all(f["currency"] == "CAD" and "exchangeRate" not in f for f in created)
    paid = _inputs(sandbox, start, "invoicePaymentCreateManual")
    assert len(paid) == 4  # received, the credit application's two halves, the refund paid back
    assert all(f["exchangeRate"] == Decimal("0.721900") for f in paid)
    assert all(f["exchangeRate"] == Decimal("1") for f in _inputs(sandbox, 0, "invoicePaymentCreateManual")[:1])
    assert not [b for b in captured.sent if operation_errors(b["query"], b.get("variables"))]


def test_a_currency_wave_does_not_take_is_dead_lettered_with_waves_refusal(wave):
    sandbox, connector, _ = wave
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(7910))
    with pytest.raises(PermanentError, match="XTS") as refused:
        deliver(connector, entities, invoice_event(7911, currency="XTS"))
    assert refused.value.platform_code == "BAD_USER_INPUT"
    assert [i for i in sandbox.invoices(include_deleted=True) if i["invoiceNumber"] == invoice_event(7911).number] == []


def test_the_sandbox_keeps_the_exchange_rate_rules(wave):
    """A payment on an invoice in the business currency is at 1; an invoice's rate sent is held; a rate must be
    positive."""
    sandbox, connector, _ = wave
    doc = deliver(connector, MemoryEntities(), invoice_event(7920))
    good = {"invoiceId": doc.external_id, "paymentAccountId": "acct-checking", "amount": Decimal("5.00"),
            "paymentDate": "2026-11-21", "paymentMethod": "CASH", "exchangeRate": Decimal("1.3852"), "memo": "x"}
    with pytest.raises(PermanentError, match="exchangeRate"):
        connector.client.mutate("invoicePaymentCreateManual", operations.PAYMENT_CREATE, good, "invoicePayment")
    fields = {**GOOD_INVOICE, "businessId": connector.client.business(), "customerId": doc.customer_id,
              "invoiceNumber": "FX-1", "currency": "GBP", "exchangeRate": Decimal("1.2500"),
              "items": [{"productId": next(iter(sandbox.businesses.values())).invoices[doc.external_id]["items"][0]["productId"],
                         "quantity": Decimal("1"), "unitPrice": Decimal("10.00"), "taxes": []}]}
    created = connector.client.mutate("invoiceCreate", operations.INVOICE_CREATE, fields, "invoice")
    assert (created["currency"]["code"], Decimal(str(created["exchangeRate"]))) == ("GBP", Decimal("1.2500"))
    with pytest.raises(PermanentError, match="exchangeRate"):
        connector.client.mutate("invoiceCreate", operations.INVOICE_CREATE,
                                {**fields, "invoiceNumber": "FX-2", "exchangeRate": Decimal("0")}, "invoice")
