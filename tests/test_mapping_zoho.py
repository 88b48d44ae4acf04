"""Issue #5's mapping choices on the Zoho Books sandbox (parity with tests/test_mapping_qbo.py and
tests/test_mapping_xero.py): closed periods (Zoho's transaction lock date) as adjustments, items per part
number or per line kind, tax-inclusive pricing exact to the cent, discount posting modes, core charges and
returns — and every body the connector sent for them validated against the documented request schemas."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connectors.base import UncertainOutcomeError
from connectors.testing import GST, PST, MemoryContext, MemoryEntities, connectors_on, deliver, invoice_event, line, \
    next_version
from connectors.zoho_books import Sandbox, schemas

PART, SERVICES, CORE, DISCOUNTS = "4600000000001", "4600000000002", "4600000000003", "4600000000004"
GST_ID, GST_PST_ID = "4600000000103", "4600000000112"


@pytest.fixture
def zoho():
    sandbox = Sandbox(api_per_minute=3000)
    with connectors_on(sandbox, "zoho", requests_per_minute=3000) as build:
        yield sandbox, build
    # every body the connector sent in the test is valid against the documented request schemas
    for method, path, body in sandbox.requests:
        assert schemas.schema_errors(method, path, body) == [], f"{method} {path}"


def invoices(sandbox, prefix=None):
    return [i for i in sandbox.org().invoices.values() if prefix is None or i["invoice_number"].startswith(prefix)]


def credit_notes(sandbox):
    return list(sandbox.org().creditnotes.values())


# --- closed periods -----------------------------------------------------------------------------------

def test_change_in_a_locked_period_posts_adjustments_dated_the_first_open_day(zoho):
    sandbox, build = zoho
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(date(2026, 12, 1))  # everything dated before 1 December is locked
    # A part line added after the lock: Zoho refuses the edit; the difference posts as an invoice.
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = deliver(connector, entities, v2, doc)
    assert sandbox.org().invoices[doc.external_id]["total"] == v1.computed.total  # untouched
    (increase,) = invoices(sandbox, "INV-001001-A")
    assert increase["invoice_number"] == "INV-001001-A1" and increase["reference_number"] == "INV-001001"
    assert increase["date"] == "2026-12-01" and increase["status"] == "sent"
    assert increase["total"] == v2.computed.total - v1.computed.total == Decimal("9.98")
    assert [(li["account_id"], li["tax_id"], li["item_total"]) for li in increase["line_items"]] == [
        (PART, GST_ID, Decimal("9.50"))]
    (entry,) = doc.engine.adjustments
    assert (entry.kind, entry.total, entry.reference) == ("increase", Decimal("9.98"), "INV-001001-A1")
    assert doc.delivered_version == 2

    # The same version again (a redelivery): nothing new is posted.
    doc = deliver(connector, entities, v2, doc, attempt=2)
    assert len(invoices(sandbox, "INV-001001-A")) == 1 and not credit_notes(sandbox)

    # Then two labour lines removed: the decrease is a credit note, computed from original + adjustment.
    v3 = next_version(v2, lines=[ln for ln in v2.lines if ln.id not in (1, 4)])
    doc = deliver(connector, entities, v3, doc)
    (credit,) = credit_notes(sandbox)
    assert credit["reference_number"] == "INV-001001-C2" and credit["date"] == "2026-12-01"
    assert credit["total"] == v2.computed.total - v3.computed.total == Decimal("315.00")
    held = v1.computed.total + increase["total"] - credit["total"]
    assert held == v3.computed.total
    assert [e.kind for e in doc.engine.adjustments] == ["increase", "decrease"]


def test_an_adjustment_posted_by_an_interrupted_attempt_is_found_not_posted_twice(zoho):
    sandbox, build = zoho
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(1101)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(date(2026, 12, 1))
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "fee", "Disposal", "1", "8.00")])
    # Writes: the refused update, the adjustment (applied, its answer lost), its mark as sent.
    sandbox.faults.hang_s = 2.5
    sandbox.faults.fault_at(2)
    ctx = MemoryContext(connector.target.name, v2, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(v2, doc, ctx)
    held = ctx.checkpoints[-1]  # what the ledger holds: the adjustment's intent, open
    assert held.engine.intent.reference == "INV-001101-A1" and not held.engine.adjustments
    again = deliver(connector, entities, v2, held, attempt=2)
    assert len(invoices(sandbox, "INV-001101-A")) == 1
    (entry,) = again.engine.adjustments
    assert entry.reference == "INV-001101-A1" and invoices(sandbox, "INV-001101-A")[0]["status"] == "sent"


def test_void_in_a_locked_period_is_a_credit_note_for_the_full_amount(zoho):
    sandbox, build = zoho
    connector, entities = build(), MemoryEntities()
    v1 = invoice_event(1201)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(date(2026, 12, 1))
    doc = deliver(connector, entities, next_version(v1, status="void"), doc)
    assert doc.status == "voided"
    assert sandbox.org().invoices[doc.external_id]["status"] != "void"  # Zoho refused the void
    (credit,) = credit_notes(sandbox)
    assert credit["total"] == v1.computed.total and credit["date"] == "2026-12-01"
    assert credit["reference_number"] == "INV-001201-C1"
    # redelivered: nothing more
    deliver(connector, entities, next_version(v1, status="void"), doc, attempt=2)
    assert len(credit_notes(sandbox)) == 1


def test_new_invoice_dated_in_a_locked_period_posts_whole_on_the_first_open_day(zoho):
    sandbox, build = zoho
    connector, entities = build(), MemoryEntities()
    sandbox.set_lock_date(date(2026, 12, 1))
    v1 = invoice_event(1301)
    doc = deliver(connector, entities, v1)
    (invoice,) = invoices(sandbox)
    assert invoice["invoice_number"] == "INV-001301" and invoice["date"] == "2026-12-01"
    assert invoice["total"] == v1.computed.total and invoice["due_date"] == "2026-12-20"
    assert [e.kind for e in doc.engine.adjustments] == ["redated"]
    # a later edit keeps the open date (and is accepted: the invoice is in the open period)
    v2 = next_version(v1, lines=list(v1.lines)[:4])
    doc = deliver(connector, entities, v2, doc)
    assert invoice["date"] == "2026-12-01" and invoice["total"] == v2.computed.total
    assert len(invoices(sandbox)) == 1 and len(doc.engine.adjustments) == 1


def test_payment_and_credit_note_dated_in_a_locked_period_post_on_the_first_open_day(zoho):
    from datetime import datetime, timezone

    from connectors.testing import payment
    from daemon.canonical import Refund

    sandbox, build = zoho
    connector, entities = build(), MemoryEntities()
    sandbox.set_lock_date(date(2026, 12, 1))
    refund = Refund(id=9, kind="return", amount=Decimal("289.95"), tax_amount=Decimal("14.50"), line_id=2,
                    created_at=datetime(2026, 11, 22, tzinfo=timezone.utc))
    event = invoice_event(1351, payments=[payment(1, "100.00")], refunds=[refund])
    doc = deliver(connector, entities, event)
    (paid,) = sandbox.org().payments.values()
    (credit,) = credit_notes(sandbox)
    assert paid["date"] == credit["date"] == "2026-12-01"
    assert paid["invoices"] == [{"invoice_id": doc.external_id, "amount_applied": Decimal("100.00")}]
    assert len(doc.payments) == 1 and len(doc.refunds) == 1


# --- items --------------------------------------------------------------------------------------------

def test_items_per_part_number_are_created_once(zoho):
    sandbox, build = zoho
    connector, entities = build(item_mode="per_part_number"), MemoryEntities()
    deliver(connector, entities, invoice_event(1401))
    deliver(connector, entities, invoice_event(1402))
    items = list(sandbox.org().items.values())
    assert [(i["name"], i["account_id"]) for i in items] == [("ALT-140R", PART)]
    for invoice in invoices(sandbox):
        parts = [li for li in invoice["line_items"] if li.get("item_id")]
        assert [li["item_id"] for li in parts] == [items[0]["item_id"]]
        assert all("name" in li for li in invoice["line_items"] if not li.get("item_id"))  # other kinds: free lines
    # a new connector (fresh entity map) finds the item at Zoho instead of creating it again
    deliver(build(item_mode="per_part_number"), MemoryEntities(), invoice_event(1403))
    assert len(sandbox.org().items) == 1


def test_items_per_line_kind_use_the_mapped_items(zoho):
    sandbox, build = zoho
    sandbox.org().items["4600000000401"] = {"item_id": "4600000000401", "name": "Labour", "rate": Decimal("120")}
    connector = build(items={"labour": "4600000000401"})
    deliver(connector, MemoryEntities(), invoice_event(1501))
    (invoice,) = invoices(sandbox)
    assert [li.get("item_id") for li in invoice["line_items"]] == [
        "4600000000401", None, None, "4600000000401", None]
    assert not [i for i in sandbox.org().items if i != "4600000000401"]  # no item per part number


# --- tax-inclusive pricing ----------------------------------------------------------------------------

def test_tax_inclusive_invoice_is_exact_to_the_cent(zoho):
    sandbox, build = zoho
    connector = build()
    # Inclusive prices: 105.00 holds 5.00 GST; 22.40 holds 1.07 GST (1.0667); 11.20 holds 0.50 GST + 0.70 PST.
    lines = [line(1, "labour", "Diagnosis", "1", "105.00"), line(2, "part", "Relay", "2", "11.20"),
             line(3, "fee", "Disposal", "1", "11.20", taxes=(GST, PST))]
    amounts = ((Decimal("5.00"),), (Decimal("1.07"),), (Decimal("0.50"), Decimal("0.70")))
    lines = [ln.model_copy(update={"taxes": tuple(t.model_copy(update={"amount": a}) for t, a in zip(ln.taxes, amts))})
             for ln, amts in zip(lines, amounts)]
    event = invoice_event(1601, lines=lines, tax_inclusive=True)
    event = event.model_copy(update={"computed": event.computed.model_copy(update={
        "subtotal": Decimal("131.33"), "tax_total": Decimal("7.27"), "total": Decimal("138.60")})})
    doc = deliver(connector, MemoryEntities(), event)
    (invoice,) = invoices(sandbox)
    assert invoice["is_inclusive_tax"] is True
    assert (invoice["total"], invoice["sub_total"]) == (Decimal("138.60"), Decimal("131.33"))
    assert sum(t["tax_amount"] for t in invoice["taxes"]) == Decimal("7.27")
    assert [li["item_total"] for li in invoice["line_items"]] == [Decimal("105.00"), Decimal("22.40"), Decimal("11.20")]
    assert "tax_difference" not in doc.extra and "total_difference" not in doc.extra


def test_tax_inclusive_cent_difference_is_reported_not_changed(zoho):
    sandbox, build = zoho
    connector = build()
    # 0.10 incl. GST + PST: the shop rounds each component to 0.01 + 0.01; Zoho gets 0.00 + 0.01.
    fee = line(1, "fee", "Disposal", "1", "0.10", taxes=(GST, PST))
    fee = fee.model_copy(update={"taxes": tuple(t.model_copy(update={"amount": Decimal("0.01")}) for t in fee.taxes)})
    event = invoice_event(1602, lines=[fee], tax_inclusive=True)
    event = event.model_copy(update={"computed": event.computed.model_copy(update={
        "subtotal": Decimal("0.08"), "tax_total": Decimal("0.02"), "total": Decimal("0.10")})})
    doc = deliver(connector, MemoryEntities(), event)
    assert doc.extra["tax_difference"] == "-0.01"
    (invoice,) = invoices(sandbox)
    assert invoice["total"] == Decimal("0.10")


# --- discounts, core charges and returns --------------------------------------------------------------

def _discounted(invoice_id):
    return invoice_event(invoice_id, lines=[
        line(1, "labour", "Replace alternator", "1", "200.00"),
        line(2, "discount", "Loyal customer", "1", "-20.00"),
        line(3, "core_charge", "Alternator core deposit", "1", "45.00", taxes=()),
        line(4, "core_return", "Old alternator returned", "1", "-45.00", taxes=())])


@pytest.mark.parametrize("posting, account", [("line", PART), ("discount_account", DISCOUNTS)])
def test_discount_posting_modes_and_core_account(zoho, posting, account):
    sandbox, build = zoho
    connector = build(discount_posting=posting, discount_account=DISCOUNTS)
    event = _discounted(1700)
    doc = deliver(connector, MemoryEntities(), event)
    (invoice,) = invoices(sandbox)
    assert [(li["account_id"], li["item_total"]) for li in invoice["line_items"]] == [
        (SERVICES, Decimal("200.00")), (account, Decimal("-20.00")), (CORE, Decimal("45.00")),
        (CORE, Decimal("-45.00"))]
    assert invoice["total"] == event.computed.total == Decimal("189.00") and "tax_difference" not in doc.extra


def test_core_account_is_used_even_when_income_accounts_say_otherwise(zoho):
    sandbox, build = zoho
    connector = build(income_accounts={"part": PART, "labour": SERVICES, "discount": PART, "core_charge": PART,
                                       "core_return": PART}, core_account=CORE)
    deliver(connector, MemoryEntities(), _discounted(1710))
    (invoice,) = invoices(sandbox)
    assert [li["account_id"] for li in invoice["line_items"]][2:] == [CORE, CORE]


def test_the_item_body_is_checked_against_its_schema():
    good = {"name": "ALT-140R", "rate": Decimal("289.95"), "account_id": PART, "item_type": "sales"}
    assert schemas.schema_errors("POST", "/items", good) == []
    assert schemas.schema_errors("POST", "/items", {**good, "item_type": "thing"})
    assert schemas.schema_errors("POST", "/items", {k: v for k, v in good.items() if k != "rate"})
