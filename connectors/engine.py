"""The delivery engine (issue #12): one invoice lifecycle and one set of exactly-once rules for every platform.

A connector on the engine supplies platform operations only (``PlatformOps``: find / create / update / void,
payments, credit notes, entities, error classes via its HTTP client, capability flags, pure mapping). The
engine owns the flow:

* ``next_step(event, doc, capabilities, observed)`` — a pure planner (like QuickBooks Desktop's ``_plan``):
  the next write that brings the platform closer to the event, or None when it matches. Order: remove changed
  payments → release credit applications beyond what is unpaid → create / update / void the invoice (or,
  when the books are closed for its date, re-date the create, or post an adjustment instead of the update
  or void) → add payments → refunds as credit notes → apply credits.
* ``run`` — the apply loop: before every write an ``Intent`` (step + natural reference) is recorded and
  checkpointed; after it the effect (external id, token, amount) is recorded, the intent closed, and checkpointed
  again. An intent still open on the next attempt is resolved first by ``PlatformOps.find`` (adopt what exists,
  drop the intent if nothing does). A stale concurrency token is re-read and the write retried once; a closed
  period met at write time re-reads the closing date and re-plans (bounded).
* ``preview`` — the same loop with the platform's writes recorded instead of sent (reads still go out), so
  the preview is what ``deliver`` sends by construction.
* ``deliver_many`` — batch endpoints (``capabilities.batch_create``) create new invoices in one request under
  the same intents, then ``run`` finishes each.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict

from connectors.base import (
    ClosedPeriodError,
    Connector,
    DeliveryContext,
    DeliveryError,
    DocumentState,
    EntityStore,
    ExternalRef,
    NumberInUseError,
    PermanentError,
    RemoteInvoice,
    StaleTokenError,
    delivered,
    sync_entity,
)
from connectors.engine_state import (
    CREATING,
    Adjustment,
    CreditApplication,
    DocKind,
    EngineState,
    Intent,
    StepKind,
)
from connectors import references
from connectors.http import Classifier, PlatformHttp
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, PaymentStatus, Refund

log = structlog.get_logger(__name__)
ZERO = Decimal("0")
MAX_STEPS = 200  # a delivery that plans more writes than this is looping: a defect, stopped as permanent
MAX_CLOSED_REPLANS = 3
# Entity-store kind of an invoice's claim: platform invoice id -> ExternalRef(external_id=<shop invoice id>).
CLAIM_KIND = "invoice-claim"
GONE_STATUSES = ("voided", "void", "deleted")  # a found document in one of these is never adopted
CREDITED = "a refund's credit note is applied to the invoice, which the platform cannot cancel: "  # an ADJUST's reason


# --- what a connector declares and supplies ----------------------------------------------------------------


class Capabilities(BaseModel):
    """What the platform can do; the planner and the conformance suite read these."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    void: Literal["void", "delete"] = "void"  # how an invoice is cancelled (informational for the suite)
    delete_payments: bool = True  # False: ``delete_payment`` voids/reverses instead (the effect is the same)
    payment_linked_at_creation: bool = True  # False: ``create_payment`` allocates to the invoice itself
    credit_notes: bool = True  # refunds post as credit notes
    credit_applications: bool = True  # credit notes are applied to their invoice (``apply_credit``)
    closed_periods: bool = True  # the platform closes books: re-dating and adjustments apply
    batch_create: int = 0  # invoices per batch create request; 0 = no batch endpoint
    bank_transaction_payments: bool = False  # payments are explanations of bank transactions
    refund_settlement: bool = False  # a refund paid back settles its credit note (issue #20)
    # Invoices are created as drafts and issued by a separate write (``issue_invoice``; Zoho's mark as sent)
    # before payments and credits can apply to them.
    issue_after_create: bool = False
    # An invoice update detaches what is applied to it, or is refused while anything is (Odoo: ``button_draft``
    # unreconciles its payments and credit notes; Xero refuses to edit a document with any): the planner
    # removes them before the update and adds them again after it.
    update_detaches_money: bool = False
    # A refund removed in the shop (or every refund of a voided invoice): its credit note is voided
    # (``void_credit_note``) after its application is released.
    void_credit_notes: bool = False
    # A credit note is settled against its invoice as it is created, by what the invoice holds then, and cannot
    # be settled again (QuickFile: the part still owed comes off the balance, VOID; the part already paid moves
    # to the client's account, HOLD): before the invoice's payments change, the planner voids its refunds'
    # credit notes (``void_credit_note``), and posts them again after, settled by what the invoice then holds.
    credit_settled_at_creation: bool = False
    # The platform refuses to cancel an invoice while a refund's credit note is bound to it (SAP Business One: an
    # A/R credit memo copied from the invoice), so an update that replaces the invoice (``update_replaces``) could
    # never be made: before the update the planner voids the refunds' credit notes (``void_credit_note``), and
    # posts them again after it, against the replacement. A void voids them by ``void_credit_notes`` (set both).
    update_voids_credit_notes: bool = False
    # The platform refuses a second live document with the same number (Xero, Zoho Books): a retry adopts only
    # the document with the amount it sent, never another shop invoice's that still holds a reused number.
    unique_numbers: bool = False
    # An issued invoice cannot be modified (Business Central: "The invoice has been posted and can no longer be
    # modified"): ``update_invoice`` cancels it and posts a replacement carrying the same number, whose id the
    # engine adopts (set ``update_detaches_money`` too: a paid invoice cannot be cancelled).
    update_replaces: bool = False
    # The platform cannot cancel an invoice a refund's credit note is applied to, nor take the credit off (Business
    # Central: API v2.0 has no unapply, and a refund's credit memo is not a corrective one it could cancel): once an
    # invoice holds a credit note, an edit posts the difference as adjustments (an increase invoice, a decrease
    # credit note applied to the invoice) and a void a full decrease, as in a closed period, dated as the invoice
    # is; its payments stay applied.
    adjust_when_credited: bool = False
    # The platform pulls its requests (QuickBooks Desktop's Web Connector): ``deliver`` queues and the pull
    # driver (connectors/engine_pull.py) runs this loop one request per answer. No request rate limit or token.
    pull: bool = False
    # A negative-total invoice (a core return on its own) is posted as a standalone credit note through
    # ``create_credit_note`` (its refund: ``negative_refund``); off: the platform's refusal is dead-lettered.
    negative_totals: bool = False
    # The connector sends an invoice's currency (and the exchange rate where the platform needs it). Off: an
    # invoice in another currency than ``home_currency()`` is dead-lettered with the reason (issue #20).
    multi_currency: bool = False
    # The credential expires and is renewed (an access token, a session). False for a static key signed into
    # every request (QuickFile's MD5 header): nothing to refresh, so the expired-token scenario does not apply.
    expiring_credentials: bool = True


@dataclass(frozen=True)
class ItemSpec:
    """The item a line posts on: ``external_id`` when the mapping names it, else found/created by ``name``."""

    key: str  # entity store key
    name: str
    line: InvoiceLine | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class AdjustmentSpec:
    """A closed-period adjustment to post: ``net`` + ``tax`` as positive amounts on the document."""

    kind: Literal["increase", "decrease"]
    sequence: int
    reference: str
    net: Decimal
    tax: Decimal
    original_id: str | None
    reason: str


@dataclass
class Posting:
    """What a write needs beyond the event: resolved ids, the date to post on, the idempotency key."""

    request_id: str
    customer_id: str = ""
    item_ids: dict[int, str] = field(default_factory=dict)  # line id -> item id
    txn_date: date | None = None  # set when re-dated into the first open day (closed period)
    invoice_id: str = ""  # the invoice at the platform, once created (a credit note may have to refer to it)
    item: Callable[[ItemSpec], str] = lambda spec: spec.external_id or ""  # ensure an extra item (refund…)
    adjustments: list[Adjustment] = field(default_factory=list)  # closed-period documents posted so far

    def dated(self, body: dict[str, Any], date_field: str, *, due_field: str | None = None,
              note_field: str | None = None, note_max: int = 4000) -> dict[str, Any]:
        """``body`` dated the first open day when the books are closed for its own date (as it is otherwise):
        its due date (``due_field``) never before that day, and the shop's own date said in ``note_field``."""
        if self.txn_date is None:
            return body
        day = self.txn_date.isoformat()
        out = {**body, date_field: day}
        if due_field and out.get(due_field):
            out[due_field] = max(str(out[due_field]), day)
        if note_field:
            out[note_field] = f"{body.get(note_field, '')}; shop date {body.get(date_field)} is in a closed period"[:note_max]
        return out


class PlatformOps(ABC):
    """The platform operations a connector on the engine implements. Writes raise the classified
    ``DeliveryError`` (the HTTP layer does it); none of them decides *whether* to write — the engine does."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    # -- shared entities (created once per target through the entity store's lock) --
    @abstractmethod
    def customer_digest(self, customer: Customer) -> str:
        """A digest of what the platform's customer record holds; a change triggers ``update_customer``."""

    @abstractmethod
    def find_customer(self, customer: Customer) -> ExternalRef | None:
        """The platform's customer for this shop customer, by the target's match rules, or None."""

    @abstractmethod
    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef: ...

    @abstractmethod
    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        """Bring the platform's record up to date; None when it cannot now (kept, retried next time)."""

    @abstractmethod
    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        """The item ``line`` posts on; None when it needs none (e.g. a discount on a discount account)."""

    @abstractmethod
    def find_item(self, spec: ItemSpec) -> ExternalRef | None: ...

    @abstractmethod
    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef: ...

    # -- natural references and look-ups --
    @abstractmethod
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        """The natural reference of a document: the invoice number (``key`` ""), a payment's reference
        (``key`` = payment id), a credit note's number or its application's reference (refund id), an
        adjustment's number (``key`` = "<increase|decrease>:<sequence>")."""

    @abstractmethod
    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        """The live (not voided / deleted) documents of ``kind`` with ``reference``, oldest first; ``amount`` =
        the document's total. This is what makes every create safe to retry."""

    # -- the invoice --
    @abstractmethod
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice: ...

    @abstractmethod
    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """Replace the invoice's content; ``current.token`` is the concurrency token (StaleTokenError if old)."""

    @abstractmethod
    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        """Void (or delete) it; None when the platform no longer has it. Must be safe to repeat."""

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        """Make a draft invoice final (``capabilities.issue_after_create``); ``current.status`` is "draft" when
        the platform said so, None when not known. Must be safe to repeat."""
        raise NotImplementedError

    @abstractmethod
    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        """Read back (token, total, tax, balance, status); None when gone."""

    # -- money --
    @abstractmethod
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        """A payment applied to THIS invoice (never left to the platform's auto-apply)."""

    @abstractmethod
    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        """Remove (or void) it so its amount returns to the balance; nothing when already gone."""

    @abstractmethod
    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef: ...

    @abstractmethod
    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        """Apply ``amount`` of the credit note to the invoice; the ref identifies the application."""

    @abstractmethod
    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        """Undo an application; nothing when already gone."""

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """``capabilities.refund_settlement``: the money the shop paid back (``refund.payment_id`` set) as a
        refund payment (money out, from the account the refunded payment's method maps to) that settles
        ``amount`` of the credit note, leaving nothing open. Found again by ``find(REFUND_PAYMENT, reference)``."""
        raise NotImplementedError

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        """Remove a refund payment (its refund changed or is gone); nothing when already gone."""
        raise NotImplementedError

    def void_credit_note(self, event: InvoiceEvent, credit: ExternalRef, posting: Posting) -> None:
        """``capabilities.void_credit_notes``: void the credit note of a refund no longer wanted (safe to
        repeat)."""
        raise NotImplementedError

    # -- currency --
    def home_currency(self) -> str | None:
        """The company's currency at the platform; None when not known (then not checked). Default: the target's
        ``mapping.home_currency``."""
        return getattr(getattr(self, "mapping", None), "home_currency", None)

    # -- closed periods --
    @abstractmethod
    def books_closed_through(self) -> date | None:
        """The last day the platform's books are closed for; None when nothing is closed."""

    @abstractmethod
    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        """An increase (an invoice) or decrease (a credit note) dated ``posting.txn_date``, numbered
        ``adjustment.reference``, referring to the original invoice."""

    # -- optional: finishing a half-made document, batch create, dry run --
    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """An earlier attempt's document, found by ``find``, that it may have left half-made (e.g. an Odoo move
        created in draft and never posted): complete it before it is adopted. Default: nothing to do."""
        return ref

    def finish_for(self, event: InvoiceEvent, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """``finish`` told which event the document was made for (Business Central completes an adopted draft
        to the shop's total). Default: ``finish``."""
        return self.finish(kind, ref)

    def create_invoices(self, batch: list[tuple[InvoiceEvent, Posting]]) -> list[RemoteInvoice | DeliveryError]:
        """One batch request creating these invoices (``capabilities.batch_create`` > 0)."""
        raise NotImplementedError

    @contextmanager
    def batch_slot(self) -> Iterator[bool]:
        """Whether a batch request may go now (a platform's separate batch allowance)."""
        yield True

    @abstractmethod
    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        """While open, writes are appended as ``{"method", "path", "body"}`` and answered with placeholder
        ids (``"<new invoice>"``…) instead of being sent; reads still go to the platform."""


@contextmanager
def recording_on(client: Any) -> Iterator[list[dict[str, Any]]]:
    """``recording`` for a client that records instead of sending while its ``recorder`` list is set."""
    client.recorder = sent = []
    try:
        yield sent
    finally:
        client.recorder = None


# --- observation and the planner ------------------------------------------------------------------------


@dataclass
class Observed:
    """What the planner knows of the platform beyond the ledger: read lazily, only when a write is planned."""

    closed_through: date | None = None
    known: bool = False


@dataclass(frozen=True)
class Step:
    kind: StepKind
    key: str = ""
    amount: Decimal | None = None
    txn_date: date | None = None  # re-dated into the first open day
    target_total: Decimal | None = None  # ADJUST: what the platform should hold afterwards
    target_tax: Decimal | None = None
    reason: str = ""


def first_open_day(closed_through: date | None, today: date | None = None) -> date:
    return closed_through + timedelta(days=1) if closed_through else (today or date.today())


def invoice_digest(event: InvoiceEvent) -> str:
    """The invoice content the platform holds (not payments, refunds or versions): changes mean an update."""
    content = event.model_dump_json(include={"number", "status", "issue_date", "due_date", "currency", "customer",
                                             "location", "job", "lines", "computed", "tax_inclusive"})
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def received(event: InvoiceEvent) -> dict[str, Payment]:
    if event.status.value in ("void", "deleted"):
        return {}
    return {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}


def next_step(event: InvoiceEvent, doc: DocumentState, caps: Capabilities, observed: Observed) -> Step | None:
    """The next write, a pure function of the event, the ledger's state and what was observed."""
    state = doc.engine or EngineState()
    voiding = event.status.value in ("void", "deleted")
    closed = observed.closed_through if caps.closed_periods else None

    def in_closed(day: date) -> bool:
        return closed is not None and day <= closed

    def posting_date(day: date) -> date | None:
        return first_open_day(closed) if in_closed(day) else None

    held_on = state.posted_on or event.issue_date
    live = doc.external_id is not None and doc.status not in ("voided", "deleted")
    if voiding and not live:
        return None
    if state.credit_invoice or (caps.negative_totals and caps.credit_notes and event.computed.total < 0
                                and event.status.value != "draft" and doc.external_id is None):
        return credit_invoice_step(event, doc, state, caps, voiding, live)
    if voiding and in_closed(held_on):
        # The closed books keep the invoice, its payments and credits: a full decrease cancels it.
        return Step(StepKind.ADJUST, target_total=ZERO, target_tax=ZERO, txn_date=first_open_day(closed),
                    reason="voided after the books were closed")
    wanted = received(event)
    # The invoice cannot be cancelled or replaced while a credit note is applied to it (capability): adjustments.
    credited = caps.adjust_when_credited and live and any(ref.status != "voided" for ref in doc.refunds.values())
    # An update that detaches payments and credits (capability) takes them all off first.
    detach = (caps.update_detaches_money and live and not voiding and not in_closed(held_on) and not credited
              and state.invoice_digest != invoice_digest(event))

    def void_step(refund_id: str) -> Step:
        # A credit note a refund payment settles: that payment is removed first (the platform refuses to void a
        # settled note), and the note, posted again, is settled again (issue #20).
        kind = StepKind.UNSETTLE_REFUND if refund_id in state.settlements else StepKind.VOID_CREDIT_NOTE
        return Step(kind, key=refund_id)

    if caps.credit_settled_at_creation and live and not voiding and (set(wanted) != set(doc.payments) or any(
            wanted[payment_id].amount != ref.amount for payment_id, ref in doc.payments.items())):
        kept = {str(r.id) for r in event.refunds}
        for refund_id, ref in doc.refunds.items():
            if refund_id in kept and ref.status != "voided":
                return void_step(refund_id)
    if caps.update_voids_credit_notes and detach:
        for refund_id, ref in doc.refunds.items():
            if ref.status != "voided":
                return void_step(refund_id)
    for payment_id, ref in doc.payments.items():
        if detach or payment_id not in wanted or wanted[payment_id].amount != ref.amount:
            return Step(StepKind.REMOVE_PAYMENT, key=payment_id)
    settle = caps.refund_settlement and caps.credit_notes
    paid_back = {} if voiding else {str(r.id): r for r in event.refunds if r.payment_id is not None}
    for refund_id in state.settlements if settle else ():
        if refund_id not in paid_back:  # the refund is gone, or no longer paid back: its money out is removed
            return Step(StepKind.UNSETTLE_REFUND, key=refund_id)
    room = ZERO if voiding else event.computed.total - sum((p.amount for p in wanted.values()), ZERO)
    applied = sum((a.amount for a in state.applications.values()), ZERO)
    if applied > max(room, ZERO) or (detach and applied):
        return Step(StepKind.RELEASE_CREDIT, key=next(iter(state.applications)))
    if caps.void_credit_notes:
        kept = set() if voiding else {str(r.id) for r in event.refunds}
        for refund_id, ref in doc.refunds.items():
            if refund_id not in kept and ref.status != "voided":
                kind = StepKind.RELEASE_CREDIT if refund_id in state.applications else StepKind.VOID_CREDIT_NOTE
                return Step(kind, key=refund_id)
    if voiding and credited:
        return Step(StepKind.ADJUST, target_total=ZERO, target_tax=ZERO, reason=CREDITED + "voided")
    if voiding:
        return Step(StepKind.VOID_INVOICE)
    if doc.external_id is None:
        if event.status.value == "draft":
            return None  # not in the books until issued
        return Step(StepKind.CREATE_INVOICE, txn_date=state.posted_on or posting_date(event.issue_date))
    if not live:
        return None  # voided at the platform: a void is final there
    if state.invoice_digest != invoice_digest(event):
        if in_closed(held_on):
            return Step(StepKind.ADJUST, target_total=event.computed.total, target_tax=event.computed.tax_total,
                        txn_date=first_open_day(closed), reason="changed after the books were closed")
        if credited:
            return Step(StepKind.ADJUST, target_total=event.computed.total, target_tax=event.computed.tax_total,
                        txn_date=state.posted_on, reason=CREDITED + "changed")
        return Step(StepKind.UPDATE_INVOICE, txn_date=state.posted_on)
    if caps.issue_after_create and state.issued is not True:
        return Step(StepKind.ISSUE_INVOICE)
    for payment_id, payment in wanted.items():
        if payment_id not in doc.payments:
            return Step(StepKind.ADD_PAYMENT, key=payment_id, amount=payment.amount,
                        txn_date=posting_date(payment.received_at.date()))
    if caps.credit_notes:
        for refund in event.refunds:
            held = doc.refunds.get(str(refund.id))
            again = caps.void_credit_notes or caps.credit_settled_at_creation
            if held is None or (again and held.status == "voided"):  # new, entered again, or to be settled again
                return Step(StepKind.CREATE_CREDIT_NOTE, key=str(refund.id), amount=refund.amount + refund.tax_amount,
                            txn_date=posting_date(refund.created_at.date()))
    if caps.credit_notes and caps.credit_applications:
        left = room - applied
        for refund_id, ref in doc.refunds.items():
            if settle and refund_id in paid_back:
                continue  # paid back to the customer: settled by money out, not set against the invoice
            amount = min(ref.amount or ZERO, left)
            if refund_id not in state.applications and amount > 0 and ref.status != "voided":
                return Step(StepKind.APPLY_CREDIT, key=refund_id, amount=amount)
    for refund_id in paid_back if settle else ():
        ref = doc.refunds.get(refund_id)
        if ref is not None and ref.status != "voided" and refund_id not in state.settlements and ref.amount:
            return Step(StepKind.SETTLE_REFUND, key=refund_id, amount=ref.amount)
    return None


def negative_refund(event: InvoiceEvent) -> Refund:
    """A negative-total invoice as the refund its credit note posts: the whole (positive) amount and tax, on
    its only line when it has one (its account and taxes), keyed by the negative invoice id (no refund has it)."""
    taxed = [ln for ln in event.lines if ln.amount < 0]
    issued = event.issue_date or event.emitted_at.date()
    return Refund(id=-event.invoice_id, kind="return", amount=-event.computed.subtotal,
                  tax_amount=-event.computed.tax_total, line_id=taxed[0].id if len(taxed) == 1 else None,
                  reason=f"Shop invoice {event.number}: negative total",
                  created_at=datetime.combine(issued, time(12), tzinfo=timezone.utc))


def credit_invoice_step(event: InvoiceEvent, doc: DocumentState, state: EngineState, caps: Capabilities,
                        voiding: bool, live: bool) -> Step | None:
    """An invoice posted as a credit note (negative total): created once; a void voids the credit note where
    the platform can; anything else (an edit, payments, refunds) is refused with the reason, never guessed."""
    key = str(-event.invoice_id)
    if voiding:
        if not live:
            return None
        if caps.void_credit_notes:
            return Step(StepKind.VOID_CREDIT_NOTE, key=key)
        return Step(StepKind.REFUSE, reason="void of an invoice posted as a credit note (negative total): void the "
                    f"credit note at the platform ({doc.external_id}); the platform's credit notes cannot be voided here")
    if doc.external_id is None:
        return Step(StepKind.CREATE_CREDIT_NOTE, key=key, amount=-event.computed.total)
    shop_refunds = [r for r in event.refunds if str(r.id) != key]  # the credit note's own refund is ours
    if state.invoice_digest != invoice_digest(event) or event.payments or shop_refunds:
        return Step(StepKind.REFUSE, reason="an invoice posted as a credit note (negative total) was edited, paid or "
                    "refunded: change it at the platform, or void it in the shop and issue a new one")
    return None


# --- the apply loop -------------------------------------------------------------------------------------


class _Run:
    """One delivery of one event: resolve open intents, then plan → intent → write → effect until done."""

    def __init__(self, ops: PlatformOps, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        self.ops, self.event, self.ctx = ops, as_printed(event, getattr(ops, "mapping", None)), ctx
        self.negative = self.event.computed.total < 0 and (ops.capabilities.negative_totals or (
            doc.engine is not None and doc.engine.credit_invoice))
        self.shop_event = self.event  # what the digest is of (the credit note's refund is ours, not the shop's)
        if self.negative:  # the credit note's refund, where references and ``create_credit_note`` look for it
            self.event = self.event.model_copy(update={"refunds": (*self.event.refunds, negative_refund(self.event))})
        self.doc = doc.model_copy(deep=True)
        self.legacy = self.doc.engine is None and self.doc.delivered_version > 0
        if self.doc.engine is None:
            self.doc.engine = EngineState.from_legacy(self.doc.extra)
        self.state: EngineState = self.doc.engine
        self.observed = Observed()
        self.log = log.bind(target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        self._customer_id: str | None = None
        self._item_ids: dict[int, str] | None = None

    # -- entities --
    def customer_id(self) -> str:
        if self._customer_id is None:
            ops, customer = self.ops, self.event.customer
            key = str(customer.id)
            self._customer_id = sync_entity(
                self.ctx, "customer", key, ops.customer_digest(customer),
                find=lambda: ops.find_customer(customer),
                create=lambda: ops.create_customer(customer, self.ctx.idempotency_key("customer", key)),
                update=lambda ref: ops.update_customer(ref, customer, self.ctx.idempotency_key(
                    "customer-update", key, ops.customer_digest(customer)))).external_id
            self.doc.customer_id = self._customer_id
        return self._customer_id

    def item(self, spec: ItemSpec) -> str:
        if spec.external_id:
            return spec.external_id
        entities: EntityStore = self.ctx.entities
        ref = entities.get("item", spec.key)
        if ref is None:
            with entities.lock("item", spec.key):
                ref = entities.get("item", spec.key)
                if ref is None:
                    ref = self.ops.find_item(spec) or self.ops.create_item(
                        spec, self.ctx.idempotency_key("item", spec.key))
                    entities.put("item", spec.key, ref)
        return ref.external_id

    def posting(self, *parts: object, txn_date: date | None = None, items: bool = False) -> Posting:
        customer_id = self.customer_id()
        if items and self._item_ids is None:
            self._item_ids = {}
            for line in self.event.lines:
                spec = self.ops.item_for(line)
                if spec is not None:
                    self._item_ids[line.id] = self.item(spec)
        return Posting(request_id=self.ctx.idempotency_key(*parts), customer_id=customer_id,
                       item_ids=dict(self._item_ids or {}), txn_date=txn_date, item=self.item,
                       invoice_id=self.doc.external_id or "", adjustments=list(self.state.adjustments))

    def again(self, slot: str) -> tuple[str, ...]:
        """What a write to ``slot`` adds to its request id once the slot's document was undone: a new id, never the
        one whose answer names the document that is gone (``EngineState.undone``)."""
        count = self.state.undone.get(slot, 0)
        return (f"again:{count}",) if count else ()

    def undo(self, slot: str) -> None:
        self.state.undone[slot] = self.state.undone.get(slot, 0) + 1

    # -- intents and effects --
    def open_intent(self, step: Step, **fields: Any) -> Intent:
        kind = CREATING.get(step.kind)
        reference = self.ops.reference(kind, self.event, fields.pop("ref_key", step.key)) if kind else ""
        fields.setdefault("amount", step.amount)
        self.state.intent = Intent(step=step.kind, key=step.key, reference=reference, **fields)
        self.ctx.checkpoint(self.doc)
        return self.state.intent

    def close(self) -> None:
        self.state.intent = None
        self.ctx.checkpoint(self.doc)

    def resolve_intent(self) -> None:
        """An earlier attempt recorded a write and never its answer: adopt what it made, or forget it."""
        intent = self.state.intent
        if intent is None:
            return
        if intent.step is StepKind.ISSUE_INVOICE:
            self.state.issued = None  # it may have gone through: the platform says (``issue_invoice`` reads)
        kind = CREATING.get(intent.step)
        found = pick(self.adoptable(kind, self.ops.find(kind, intent.reference)), intent.amount,
                     exact=self.ops.capabilities.unique_numbers) if kind else None
        if found is not None:
            found = self.ops.finish_for(self.event, kind, found)
            self.log.warning("engine_intent_adopted", step=intent.step.value, external_id=found.external_id)
            self.effect(intent, found, adopted=True)
            if intent.step is StepKind.ADJUST and intent.adjustment_kind == "increase":
                self.issue_draft(found)
        self.close()  # removals, voids and updates are re-planned and are safe to repeat

    def adoptable(self, kind: DocKind, found: list[ExternalRef]) -> list[ExternalRef]:
        """Exact adoption (issue #20): never a voided or deleted document, never an invoice another shop invoice
        posted (its claim in the entity store: a number the platform cuts, or one reused after a deletion,
        finds it too)."""
        live = [ref for ref in found if ref.status not in GONE_STATUSES]
        if kind is not DocKind.INVOICE:
            return live
        mine = str(self.event.invoice_id)
        return [ref for ref in live if (claim := self.ctx.entities.get(CLAIM_KIND, ref.external_id)) is None
                or claim.external_id == mine]

    def claim(self, external_id: str) -> None:
        """Record which shop invoice this platform invoice is (what ``adoptable`` reads)."""
        self.ctx.entities.put(CLAIM_KIND, external_id, ExternalRef(external_id=str(self.event.invoice_id)))

    def effect(self, intent: Intent, ref: ExternalRef | RemoteInvoice, adopted: bool = False,
               posted_on: date | None = None) -> None:
        doc, state = self.doc, self.state
        if intent.step is StepKind.CREATE_INVOICE:
            self.claim(ref.external_id)
            doc.external_id, doc.token, doc.status = ref.external_id, ref.token, "posted"
            state.invoice_digest = intent.digest
            state.issued = ref.status != "draft"
            if posted_on or intent.txn_date:  # re-dated (an adopted create keeps the date its intent recorded)
                state.posted_on = posted_on or intent.txn_date
        elif intent.step is StepKind.ADD_PAYMENT:
            doc.payments[intent.key] = ExternalRef(external_id=ref.external_id, token=ref.token, amount=intent.amount,
                                                   status="applied")
        elif intent.step is StepKind.CREATE_CREDIT_NOTE and intent.key == str(-self.event.invoice_id):
            # a negative-total invoice posted as a credit note: that credit note is the invoice at the platform
            doc.external_id, doc.token, doc.status = ref.external_id, ref.token, "posted"
            doc.refunds[intent.key] = ExternalRef(external_id=ref.external_id, token=ref.token, amount=intent.amount,
                                                  status="open")
            state.credit_invoice, state.issued = True, True
            state.invoice_digest = invoice_digest(self.shop_event)
        elif intent.step is StepKind.CREATE_CREDIT_NOTE:
            # What the platform posted (it may compute the note's tax itself): the credit there is to apply.
            posted = Decimal(str(ref.amount)) if isinstance(ref, ExternalRef) and ref.amount is not None else None
            doc.refunds[intent.key] = ExternalRef(external_id=ref.external_id, token=ref.token,
                                                  amount=posted if posted is not None else intent.amount, status="open")
        elif intent.step is StepKind.APPLY_CREDIT:
            state.applications[intent.key] = CreditApplication(external_id=ref.external_id, amount=intent.amount)
            if intent.key in doc.refunds:
                doc.refunds[intent.key].status = "applied"
        elif intent.step is StepKind.SETTLE_REFUND:
            state.settlements[intent.key] = CreditApplication(external_id=ref.external_id, amount=intent.amount)
            if intent.key in doc.refunds:
                doc.refunds[intent.key].status = "settled"
        elif intent.step is StepKind.ADJUST:
            state.adjustments.append(Adjustment(
                kind=intent.adjustment_kind or "increase", external_id=ref.external_id, reference=intent.reference,
                posted_on=posted_on, total=intent.amount or ZERO, tax=intent.tax or ZERO,
                version=self.event.version, reason="adopted" if adopted else ""))

    def note_tax(self, answer: RemoteInvoice) -> None:
        """The shop's tax is the truth; where the platform recomputed it, record the difference and warn."""
        if answer.tax_total is None:
            return
        difference = Decimal(str(answer.tax_total)) - self.event.computed.tax_total
        self.state.tax_difference = difference or None
        # Mirrored where the sink counts tax differences (its metric and log read ``extra``).
        self.doc.extra.pop("tax_difference", None)
        if difference:
            self.doc.extra["tax_difference"] = str(difference)
            self.log.warning("engine_tax_difference", external_id=answer.external_id, difference=str(difference))

    # -- the loop --
    def run(self) -> DocumentState:
        self.resolve_intent()
        if self.doc.external_id is None and self.ctx.attempt > 1 and self.legacy:
            # An attempt before the engine may have created it without an intent (under the engine every
            # create is preceded by a checkpointed intent: no intent, nothing in flight — so a live invoice
            # of a deleted one whose number the shop reused is never taken).
            found = pick(self.adoptable(DocKind.INVOICE, self.ops.find(
                DocKind.INVOICE, self.ops.reference(DocKind.INVOICE, self.event))),
                self.event.computed.total, exact=self.ops.capabilities.unique_numbers)
            if found is not None:
                found = self.ops.finish_for(self.event, DocKind.INVOICE, found)
                self.effect(Intent(step=StepKind.CREATE_INVOICE), found, adopted=True)
                self.ctx.checkpoint(self.doc)
        self.check_currency()
        closed_replans = 0
        for _ in range(MAX_STEPS):
            step = next_step(self.event, self.doc, self.ops.capabilities, self.observed)
            if step is None:
                return delivered(self.event, self.doc)
            if not self.observed.known and self.ops.capabilities.closed_periods:
                self.observe()
                continue  # re-plan with the closing date known
            try:
                self.apply(step)
            except ClosedPeriodError as exc:
                closed_replans += 1
                before = self.observed.closed_through
                self.observe(exc.closed_through)
                if closed_replans > MAX_CLOSED_REPLANS or self.observed.closed_through == before:
                    raise  # refused although we think the period open: not ours to guess
                self.state.intent = None  # refused: nothing was written
                self.ctx.checkpoint(self.doc)
            except PermanentError:
                caps = self.ops.capabilities
                if caps.update_detaches_money and (step.kind is StepKind.UPDATE_INVOICE or (
                        step.kind is StepKind.VOID_CREDIT_NOTE and caps.update_voids_credit_notes)):
                    self.put_money_back()  # a credit note voided for the update before this one was refused too
                raise
        raise PermanentError(f"engine: more than {MAX_STEPS} writes planned for one delivery (a planner loop)")

    def check_currency(self) -> None:
        """An invoice the company cannot take in its currency is refused before anything is written."""
        home = getattr(self.ops, "home_currency", lambda: None)()  # optional: an ops without it is not checked
        if (home and self.event.currency != home and not self.ops.capabilities.multi_currency
                and self.event.status.value != "draft" and next_step(
                    self.event, self.doc, self.ops.capabilities, Observed(known=True)) is not None):
            raise PermanentError(f"invoice in {self.event.currency}: the company books in {home} and this connector "
                                 "does not post other currencies (it would be booked as if it were in "
                                 f"{home}); post it by hand or set up the target in {self.event.currency}")

    def put_money_back(self) -> None:
        """The platform refused an update after the engine took the invoice's payments and credits off for it
        (``update_detaches_money``; Business Central cannot cancel an invoice a credit memo is applied to; credit
        notes voided by ``update_voids_credit_notes`` are posted again): they go back on the invoice as it stands,
        so a refused edit (a dead letter, a failed resync) loses no money. The ledger keeps the old content's digest, so a replay plans the update again."""
        self.state.intent = None
        self.log.warning("engine_update_refused_money_restored", external_id=self.doc.external_id)
        for _ in range(MAX_STEPS):
            # Planned as if the new content were there (only the money is left), on a copy: a checkpoint never
            # says the update was made.
            as_updated = self.doc.model_copy(deep=True)
            as_updated.engine.invoice_digest = invoice_digest(self.event)  # type: ignore[union-attr]
            step = next_step(self.event, as_updated, self.ops.capabilities, self.observed)
            # a credit note voided for the update (``update_voids_credit_notes``) is posted again, never a new one
            reposted = step is not None and step.kind is StepKind.CREATE_CREDIT_NOTE and step.key in self.doc.refunds
            if step is None or (step.kind not in (StepKind.ADD_PAYMENT, StepKind.APPLY_CREDIT) and not reposted):
                break
            self.apply(step)
        self.ctx.checkpoint(self.doc)

    def observe(self, named: date | None = None) -> None:
        """Read the closing date; a later one named by a refusal (``ClosedPeriodError.closed_through``) wins."""
        closed = self.ops.books_closed_through()
        if named is not None and (closed is None or named > closed):
            closed = named
        self.observed = Observed(closed_through=closed, known=True)

    def apply(self, step: Step) -> None:
        ops, event, doc, state = self.ops, self.event, self.doc, self.state
        if step.kind is StepKind.REMOVE_PAYMENT:
            ref = doc.payments[step.key]
            self.open_intent(step)
            ops.delete_payment(ref, self.ctx.idempotency_key("payment-delete", step.key, ref.external_id))
            del doc.payments[step.key]
            self.undo(f"payment:{step.key}")
        elif step.kind in (StepKind.RELEASE_CREDIT, StepKind.UNSETTLE_REFUND):
            # a credit application released, or the refund payment that settled a credit note removed
            releasing = step.kind is StepKind.RELEASE_CREDIT
            held = state.applications if releasing else state.settlements
            undo, label = (ops.release_credit, "credit-release") if releasing else (ops.unsettle_refund, "refund-unsettle")
            taken = held[step.key]
            self.open_intent(step)
            undo(ExternalRef(external_id=taken.external_id, amount=taken.amount),
                 self.ctx.idempotency_key(label, step.key, taken.external_id))
            del held[step.key]
            self.undo(f"{'credit-apply' if releasing else 'refund-settle'}:{step.key}")
            if step.key in doc.refunds and (releasing or doc.refunds[step.key].status == "settled"):
                doc.refunds[step.key].status = "open"
        elif step.kind is StepKind.REFUSE:
            raise PermanentError(step.reason)
        elif step.kind is StepKind.VOID_CREDIT_NOTE:
            self.open_intent(step)
            ops.void_credit_note(event, doc.refunds[step.key],
                                 self.posting("credit-void", step.key, *self.again(f"refund:{step.key}")))
            doc.refunds[step.key].status = "voided"
            self.undo(f"refund:{step.key}")
            if state.credit_invoice and step.key == str(-event.invoice_id):
                doc.status = "voided"
        elif step.kind is StepKind.SETTLE_REFUND:
            refund = next(r for r in event.refunds if str(r.id) == step.key)
            posting = self.posting("refund-settle", step.key, step.amount, *self.again(f"refund-settle:{step.key}"))
            intent = self.open_intent(step)
            self.effect(intent, ops.settle_refund(event, refund, doc.refunds[step.key], step.amount or ZERO,
                                                  intent.reference, posting))
        elif step.kind is StepKind.CREATE_INVOICE:
            refused = (f"refused:{state.number_refusals}",) if state.number_refusals else ()
            posting = self.posting("invoice", step.txn_date, *refused, txn_date=step.txn_date, items=True)
            intent = self.open_intent(step, digest=invoice_digest(event), amount=event.computed.total,
                                      txn_date=step.txn_date)
            try:
                created = ops.create_invoice(event, posting)
            except NumberInUseError:
                state.number_refusals += 1  # refused, nothing written: the next attempt asks anew
                self.close()
                self.log.warning("engine_number_in_use", number=intent.reference, refusals=state.number_refusals)
                raise
            self.effect(intent, created, posted_on=step.txn_date)
            self.note_tax(created)
            if step.txn_date is not None:
                state.adjustments.append(Adjustment(
                    kind="redated", external_id=created.external_id, reference=intent.reference,
                    posted_on=step.txn_date, total=event.computed.total, tax=event.computed.tax_total,
                    version=event.version, reason=f"shop date {event.issue_date} is in a closed period"))
                self.log.warning("engine_closed_period_redated", posted_on=step.txn_date.isoformat())
        elif step.kind is StepKind.UPDATE_INVOICE:
            posting = self.posting("invoice", txn_date=step.txn_date, items=True)
            self.open_intent(step, digest=invoice_digest(event))
            updated = self.with_fresh_token(lambda current, key: ops.update_invoice(
                event, replace(posting, request_id=key), current), "invoice")
            if ops.capabilities.update_replaces and updated.external_id != doc.external_id:
                self.claim(updated.external_id)
                # the platform replaced the invoice (Business Central: cancel + a new posted one): it is the invoice now
                doc.external_id = updated.external_id
            doc.token = updated.token
            state.invoice_digest = invoice_digest(event)
            self.note_tax(updated)
        elif step.kind is StepKind.VOID_INVOICE:
            self.open_intent(step)
            voided = self.with_fresh_token(lambda current, key: ops.void_invoice(current, key), "void")
            doc.token = voided.token if voided else doc.token
            doc.status = "voided" if voided else "deleted"
        elif step.kind is StepKind.ISSUE_INVOICE:
            self.open_intent(step)
            ops.issue_invoice(ExternalRef(external_id=doc.external_id or "", token=doc.token,
                                          status="draft" if state.issued is False else None),
                              self.ctx.idempotency_key("issue", doc.external_id))
            state.issued = True
        elif step.kind is StepKind.ADJUST:
            self.adjust(step)
            return
        elif step.kind is StepKind.ADD_PAYMENT:
            payment = received(event)[step.key]
            posting = self.posting("payment", step.key, *self.again(f"payment:{step.key}"), txn_date=step.txn_date)
            intent = self.open_intent(step)
            self.effect(intent, ops.create_payment(event, payment, doc.external_id or "", posting))
        elif step.kind is StepKind.CREATE_CREDIT_NOTE:
            refund = next(r for r in event.refunds if str(r.id) == step.key)
            posting = self.posting("refund", step.key, *self.again(f"refund:{step.key}"), txn_date=step.txn_date,
                                   items=True)
            intent = self.open_intent(step)
            self.effect(intent, ops.create_credit_note(event, refund, posting))
        elif step.kind is StepKind.APPLY_CREDIT:
            posting = self.posting("credit-apply", step.key, step.amount, *self.again(f"credit-apply:{step.key}"))
            intent = self.open_intent(step)
            self.effect(intent, ops.apply_credit(doc.refunds[step.key], doc.external_id or "", step.amount or ZERO,
                                                 intent.reference, posting))
        self.log.info("engine_step", step=step.kind.value, key=step.key, external_id=doc.external_id)
        self.close()

    def issue_draft(self, ref: ExternalRef) -> None:
        """An increase adjustment is an invoice: on a platform that creates drafts it is issued like one."""
        if self.ops.capabilities.issue_after_create and ref.status == "draft":
            self.ops.issue_invoice(ref, self.ctx.idempotency_key("issue", ref.external_id))

    def with_fresh_token(self, write: Callable[[ExternalRef, str], Any], *key: object) -> Any:
        """A write carrying the concurrency token (its request id too: a platform replays the answer to a
        repeated request id); a stale one is re-read and the write retried once."""
        current = ExternalRef(external_id=self.doc.external_id or "", token=self.doc.token)
        try:
            return write(current, self.ctx.idempotency_key(*key, current.token))
        except StaleTokenError:
            fresh = self.ops.read_invoice(current.external_id)
            if fresh is None:
                return None
            self.log.info("engine_stale_token_reread", external_id=current.external_id)
            return write(current.model_copy(update={"token": fresh.token}),
                         self.ctx.idempotency_key(*key, fresh.token))

    def adjust(self, step: Step) -> None:
        """The books are closed for the invoice's date: post the difference between what the platform holds
        (the invoice as read plus every adjustment) and the target as one increase or decrease."""
        event, state = self.event, self.state
        held = self.ops.read_invoice(self.doc.external_id or "")
        held_total = (Decimal(str(held.total)) if held and held.total is not None else ZERO) + sum(
            (a.signed_total for a in state.adjustments), ZERO)
        held_tax = (Decimal(str(held.tax_total)) if held and held.tax_total is not None else ZERO) + sum(
            (a.signed_tax for a in state.adjustments), ZERO)
        d_total, d_tax = (step.target_total or ZERO) - held_total, (step.target_tax or ZERO) - held_tax
        if d_total or d_tax:
            kind: Literal["increase", "decrease"] = "increase" if d_total > 0 else "decrease"
            sign = 1 if kind == "increase" else -1
            sequence = sum(1 for a in state.adjustments if a.kind != "redated") + 1
            posting = self.posting("adjustment", sequence, txn_date=step.txn_date)
            intent = self.open_intent(step, ref_key=f"{kind}:{sequence}", adjustment_kind=kind,
                                      amount=abs(d_total), tax=abs(d_tax))
            posted = self.ops.create_adjustment(event, AdjustmentSpec(
                kind, sequence, intent.reference, sign * (d_total - d_tax), sign * d_tax, self.doc.external_id,
                step.reason), posting)
            if kind == "increase":
                self.issue_draft(posted)  # under the open intent: an attempt cut short here issues it on adoption
            self.effect(intent, posted, posted_on=step.txn_date)
            state.adjustments[-1].reason = step.reason
            self.log.warning("engine_closed_period_adjustment", kind=kind, total=str(abs(d_total)), reason=step.reason,
                             external_id=posted.external_id)
        if step.target_total == ZERO and step.target_tax == ZERO:
            self.doc.status = "voided"
        else:
            state.invoice_digest = invoice_digest(event)
        self.close()


def pick(found: list[ExternalRef], amount: Decimal | None, exact: bool = False) -> ExternalRef | None:
    """Which of the documents carrying a reference an earlier attempt made: the one with the amount it
    sent, else (unless ``exact``) the newest (a number can be reused after a deletion; the platform may
    round tax)."""
    matching = [ref for ref in found if amount is not None and ref.amount == amount]
    return (matching or ([] if exact and amount is not None else found) or [None])[-1]


ROUNDING_LINE_ID = 0  # shop line ids are positive: the rounding line never collides with one


def as_printed(event: InvoiceEvent, mapping: Any) -> InvoiceEvent:
    """The event as the target's ``mapping.totals_mismatch`` policy posts it when the shop's stored totals differ
    from its lines: "stored" (default) adds an untaxed rounding line so the total is the printed invoice's;
    "computed" leaves it; "hold" refuses it with the reason (a dead letter for the bookkeeper to review)."""
    policy = getattr(mapping, "totals_mismatch", "stored")
    difference = event.stored.total - event.computed.total
    if not event.totals_mismatch or not difference or policy == "computed" or event.status.value != "issued":
        return event
    if policy == "hold":
        raise PermanentError(f"held for review: the shop's stored total {event.stored.total} differs from its lines' "
                             f"{event.computed.total} (mapping.totals_mismatch is 'hold')")
    rounding = InvoiceLine(id=ROUNDING_LINE_ID, position=max((ln.position for ln in event.lines), default=0) + 1,
                           kind=LineKind.FEE, description="Rounding to the shop's invoice total", quantity=Decimal("1"),
                           unit_price=difference, amount=difference)
    computed = event.computed.model_copy(update={"subtotal": event.computed.subtotal + difference,
                                                 "total": event.stored.total})
    return event.model_copy(update={"lines": (*event.lines, rounding), "computed": computed})


def run(ops: PlatformOps, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
    """Make the platform match ``event``: what ``Connector.deliver`` is for a connector on the engine."""
    return _Run(ops, event, doc, ctx).run()


def plan_is_empty(ops: PlatformOps, event: InvoiceEvent, doc: DocumentState, observed: Observed | None = None) -> bool:
    """After a delivery the planner must find nothing left to do (the conformance suite's empty-plan rule)."""
    return next_step(event, doc, ops.capabilities, observed or Observed()) is None


# --- preview and batches --------------------------------------------------------------------------------


class _PreviewContext:
    def __init__(self, target: str, event: InvoiceEvent, entities: EntityStore, attempt: int) -> None:
        self.target, self.event, self.entities, self.attempt = target, event, entities, attempt

    def checkpoint(self, doc: DocumentState) -> None:
        pass  # a preview writes nothing

    def idempotency_key(self, *parts: object) -> str:
        raw = ":".join(str(p) for p in (self.target, self.event.invoice_id, self.event.version, *parts))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


class _ReadThrough:
    """The ledger's entities, read-only: what a preview creates stays in the preview."""

    def __init__(self, entities: EntityStore | None) -> None:
        self.entities, self.local = entities, {}

    def get(self, kind: str, key: str) -> ExternalRef | None:
        return self.local.get((kind, key)) or (self.entities.get(kind, key) if self.entities else None)

    def put(self, kind: str, key: str, ref: ExternalRef) -> None:
        self.local[(kind, key)] = ref

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        yield


def preview(ops: PlatformOps, target: str, event: InvoiceEvent, doc: DocumentState,
            entities: EntityStore | None = None, attempt: int = 1) -> list[dict[str, Any]]:
    """Exactly what ``run`` would send, sending nothing: the same loop against the recording layer."""
    store = _ReadThrough(entities)
    if entities is None and doc.customer_id:
        # Without the ledger's entity map, the customer this document posted to is taken as current.
        store.put("customer", str(event.customer.id),
                  ExternalRef(external_id=doc.customer_id, status=ops.customer_digest(event.customer)))
    ctx = _PreviewContext(target, event, store, attempt)
    with ops.recording() as sent:
        _Run(ops, event, doc, ctx).run()
    return sent


def deliver_many(ops: PlatformOps, batch: list[tuple[InvoiceEvent, DocumentState, DeliveryContext]]
                 ) -> list[DocumentState | DeliveryError]:
    """New invoices go in batch create requests (under the same intents); then ``run`` finishes every one."""
    results: list[DocumentState | DeliveryError | None] = [None] * len(batch)
    size = ops.capabilities.batch_create
    candidates = [i for i, (event, doc, ctx) in enumerate(batch)
                  if size and doc.external_id is None and ctx.attempt == 1 and event.status.value == "issued"
                  and event.computed.total >= 0  # a negative total posts as a credit note (``negative_totals``)
                  and (doc.engine is None or doc.engine.intent is None)]
    docs = [doc for _, doc, _ in batch]
    if len(candidates) >= 2:
        with ops.batch_slot() as free:
            for chunk in (candidates[i:i + size] for i in range(0, len(candidates), size) if free):
                runs: list[tuple[int, _Run, Posting, Intent]] = []
                for index in chunk:
                    event, doc, ctx = batch[index]
                    one = _Run(ops, event, doc, ctx)
                    try:
                        posting = one.posting("invoice", None, items=True)
                    except DeliveryError as exc:
                        results[index] = exc
                        continue
                    intent = one.open_intent(Step(StepKind.CREATE_INVOICE), digest=invoice_digest(event),
                                             amount=event.computed.total)
                    runs.append((index, one, posting, intent))
                if not runs:
                    continue
                answers = ops.create_invoices([(one.event, posting) for _, one, posting, _ in runs])
                for (index, one, _, intent), answer in zip(runs, answers):
                    if isinstance(answer, RemoteInvoice):
                        one.effect(intent, answer)
                        one.note_tax(answer)
                        one.close()
                    elif not isinstance(answer, ClosedPeriodError):  # closed: ``run`` re-dates it
                        results[index] = answer
                    docs[index] = one.doc
    for index, (event, _, ctx) in enumerate(batch):
        if results[index] is None:
            try:
                results[index] = run(ops, event, docs[index], ctx)
            except DeliveryError as exc:
                results[index] = exc
    return results  # type: ignore[return-value]  # every entry is settled now


# ``runtime.limiter`` keyword -> the settings field that holds it (where a platform's settings have it)
LIMIT_SETTINGS = {"per_second": "requests_per_second", "per_minute": "requests_per_minute",
                  "per_day": "requests_per_day", "concurrency": "concurrency"}


class EngineConnector(Connector, PlatformOps):
    """A connector on the engine: implement ``PlatformOps``; deliver, batches and preview come from here."""

    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        return run(self, event, doc, ctx)

    def deliver_many(self, batch):
        return deliver_many(self, batch)

    def preview(self, event: InvoiceEvent, doc: DocumentState, entities: EntityStore | None = None
                ) -> list[dict[str, Any]]:
        return preview(self, self.target.name, event, doc, entities)

    # The platform's online mapping check, ``check(client, mapping) -> problems`` (``staticmethod(...)``).
    mapping_check: ClassVar[Callable[[Any, Any], list[str]] | None] = None

    def check_mapping(self) -> list[str]:
        if self.mapping_check is None:
            return super().check_mapping()
        return self.mapping_check(self.client, self.mapping)  # type: ignore[attr-defined, misc]

    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        """The framework's references (``connectors.references``): the shop's number, ``LW<payment id>``,
        ``LWR<refund id>`` (a credit application is found on its credit note), ``<number>-A<n>``/``-C<n>``.
        Override where the platform limits a reference's length or characters."""
        if kind is DocKind.INVOICE:
            return event.number
        if kind is DocKind.PAYMENT:
            return references.payment_reference(key)
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return references.refund_reference(key)
        if kind is DocKind.REFUND_PAYMENT:
            return references.settlement_reference(key)
        adjustment_kind, sequence = references.adjustment_key(key)
        return references.adjustment_number(event.number, sequence, adjustment_kind)

    def platform_http(self, *, base_url: str, classify: Classifier | None, auth: Any = None) -> PlatformHttp:
        """The target's ``PlatformHttp`` (kept as ``self.http``, closed by ``close``), paced by the request
        limits its settings have (``requests_per_second``/``_minute``/``_day``, ``concurrency``)."""
        limits = {name: value for name, field in LIMIT_SETTINGS.items()
                  if (value := getattr(self.settings, field, None)) is not None}
        self.http = PlatformHttp(target=self.target.name, platform=self.platform, base_url=base_url,
                                 limiter=self.runtime.limiter(self.target, **limits), auth=auth, classify=classify,
                                 timeout_s=self.target.request_timeout_s)
        return self.http

    def close(self) -> None:
        if (http := getattr(self, "http", None)) is not None:
            http.close()

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        """For a connector whose ``client`` records writes in its ``recorder`` list while one is set
        (``connectors.rest.RecordingClient``); override otherwise."""
        self.client.recorder = sent = []  # type: ignore[attr-defined]
        try:
            yield sent
        finally:
            self.client.recorder = None  # type: ignore[attr-defined]

    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = pick(self.find(DocKind.INVOICE, self.reference(DocKind.INVOICE, event)), event.computed.total)
        return self.read_invoice(found.external_id) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        return self.read_invoice(external_id)
