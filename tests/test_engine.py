"""The delivery engine's planner and typed state without a platform: ordering, closed-period rules, legacy
ledger documents, JSON round trip (the ledger stores DocumentState as jsonb)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from connectors.base import DocumentState, ExternalRef
from connectors.engine import Capabilities, Observed, invoice_digest, next_step, pick
from connectors.engine_state import CreditApplication, EngineState, Intent, StepKind
from connectors.testing import invoice_event, next_version, payment
from daemon.canonical import Refund

CAPS = Capabilities()
OPEN = Observed(known=True)
CLOSED = Observed(closed_through=date(2026, 11, 30), known=True)


def posted(event, **engine) -> DocumentState:
    return DocumentState(external_id="7", token="3", status="posted", customer_id="5",
                         engine=EngineState(invoice_digest=invoice_digest(event), **engine))


def test_a_new_invoice_is_created_and_in_closed_books_redated_to_the_first_open_day():
    event = invoice_event()
    assert next_step(event, DocumentState(), CAPS, OPEN).kind is StepKind.CREATE_INVOICE
    step = next_step(event, DocumentState(), CAPS, CLOSED)
    assert step.kind is StepKind.CREATE_INVOICE and step.txn_date == date(2026, 12, 1)
    assert next_step(invoice_event(status="draft"), DocumentState(), CAPS, OPEN) is None


def test_changed_payments_go_first_then_the_update_then_new_payments():
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = posted(v1)
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    assert next_step(v1, doc, CAPS, OPEN) is None  # delivered: nothing to do
    v2 = next_version(v1, lines=list(v1.lines)[:2], payments=[payment(1, "90.00")])
    assert next_step(v2, doc, CAPS, OPEN).kind is StepKind.REMOVE_PAYMENT
    del doc.payments["1"]
    assert next_step(v2, doc, CAPS, OPEN).kind is StepKind.UPDATE_INVOICE
    doc.engine.invoice_digest = invoice_digest(v2)
    step = next_step(v2, doc, CAPS, OPEN)
    assert (step.kind, step.key, step.amount) == (StepKind.ADD_PAYMENT, "1", Decimal("90.00"))


def test_closed_books_turn_an_update_into_an_adjustment_and_a_void_into_a_full_decrease():
    v1 = invoice_event()
    doc = posted(v1)
    doc.engine.applications["3"] = CreditApplication(external_id="a3", amount=Decimal("10.00"))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    step = next_step(v2, doc, CAPS, CLOSED)
    assert (step.kind, step.target_total, step.txn_date) == (StepKind.ADJUST, v2.computed.total, date(2026, 12, 1))
    void = next_version(v1, status="void")
    assert next_step(void, doc, CAPS, OPEN).kind is StepKind.RELEASE_CREDIT  # applications go before a void
    step = next_step(void, doc, CAPS, CLOSED)
    assert (step.kind, step.target_total, step.target_tax) == (StepKind.ADJUST, 0, 0)
    assert next_step(void, doc.model_copy(update={"status": "voided"}), CAPS, CLOSED) is None


def test_without_the_capability_no_credit_note_is_planned():
    from connectors.testing import NOW
    from daemon.canonical import Refund

    event = invoice_event(refunds=[Refund(id=4, kind="refund", amount=Decimal("5.00"), created_at=NOW)])
    assert next_step(event, posted(event), CAPS, OPEN).kind is StepKind.CREATE_CREDIT_NOTE
    assert next_step(event, posted(event), Capabilities(credit_notes=False), OPEN) is None


def _refund(refund_id: int) -> Refund:
    from datetime import datetime, timezone

    return Refund(id=refund_id, kind="return", amount=Decimal("20.00"), tax_amount=Decimal("1.00"), line_id=1,
                  created_at=datetime(2026, 11, 22, tzinfo=timezone.utc))


def test_update_detaches_money_takes_payments_and_credit_off_before_the_update_xero():
    """Xero: a document with payments or credit allocated cannot be edited; they come off, then go back."""
    detach = Capabilities(update_detaches_money=True)
    v1 = invoice_event(payments=[payment(1, "100.00")], refunds=[_refund(3)])
    doc = posted(v1)
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="applied")
    doc.engine.applications["3"] = CreditApplication(external_id="c3/a", amount=Decimal("21.00"))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    assert next_step(v2, doc, CAPS, OPEN).kind is StepKind.UPDATE_INVOICE  # without the flag: straight on
    assert next_step(v2, doc, detach, OPEN).kind is StepKind.REMOVE_PAYMENT
    del doc.payments["1"]
    assert next_step(v2, doc, detach, OPEN).kind is StepKind.RELEASE_CREDIT
    del doc.engine.applications["3"]
    assert next_step(v2, doc, detach, OPEN).kind is StepKind.UPDATE_INVOICE
    assert next_step(v2, doc, detach, CLOSED).kind is StepKind.ADJUST  # closed: nothing comes off


def test_void_credit_notes_releases_then_voids_a_removed_refunds_note_and_a_new_one_when_entered_again():
    caps = Capabilities(void_credit_notes=True)
    v1 = invoice_event(refunds=[_refund(3)])
    doc = posted(v1)
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="applied")
    doc.engine.applications["3"] = CreditApplication(external_id="c3/a", amount=Decimal("21.00"))
    v2 = next_version(v1, refunds=[])
    assert next_step(v2, doc, CAPS, OPEN) is None  # without the flag the note stays
    assert (next_step(v2, doc, caps, OPEN).kind, next_step(v2, doc, caps, OPEN).key) == (StepKind.RELEASE_CREDIT, "3")
    del doc.engine.applications["3"]
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.VOID_CREDIT_NOTE
    doc.refunds["3"].status = "voided"
    assert next_step(v2, doc, caps, OPEN) is None
    assert next_step(next_version(v2, refunds=[_refund(3)]), doc, caps, OPEN).kind is StepKind.CREATE_CREDIT_NOTE
    # Every refund of a voided invoice is voided before the invoice.
    doc.refunds["3"].status = "open"
    void = next_version(v1, status="void")
    assert [next_step(void, doc, caps, OPEN).kind] == [StepKind.VOID_CREDIT_NOTE]


def test_credit_settled_at_creation_voids_the_note_before_a_payment_change_and_posts_it_again_after():
    """QuickFile: a VOID note took the refund off what is owed, so a full payment would be refused; the note
    goes first, the payment in, the note again (settled by what is then owed). Nothing when payments stay."""
    caps = Capabilities(credit_applications=False, credit_settled_at_creation=True)
    v1 = invoice_event(refunds=[_refund(3)])
    doc = posted(v1)
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="open")
    assert next_step(v1, doc, caps, OPEN) is None
    v2 = next_version(v1, payments=[payment(1, "677.58")])
    assert next_step(v2, doc, CAPS.model_copy(update={"credit_applications": False}), OPEN).kind is StepKind.ADD_PAYMENT
    assert (next_step(v2, doc, caps, OPEN).kind, next_step(v2, doc, caps, OPEN).key) == (StepKind.VOID_CREDIT_NOTE, "3")
    doc.refunds["3"].status = "voided"
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.ADD_PAYMENT
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("677.58"))
    assert (next_step(v2, doc, caps, OPEN).kind, next_step(v2, doc, caps, OPEN).key) == (StepKind.CREATE_CREDIT_NOTE, "3")
    doc.refunds["3"] = ExternalRef(external_id="c4", amount=Decimal("21.00"), status="open")
    assert next_step(v2, doc, caps, OPEN) is None
    # a reversal: the note goes before the payment is removed
    v3 = next_version(v2, payments=[payment(1, "677.58", status="reversed")])
    assert next_step(v3, doc, caps, OPEN).kind is StepKind.VOID_CREDIT_NOTE


def test_update_voids_credit_notes_voids_the_refunds_notes_before_the_update_and_posts_them_again_after():
    """SAP Business One cannot cancel an invoice a credit memo was copied from: an edit voids the refunds' notes
    first (with the payments taken off), replaces the invoice, then posts the notes again. Nothing without an edit."""
    caps = Capabilities(credit_applications=False, update_detaches_money=True, update_replaces=True,
                        void_credit_notes=True, update_voids_credit_notes=True)
    v1 = invoice_event(payments=[payment(1, "100.00")], refunds=[_refund(3)])
    doc = posted(v1)
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="open")
    assert next_step(v1, doc, caps, OPEN) is None
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    without = caps.model_copy(update={"update_voids_credit_notes": False})
    assert next_step(v2, doc, without, OPEN).kind is StepKind.REMOVE_PAYMENT  # the note stays: the update fails
    assert (next_step(v2, doc, caps, OPEN).kind, next_step(v2, doc, caps, OPEN).key) == (StepKind.VOID_CREDIT_NOTE, "3")
    doc.refunds["3"].status = "voided"
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.REMOVE_PAYMENT
    del doc.payments["1"]
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.UPDATE_INVOICE
    doc.engine.invoice_digest = invoice_digest(v2)
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.ADD_PAYMENT
    doc.payments["1"] = ExternalRef(external_id="p2", amount=Decimal("100.00"))
    assert (next_step(v2, doc, caps, OPEN).kind, next_step(v2, doc, caps, OPEN).key) == (StepKind.CREATE_CREDIT_NOTE, "3")


def test_unique_numbers_adopt_only_the_document_with_the_amount_sent():
    found = [ExternalRef(external_id="old", amount=Decimal("677.58"))]
    assert pick(found, Decimal("42.00")).external_id == "old"  # numbers may repeat: the newest
    assert pick(found, Decimal("42.00"), exact=True) is None  # unique: another invoice's, never adopted
    assert pick(found, Decimal("677.58"), exact=True).external_id == "old"


def test_engine_state_round_trips_through_the_ledgers_json_and_reads_legacy_documents():
    doc = posted(invoice_event(), intent=Intent(step=StepKind.ADD_PAYMENT, key="1", reference="LW1",
                                                amount=Decimal("10.00")))
    assert DocumentState.model_validate(json.loads(doc.model_dump_json())) == doc
    legacy = EngineState.from_legacy({"txn_date": "2026-12-01", "tax_difference": "-0.01",
                                      "credit_applied:3": "88:304.45", "adjustments": json.dumps(
                                          [{"kind": "increase", "id": "90", "doc_number": "A1-INV-1", "total": "9.98",
                                            "tax": "0.48", "version": "2", "reason": "closed"}])})
    assert legacy.posted_on == date(2026, 12, 1) and legacy.tax_difference == Decimal("-0.01")
    assert legacy.applications["3"] == CreditApplication(external_id="88", amount=Decimal("304.45"))
    assert legacy.adjustments[0].signed_total == Decimal("9.98") and legacy.invoice_digest is None


# --- hooks added by the Zoho Books port: an issue step, a closing date named by the refusal, unique numbers ---


def test_a_platform_that_creates_drafts_issues_the_invoice_before_payments_apply():
    drafts = Capabilities(issue_after_create=True)
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = posted(v1, issued=False)
    assert next_step(v1, doc, drafts, OPEN).kind is StepKind.ISSUE_INVOICE
    assert next_step(v1, doc, CAPS, OPEN).kind is StepKind.ADD_PAYMENT  # platforms without drafts: no such step
    doc.engine.issued = True
    assert next_step(v1, doc, drafts, OPEN).kind is StepKind.ADD_PAYMENT
    assert EngineState.from_legacy({"sent": "1"}).issued is True and EngineState.from_legacy({}).issued is None


def test_an_interrupted_create_is_adopted_only_with_the_amount_sent_where_numbers_are_unique():
    from connectors.engine import pick

    older = [ExternalRef(external_id="1", amount=Decimal("677.58"))]  # another invoice that holds the number
    assert pick(older, Decimal("42.00")) is older[0]
    assert pick(older, Decimal("42.00"), exact=True) is None
    assert pick(older, Decimal("677.58"), exact=True) is older[0]


class _LockedOps:
    """Platform operations whose books cannot be read: the refusal of the update names the closing date."""

    capabilities = Capabilities()

    def __init__(self) -> None:
        self.adjustments: list = []

    def customer_digest(self, customer):
        return "d"

    def item_for(self, line):
        return None

    def reference(self, kind, event, key=""):
        return f"{kind.value}:{key}"

    def books_closed_through(self):
        return None

    def update_invoice(self, event, posting, current):
        from connectors.base import ClosedPeriodError

        raise ClosedPeriodError("locked: dated before 2026-12-01", closed_through=date(2026, 11, 30))

    def read_invoice(self, external_id):
        from connectors.base import RemoteInvoice

        return RemoteInvoice(external_id=external_id, total=Decimal("677.58"), tax_total=Decimal("30.13"))

    def create_adjustment(self, event, adjustment, posting):
        self.adjustments.append((adjustment.kind, adjustment.net + adjustment.tax, posting.txn_date))
        return ExternalRef(external_id="a1")


def test_a_refusal_that_names_the_closing_date_re_plans_into_an_adjustment():
    from connectors.engine import run
    from connectors.testing import MemoryContext, MemoryEntities

    v1 = invoice_event()
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    ops = _LockedOps()
    entities = MemoryEntities()
    entities.put("customer", str(v1.customer.id), ExternalRef(external_id="5", status="d"))
    done = run(ops, v2, posted(v1), MemoryContext("t", v2, entities))
    assert ops.adjustments == [("decrease", v1.computed.total - v2.computed.total, date(2026, 12, 1))]
    assert [(a.kind, a.posted_on) for a in done.engine.adjustments] == [("decrease", date(2026, 12, 1))]


def test_an_update_that_detaches_money_takes_payments_and_credits_off_first_and_back_after():
    """Odoo's button_draft unreconciles what is applied to the invoice: with ``update_detaches_money`` the
    planner removes our payments and credit applications before the update and adds them again after it."""
    detaching = Capabilities(update_detaches_money=True)
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = posted(v1, applications={"9": CreditApplication(external_id="a9", amount=Decimal("10.00"))})
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    assert next_step(v1, doc, detaching, OPEN) is None  # unchanged: nothing is taken off
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    assert next_step(v2, doc, CAPS, OPEN).kind is StepKind.UPDATE_INVOICE  # without it: the update alone
    assert next_step(v2, doc, detaching, CLOSED).kind is StepKind.ADJUST  # closed books keep them
    step = next_step(v2, doc, detaching, OPEN)
    assert (step.kind, step.key) == (StepKind.REMOVE_PAYMENT, "1")
    del doc.payments["1"]
    assert next_step(v2, doc, detaching, OPEN).kind is StepKind.RELEASE_CREDIT
    doc.engine.applications.clear()
    assert next_step(v2, doc, detaching, OPEN).kind is StepKind.UPDATE_INVOICE
    doc.engine.invoice_digest = invoice_digest(v2)
    assert next_step(v2, doc, detaching, OPEN).kind is StepKind.ADD_PAYMENT


def test_legacy_odoo_documents_keep_their_open_period_date_and_adjustment_numbers():
    extra = {"open_date": "2026-11-26", "adjustments": json.dumps([
        {"kind": "decrease", "id": "41", "number": "INV-1-C1", "total": "13.13", "tax": "0.63", "version": "2"}])}
    state = EngineState.from_legacy(extra)
    assert state.posted_on == date(2026, 11, 26)
    assert [(a.reference, a.signed_total) for a in state.adjustments] == [("INV-1-C1", Decimal("-13.13"))]


class _ReplacingOps(_LockedOps):
    """An update that cancels the posted invoice and posts a replacement (Business Central)."""

    capabilities = Capabilities(update_replaces=True, update_detaches_money=True, closed_periods=False)

    def update_invoice(self, event, posting, current):
        from connectors.base import RemoteInvoice

        self.replaced = current.external_id
        return RemoteInvoice(external_id="8", token="1", status="issued")


def test_an_update_that_replaces_the_invoice_adopts_the_replacements_id():
    from connectors.engine import run
    from connectors.testing import MemoryContext, MemoryEntities

    v1 = invoice_event()
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    ops = _ReplacingOps()
    entities = MemoryEntities()
    entities.put("customer", str(v1.customer.id), ExternalRef(external_id="5", status="d"))
    done = run(ops, v2, posted(v1, issued=True), MemoryContext("t", v2, entities))
    assert ops.replaced == "7" and (done.external_id, done.token) == ("8", "1")


class _AdoptingOps(_LockedOps):
    """An earlier attempt's create got no answer; the platform holds its document."""

    capabilities = Capabilities(closed_periods=False)

    def find(self, kind, reference):
        return [ExternalRef(external_id="7", amount=Decimal("677.57"), status="draft")]

    def finish_for(self, event, kind, ref):
        self.finished = (event.invoice_id, kind, ref.external_id)
        return ref.model_copy(update={"amount": event.computed.total})


def test_an_adopted_document_is_finished_for_the_event_it_was_made_for():
    """``finish_for`` (Business Central completes an adopted draft to the shop's total) is told the event."""
    from connectors.engine import run
    from connectors.engine_state import DocKind
    from connectors.testing import MemoryContext, MemoryEntities

    v1 = invoice_event()
    doc = DocumentState(engine=EngineState(intent=Intent(step=StepKind.CREATE_INVOICE, reference="INV",
                                                         amount=v1.computed.total, digest=invoice_digest(v1))))
    ops = _AdoptingOps()
    entities = MemoryEntities()
    entities.put("customer", str(v1.customer.id), ExternalRef(external_id="5", status="d"))
    done = run(ops, v1, doc, MemoryContext("t", v1, entities, attempt=2))
    assert ops.finished == (v1.invoice_id, DocKind.INVOICE, "7") and done.external_id == "7"


def test_an_invoice_holding_a_credit_note_it_cannot_shed_is_adjusted_with_its_payments_left_applied():
    """Business Central cannot cancel (replace) an invoice a refund's credit memo is applied to, nor unapply it
    (``adjust_when_credited``): an edit posts the difference as an adjustment and keeps the payments applied (no
    detach), a void takes the reversed payments off and posts a full decrease; before any refund, the replacement."""
    caps = Capabilities(update_replaces=True, update_detaches_money=True, credit_applications=False,
                        closed_periods=False, adjust_when_credited=True)
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = posted(v1, issued=True)
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    assert next_step(v2, doc, caps, OPEN).kind is StepKind.REMOVE_PAYMENT  # no credit yet: replaced as before
    refunded = next_version(v1, refunds=[_refund(3)])
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="open")
    assert next_step(refunded, doc, caps, OPEN) is None
    edited = next_version(refunded, lines=list(v1.lines)[:2])
    step = next_step(edited, doc, caps, OPEN)
    assert (step.kind, step.target_total, step.target_tax) == (
        StepKind.ADJUST, edited.computed.total, edited.computed.tax_total)
    assert step.txn_date is None and "credit note" in step.reason
    without = caps.model_copy(update={"adjust_when_credited": False})
    assert next_step(edited, doc, without, OPEN).kind is StepKind.REMOVE_PAYMENT  # today: off, then a refused cancel
    void = next_version(refunded, status="void", payments=[])
    assert next_step(void, doc, caps, OPEN).kind is StepKind.REMOVE_PAYMENT  # the shop reversed it
    del doc.payments["1"]
    step = next_step(void, doc, caps, OPEN)
    assert (step.kind, step.target_total, step.target_tax) == (StepKind.ADJUST, 0, 0)
    doc.refunds["3"].status = "voided"  # a platform that voided the note could cancel the invoice again
    assert next_step(void, doc, caps, OPEN).kind is StepKind.VOID_INVOICE


class _CreditedOps(_ReplacingOps):
    """Business Central: an invoice with an applied credit memo cannot be cancelled; adjustments are posted."""

    capabilities = Capabilities(update_replaces=True, update_detaches_money=True, credit_applications=False,
                                closed_periods=False, adjust_when_credited=True)

    def delete_payment(self, ref, request_id):
        raise AssertionError("the payments stay applied")


def test_an_edit_of_a_credited_invoice_posts_the_difference_as_an_adjustment_never_a_replacement():
    from connectors.engine import run
    from connectors.testing import MemoryContext, MemoryEntities

    v1 = invoice_event(payments=[payment(1, "100.00")], refunds=[_refund(3)])
    doc = posted(v1, issued=True)
    doc.payments["1"] = ExternalRef(external_id="p1", amount=Decimal("100.00"))
    doc.refunds["3"] = ExternalRef(external_id="c3", amount=Decimal("21.00"), status="open")
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    ops = _CreditedOps()
    entities = MemoryEntities()
    entities.put("customer", str(v1.customer.id), ExternalRef(external_id="5", status="d"))
    done = run(ops, v2, doc, MemoryContext("t", v2, entities))
    assert not hasattr(ops, "replaced")
    assert ops.adjustments == [("decrease", Decimal("677.58") - v2.computed.total, None)]
    assert (done.external_id, set(done.payments), done.engine.invoice_digest) == ("7", {"1"}, invoice_digest(v2))
    assert [(a.kind, a.signed_total) for a in done.engine.adjustments] == [
        ("decrease", v2.computed.total - Decimal("677.58"))]
    assert next_step(v2, done, ops.capabilities, OPEN) is None
