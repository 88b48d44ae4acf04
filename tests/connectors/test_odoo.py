"""Odoo connector against its sandbox, and every execute_kw call it sends validated against the official
field table (``$LEDGERWIRE_SPECS_DIR/odoo/account-move-fields.md``, parsed here from the specs directory)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import (
    AuthError,
    ClosedPeriodError,
    DocumentState,
    PermanentError,
    RateLimitedError,
    RetryableError,
    UncertainOutcomeError,
)
from connectors.odoo import CONNECTOR, Sandbox, wire
from connectors.odoo.spec import FieldTable
from connectors.sandbox_kit import Faults
from connectors.testing import MemoryContext, MemoryEntities, MemoryRuntime, deliver, invoice_event, line, next_version, payment
from daemon.canonical import Location, Refund
from daemon.config import TargetConfig

STATE = dict(tax_rate_id=3, code="STATE", name="State 6.25%", rate=Decimal("0.0625"))
COUNTY = dict(tax_rate_id=4, code="COUNTY", name="County 1%", rate=Decimal("0.01"))


@pytest.fixture
def odoo():
    sandbox = Sandbox(Faults(hang_s=2.5))  # a withheld answer outlasts the client's 2 s timeout
    server = sandbox.serve()
    credentials = sandbox.seed_credentials()
    config = sandbox.target_config("odoo", server.url)
    config["settings"]["requests_per_second"] = 200  # a local sandbox: keep the tests quick
    target = TargetConfig.model_validate(config | {"request_timeout_s": 2})
    runtime = MemoryRuntime({"odoo": credentials})
    connector = CONNECTOR(target, runtime)
    entities = MemoryEntities()
    yield sandbox, connector, entities, runtime
    connector.close()
    server.stop()


def booked(sandbox, number):
    return [b for b in sandbox.booked_invoices() if b.number == number]


def uncertain(connector, entities, event, doc=None) -> DocumentState:
    """A delivery whose write got no answer: what the ledger holds afterwards (the last checkpoint)."""
    ctx = MemoryContext("odoo", event, entities)
    with pytest.raises(UncertainOutcomeError):
        connector.deliver(event, doc or DocumentState(), ctx)
    return ctx.checkpoints[-1]


def test_create_edit_pay_reverse_void(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    (inv,) = sandbox.booked_invoices()
    assert (inv.number, inv.total, inv.tax_total, inv.line_count) == ("INV-001001", Decimal("677.58"),
                                                                     Decimal("30.13"), 5)
    assert doc.delivered_version == 1 and doc.payload_hash == v1.content_hash() and doc.status == "posted"
    (move,) = sandbox.records("account.move")
    assert move["state"] == "posted" and move["name"] == "INV/2026/00001" and move["ref"] == "J-01001"
    assert doc.token == move["write_date"] and "tax_difference" not in doc.extra

    # Edit after posting: back to draft, lines replaced, posted again — one document, new totals.
    lines = list(v1.lines)
    lines[1] = line(2, "part", "Alternator, reman 160A", "1", "319.9500", part_number="ALT-160R")
    v2 = next_version(v1, lines=lines + [line(6, "part", "Battery terminal", "2.125", "4.7550")])
    doc = deliver(connector, entities, v2, doc)
    (inv,) = sandbox.booked_invoices()
    assert inv.total == v2.computed.total and inv.tax_total == v2.computed.tax_total and inv.line_count == 6
    calls = [(m, meth) for m, meth, _, _ in sandbox.writes()]
    assert calls[-3:] == [("account.move", "button_draft"), ("account.move", "write"), ("account.move", "action_post")]

    # Partial then full payment, each registered on this invoice through the wizard.
    v3 = next_version(v2, payments=[payment(1, "300.00")])
    doc = deliver(connector, entities, v3, doc)
    (move,) = sandbox.records("account.move")
    assert move["payment_state"] == "partial" and move["amount_residual"] == v3.computed.total - Decimal("300.00")
    rest = str(v3.computed.total - Decimal("300.00"))
    v4 = next_version(v3, payments=[payment(1, "300.00"), payment(2, rest, method="cash")])
    doc = deliver(connector, entities, v4, doc)
    (inv,) = sandbox.booked_invoices()
    (move,) = sandbox.records("account.move")
    assert inv.payments_applied == v4.computed.total and inv.payment_count == 2
    assert move["payment_state"] == "paid" and move["amount_residual"] == Decimal("0")

    # An edit of a paid invoice: payments cancelled before button_draft (which would unreconcile them)
    # and registered again after posting — still applied to this invoice.
    v5 = next_version(v4, lines=list(v4.lines)[:-1], payments=[payment(1, "300.00"), payment(2, "350.00")])
    doc = deliver(connector, entities, v5, doc)
    (inv,) = sandbox.booked_invoices()
    assert inv.total == v5.computed.total and inv.payments_applied == Decimal("650.00") and inv.payment_count == 2

    # Reversal: the payment is reset to draft and cancelled; the residual returns.
    v6 = next_version(v5, payments=[payment(1, "300.00"), payment(2, "350.00", status="reversed")])
    doc = deliver(connector, entities, v6, doc)
    (inv,) = sandbox.booked_invoices()
    assert inv.payments_applied == Decimal("300.00") and inv.payment_count == 1
    (move,) = sandbox.records("account.move")
    assert move["amount_residual"] == v6.computed.total - Decimal("300.00")

    # Void: remaining payments cancelled first, then button_draft + button_cancel.
    v7 = next_version(v6, status="void", payments=[])
    doc = deliver(connector, entities, v7, doc)
    (inv,) = sandbox.booked_invoices()
    assert inv.voided and inv.payment_count == 0 and doc.status == "voided" and inv.total == v6.computed.total
    assert len(sandbox.records("res.partner")) == 1


def test_unchanged_invoice_is_not_written_again(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event()
    doc = deliver(connector, entities, v1)
    writes = len(sandbox.writes())
    doc = deliver(connector, entities, next_version(v1), doc)  # same content, one version on
    assert len(sandbox.writes()) == writes and doc.delivered_version == 2


def test_concurrent_first_invoices_of_a_new_customer_create_it_once(odoo):
    sandbox, connector, entities, _ = odoo
    events = [invoice_event(2000 + n) for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        docs = list(pool.map(lambda e: deliver(connector, entities, e), events))
    assert len({d.customer_id for d in docs}) == 1
    (partner,) = sandbox.records("res.partner")
    assert partner["ref"] == "77"
    assert len(sandbox.booked_invoices()) == 6


def test_customer_found_by_shop_id_and_updated_when_the_shop_changes_it(odoo):
    sandbox, connector, entities, _ = odoo
    deliver(connector, entities, invoice_event(2100))
    other_worker = MemoryEntities()  # another process: its entity store does not know the partner yet
    event = invoice_event(2101, customer=invoice_event().customer.model_copy(update={"phone": "555-0199"}))
    doc = deliver(connector, other_worker, event)
    (partner,) = sandbox.records("res.partner")
    assert str(partner["id"]) == doc.customer_id and partner["phone"] == "555-0199"


def test_retry_after_uncertain_outcome_creates_no_duplicate(odoo):
    sandbox, connector, entities, _ = odoo
    deliver(connector, entities, invoice_event(3000))  # customer exists already
    event = invoice_event(payments=[payment(1, "100.00")])
    sandbox.faults.fault_at(1)  # the next write (the create) is applied, then the answer never comes
    held = uncertain(connector, entities, event)
    assert held.engine.intent.reference == event.number  # recorded before the write: looked up on the retry
    doc = deliver(connector, entities, event, held, attempt=2)  # the worker's next attempt
    (inv,) = booked(sandbox, event.number)
    assert inv.total == event.computed.total and not inv.voided
    assert doc.payments["1"].amount == Decimal("100.00") and inv.payment_count == 1


def test_retry_after_uncertain_payment_registers_it_once(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event(3100)
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, payments=[payment(7, "50.00")])
    sandbox.faults.fault_at(2)  # the payment is registered and the answer lost
    held = uncertain(connector, entities, v2, doc)
    doc = deliver(connector, entities, v2, held, attempt=2)
    (inv,) = sandbox.booked_invoices()
    assert inv.payment_count == 1 and inv.payments_applied == Decimal("50.00")
    assert [p["memo"] for p in sandbox.records("account.payment")] == ["LW7"]


def test_api_key_rejected_is_an_auth_error_and_a_replaced_key_is_picked_up(odoo):
    sandbox, connector, entities, runtime = odoo
    deliver(connector, entities, invoice_event(4000))
    assert connector.client.authentications == 1  # uid cached across calls
    # The key is revoked in Odoo and a new one stored in the credential store: re-authenticate once.
    sandbox.db.api_keys.clear()
    new = sandbox.seed_credentials()
    runtime.credentials("odoo").update(new)
    deliver(connector, entities, invoice_event(4001))
    assert connector.client.authentications == 1  # same user: the uid stays, the new key is used
    sandbox.db.api_keys.clear()  # revoked with nothing to replace it: Access Denied, re-authenticate, refused
    with pytest.raises(AuthError, match="authentication failed"):
        deliver(connector, entities, invoice_event(4002))
    assert connector.client.authentications == 2 and sandbox.authentications == 2


def test_too_many_requests_is_a_rate_limit_error(odoo):
    sandbox, connector, entities, _ = odoo
    sandbox.faults.error_429 = 1.0
    with pytest.raises(RateLimitedError) as caught:
        deliver(connector, entities, invoice_event(5000))
    assert caught.value.retry_after == 1.0


def test_validation_fault_is_permanent_with_odoos_message(odoo):
    sandbox, connector, entities, _ = odoo
    connector.mapping = connector.mapping.model_copy(update={"income_accounts": {"labour": "999", "part": "999",
                                                                                 "fee": "999", "core_charge": "999"}})
    with pytest.raises(PermanentError, match=r"(?s)Record does not exist or has been deleted.*account.account\(999"):
        deliver(connector, entities, invoice_event(6000))


def test_posted_invoice_cannot_be_written_as_in_odoo(odoo):
    sandbox, connector, entities, _ = odoo
    doc = deliver(connector, entities, invoice_event(6100))
    with pytest.raises(PermanentError, match="Reset it to draft first"):
        connector.client.execute("account.move", "write", [[int(doc.external_id)],
                                                           {"invoice_line_ids": [[5, 0, 0]]}])


def test_lock_date_refusal_is_a_closed_period_error(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event(6200)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_date(date(2026, 11, 30))
    with pytest.raises(ClosedPeriodError, match="lock date"):  # Odoo's own refusal, classified
        connector.client.execute("account.move", "button_draft", [[int(doc.external_id)]])
    # deliver() does not fail on it: the change becomes an adjustment (tests/test_mapping_odoo.py).
    doc = deliver(connector, entities, next_version(v1, lines=list(v1.lines)[:2]), doc)
    assert doc.delivered_version == 2 and [a.kind for a in doc.engine.adjustments] == ["decrease"]


def test_serialization_failure_is_retryable(odoo):
    sandbox, connector, entities, _ = odoo
    sandbox.serialization_failures = 1
    with pytest.raises(RetryableError, match="could not serialize access"):
        deliver(connector, entities, invoice_event(6300))


def test_invoice_changed_in_odoo_meanwhile_is_reread_not_failed(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event(6400)
    doc = deliver(connector, entities, v1)
    # The bookkeeper resets it to draft in Odoo: the stored write_date (our token) is stale now.
    connector.client.execute("account.move", "button_draft", [[int(doc.external_id)]])
    (move,) = sandbox.records("account.move")
    assert move["write_date"] != doc.token
    v2 = next_version(v1, lines=list(v1.lines)[:4])
    doc = deliver(connector, entities, v2, doc)  # no button_draft on a draft (Odoo would refuse it)
    (move,) = sandbox.records("account.move")
    assert move["state"] == "posted" and move["amount_total"] == v2.computed.total and doc.token == move["write_date"]


def test_refund_posts_one_credit_note_linked_to_the_invoice_and_reconciled_with_it(odoo):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event(6500)
    doc = deliver(connector, entities, v1)
    part = v1.lines[1]
    refund = Refund(id=31, kind="return", amount=part.amount, tax_amount=sum(t.amount for t in part.taxes),
                    line_id=part.id, reason="Part returned unused", created_at=v1.emitted_at)
    v2 = next_version(v1, refunds=[refund])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2), doc)  # again: no second credit note
    notes = [m for m in sandbox.records("account.move") if m["move_type"] == "out_refund"]
    # Linked by its ref (the shop's number) and reconciled with the invoice; reversed_entry_id is readonly.
    assert len(notes) == 1 and notes[0]["state"] == "posted" and notes[0]["ref"] == v1.number
    assert not notes[0]["reversed_entry_id"]
    credit = refund.amount + refund.tax_amount
    assert notes[0]["amount_total"] == credit and notes[0]["amount_residual"] == 0  # all of it applied
    assert doc.refunds["31"].external_id == str(notes[0]["id"]) and doc.refunds["31"].status == "applied"
    (inv,) = sandbox.booked_invoices()
    assert inv.total == v1.computed.total  # the invoice itself is unchanged by the credit note
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - credit
    # An edit resets the invoice to draft, which unreconciles the credit: it is applied again after posting.
    v3 = next_version(v2, lines=list(v1.lines)[:4])
    doc = deliver(connector, entities, v3, doc)
    assert connector.read_invoice(doc.external_id).balance == v3.computed.total - credit
    assert len(sandbox.records("account.partial.reconcile")) == 1


def test_tax_difference_is_recorded_never_hidden(odoo):
    sandbox, connector, entities, _ = odoo
    sandbox.db.rounding_method = "round_globally"  # the company rounds tax globally, the shop per line
    lines = [line(n, "part", f"Fuse kit {n}", "1", "10.10") for n in (1, 2, 3)]
    event = invoice_event(6600, lines=lines)
    doc = deliver(connector, entities, event)
    # Shop: 3 × money(0.505) = 1.53; Odoo rounding globally: money(1.515) = 1.52.
    assert event.computed.tax_total == Decimal("1.53")
    assert doc.extra["tax_difference"] == "-0.01"
    sandbox.db.rounding_method = "round_per_line"
    doc = deliver(connector, entities, next_version(event, lines=lines[:2]), doc)
    assert "tax_difference" not in doc.extra


def test_location_tracking_as_analytic_distribution_or_journal(odoo):
    sandbox, connector, entities, _ = odoo
    north = Location(id=2, code="NORTH", name="Northside")
    deliver(connector, entities, invoice_event(6700, location=north))
    analytic = connector.mapping.location_tracking["NORTH"].split(":")[1]
    (move,) = sandbox.records("account.move")
    assert all(ln["analytic_distribution"] == {analytic: 100} for ln in move["_lines"])
    journal = next(r["id"] for r in sandbox.records("account.journal") if r["code"] == "INVN")
    connector.mapping = connector.mapping.model_copy(update={"location_tracking": {"NORTH": f"journal:{journal}"}})
    deliver(connector, entities, invoice_event(6701, location=north))
    second = [m for m in sandbox.records("account.move") if m["payment_reference"] == "INV-006701"][0]
    assert second["journal_id"] == journal and all("analytic_distribution" not in ln for ln in second["_lines"])


def test_money_crosses_the_wire_as_exact_doubles(odoo):
    sandbox, connector, entities, _ = odoo
    event = invoice_event(6800, lines=[line(1, "part", "Wire, 14ga", "12.375", "0.4995", taxes=(STATE, COUNTY))])
    body = wire.encode_call("execute_kw", ("db", 2, "k", "account.move", "create",
                                           [{"price_unit": Decimal("0.4995"), "quantity": Decimal("12.375")}], {}))
    assert b"<double>0.4995</double>" in body and b"<double>12.375</double>" in body
    deliver(connector, entities, event)
    (move,) = sandbox.records("account.move")
    assert move["_lines"][0]["price_unit"] == Decimal("0.4995")  # parsed from its digits, never a binary float
    assert (move["amount_total"], move["amount_tax"]) == (event.computed.total, event.computed.tax_total)
    remote = connector.find_invoice(event)
    assert remote.total == event.computed.total and remote.status == "issued"


def test_no_float_conversion_in_the_package():
    package = Path(__file__).resolve().parents[2] / "connectors" / "odoo"
    assert not [p.name for p in package.glob("*.py") if "float(" in p.read_text()]


# --- the official field table ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def field_table(specs):
    path = specs / "odoo" / "account-move-fields.md"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return FieldTable.from_markdown(path.read_text())


def test_every_call_is_valid_against_the_official_field_table(odoo, field_table):
    sandbox, connector, entities, _ = odoo
    v1 = invoice_event(payments=[payment(1, "100.00")], location=Location(id=2, code="NORTH", name="North"))
    doc = deliver(connector, entities, v1)
    part = v1.lines[1]
    refund = Refund(id=5, kind="return", amount=part.amount, tax_amount=sum(t.amount for t in part.taxes),
                    line_id=part.id, created_at=v1.emitted_at)
    v2 = next_version(v1, lines=list(v1.lines)[:3], payments=[payment(1, "100.00"), payment(2, "50.00")],
                      refunds=[refund])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, payments=[], status="void"), doc)
    checked = set()
    for model, method, args, kwargs in sandbox.requests:
        problems = field_table.check_call(model, method, args, kwargs)
        assert not problems, f"{model}.{method} not valid against account-move-fields.md: {problems}"
        if model in field_table.models and method in ("create", "write"):
            checked.add((model, method))
    assert checked == {("account.move", "create"), ("account.move", "write"), ("account.payment.register", "create")}


def test_the_field_table_check_catches_what_odoo_would_refuse(field_table):
    good = {"move_type": "out_invoice", "partner_id": 7, "invoice_date": "2026-11-20",
            "invoice_line_ids": [[0, 0, {"name": "x", "quantity": Decimal("1"), "price_unit": Decimal("2.5"),
                                         "tax_ids": [[6, 0, [3]]], "account_id": 4}]]}
    assert field_table.check_call("account.move", "create", [good], {}) == []
    bad_calls = [
        {**good, "bogus": 1},  # unknown field
        {**good, "move_type": "invoice"},  # not a selection value
        {**good, "invoice_date": "20/11/2026"},  # not a date
        {**good, "partner_id": "7"},  # many2one takes an int
        {**good, "invoice_line_ids": [[0, 0, {"price_unit": "2.50"}]]},  # float as a string
        {**good, "invoice_line_ids": [[0, 0, {"tax_ids": [3]}]]},  # many2many without a command
        {**good, "invoice_line_ids": [[0, 0, {"colour": "red"}]]},  # unknown line field
    ]
    for bad in bad_calls:
        assert field_table.check_call("account.move", "create", [bad], {}), bad
    assert field_table.check_call("account.payment.register", "create",
                                  [{"payment_difference_handling": "writeoff"}], {})
    assert field_table.check_call("account.move", "search_read", [[["state", "=", "open"]]], {"fields": ["id"]})


def test_the_field_table_check_refuses_readonly_fields_and_unknown_methods(field_table):
    """Issue #20: ``reversed_entry_id`` is readonly in the table (set by Odoo's reversal, never by a client), and a
    method the table does not name (``action_posted``) is no method of account.move."""
    good = {"move_type": "out_refund", "partner_id": 7, "invoice_date": "2026-11-20"}
    assert field_table.check_call("account.move", "create", [good], {}) == []
    assert any("readonly" in p for p in field_table.check_call(
        "account.move", "create", [{**good, "reversed_entry_id": 3}], {}))
    assert any("readonly" in p for p in field_table.check_call("account.move", "write", [[1], {"state": "posted"}], {}))
    for method in ("action_post", "button_draft", "button_cancel", "unlink", "js_assign_outstanding_line"):
        assert field_table.check_call("account.move", method, [[1]], {}) == [], method
    assert field_table.check_call("account.payment.register", "action_create_payments", [[1]], {}) == []
    assert any("no method" in p for p in field_table.check_call("account.move", "action_posted", [[1]], {}))
    assert any("no method" in p for p in field_table.check_call("account.payment.register", "post", [[1]], {}))


def test_fleet_terms_are_sent_and_an_empty_due_date_comes_from_them(odoo):
    """Issue #20: a fleet customer on terms gets Odoo's payment term (``invoice_payment_term_id``, from
    ``mapping.payment_terms``) and, where the shop left the due date empty, the due date its terms give."""
    sandbox, connector, entities, _ = odoo
    term = next(i for i, r in sandbox.db.table("account.payment.term").items() if r["name"] == "30 Days")
    connector.mapping.payment_terms[30] = str(term)
    fleet = invoice_event(6600).customer.model_copy(update={"payment_terms_days": 30})
    v1 = invoice_event(6600, customer=fleet).model_copy(update={"due_date": None})
    deliver(connector, entities, v1)
    (move,) = [m for m in sandbox.records("account.move") if m["payment_reference"] == v1.number]
    assert move["invoice_payment_term_id"] == term
    assert move["invoice_date_due"] == "2026-12-20"  # issued 2026-11-20, net 30
    connector.mapping.payment_terms[60] = "9999"
    assert "payment_terms.60: payment term '9999' not found" in connector.check_mapping()


def test_the_sandbox_refuses_what_the_field_table_refuses(odoo, field_table):
    sandbox, connector, entities, _ = odoo
    assert sandbox.spec is not None  # parsed from the specs directory at start
    with pytest.raises(PermanentError, match="not one of"):
        connector.client.execute("account.move", "create", [{"move_type": "invoice"}])


# --- issue #5: check_mapping and preview ----------------------------------------------------------------


def test_check_mapping_finds_wrong_account_tax_and_journal(odoo):
    sandbox, connector, entities, _ = odoo
    assert connector.check_mapping() == []
    purchase_tax = next(r["id"] for r in sandbox.records("account.tax") if r["type_tax_use"] == "purchase")
    sale_journal = next(r["id"] for r in sandbox.records("account.journal") if r["type"] == "sale")
    mapping = connector.mapping.model_copy(update={
        "income_accounts": {**connector.mapping.income_accounts, "labour": "999"},
        "tax_codes": {**connector.mapping.tax_codes, "GST": "998", "PST": str(purchase_tax)},
        "payment_accounts": {**connector.mapping.payment_accounts, "cash": str(sale_journal)},
    })
    connector.mapping = mapping
    problems = connector.check_mapping()
    assert "income_accounts.labour: account '999' not found" in problems
    assert "tax_codes.GST: tax '998' not found" in problems
    assert any(p.startswith("tax_codes.PST:") and "not a sales tax" in p for p in problems)
    assert any(p.startswith("payment_accounts.cash:") and "sale journal" in p for p in problems)
    assert len(problems) == 4
    assert not sandbox.writes()  # read-only


def test_preview_sends_nothing_and_its_bodies_are_valid(odoo, field_table):
    sandbox, connector, entities, _ = odoo
    deliver(connector, entities, invoice_event(9000))  # the customer exists at Odoo
    writes = len(sandbox.writes())
    event = invoice_event(9001, payments=[payment(3, "20.00")])
    calls = connector.preview(event, DocumentState(), entities)
    assert len(sandbox.writes()) == writes  # nothing written
    assert [(c["body"]["model"], c["body"]["method"]) for c in calls] == [
        ("account.move", "create"), ("account.move", "action_post"),
        ("account.payment.register", "create"), ("account.payment.register", "action_create_payments")]
    create = calls[0]["body"]
    assert not field_table.check_call("account.move", "create", create["args"], create["kwargs"])
    assert create["args"][0]["invoice_line_ids"][1][2]["price_unit"] == Decimal("289.9500")  # Decimals kept
    assert not field_table.check_call("account.payment.register", "create", calls[2]["body"]["args"], {})
    # A new customer shows as a placeholder; a delivered, unchanged invoice previews nothing.
    stranger = invoice_event(9002, customer=event.customer.model_copy(update={"id": 555, "name": "New Person",
                                                                               "email": "new@example.com"}))
    assert connector.preview(stranger, DocumentState())[1]["body"]["args"][0]["partner_id"] == "<new res.partner>"
    doc = deliver(connector, entities, event)
    assert connector.preview(next_version(event), doc) == []


# --- chaos: lost answers and 500s on writes, retried as the sink worker retries -------------------------


def test_chaos_books_match_the_shop_after_lost_answers_and_500s():
    import random

    from connectors.base import DeliveryError
    from daemon.canonical import PaymentStatus

    sandbox = Sandbox(Faults(hang_s=0.6, seed=11))
    server = sandbox.serve()
    credentials = sandbox.seed_credentials()
    config = sandbox.target_config("odoo", server.url)
    config["settings"]["requests_per_second"] = 500
    connector = CONNECTOR(TargetConfig.model_validate(config | {"request_timeout_s": 0.4}),
                          MemoryRuntime({"odoo": credentials}))
    entities, rng = MemoryEntities(), random.Random(5)
    docs: dict[int, DocumentState] = {}
    failures = 0

    def push(event):
        nonlocal failures
        doc, attempt = docs.get(event.invoice_id, DocumentState()), 0
        while True:
            attempt += 1
            ctx = MemoryContext("odoo", event, entities, attempt=attempt)
            try:
                docs[event.invoice_id] = connector.deliver(event, doc, ctx)
                return
            except DeliveryError as exc:
                assert exc.error_class.value != "permanent", exc.reason
                failures += 1
                doc = ctx.checkpoints[-1] if ctx.checkpoints else doc  # what the ledger persisted

    final = {}
    payment_id = 100
    for n in range(25):
        event = invoice_event(5000 + n, lines=[
            line(i, rng.choice(["part", "labour", "fee"]), f"Line {i}", str(rng.randint(1, 3000) / 1000),
                 str(rng.randint(100, 90000) / 100)) for i in range(1, rng.randint(2, 6))]
            + [line(9, "core_charge", "Core deposit", "1", "45", taxes=())])
        for _ in range(rng.randint(1, 6)):
            sandbox.faults.timeout, sandbox.faults.error_500 = 0.08, 0.05
            push(event)
            pays, r = list(event.payments), rng.random()
            balance = event.computed.total - event.paid_total
            if r < 0.3 and balance > 1:
                payment_id += 1
                pays.append(payment(payment_id, str((balance * Decimal("0.4")).quantize(Decimal("0.01"))),
                                    method=rng.choice(["card", "cash", "check", "eft"])))
                event = next_version(event, payments=pays)
            elif r < 0.45 and any(p.status == PaymentStatus.RECEIVED for p in pays):
                k = next(i for i, p in enumerate(pays) if p.status == PaymentStatus.RECEIVED)
                pays[k] = pays[k].model_copy(update={"status": PaymentStatus.REVERSED})
                event = next_version(event, payments=pays)
            elif r < 0.65:
                lines = list(event.lines)
                lines[0] = line(lines[0].id, "part", "Changed", "2", str(rng.randint(100, 5000) / 100))
                edited = next_version(event, lines=lines)
                event = edited if edited.computed.total >= event.paid_total else event
            elif r < 0.75 and not event.refunds:
                first = event.lines[0]
                event = next_version(event, refunds=[Refund(
                    id=event.invoice_id, kind="return", amount=first.amount, line_id=first.id,
                    tax_amount=sum(t.amount for t in first.taxes), created_at=event.emitted_at)])
            elif r < 0.82:
                event = next_version(event, status="void", payments=[
                    p.model_copy(update={"status": PaymentStatus.REVERSED}) for p in pays])
                break
            else:
                event = next_version(event)
        sandbox.faults.timeout = sandbox.faults.error_500 = 0.0
        push(event)
        final[event.number] = event
    connector.close()
    server.stop()
    assert failures > 5  # the faults did bite
    booked = sandbox.booked_invoices()
    for number, event in final.items():
        docs_ = [b for b in booked if b.number == number]
        if event.status.value == "void":
            assert all(b.voided for b in docs_), number
            continue
        (b,) = docs_  # exactly once
        received = [p for p in event.payments if p.status == PaymentStatus.RECEIVED]
        assert (b.total, b.tax_total, b.payments_applied, b.payment_count) == (
            event.computed.total, event.computed.tax_total, event.paid_total, len(received)), number
    notes = [m for m in sandbox.records("account.move") if m["move_type"] == "out_refund"]
    assert len(notes) == sum(1 for e in final.values() if e.refunds)


def test_invoice_in_another_currency_carries_its_active_res_currency(odoo):
    """Issue #20: a CAD invoice is booked in CAD (currency_id of res.currency 'CAD'), its credit note too; the
    company's currency is read from res.company (no mapping.home_currency configured)."""
    sandbox, connector, entities, _ = odoo
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"
    event = invoice_event(7100, currency="CAD")
    event = event.model_copy(update={"refunds": (Refund(id=71, line_id=event.lines[0].id, amount=Decimal("10.00"),
                                                        kind="return", created_at=event.emitted_at),)})
    deliver(connector, entities, event)
    (inv,) = booked(sandbox, event.number)
    assert inv.currency == "CAD"
    cad = next(c["id"] for c in sandbox.records("res.currency") if c["name"] == "CAD")
    assert {m["move_type"]: m["currency_id"] for m in sandbox.records("account.move")} == {
        "out_invoice": cad, "out_refund": cad}


def test_invoice_in_a_currency_odoo_has_not_activated_is_dead_lettered_before_any_write(odoo):
    sandbox, connector, entities, _ = odoo
    deliver(connector, entities, invoice_event(7200))  # the customer exists
    before = len(sandbox.writes())
    with pytest.raises(PermanentError, match="GBP.*not active"):
        deliver(connector, entities, invoice_event(7201, currency="GBP"))
    assert booked(sandbox, invoice_event(7201).number) == [] and len(sandbox.writes()) == before
