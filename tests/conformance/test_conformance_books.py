"""Issue #20's engine rules, checked on every connector on the engine against its sandbox, books read back:
exact adoption (a retry adopts only its own document; a number freed by another shop invoice's void is reused
whatever order the two changes arrive in), customer identity, refund settlement, negative totals and currency.
A scenario a platform cannot have is skipped by its ``Capabilities`` with the reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.base import DeliveryError, DocumentState, PermanentError
from connectors.engine import negative_refund
from connectors.engine_state import DocKind
from connectors.testing import MemoryContext, invoice_event, line, next_version
from daemon.canonical import Customer

# Two shop numbers that differ only before their last 21 characters (QuickBooks Online's DocNumber keeps those).
LONG_A = "NORTH-BAY-WORKSHOP-2026-11-000123"
LONG_B = "SOUTH-BAY-WORKSHOP-2026-11-000123"


def attempt(harness, event, doc: DocumentState | None, attempt_no: int):
    """One delivery straight through the connector: (state, None) or (None, the error it raised)."""
    ctx = MemoryContext(harness.connector.target.name, event, harness.entities, attempt=attempt_no)
    if harness.connector.capabilities.pull:  # the pull driver dead-letters what the engine refuses: its reason
        delivered, _ = harness.deliver(event, doc, attempt=attempt_no)
        work = harness.connector.queue.load(event.invoice_id)
        failed = work.failed_reason if work is not None and work.failed_version >= event.version else None
        return delivered, None if delivered else (PermanentError(failed) if failed else DeliveryError("not delivered"))
    try:
        return harness.connector.deliver(event, doc or DocumentState(), ctx), None
    except DeliveryError as exc:
        attempt.saved = ctx.checkpoints[-1] if ctx.checkpoints else doc  # what the ledger holds for the retry
        return None, exc


def test_books_retry_adopts_only_its_own_invoice(harness):
    """A create that failed unapplied (a 500) is looked up on the retry: a document of ANOTHER shop invoice
    carrying the same number at the platform (QuickBooks Online cuts DocNumber to its last 21 characters) has
    the same customer and amount, and must not be adopted."""
    harness.deliver(invoice_event(9900))  # customer and items exist: the next write is the create
    first = invoice_event(9901, number=LONG_A)
    first_doc, _ = harness.deliver(first)
    second = invoice_event(9902, number=LONG_B)
    harness.sandbox.faults.fault_at(1, "500")
    failed, saved = harness.deliver(second)
    assert failed is None
    second_doc, _ = harness.deliver(second, saved, attempt=2)
    assert second_doc.external_id != first_doc.external_id
    totals = {b.external_id: (b.total, b.voided) for b in harness.sandbox.booked_invoices()}
    assert totals[second_doc.external_id] == (second.computed.total, False)
    assert totals[first_doc.external_id] == (first.computed.total, False)


def _reused(harness, base: int, number: str):
    old = invoice_event(base, number=number)
    new = invoice_event(base + 1, number=number, lines=[line(1, "labour", "Battery test", "1", "40.00")])
    return old, new


def _assert_reused(harness, old, old_doc, new, new_doc) -> None:
    assert new_doc is not None and old_doc is not None and new_doc.external_id != old_doc.external_id
    books = {b.external_id: b for b in harness.sandbox.booked_invoices()}
    assert (books[new_doc.external_id].total, books[new_doc.external_id].voided) == (new.computed.total, False)
    assert books[old_doc.external_id].voided or old_doc.status == "deleted"
    live = [b for b in books.values() if not b.voided and b.total == new.computed.total
            and b.external_id in (old_doc.external_id, new_doc.external_id)]
    assert len(live) == 1


def test_books_number_reused_after_the_old_invoice_is_voided(harness):
    """The shop deleted an invoice and issued a new one with its number; the void arrives first. A platform
    where a voided invoice keeps its number (Zoho Books: 1001 "already exists") frees it its own way."""
    old, new = _reused(harness, 9910, "INV-REUSED-V")
    old_doc, _ = harness.deliver(old)
    old_doc, _ = harness.deliver(next_version(old, status="deleted"), old_doc)
    new_doc, error = attempt(harness, new, None, 1)
    assert error is None, f"the reused number was refused: {error}"
    _assert_reused(harness, old, old_doc, new, new_doc)


def test_books_number_reused_before_the_old_invoice_is_voided(harness):
    """The same, but the new invoice's create arrives first (another partition): where the platform refuses a
    second live invoice with the number, the create waits (a retryable error, never a dead letter) and posts
    once the void has freed it; it never adopts the old invoice."""
    old, new = _reused(harness, 9920, "INV-REUSED-C")
    old_doc, _ = harness.deliver(old)
    new_doc, error = attempt(harness, new, None, 1)
    assert not isinstance(error, PermanentError), f"dead-lettered: {error}"
    held = new_doc
    if error is not None:
        assert new_doc is None
    old_doc, _ = harness.deliver(next_version(old, status="deleted"), old_doc)
    if held is None:
        new_doc, error = attempt(harness, new, attempt.saved, 2)
        assert error is None, f"still refused after the void: {error}"
    _assert_reused(harness, old, old_doc, new, new_doc)


# --- customer identity ---------------------------------------------------------------------------------------

LONG_NAME = "Whitfield Daughters Commercial Vehicle Electrical Repairs, Fleet Maintenance Services of Greater Springfield County Ltd"


def matching(harness, keys: list[str]) -> None:
    """The bookkeeper configures matching by these keys (off by default)."""
    connector = harness.connector
    connector.mapping = connector.mapping.model_copy(update={"customer_match": keys})


def test_books_customers_are_keyed_by_the_shop_id_never_merged(harness):
    """Two shop customers with the same long name (120 characters: QuickBooks Online cut DisplayName to 100
    and lost the "(#id)" that keeps them apart) and the same e-mail, with matching by e-mail and name on: each
    gets its own platform customer, and once the ledger's entity map is lost, each is found again by its shop
    id — never the other's record, so neither's invoices nor data land on the other."""
    harness.deliver(invoice_event(9929))  # warm (KashFlow's first call reads its WSDL)
    matching(harness, ["email", "name"])
    twins = [Customer(id=621, name=LONG_NAME[:120], email="fleet@example.com", phone="555-0121"),
             Customer(id=622, name=LONG_NAME[:120], email="fleet@example.com", phone="555-0122")]
    first = [harness.deliver(invoice_event(9930 + n, customer=c))[0] for n, c in enumerate(twins)]
    assert first[0] is not None and first[1] is not None
    assert first[0].customer_id != first[1].customer_id
    from connectors.testing import MemoryEntities
    harness.entities = MemoryEntities()  # the entity map lost (a restored ledger): found again by shop id
    again = [harness.deliver(invoice_event(9933 - n, customer=c))[0] for n, c in enumerate(reversed(twins))]
    assert [d.customer_id for d in reversed(again)] == [d.customer_id for d in first]


# --- refunds close what they open ----------------------------------------------------------------------------


def test_books_refund_paid_back_is_settled_by_money_out_once(harness):
    """A refund the shop paid back (``payment_id`` set) on a paid invoice: its credit note is settled by a
    refund payment from the refunded payment's account, nothing left open, the invoice untouched; the settling
    write's answer lost is looked up, never sent twice; the refund taken back removes the money out again."""
    if not (harness.connector.capabilities.credit_notes and harness.connector.capabilities.refund_settlement):
        pytest.skip(f"{harness.connector.platform}: capability refund_settlement is off: a refund paid back is "
                    "posted as a credit note left open (test_conformance_refund_paid_back_leaves_nothing_open xfail)")
    from connectors.engine import Observed, plan_is_empty
    from connectors.engine_state import DocKind
    from connectors.testing import payment
    from tests.conformance.test_conformance import refund

    v1 = invoice_event(9940, payments=[payment(1, "677.58")])
    doc, _ = harness.deliver(v1)
    v2 = next_version(v1, refunds=[refund(8, 1, "20.00", "1.00", payment_id=1)])
    harness.sandbox.faults.fault_at(2)  # the credit note, then the refund payment: applied, its answer lost
    failed, saved = harness.deliver(v2, doc)
    assert failed is None
    doc, _ = harness.deliver(v2, saved, attempt=2)
    number = harness.connector.reference(DocKind.CREDIT_NOTE, v2, "8")
    assert [(total, left) for n, total, left in harness.driver.credit_notes() if n == number] == [
        (Decimal("21.00"), Decimal("0.00"))]
    (booked,) = harness.booked(v1.number)
    assert booked.payments_applied == v1.computed.total
    assert harness.connector.read_invoice(booked.external_id).balance == 0
    assert list(doc.engine.settlements) == ["8"] and len(harness.connector.find(
        DocKind.REFUND_PAYMENT, harness.connector.reference(DocKind.REFUND_PAYMENT, v2, "8"))) == 1
    assert plan_is_empty(harness.connector, v2, doc, Observed(known=True))
    doc, _ = harness.deliver(next_version(v2, refunds=[]), doc)
    assert not doc.engine.settlements and harness.connector.find(
        DocKind.REFUND_PAYMENT, harness.connector.reference(DocKind.REFUND_PAYMENT, v2, "8")) == []


# --- totals mismatch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cents", ["0.01", "-0.01"])
def test_books_stored_total_is_what_the_books_show(harness, cents):
    """The shop stored a total a cent off its lines (its own rounding): by default the printed invoice's total
    is posted, the cent on an untaxed rounding line; "computed" posts the lines; "hold" dead-letters it."""
    from connectors.testing import payment

    v1 = invoice_event(9950 + (cents == "-0.01"), payments=[payment(1, "100.00")])
    stored = v1.computed.model_copy(update={"total": v1.computed.total + Decimal(cents),
                                            "subtotal": v1.computed.subtotal + Decimal(cents)})
    v1 = v1.model_copy(update={"stored": stored, "totals_mismatch": True})
    doc, _ = harness.deliver(v1)
    (booked,) = harness.booked(v1.number)
    assert (booked.total, booked.tax_total) == (stored.total, v1.computed.tax_total)
    assert harness.connector.read_invoice(booked.external_id).balance == stored.total - Decimal("100.00")
    again, _ = harness.deliver(v1, doc)  # the same version again: nothing to do
    assert again.model_dump() == doc.model_dump()


def test_books_totals_mismatch_policy_computed_and_hold(harness):
    connector = harness.connector
    v1 = invoice_event(9955)
    mismatched = v1.model_copy(update={"stored": v1.computed.model_copy(update={"total": v1.computed.total + 1}),
                                       "totals_mismatch": True})
    connector.mapping = connector.mapping.model_copy(update={"totals_mismatch": "computed"})
    harness.deliver(mismatched)
    (booked,) = harness.booked(v1.number)
    assert booked.total == v1.computed.total
    connector.mapping = connector.mapping.model_copy(update={"totals_mismatch": "hold"})
    held = invoice_event(9956)
    held = held.model_copy(update={"stored": held.computed.model_copy(update={"total": held.computed.total + 1}),
                                   "totals_mismatch": True})
    _, error = attempt(harness, held, None, 1)
    assert isinstance(error, PermanentError) and "held for review" in error.reason and harness.booked(held.number) == []


# --- negative totals -----------------------------------------------------------------------------------------


def test_books_negative_total_posts_as_a_credit_note(harness):
    """A core return on its own (the invoice's total is negative) posts as a credit note for the whole amount,
    once (an answer lost is looked up), and the same version again writes nothing."""
    if not harness.connector.capabilities.negative_totals:
        pytest.skip(f"{harness.connector.platform}: capability negative_totals is off: a negative-total invoice is "
                    "refused by the platform and dead-lettered with its reason")
    harness.deliver(invoice_event(9959))
    core_return = invoice_event(9960, lines=[line(1, "core_return", "Alternator core returned", "1", "-45.00")])
    harness.sandbox.faults.fault_at(1)  # the credit note: applied, its answer lost
    failed, saved = harness.deliver(core_return)
    assert failed is None
    doc, _ = harness.deliver(core_return, saved, attempt=2)
    total = -core_return.computed.total
    number = harness.connector.reference(DocKind.CREDIT_NOTE, core_return.model_copy(
        update={"refunds": (negative_refund(core_return),)}), str(-core_return.invoice_id))
    assert [(t, left) for n, t, left in harness.driver.credit_notes() if n == number] == [(total, total)]
    assert harness.booked(core_return.number) == [] and doc.engine.credit_invoice and doc.external_id
    before = harness.sandbox.faults.writes
    again, _ = harness.deliver(core_return, doc)
    assert harness.sandbox.faults.writes == before and again.model_dump() == doc.model_dump()
    voided, error = attempt(harness, next_version(core_return, status="void"), doc, 1)
    if harness.connector.capabilities.void_credit_notes:
        assert error is None and voided.status == "voided"
    else:  # the platform's credit notes are never voided here: a clear dead letter, nothing written
        assert isinstance(error, PermanentError) and "negative total" in error.reason
        assert harness.sandbox.faults.writes == before


# --- currency ------------------------------------------------------------------------------------------------


def test_books_invoice_in_another_currency(harness):
    """A CAD invoice at a company that books in USD: a connector that sends currencies posts it in CAD; every
    other one dead-letters it with the reason, writing nothing (it was booked as USD before)."""
    connector = harness.connector
    harness.deliver(invoice_event(9969))
    connector.mapping = connector.mapping.model_copy(update={"home_currency": "USD"})
    before = harness.sandbox.faults.writes
    cad = invoice_event(9970, currency="CAD")
    if connector.capabilities.multi_currency:  # the currency code goes with the invoice (the platform's rate)
        sent = len(harness.driver.writes())
        doc, error = attempt(harness, cad, None, 1)
        assert error is None and doc.external_id
        # The code in what was sent, or (a currency sent by id: Zoho Books, Odoo) the booked document's currency.
        assert any("CAD" in repr(body) for _, body in harness.driver.writes()[sent:]) or [
            b.currency for b in harness.booked(cad.number)] == ["CAD"]
        return
    _, error = attempt(harness, cad, None, 1)
    assert isinstance(error, PermanentError) and "CAD" in error.reason and "USD" in error.reason
    assert harness.sandbox.faults.writes == before and harness.booked(cad.number) == []
    doc, error = attempt(harness, invoice_event(9971, currency="USD"), None, 1)  # its own currency still posts
    assert error is None and doc.external_id
