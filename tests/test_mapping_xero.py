"""Issue #5's mapping choices on the Xero sandbox (parity with tests/test_mapping_qbo.py): closed periods
(lock dates) as adjustments, discounts, fleet terms, core charges, items per part number or per line kind,
tax-inclusive pricing, customer matching, refunds removed after posting — and every body the connector sent
for them validated against Xero's official OpenAPI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from connectors.base import DocumentState, PermanentError, UncertainOutcomeError
from connectors.testing import (MemoryContext, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment,
                                tax_inclusive_event)
from connectors import adjustments
from connectors.engine_state import DocKind
from connectors.xero import Sandbox
from daemon.canonical import Customer, Refund
from tests.connectors.test_xero import _operation_name, validate, xero_api  # noqa: F401 (fixture)


@pytest.fixture
def xero():
    sandbox = Sandbox(minute_limit=6000)
    with connectors_on(sandbox, "xero") as build:  # one credential store: rotations seen by all
        yield sandbox, build


def refund(refund_id, line_id, amount, tax, when=datetime(2026, 11, 22, 10, tzinfo=timezone.utc)):
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned unused", created_at=when)


def invoices(sandbox, prefix=None):
    return [i for i in sandbox.org().invoices.values() if prefix is None or i["InvoiceNumber"].startswith(prefix)]


def credit_notes(sandbox):
    return list(sandbox.org().credit_notes.values())


# --- closed periods -----------------------------------------------------------------------------------

def test_change_in_a_locked_period_posts_adjustments_dated_the_first_open_day(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(period=date(2026, 11, 30))
    # A part line added after the period was locked: Xero refuses the edit; the difference is an invoice.
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    # The adjustment is applied but its answer lost: the retry finds it by its number, never posts it twice.
    sandbox.faults.hang_s = 3.0  # longer than the client's 2 s timeout
    sandbox.faults.fault_at(1)
    ctx = MemoryContext("xero", v2, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v2, doc, ctx)
    assert ctx.checkpoints[-1].engine.intent.reference == "INV-001001-A1"
    doc = deliver(connector, entities, v2, ctx.checkpoints[-1], attempt=2)
    original = sandbox.org().invoices[doc.external_id]
    assert original["Total"] == v1.computed.total  # untouched
    (increase,) = invoices(sandbox, "INV-001001-A")
    assert increase["InvoiceNumber"] == "INV-001001-A1" and increase["Reference"] == "INV-001001"
    assert increase["DateString"] == "2026-12-01" and increase["Type"] == "ACCREC"
    assert increase["Total"] == v2.computed.total - v1.computed.total == Decimal("9.98")
    assert increase["TotalTax"] == Decimal("0.48")
    assert [(li["AccountCode"], li["TaxType"], li["LineAmount"]) for li in increase["LineItems"]] == [
        ("200", "TAX004", Decimal("9.50"))]
    (entry,) = doc.engine.adjustments
    assert (entry.kind, entry.external_id, entry.reference, entry.total) == (
        "increase", increase["InvoiceID"], "INV-001001-A1", Decimal("9.98"))
    assert doc.delivered_version == 2  # delivered, not retried forever
    assert len(invoices(sandbox, "INV-001001-A")) == 1 and not credit_notes(sandbox)
    # (Xero replayed that answer to the repeated Idempotency-Key; without it the look-up finds the adjustment.)
    assert [r.external_id for r in connector.find(DocKind.ADJUSTMENT, "INV-001001-A1")] == [increase["InvoiceID"]]

    # Labour cut and the part gone again: the difference goes the other way, as a credit note.
    v3 = next_version(v2, lines=list(v1.lines)[:-1])
    doc = deliver(connector, entities, v3, doc)
    (decrease,) = credit_notes(sandbox)
    assert decrease["CreditNoteNumber"] == "INV-001001-C2" and decrease["Type"] == "ACCRECCREDIT"
    assert decrease["Reference"] == "INV-001001" and decrease["DateString"] == "2026-12-01"
    assert decrease["Total"] == v2.computed.total - v3.computed.total
    # A void in the locked period: a credit note for everything Xero still holds.
    doc = deliver(connector, entities, next_version(v3, status="void"), doc)
    void_note = next(c for c in credit_notes(sandbox) if c["CreditNoteNumber"] == "INV-001001-C3")
    assert [r.external_id for r in connector.find(DocKind.ADJUSTMENT, "INV-001001-C3")] == [void_note["CreditNoteID"]]
    assert void_note["Total"] == v3.computed.total and doc.status == "voided"
    assert [a.kind for a in doc.engine.adjustments] == ["increase", "decrease", "decrease"]
    held = original["Total"] + increase["Total"] - sum(c["Total"] for c in credit_notes(sandbox))
    assert held == Decimal("0.00")
    original = sandbox.org().invoices[doc.external_id]
    assert original["Total"] == v1.computed.total  # the original's lines are never changed
    # The decrease credit notes stay on the contact (not allocated, as on every platform on the engine): the
    # contact owes nothing.
    owed = original["AmountDue"] + increase["AmountDue"] - sum(c["RemainingCredit"] for c in credit_notes(sandbox))
    assert owed == Decimal("0.00")


def test_locked_invoice_with_payments_is_not_stripped_before_the_adjustment(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(4050, payments=[payment(1, "100.00")])
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(end_of_year=date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines)[:-1])  # the shop fee removed
    doc = deliver(connector, entities, v2, doc)
    (note,) = credit_notes(sandbox)
    assert note["Total"] == v1.computed.total - v2.computed.total == Decimal("13.13")
    assert [(li["AccountCode"], li["LineAmount"], li["TaxAmount"]) for li in note["LineItems"]] == [
        ("260", Decimal("12.50"), Decimal("0.63"))]
    # The payment was never taken off (Xero would then have refused the edit anyway).
    assert not [p for p in sandbox.org().payments.values() if p["Status"] == "DELETED"]
    assert doc.payments["1"].amount == Decimal("100.00")


def test_new_invoice_in_a_locked_period_is_posted_whole_on_the_first_open_day(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    sandbox.set_lock_date(period=date(2026, 11, 25))
    v1 = invoice_event(4100, payments=[payment(1, "10.00")])  # issued 11-20, paid 11-20 (both locked)
    doc = deliver(connector, entities, v1)
    (invoice,) = invoices(sandbox)
    assert invoice["DateString"] == "2026-11-26" and invoice["InvoiceNumber"] == "INV-004100"
    assert invoice["Total"] == v1.computed.total
    (entry,) = doc.engine.adjustments
    assert entry.kind == "redated" and entry.posted_on == date(2026, 11, 26) and "2026-11-20" in entry.reason
    (paid,) = sandbox.org().payments.values()
    assert paid["_date"] == date(2026, 11, 26)
    # Later versions keep the open-period date (dated back, the edit would be refused).
    doc = deliver(connector, entities, next_version(v1, lines=list(v1.lines)[:4], payments=[payment(1, "10.00")]),
                  doc)
    assert len(invoices(sandbox)) == 1 and invoices(sandbox)[0]["DateString"] == "2026-11-26"
    assert invoices(sandbox)[0]["LineItems"].__len__() == 4 and not credit_notes(sandbox)
    assert doc.engine.posted_on == date(2026, 11, 26)
    # A create whose answer was lost is adopted on the retry, and keeps its open-period date.
    v9 = invoice_event(4109)
    sandbox.faults.hang_s = 3.0
    sandbox.faults.fault_at(1)
    ctx = MemoryContext("xero", v9, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v9, DocumentState(), ctx)
    lost = deliver(connector, entities, v9, ctx.checkpoints[-1], attempt=2)
    assert lost.engine.posted_on == date(2026, 11, 26) and len(invoices(sandbox, "INV-004109")) == 1
    lost = deliver(connector, entities, next_version(v9, lines=list(v9.lines)[:4]), lost)  # an edit, not an adjustment
    assert len(invoices(sandbox, "INV-004109")) == 1 and len(invoices(sandbox)[1]["LineItems"]) == 4


def test_batch_create_in_a_locked_period_falls_back_to_a_redated_single_create(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    deliver(connector, entities, invoice_event(4190))  # contact known
    sandbox.set_lock_date(period=date(2026, 11, 25))
    events = [invoice_event(4200 + n, issue_date=date(2026, 11, 20 + 4 * n)) for n in range(3)]  # 20, 24, 28
    results = connector.deliver_many([(e, DocumentState(), MemoryContext("xero", e, entities)) for e in events])
    assert all(isinstance(r, DocumentState) and r.external_id for r in results)
    dates = {i["InvoiceNumber"]: i["DateString"] for i in invoices(sandbox) if i["InvoiceNumber"] != "INV-004190"}
    assert dates == {"INV-004200": "2026-11-26", "INV-004201": "2026-11-26", "INV-004202": "2026-11-28"}
    assert [[a.kind for a in r.engine.adjustments] for r in results] == [["redated"], ["redated"], []]


def test_adjustment_arithmetic_is_platform_neutral():
    held = {"200|T": (Decimal("100.00"), Decimal("5.00"))}
    wanted = {"200|T": (Decimal("90.00"), Decimal("4.50")), "260|T": (Decimal("10.00"), Decimal("0.50"))}
    diff = adjustments.difference(held, wanted)
    assert diff == {"200|T": (Decimal("-10.00"), Decimal("-0.50")), "260|T": (Decimal("10.00"), Decimal("0.50"))}
    assert adjustments.direction(diff) == "increase"  # a reclassification of zero total
    assert adjustments.direction({"x": (Decimal("-1"), Decimal("0"))}) == "decrease"
    assert adjustments.first_open_day(date(2026, 1, 31), None, date(2025, 12, 31)) == date(2026, 2, 1)


def live_payments(sandbox):
    return [p for p in sandbox.org().payments.values() if p["Status"] != "DELETED"]


def validate_all(sandbox, xero_api):
    for r in sandbox.requests:
        validate(xero_api, r["method"], r["path"], r["query"], r["body"], tenant=r["headers"].get("xero-tenant-id"))


def test_payment_beyond_the_original_is_split_across_its_increase_adjustments(xero, xero_api):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(6000)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(period=date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = deliver(connector, entities, v2, doc)  # INV-006000-A1 for 9.98
    (increase,) = invoices(sandbox, "INV-006000-A")
    # The shop takes the whole v2 total in one payment: more than the original's amount due.
    v3 = next_version(v2, payments=[payment(1, str(v2.computed.total))])
    sandbox.faults.hang_s = 3.0
    sandbox.faults.fault_at(2)  # Xero refuses the whole payment; the split one is applied, its answer lost
    ctx = MemoryContext("xero", v3, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v3, doc, ctx)
    doc = deliver(connector, entities, v3, ctx.checkpoints[-1], attempt=2)  # both parts found by their reference
    parts = sorted(live_payments(sandbox), key=lambda p: p["Amount"])
    assert [(p["Reference"], p["Invoice"]["InvoiceID"], p["Amount"]) for p in parts] == [
        ("LW1", increase["InvoiceID"], Decimal("9.98")), ("LW1", doc.external_id, v1.computed.total)]
    original = sandbox.org().invoices[doc.external_id]
    assert original["Status"] == increase["Status"] == "PAID"
    assert doc.payments["1"].amount == v2.computed.total
    assert sorted(doc.payments["1"].external_id.split()) == sorted(p["PaymentID"] for p in parts)
    # Reversed in the shop: every part comes off.
    doc = deliver(connector, entities, next_version(v3, payments=[payment(1, str(v2.computed.total), status="reversed")]),
                  doc)
    assert not live_payments(sandbox) and not doc.payments
    assert original["AmountDue"] == v1.computed.total and increase["AmountDue"] == Decimal("9.98")
    validate_all(sandbox, xero_api)


def test_decrease_credit_note_stays_on_the_contact_and_a_later_payment_goes_on(xero, xero_api):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    returned = refund(9, 2, "100.00", "5.00", when=datetime(2026, 12, 2, 10, tzinfo=timezone.utc))
    v1 = invoice_event(6100)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(period=date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines)[:-1], refunds=[returned])  # the shop fee removed; a part returned
    doc = deliver(connector, entities, v2, doc)
    (decrease,) = [c for c in credit_notes(sandbox) if c["CreditNoteNumber"] == "INV-006100-C1"]
    original = sandbox.org().invoices[doc.external_id]
    assert decrease["Total"] == Decimal("13.13") and decrease["DateString"] == "2026-12-01"
    assert original["AmountDue"] == v1.computed.total - Decimal("105.00")  # the refund's credit is allocated
    # The customer pays the shop's whole total: the refund's allocation gives way, the payment goes on.
    v3 = next_version(v2, payments=[payment(1, str(v2.computed.total))])
    doc = deliver(connector, entities, v3, doc)
    (paid,) = live_payments(sandbox)
    assert paid["Amount"] == v2.computed.total and paid["Reference"] == "LW1"
    assert original["AmountDue"] == decrease["RemainingCredit"] == Decimal("13.13")  # nets to zero on the contact
    refund_note = doc.refunds["9"].external_id
    assert sandbox.org().credit_notes[refund_note]["RemainingCredit"] == Decimal("105.00")
    validate_all(sandbox, xero_api)


def test_refund_removed_in_a_locked_period_is_reversed_by_an_invoice(xero, xero_api):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(6200, refunds=[refund(9, 2, "289.95", "14.50")])  # credit note dated 11-22
    doc = deliver(connector, entities, v1)
    (note,) = credit_notes(sandbox)
    note["Allocations"][0]["Date"] = "/Date(1795824000000+0000)/"  # allocated 2026-11-22: locked below
    sandbox.set_lock_date(period=date(2026, 11, 30))
    v2 = next_version(v1, refunds=[])
    doc = deliver(connector, entities, v2, doc)
    assert doc.delivered_version == 2 and doc.refunds["9"].status == "voided" and not doc.engine.applications
    assert note["Status"] == "PAID" and note["Allocations"]  # Xero keeps the locked credit note as it was
    (reversal,) = invoices(sandbox, "INV-006200-R")
    assert reversal["InvoiceNumber"] == "INV-006200-R9" and reversal["Reference"] == "INV-006200"
    assert reversal["DateString"] == "2026-12-01" and reversal["Total"] == note["Total"] == Decimal("304.45")
    assert [(li["AccountCode"], li["TaxType"], li["LineAmount"], li["TaxAmount"]) for li in reversal["LineItems"]] == [
        ("200", "TAX004", Decimal("289.95"), Decimal("14.50"))]
    # Replayed: no second reversal.
    deliver(connector, entities, next_version(v2), doc)
    assert len(invoices(sandbox, "INV-006200-R")) == 1
    # The customer pays the whole invoice: split across the original and the reversal.
    v3 = next_version(v2, payments=[payment(1, str(v1.computed.total))])
    doc = deliver(connector, entities, v3, doc)
    assert sandbox.org().invoices[doc.external_id]["Status"] == reversal["Status"] == "PAID"
    assert sorted(p["Amount"] for p in live_payments(sandbox)) == [Decimal("304.45"), v1.computed.total - Decimal("304.45")]
    # A later locked change posts only its own difference (the reversal is no adjustment of the lines).
    v4 = next_version(v3, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = deliver(connector, entities, v4, doc)
    (later,) = invoices(sandbox, "INV-006200-A")
    assert later["InvoiceNumber"] == "INV-006200-A1" and later["Total"] == Decimal("9.98")
    validate_all(sandbox, xero_api)


def test_refund_whose_allocation_came_off_before_the_void_was_refused_credits_its_reversal(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(6300, refunds=[refund(9, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    (note,) = credit_notes(sandbox)
    note["Allocations"][0]["Date"] = "/Date(1796428800000+0000)/"  # allocated on 2026-12-05, after the lock
    sandbox.set_lock_date(period=date(2026, 11, 30))
    doc = deliver(connector, entities, next_version(v1, refunds=[]), doc)
    (reversal,) = invoices(sandbox, "INV-006300-R")
    original = sandbox.org().invoices[doc.external_id]
    # The credit note lost its allocation, then Xero refused the void: its credit pays the reversal, so the
    # customer owes exactly the original again and no credit floats on the contact.
    assert original["AmountDue"] == v1.computed.total and original["AmountCredited"] == Decimal("0.00")
    assert reversal["AmountDue"] == Decimal("0.00") and note["RemainingCredit"] == Decimal("0.00")
    assert note["Status"] == "PAID" and doc.refunds["9"].status == "voided"


# --- discounts, core charges, items -------------------------------------------------------------------

DISCOUNTED = [line(1, "labour", "Brake job", "2", "100.00"), line(2, "discount", "Loyalty discount", "1", "-20.00"),
              line(3, "core_charge", "Caliper core", "1", "40.00", taxes=()),
              line(4, "core_return", "Caliper core returned", "1", "-40.00", taxes=())]


@pytest.mark.parametrize("posting, account", [("line", "270"), ("discount_account", "260")])
def test_discount_as_a_negative_line_on_its_account(xero, posting, account):
    sandbox, build = xero
    connector = build(discount_posting=posting, discount_account="260",
                      income_accounts={"part": "200", "labour": "200", "discount": "270"})
    event = invoice_event(4800, lines=DISCOUNTED)
    deliver(connector, MemoryEntities(), event)
    (invoice,) = invoices(sandbox)
    discount = invoice["LineItems"][1]
    assert discount["AccountCode"] == account and discount["LineAmount"] == Decimal("-20.00")
    assert discount["TaxAmount"] == Decimal("-1.00")
    assert invoice["Total"] == event.computed.total == Decimal("189.00")


def test_discount_account_must_be_set_and_is_checked(xero):
    _, build = xero
    with pytest.raises(PermanentError, match="discount_account is not set"):
        deliver(build(discount_posting="discount_account"), MemoryEntities(), invoice_event(4801, lines=DISCOUNTED))
    assert build(discount_posting="discount_account").check_mapping() == [
        "discount_account: required with discount_posting 'discount_account'"]
    assert build(discount_posting="discount_account", discount_account="999").check_mapping() == [
        "discount_account: account '999' not found"]


def test_core_charge_and_core_return_post_to_the_core_account(xero):
    sandbox, build = xero
    connector = build(core_account="835", income_accounts={"part": "200", "labour": "200", "core_charge": "260"})
    deliver(connector, MemoryEntities(), invoice_event(4802, lines=DISCOUNTED))
    (invoice,) = invoices(sandbox)
    core = [(li["AccountCode"], li["LineAmount"]) for li in invoice["LineItems"][2:]]
    assert core == [("835", Decimal("40.00")), ("835", Decimal("-40.00"))]  # the return credits it


def test_items_per_part_number_created_once_and_on_the_lines(xero):
    sandbox, build = xero
    connector, entities = build(item_mode="per_part_number"), MemoryEntities()
    long_part = "BOSCH-0986-049-190-REMAN-EXCHANGE"  # longer than Xero's 30-character item code
    lines = [line(1, "part", "Alternator", "1", "289.95", part_number="ALT-140R"),
             line(2, "part", "Belt", "1", "29.95", part_number="BLT-6PK"),
             line(3, "part", "Starter", "1", "199.00", part_number=long_part), line(4, "labour", "Fit", "1", "90.00")]
    events = [invoice_event(4900 + n, lines=lines) for n in range(4)]
    with ThreadPoolExecutor(4) as pool:  # concurrent first invoices of new parts: each item created once
        list(pool.map(lambda e: deliver(connector, entities, e), events))
    items = sandbox.org().items
    assert len(items) == 3 and "ALT-140R" in items and "BLT-6PK" in items
    (long_code,) = [c for c in items if c.startswith("BOSCH")]
    assert len(long_code) <= 30 and items[long_code]["Name"] == long_part[:50]
    assert items["ALT-140R"]["SalesDetails"] == {"AccountCode": "200", "TaxType": "TAX004"}
    assert len([r for r in sandbox.requests if r["method"] == "PUT" and r["path"] == "/Items"]) == 3
    for invoice in invoices(sandbox):
        assert [li.get("ItemCode") for li in invoice["LineItems"]] == ["ALT-140R", "BLT-6PK", long_code, None]


def test_items_per_line_kind_use_the_configured_codes(xero):
    sandbox, build = xero
    connector = build(item_mode="per_line_kind", items={"part": "PARTS", "labour": "LABOUR"})
    connector.client.ensure_tenant()
    connector.client.write("PUT", "/Items", {"Items": [
        {"Code": "PARTS", "Name": "Parts", "SalesDetails": {"AccountCode": "200"}},
        {"Code": "LABOUR", "Name": "Labour", "SalesDetails": {"AccountCode": "200"}}]}, key="seed-items")
    lines = [line(1, "part", "Alternator", "1", "289.95", part_number="ALT-140R"), line(2, "labour", "Fit", "1", "90")]
    deliver(connector, MemoryEntities(), invoice_event(4950, lines=lines))
    (invoice,) = invoices(sandbox)
    assert [li["ItemCode"] for li in invoice["LineItems"]] == ["PARTS", "LABOUR"]
    assert set(sandbox.org().items) == {"PARTS", "LABOUR"}  # none per part number


# --- fleet customers, customer matching ---------------------------------------------------------------

FLEET = Customer(id=300, name="Harbor Freight Lines", email="ap@harbor.example", phone="555-0300", is_fleet=True,
                 payment_terms_days=30)


def test_fleet_customer_gets_its_terms_and_due_date(xero):
    sandbox, build = xero
    connector = build()
    doc = deliver(connector, MemoryEntities(), invoice_event(4500, customer=FLEET, due_date=date(2026, 11, 21)))
    (contact,) = sandbox.org().contacts.values()
    assert contact["PaymentTerms"] == {"Sales": {"Day": 30, "Type": "DAYSAFTERBILLDATE"}}
    (invoice,) = invoices(sandbox)
    assert invoice["DueDate"] == "2026-12-20" and doc.customer_id == contact["ContactID"]  # 11-20 + 30 days
    # A walk-in customer keeps the shop's due date and gets no terms.
    deliver(connector, MemoryEntities(), invoice_event(4501))
    walk_in = next(c for c in sandbox.org().contacts.values() if c["ContactNumber"] == "77")
    assert "PaymentTerms" not in walk_in


@pytest.mark.parametrize("keys, field", [(["email"], "email"), (["phone"], "phone"), (["name"], "name"),
                                         (["phone", "email"], "email")])
def test_customer_matched_by_configured_key_before_creating(xero, keys, field):
    sandbox, build = xero
    connector = build(customer_match=keys)
    connector.client.ensure_tenant()
    shop = Customer(id=401, name="Lee Ortega", email="lee@example.com", phone="(555) 010-4401")
    # The bookkeeper already has this customer in Xero, entered by hand (no ContactNumber).
    by_hand = {"email": {"Name": "L. Ortega", "EmailAddress": "lee@example.com"},
               "phone": {"Name": "Lee O.", "Phones": [{"PhoneType": "MOBILE", "PhoneNumber": "555-010-4401"}]},
               "name": {"Name": "Lee Ortega (#401)"}}[field]
    for n in range(3):  # other contacts first, so the phone search has pages to look through
        connector.client.write("PUT", "/Contacts", {"Contacts": [{"Name": f"Other {n}", "Phones": [
            {"PhoneType": "DEFAULT", "PhoneNumber": f"555-999-000{n}"}]}]}, key=f"other-{n}")
    existing = connector.client.write("PUT", "/Contacts", {"Contacts": [by_hand]}, key=f"hand-{field}")["Contacts"][0]
    doc = deliver(connector, MemoryEntities(), invoice_event(4600, customer=shop))
    assert doc.customer_id == existing["ContactID"]
    assert len(sandbox.org().contacts) == 4


def test_customer_not_matched_by_a_key_left_out_of_the_configuration(xero):
    sandbox, build = xero
    connector = build(customer_match=["name"])
    connector.client.ensure_tenant()
    connector.client.write("PUT", "/Contacts", {"Contacts": [{"Name": "L. Ortega", "EmailAddress": "lee@example.com"}]},
                           key="hand")
    deliver(connector, MemoryEntities(), invoice_event(4650, customer=Customer(id=402, name="Lee Ortega",
                                                                               email="lee@example.com")))
    assert len(sandbox.org().contacts) == 2


# --- tax-inclusive pricing ----------------------------------------------------------------------------

def test_tax_inclusive_invoice_posts_with_the_shops_totals(xero):
    sandbox, build = xero
    connector = build()
    # Inclusive prices: 105.00 holds 5.00 GST; 22.40 holds 1.07 GST (per-line rounding of 21.33 x 5 %);
    # 0.10 holds 0.01 GST + 0.01 PST as the shop rounds each component (Xero alone: 0.10 x 12/112 = 0.01).
    event = tax_inclusive_event(4300)
    doc = deliver(connector, MemoryEntities(), event)
    (invoice,) = invoices(sandbox)
    assert invoice["LineAmountTypes"] == "Inclusive"
    assert (invoice["Total"], invoice["TotalTax"], invoice["SubTotal"]) == (Decimal("127.50"), Decimal("6.09"),
                                                                             Decimal("121.41"))
    assert [li["LineAmount"] for li in invoice["LineItems"]] == [Decimal("105.00"), Decimal("22.40"), Decimal("0.10")]
    assert "tax_difference" not in doc.extra


# --- refunds ------------------------------------------------------------------------------------------

def test_refund_removed_in_the_shop_voids_its_credit_note(xero):
    sandbox, build = xero
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(5200, refunds=[refund(9, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    (note,) = credit_notes(sandbox)
    assert note["Allocations"] and doc.refunds["9"].status == "applied"
    v2 = next_version(v1, refunds=[])
    doc = deliver(connector, entities, v2, doc)
    assert note["Status"] == "VOIDED" and not note["Allocations"] and doc.refunds["9"].status == "voided"
    assert sandbox.org().invoices[doc.external_id]["AmountDue"] == v1.computed.total
    deliver(connector, entities, next_version(v2), doc)  # replayed: nothing more
    assert len(credit_notes(sandbox)) == 1
    # Entered again in the shop: a new credit note (the voided one keeps its number in the trail).
    doc = deliver(connector, entities, next_version(v2, refunds=[refund(9, 2, "289.95", "14.50")]), doc)
    assert len(credit_notes(sandbox)) == 2 and doc.refunds["9"].status == "applied"


# --- every body of this file's workflows against Xero's official OpenAPI ------------------------------------

def test_issue5_request_bodies_are_valid_against_xero_openapi(xero, xero_api):
    sandbox, build = xero
    connector = build(item_mode="per_part_number", discount_posting="discount_account", discount_account="260",
                      customer_match=["phone", "email", "name"])
    entities = MemoryEntities()
    fleet_lines = [line(1, "part", "Alternator", "1", "289.95", part_number="ALT-140R"), *DISCOUNTED]
    fleet_lines = [ln.model_copy(update={"id": n + 1, "position": n + 1}) for n, ln in enumerate(fleet_lines)]
    v1 = invoice_event(9500, customer=FLEET, lines=fleet_lines, refunds=[refund(5, 1, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    doc = deliver(connector, entities, next_version(v1, refunds=[]), doc)  # credit note voided
    sandbox.set_lock_date(period=date(2026, 11, 30))
    v3 = next_version(v1, refunds=[], lines=fleet_lines + [line(9, "part", "Terminal", "2", "4.75")])
    doc = deliver(connector, entities, v3, doc)  # increase: an invoice adjustment
    doc = deliver(connector, entities, next_version(v3, lines=fleet_lines), doc)  # decrease: a credit note
    deliver(connector, entities, next_version(v3, status="void"), doc)  # void: a credit note for what is held
    redated = invoice_event(9501, customer=Customer(id=9, name="Walk-in", phone="555-0109"),
                            payments=[payment(1, "5.00")])
    deliver(connector, entities, redated)  # new invoice and payment dated in the locked period
    connector.check_mapping()
    seen = set()
    for r in sandbox.requests:
        validate(xero_api, r["method"], r["path"], r["query"], r["body"], tenant=r["headers"].get("xero-tenant-id"))
        seen.add((r["method"], _operation_name(r["path"])))
    assert {("PUT", "/Items"), ("GET", "/Items"), ("GET", "/Organisation"), ("PUT", "/Invoices"),
            ("PUT", "/CreditNotes"), ("POST", "/CreditNotes/{id}"), ("DELETE", "/CreditNotes/{id}/Allocations/{id}"),
            ("PUT", "/Payments"), ("PUT", "/Contacts")} <= seen
    bodies = [r["body"] for r in sandbox.requests if r["method"] == "PUT" and r["path"] == "/Contacts"]
    assert any(c.get("PaymentTerms") for b in bodies for c in b["Contacts"])
    numbers = {c["CreditNoteNumber"] for c in credit_notes(sandbox)}
    assert {"INV-009500-C2", "INV-009500-C3"} <= numbers and invoices(sandbox, "INV-009500-A1")
