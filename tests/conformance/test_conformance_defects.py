"""Issue #12's two exactly-once defects, on QuickBooks Online against its sandbox (they failed on the
pre-engine code): a void lost after an uncertain create, and a payment whose create got no answer never
deleted when the shop reverses it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.base import DocumentState, UncertainOutcomeError
from connectors.quickbooks_online import Sandbox
from connectors.testing import MemoryContext, MemoryEntities, connectors_on, invoice_event, next_version, payment


@pytest.fixture
def qbo():
    sandbox = Sandbox()
    sandbox.faults.hang_s = 1.5  # longer than the 1 s request timeout below: applied, then no answer
    with connectors_on(sandbox, "qbo") as build:
        connector = build()
        connector.http.client.timeout = 1.0
        yield sandbox, connector


def _deliver(connector, entities, event, doc, attempt=1):
    ctx = MemoryContext("qbo", event, entities, attempt=attempt)
    try:
        return connector.deliver(event, doc, ctx), ctx
    except UncertainOutcomeError:
        return None, ctx


class _Ledger:
    """The one ledger call ``SinkWorker._prepare_attempt`` makes, in memory."""

    def __init__(self, doc: DocumentState) -> None:
        self.doc = doc

    def document(self, target, invoice_id):
        return self.doc.model_copy(deep=True)

    def save_document(self, target, number, invoice_id, doc, **_):
        self.doc = doc.model_copy(deep=True)


def test_conformance_void_after_uncertain_create_is_not_lost(qbo):
    from daemon.sink.deliver import SinkWorker

    sandbox, connector = qbo
    entities = MemoryEntities()
    v1 = invoice_event(1201)
    _deliver(connector, entities, invoice_event(1200), DocumentState())  # customer and items exist now
    sandbox.faults.fault_at(1)  # so the next write is v1's invoice create: applied, answer lost
    doc, ctx = _deliver(connector, entities, v1, DocumentState())
    assert doc is None, "the create must have timed out"
    # What the ledger holds after the failed attempt: the last checkpoint, with one attempt counted.
    held = (ctx.checkpoints[-1] if ctx.checkpoints else DocumentState()).model_copy(deep=True)
    held.extra["attempts"] = "1"
    # The worker stopped during back-off; the shop voided meanwhile: v1 and the void coalesce into v2.
    v2 = next_version(v1, status="void")
    worker = object.__new__(SinkWorker)
    worker.ledger = _Ledger(held)
    worker.target = connector.target
    ready = worker._prepare_attempt(v2, 0)
    assert ready is not None, "the sink skipped the void of an invoice an earlier attempt may have created"
    doc, attempt = ready
    sandbox.faults.at_write = None
    final = connector.deliver(v2, doc, MemoryContext("qbo", v2, entities, attempt=attempt))
    booked = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert len(booked) == 1 and booked[0].voided and final.status == "voided"


def test_conformance_payment_created_without_answer_then_reversed_is_deleted(qbo):
    sandbox, connector = qbo
    entities = MemoryEntities()
    v1 = invoice_event(1301)
    doc, _ = _deliver(connector, entities, v1, DocumentState())
    v2 = next_version(v1, payments=[payment(1, "100.00")])
    sandbox.faults.fault_at(1)  # the payment create is applied, its answer lost
    failed, ctx = _deliver(connector, entities, v2, doc)
    assert failed is None
    held = ctx.checkpoints[-1] if ctx.checkpoints else doc
    # The shop reverses the payment before the retry: v2 and v3 coalesce.
    v3 = next_version(v2, payments=[payment(1, "100.00", status="reversed")])
    final, _ = _deliver(connector, entities, v3, held, attempt=2)
    assert final is not None
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert booked.payment_count == 0 and booked.payments_applied == Decimal("0")
    assert booked.total == v1.computed.total and not final.payments
