"""Issue #5's mapping choices on the QuickBooks Online sandbox: refunds as credit memos, closed periods,
automatic sales tax differences, tax-inclusive pricing, fleet terms, discounts, core charges, items per
part number or per line kind, customer matching, the online mapping check and the preview."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from connectors.base import DocumentState, PermanentError
from connectors.quickbooks_online import CONNECTOR, Sandbox
from connectors.testing import GST, PST, MemoryEntities, MemoryRuntime, deliver, invoice_event, line, \
    next_version, payment
from daemon.canonical import Customer, Refund
from daemon.config import TargetConfig


def make(sandbox, server, runtime, **mapping):
    data = sandbox.target_config("qbo", server.url) | {"request_timeout_s": 2}
    data["mapping"] = {**data["mapping"], **mapping}
    return CONNECTOR(TargetConfig.model_validate(data), runtime)


@pytest.fixture
def qbo():
    sandbox = Sandbox()
    server = sandbox.serve()
    runtime = MemoryRuntime({"qbo": sandbox.seed_credentials()})  # one store: rotations seen by all
    connectors = []

    def build(**mapping):
        connectors.append(make(sandbox, server, runtime, **mapping))
        return connectors[-1]

    yield sandbox, build
    for c in connectors:
        c.close()
    server.stop()


def refund(refund_id, line_id, amount, tax, when=datetime(2026, 11, 22, 10, tzinfo=timezone.utc)):
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned unused", created_at=when)


def writes(sandbox, path=None):
    return [(p, b) for m, p, b in sandbox.requests if m == "POST" and (path is None or p == path)]


# --- refunds ------------------------------------------------------------------------------------------

def test_refund_posts_one_credit_memo_applied_through_a_zero_payment(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(payments=[payment(1, "200.00")])
    doc = deliver(connector, entities, v1)
    # The alternator (line 2, 289.95 + 5 % GST 14.50) comes back unused.
    v2 = next_version(v1, refunds=[refund(9, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v2, doc)
    (memo,) = sandbox.entities("CreditMemo")
    assert memo["DocNumber"] == "LWR9" and memo["TotalAmt"] == Decimal("304.45")
    assert memo["TxnTaxDetail"]["TotalTax"] == Decimal("14.50") and memo["CustomerRef"]["value"] == doc.customer_id
    assert "INV-001001" in memo["PrivateNote"]
    # Applied to THIS invoice by a zero-total payment linking both documents.
    (application,) = [p for p in sandbox.entities("Payment") if p["TotalAmt"] == Decimal("0")]
    links = {lt["TxnType"]: lt["TxnId"] for ln in application["Line"] for lt in ln["LinkedTxn"]}
    assert links == {"Invoice": doc.external_id, "CreditMemo": memo["Id"]}
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["Balance"] == Decimal("677.58") - Decimal("200.00") - Decimal("304.45")
    # The booked invoice is unchanged and counts only money received.
    (booked,) = sandbox.booked_invoices()
    assert booked.total == v1.computed.total and booked.payments_applied == Decimal("200.00")
    assert booked.payment_count == 1
    assert doc.refunds["9"].external_id == memo["Id"] and doc.refunds["9"].status == "applied"
    # Delivered again (a retry of the same version, or the next one): no second credit memo.
    deliver(connector, entities, v2, DocumentState(**{**doc.model_dump(), "refunds": {}}), attempt=2)
    deliver(connector, entities, next_version(v2), doc)
    assert len(sandbox.entities("CreditMemo")) == 1


def test_credit_application_gives_way_to_the_customers_payments_and_to_a_void(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(refunds=[refund(3, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    assert doc.engine.applications["3"].amount == Decimal("304.45")
    # The customer pays all but 100.00: only 100.00 of the credit can stay applied.
    v2 = next_version(v1, payments=[payment(1, "577.58")])
    doc = deliver(connector, entities, v2, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("577.58")
    assert doc.engine.applications["3"].amount == Decimal("100.00")
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["Balance"] == Decimal("0.00")
    # Void: payments and the credit application are removed, the invoice voided, the credit memo kept.
    doc = deliver(connector, entities, next_version(v2, status="void", payments=[]), doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.voided and doc.status == "voided" and not any(k.startswith("credit_applied") for k in doc.extra)
    assert len(sandbox.entities("CreditMemo")) == 1


# --- closed periods -----------------------------------------------------------------------------------

def test_change_in_a_closed_period_posts_an_adjustment_in_the_first_open_period(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    sandbox.set_book_close_date(date(2026, 11, 30))
    # A line added after the books were closed: QuickBooks refuses the update with its real fault.
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = deliver(connector, entities, v2, doc)
    (original,) = [i for i in sandbox.entities("Invoice") if i["DocNumber"] == "INV-001001"]
    assert original["TotalAmt"] == v1.computed.total  # untouched
    (adjustment,) = [i for i in sandbox.entities("Invoice") if i["DocNumber"] != "INV-001001"]
    assert adjustment["TxnDate"] == "2026-12-01" and adjustment["DocNumber"] == "A1-INV-001001"
    assert adjustment["TotalAmt"] == v2.computed.total - v1.computed.total == Decimal("9.98")
    assert adjustment["TxnTaxDetail"]["TotalTax"] == Decimal("0.48")
    assert "INV-001001" in adjustment["PrivateNote"] and original["Id"] in adjustment["PrivateNote"]
    (entry,) = doc.engine.adjustments
    assert entry.kind == "increase" and entry.external_id == adjustment["Id"] and "books were closed" in entry.reason
    assert doc.delivered_version == 2  # delivered, not retried forever
    # A line removed again: the difference now goes the other way, as a credit memo.
    v3 = next_version(v2, lines=list(v1.lines)[:-1])
    doc = deliver(connector, entities, v3, doc)
    (memo,) = sandbox.entities("CreditMemo")
    assert memo["DocNumber"] == "C2-INV-001001" and memo["TxnDate"] == "2026-12-01"
    assert memo["TotalAmt"] == v2.computed.total - v3.computed.total
    # A void in the closed period: a credit memo for everything QuickBooks still holds.
    doc = deliver(connector, entities, next_version(v3, status="void"), doc)
    memos = sandbox.entities("CreditMemo")
    assert len(memos) == 2 and memos[1]["TotalAmt"] == v3.computed.total and doc.status == "voided"
    assert [a.kind for a in doc.engine.adjustments] == ["increase", "decrease", "decrease"]
    # What QuickBooks holds for the invoice now nets to zero.
    held = original["TotalAmt"] + adjustment["TotalAmt"] - sum(m["TotalAmt"] for m in memos)
    assert held == Decimal("0.00")


def test_closed_period_fault_is_classified_and_a_new_invoice_is_redated(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    sandbox.set_book_close_date(date(2026, 11, 30))
    with pytest.raises(PermanentError) as raised:
        connector.client.write("Invoice", {"CustomerRef": {"value": "1"}, "TxnDate": "2026-11-01", "Line": []},
                               request_id="x1")
    assert type(raised.value).__name__ == "ClosedPeriodError" and "Account Period Closed" in raised.value.reason
    doc = deliver(connector, entities, invoice_event(4100))
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["TxnDate"] == "2026-12-01" and invoice["DocNumber"] == "INV-004100"
    assert doc.engine.adjustments[0].kind == "redated" and doc.engine.posted_on == date(2026, 12, 1)
    # Later versions keep the open-period date (an update dated back would be refused again).
    doc = deliver(connector, entities, next_version(invoice_event(4100), payments=[payment(1, "10.00")]), doc)
    assert len(sandbox.entities("Invoice")) == 1 and doc.payments["1"].amount == Decimal("10.00")


# --- tax ----------------------------------------------------------------------------------------------

def test_automatic_sales_tax_one_cent_rounding_difference_is_detected_and_reported(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    sandbox.set_automatic_sales_tax(True)
    # Three lines of 0.30 at 5 %: the shop rounds per line (0.015 -> 0.02, three times = 0.06);
    # QuickBooks rounds once on 0.90 x 5 % = 0.045 -> 0.05. One cent apart.
    lines = [line(n, "fee", f"Fee {n}", "1", "0.30") for n in (1, 2, 3)]
    event = invoice_event(4200, lines=lines)
    assert event.computed.tax_total == Decimal("0.06")
    doc = deliver(connector, entities, event)
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["TxnTaxDetail"]["TotalTax"] == Decimal("0.05")
    assert doc.engine.tax_difference == Decimal("-0.01")
    # The shop's numbers were sent unchanged.
    (_, body), = [(p, b) for p, b in writes(sandbox, "/invoice")]
    assert body["TxnTaxDetail"]["TotalTax"] == Decimal("0.06")
    # Without automatic sales tax the shop's amounts stand and no difference is recorded.
    sandbox.set_automatic_sales_tax(False)
    assert deliver(connector, entities, invoice_event(4201, lines=lines)).engine.tax_difference is None


def test_tax_inclusive_invoice_posts_with_the_shops_totals(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    # Inclusive prices: 105.00 holds 5.00 GST; 22.40 holds 1.07 GST (per-line rounding of 21.33 x 5 %).
    lines = [line(1, "labour", "Diagnosis", "1", "105.00"), line(2, "part", "Relay", "2", "11.20")]
    lines = [ln.model_copy(update={"taxes": (ln.taxes[0].model_copy(update={"amount": amt}),)})
             for ln, amt in zip(lines, (Decimal("5.00"), Decimal("1.07")))]
    event = invoice_event(4300, lines=lines, tax_inclusive=True)
    event = event.model_copy(update={"computed": event.computed.model_copy(update={
        "subtotal": Decimal("121.33"), "tax_total": Decimal("6.07"), "total": Decimal("127.40")})})
    deliver(connector, entities, event)
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["GlobalTaxCalculation"] == "TaxInclusive"
    assert invoice["TotalAmt"] == Decimal("127.40") and invoice["TxnTaxDetail"]["TotalTax"] == Decimal("6.07")
    assert [ln["SalesItemLineDetail"]["TaxInclusiveAmt"] for ln in invoice["Line"]] == [Decimal("105.00"),
                                                                                        Decimal("22.40")]
    assert [ln["Amount"] for ln in invoice["Line"]] == [Decimal("100.00"), Decimal("21.33")]


def test_two_tax_components_post_as_two_tax_lines_on_mapped_rates(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    event = invoice_event(4400, lines=[line(1, "part", "Starter", "1", "200.00", taxes=(GST, PST))])
    deliver(connector, entities, event)
    (invoice,) = sandbox.entities("Invoice")
    tax_lines = invoice["TxnTaxDetail"]["TaxLine"]
    assert [(t["TaxLineDetail"]["TaxRateRef"]["value"], t["Amount"]) for t in tax_lines] == [
        ("11", Decimal("10.00")), ("12", Decimal("14.00"))]
    assert invoice["TotalAmt"] == Decimal("224.00")


# --- customers, fleet terms ---------------------------------------------------------------------------

FLEET = Customer(id=300, name="Harbor Freight Lines", email="ap@harbor.example", phone="555-0300", is_fleet=True,
                 payment_terms_days=30)


def test_fleet_customer_gets_its_terms_and_due_date(qbo):
    sandbox, build = qbo
    connector, entities = build(), MemoryEntities()
    doc = deliver(connector, entities, invoice_event(4500, customer=FLEET, due_date=date(2026, 11, 21)))
    (customer,) = sandbox.entities("Customer")
    assert customer["SalesTermRef"] == {"value": "3"}
    (invoice,) = sandbox.entities("Invoice")
    assert invoice["SalesTermRef"] == {"value": "3"} and invoice["DueDate"] == "2026-12-20"  # issue 11-20 + 30
    assert doc.customer_id == customer["Id"]


@pytest.mark.parametrize("keys, field", [(["email"], "email"), (["phone"], "phone"), (["name"], "name")])
def test_customer_matched_by_configured_key_before_creating(qbo, keys, field):
    sandbox, build = qbo
    connector = build(customer_match=keys)
    shop = Customer(id=401, name="Lee Ortega", email="lee@example.com", phone="(555) 010-4401")
    # The bookkeeper already has this customer in QuickBooks, entered by hand.
    by_hand = {"email": {"DisplayName": "L. Ortega", "PrimaryEmailAddr": {"Address": "lee@example.com"}},
               "phone": {"DisplayName": "Lee O.", "PrimaryPhone": {"FreeFormNumber": "555-010-4401"}},
               "name": {"DisplayName": "Lee Ortega (#401)"}}[field]
    existing = connector.client.write("Customer", by_hand, request_id=f"hand-{field}")
    doc = deliver(connector, MemoryEntities(), invoice_event(4600, customer=shop))
    assert doc.customer_id == existing["Id"]
    assert len(sandbox.entities("Customer")) == 1


def test_concurrent_first_invoices_of_a_new_fleet_customer_create_it_once(qbo):
    sandbox, build = qbo
    connector, entities = build(customer_match=["email", "phone", "name"]), MemoryEntities()
    events = [invoice_event(4700 + n, customer=FLEET) for n in range(5)]
    with ThreadPoolExecutor(5) as pool:
        docs = list(pool.map(lambda e: deliver(connector, entities, e), events))
    assert len({d.customer_id for d in docs}) == 1 and len(sandbox.entities("Customer")) == 1


# --- discounts, core charges, items -------------------------------------------------------------------

DISCOUNTED = [line(1, "labour", "Brake job", "2", "100.00"), line(2, "discount", "Loyalty discount", "1", "-20.00"),
              line(3, "core_charge", "Caliper core", "1", "40.00", taxes=()),
              line(4, "core_return", "Caliper core returned", "1", "-40.00", taxes=())]


def test_discount_as_a_negative_item_line(qbo):
    sandbox, build = qbo
    connector = build(discount_posting="line")
    event = invoice_event(4800, lines=DISCOUNTED)
    deliver(connector, MemoryEntities(), event)
    (invoice,) = sandbox.entities("Invoice")
    discount = invoice["Line"][1]
    assert discount["DetailType"] == "SalesItemLineDetail" and discount["Amount"] == Decimal("-20.00")
    assert invoice["TotalAmt"] == event.computed.total == Decimal("189.00")


def test_discount_on_the_discount_account(qbo):
    sandbox, build = qbo
    connector = build(discount_posting="discount_account", discount_account="86")
    event = invoice_event(4801, lines=DISCOUNTED)
    deliver(connector, MemoryEntities(), event)
    (invoice,) = sandbox.entities("Invoice")
    discount = invoice["Line"][1]
    assert discount["DetailType"] == "DiscountLineDetail" and discount["Amount"] == Decimal("20.00")
    assert discount["DiscountLineDetail"]["DiscountAccountRef"] == {"value": "86"}
    assert invoice["TotalAmt"] == event.computed.total
    assert not any(i["Name"] == "Discount" for i in sandbox.entities("Item"))
    (booked,) = sandbox.booked_invoices()
    assert booked.line_count == 4


def test_core_charge_and_core_return_post_to_the_core_account(qbo):
    sandbox, build = qbo
    connector = build(core_account="90")
    deliver(connector, MemoryEntities(), invoice_event(4802, lines=DISCOUNTED))
    items = {i["Name"]: i for i in sandbox.entities("Item")}
    assert items["Core charge"]["IncomeAccountRef"] == {"value": "90"}
    assert items["Core return"]["IncomeAccountRef"] == {"value": "90"}
    assert items["Labour"]["IncomeAccountRef"] == {"value": "79"}


def test_items_per_part_number_or_per_line_kind(qbo):
    sandbox, build = qbo
    lines = [line(1, "part", "Alternator", "1", "289.95", part_number="ALT-140R"),
             line(2, "part", "Belt", "1", "29.95", part_number="BLT-6PK"), line(3, "labour", "Fit", "1", "90.00")]
    build(item_mode="per_part_number")
    deliver(build(item_mode="per_part_number"), MemoryEntities(), invoice_event(4900, lines=lines))
    assert sorted(i["Name"] for i in sandbox.entities("Item")) == ["ALT-140R", "BLT-6PK", "Labour"]
    deliver(build(item_mode="per_line_kind"), MemoryEntities(), invoice_event(4901, lines=lines))
    assert sorted(i["Name"] for i in sandbox.entities("Item")) == ["ALT-140R", "BLT-6PK", "Labour", "Parts"]
    (second,) = [i for i in sandbox.entities("Invoice") if i["DocNumber"] == "INV-004901"]
    parts = {i["Id"] for i in sandbox.entities("Item") if i["Name"] == "Parts"}
    assert {ln["SalesItemLineDetail"]["ItemRef"]["value"] for ln in second["Line"][:2]} == parts


def test_location_tracking_as_class_or_department(qbo):
    sandbox, build = qbo
    deliver(build(), MemoryEntities(), invoice_event(5000))
    deliver(build(location_tracking={"MAIN": "department:2"}), MemoryEntities(), invoice_event(5001))
    by_number = {i["DocNumber"]: i for i in sandbox.entities("Invoice")}
    assert {ln["SalesItemLineDetail"]["ClassRef"]["value"] for ln in by_number["INV-005000"]["Line"]} == \
        {"5000000000000001"}
    assert by_number["INV-005001"]["DepartmentRef"] == {"value": "2"}


# --- check_mapping and preview ------------------------------------------------------------------------

def test_check_mapping_resolves_everything_and_names_what_is_missing(qbo):
    sandbox, build = qbo
    assert build().check_mapping() == []
    problems = build(income_accounts={"labour": "999", "part": "1"}, tax_codes={"GST": "11", "PST": "77"},
                     payment_terms={45: "9"}, location_tracking={"MAIN": "class:42"}).check_mapping()
    assert "income_accounts.labour: account '999' not found" in problems
    assert "tax_codes.PST: tax rate/code '77' not found" in problems
    assert "payment_terms.45: term '9' not found" in problems
    assert "location_tracking.MAIN: class '42' not found" in problems
    assert len(problems) == 4
    assert not writes(sandbox)


def test_preview_sends_nothing_and_shows_what_deliver_would(qbo):
    sandbox, build = qbo
    connector = build()
    event = invoice_event(5100, payments=[payment(1, "50.00")], refunds=[refund(4, 2, "289.95", "14.50")])
    planned = connector.preview(event, DocumentState())
    assert not writes(sandbox)
    paths = [p["path"].rsplit("/", 1)[1] for p in planned]
    # The credit memo's application (a zero Payment) is shown too: deliver sends it (the hand-written
    # preview before the engine left it out).
    assert paths == ["customer", "item", "item", "item", "item", "invoice", "payment", "creditmemo", "payment"]
    invoice = planned[5]["body"]
    assert invoice["CustomerRef"] == {"value": "<new customer>"} and invoice["DocNumber"] == "INV-005100"
    assert isinstance(invoice["TxnTaxDetail"]["TotalTax"], Decimal)
    # Once delivered, the preview of the same version is empty; of an edit, one sparse update.
    doc = deliver(connector, MemoryEntities(), event)
    assert connector.preview(event, doc) == []
    edit = next_version(event, lines=list(event.lines)[:3])
    (update,) = connector.preview(edit, doc)
    assert update["body"]["Id"] == doc.external_id and update["body"]["sparse"] is True
