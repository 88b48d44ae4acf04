"""A void or an edit of an invoice the shop has refunded, with payments, on every connector on the engine, books
read back. Where the platform cannot cancel an invoice a refund's credit memo is bound to (``update_replaces``:
Business Central, SAP Business One), the engine does what the bookkeeper would: SAP Business One's credit memos are
cancelled first (``void_credit_notes``) and, after an edit, posted again against the replacement
(``update_voids_credit_notes``). Business Central cannot cancel a refund's credit memo through its API (only a
corrective one): there the delivery is refused with the bookkeeper's step, and an edit's payments go back on."""

from __future__ import annotations

from decimal import Decimal

from connectors.base import PermanentError
from connectors.engine import Observed, plan_is_empty
from connectors.testing import invoice_event, line, next_version, payment
from tests.conformance.test_conformance import credit_note_number, current_booked, needs, refund


def refunded(harness, invoice_id: int):
    """An invoice paid in part, then a returned part refunded as a credit note (a version of its own)."""
    v1 = invoice_event(invoice_id, payments=[payment(invoice_id, "100.00")])
    doc, _ = harness.deliver(v1)
    v2 = next_version(v1, refunds=[refund(invoice_id, 2, "289.95", "14.50")])
    doc, _ = harness.deliver(v2, doc)
    assert doc is not None and doc.refunds[str(invoice_id)].status != "voided"
    return v2, doc


def memos_of(harness, event, refund_id: int) -> list[tuple[Decimal, Decimal]]:
    number = credit_note_number(harness, event, refund_id)
    return [(total, left) for n, total, left in harness.driver.credit_notes() if n == number]


def test_conformance_void_of_a_refunded_and_paid_invoice(harness):
    """The shop voids an invoice it had refunded a part of: the invoice is voided with its payment taken off, and
    the refund's credit goes with it where the platform voids credit notes (``void_credit_notes``); elsewhere it
    stays the customer's open credit, applied to nothing. Never a dead letter where the engine can do the
    bookkeeper's step itself (SAP Business One: cancel the credit memo, then the invoice)."""
    needs(harness, "credit_notes")
    v2, doc = refunded(harness, 9600)
    v3 = next_version(v2, status="void")
    doc, _ = harness.deliver(v3, doc)
    (booked,) = [b for b in harness.booked(v2.number)]
    assert booked.voided and booked.payment_count == 0 and doc.status == "voided" and not doc.payments
    held = doc.refunds[str(9600)]
    if harness.connector.capabilities.adjust_when_credited:
        # The refund's credit memo stays applied (the platform cannot take it off); the void is a full decrease
        # credit memo against the invoice, which leaves the refund's credit open on it: the same 304.45 of
        # customer credit as everywhere else, on the decrease.
        notes = [(n, left) for n, _, left in harness.driver.credit_notes()
                 if n == credit_note_number(harness, v3, 9600) or n.startswith(f"{v2.number}-C")]
        assert sum(left for _, left in notes) == Decimal("304.45"), notes
    elif harness.connector.capabilities.void_credit_notes:
        assert held.status == "voided"
        assert all(left == 0 for _, left in memos_of(harness, v3, 9600)), memos_of(harness, v3, 9600)
    else:
        assert memos_of(harness, v3, 9600) == [(Decimal("304.45"), Decimal("304.45"))]
    assert doc.engine.intent is None and plan_is_empty(harness.connector, v3, doc, Observed(known=True))


def test_conformance_edit_of_a_refunded_and_paid_invoice(harness):
    """The shop edits the lines of an invoice it had refunded a part of: the new totals, the payment applied, the
    refund's credit applied in full (posted again against the replacement where the platform had to cancel it:
    ``update_voids_credit_notes``), the balance what is left."""
    needs(harness, "credit_notes")
    v2, doc = refunded(harness, 9610)
    lines = list(v2.lines)
    lines[0] = line(1, "labour", "Diagnose charging system, extended", "2", "120.00", part_number=None)
    v3 = next_version(v2, lines=lines)
    doc, _ = harness.deliver(v3, doc)
    (booked,) = current_booked(harness, v2.number, credited=True)
    assert (booked.total, booked.tax_total, booked.line_count) == (v3.computed.total, v3.computed.tax_total, 5)
    assert booked.payment_count == 1 and booked.payments_applied == Decimal("100.00")
    assert memos_of(harness, v3, 9610) == [(Decimal("304.45"), Decimal("0.00"))]
    assert harness.connector.read_invoice(booked.external_id).balance == v3.computed.total - Decimal("404.45")
    assert doc.external_id == booked.external_id and doc.delivered_version == 3 and doc.engine.intent is None
    assert plan_is_empty(harness.connector, v3, doc, Observed(known=True))


def test_conformance_payment_after_a_paid_back_refund_is_applied_to_its_invoice(harness):
    """The customer pays in two parts and a returned part is paid back between them (the end-to-end spine's
    INV-MAIN-000017 on SAP Business One: "applied 168.11 in 1 vs 268.11 in 2"): both shop payments are applied
    to the invoice, which is paid in full; the refund's credit never takes the room the payments need (where a
    credit note takes what is open as it is made, the engine posts it again after the payments change)."""
    needs(harness, "credit_notes")
    v1 = invoice_event(9620, payments=[payment(1, "100.00")])
    doc, _ = harness.deliver(v1)
    v2 = next_version(v1, refunds=[refund(9620, 2, "289.95", "14.50", payment_id=1)])
    doc, _ = harness.deliver(v2, doc)
    v3 = next_version(v2, payments=[payment(1, "100.00"), payment(2, str(v1.computed.total - Decimal("100.00")))])
    doc, _ = harness.deliver(v3, doc)
    (booked,) = harness.booked(v1.number)
    assert (booked.payment_count, booked.payments_applied) == (2, v1.computed.total)
    assert harness.connector.read_invoice(booked.external_id).balance == 0
    assert doc is not None and set(doc.payments) == {"1", "2"} and doc.engine.intent is None
    assert plan_is_empty(harness.connector, v3, doc, Observed(known=True))
