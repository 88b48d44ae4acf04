"""The delivery engine's typed per-document state (issue #12), kept in ``DocumentState.engine``.

It is stored with the rest of ``DocumentState`` as JSON in the ledger (``documents.state``); the top-level
fields of ``DocumentState`` (external id, token, status, payments, refunds …) stay where the ledger, resync,
reconcile, status and trace read them. This module imports nothing from the connectors so ``base`` can use it.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DocKind(StrEnum):
    """What a natural reference names at the platform (what ``PlatformOps.find`` looks up)."""

    INVOICE = "invoice"  # the shop's invoice number
    PAYMENT = "payment"  # our payment reference
    CREDIT_NOTE = "credit_note"  # a refund's credit note number
    CREDIT_APPLICATION = "credit_application"  # a credit note applied to the invoice
    ADJUSTMENT = "adjustment"  # a closed-period adjustment's number
    REFUND_PAYMENT = "refund_payment"  # money paid back that settles a refund's credit note (issue #20)


class StepKind(StrEnum):
    REMOVE_PAYMENT = "remove_payment"
    RELEASE_CREDIT = "release_credit"
    CREATE_INVOICE = "create_invoice"
    UPDATE_INVOICE = "update_invoice"
    VOID_INVOICE = "void_invoice"
    ISSUE_INVOICE = "issue_invoice"  # a draft made final (``Capabilities.issue_after_create``, e.g. Zoho's mark as sent)
    ADJUST = "adjust"  # closed period: post the difference as an increase (invoice) / decrease (credit note)
    ADD_PAYMENT = "add_payment"
    CREATE_CREDIT_NOTE = "create_credit_note"
    APPLY_CREDIT = "apply_credit"
    VOID_CREDIT_NOTE = "void_credit_note"  # capabilities.void_credit_notes: a refund no longer wanted
    REFUSE = "refuse"  # nothing the engine can write: the version is dead-lettered with the step's reason
    SETTLE_REFUND = "settle_refund"  # capabilities.refund_settlement: the money paid back settles the credit note
    UNSETTLE_REFUND = "unsettle_refund"  # that refund payment removed (the refund changed or is gone)


# Steps that create a document: an intent left open by one of them is resolved by ``find`` on the next attempt.
CREATING: dict[StepKind, DocKind] = {
    StepKind.CREATE_INVOICE: DocKind.INVOICE, StepKind.ADD_PAYMENT: DocKind.PAYMENT,
    StepKind.CREATE_CREDIT_NOTE: DocKind.CREDIT_NOTE, StepKind.APPLY_CREDIT: DocKind.CREDIT_APPLICATION,
    StepKind.ADJUST: DocKind.ADJUSTMENT, StepKind.SETTLE_REFUND: DocKind.REFUND_PAYMENT,
}


class Intent(BaseModel):
    """A write recorded (and checkpointed) before it is sent; closed when its effect is recorded. One left
    open means an earlier attempt may have written: the engine resolves it first (find by ``reference``)."""

    model_config = ConfigDict(extra="forbid")
    step: StepKind
    key: str = ""  # source payment / refund id, adjustment sequence; "" for the invoice itself
    reference: str = ""  # the natural reference the platform can be searched by
    amount: Decimal | None = None
    digest: str | None = None  # for invoice writes: the content sent
    adjustment_kind: Literal["increase", "decrease"] | None = None
    tax: Decimal | None = None  # for adjustments: the tax part of ``amount``
    txn_date: date | None = None  # for a re-dated create: the date it is posted on (kept when it is adopted)


class CreditApplication(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str
    amount: Decimal


class Adjustment(BaseModel):
    """A closed-period substitution: the invoice re-dated, or an increase / decrease document posted."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["redated", "increase", "decrease"]
    external_id: str
    reference: str
    posted_on: date | None = None
    total: Decimal  # absolute amount, tax included
    tax: Decimal
    version: int
    reason: str = ""

    @property
    def signed_total(self) -> Decimal:
        return {"increase": self.total, "decrease": -self.total}.get(self.kind, Decimal("0"))

    @property
    def signed_tax(self) -> Decimal:
        return {"increase": self.tax, "decrease": -self.tax}.get(self.kind, Decimal("0"))


class EngineState(BaseModel):
    """Everything the engine needs beyond ``DocumentState``'s top-level fields."""

    model_config = ConfigDict(extra="forbid")
    intent: Intent | None = None
    invoice_digest: str | None = None  # the invoice content the platform holds (canonical digest)
    posted_on: date | None = None  # the invoice's date at the platform (re-dated into the open period)
    issued: bool | None = None  # the platform holds it issued, not as a draft (None: not known, e.g. legacy)
    applications: dict[str, CreditApplication] = Field(default_factory=dict)  # refund id -> application
    adjustments: list[Adjustment] = Field(default_factory=list)
    tax_difference: Decimal | None = None  # platform tax − shop tax, when the platform recomputed it
    # Creates refused because another live document held the number (``NumberInUseError``): each retry sends
    # a new request id, so an idempotency-key replay never answers it with the old refusal (issue #20).
    number_refusals: int = 0
    # How many times the document in a slot ("payment:<id>", "refund:<id>", "credit-apply:<id>", "refund-settle:<id>")
    # was undone (deleted, voided, released). Its next writes carry the count in their request ids: the same key
    # again would have QuickBooks replay the answer naming the document just deleted (a payment lost after a
    # restart delivered an older version between two tries of a newer one).
    undone: dict[str, int] = Field(default_factory=dict)
    # refund id -> the refund payment (money out) that settles its credit note (``refund_settlement``)
    settlements: dict[str, CreditApplication] = Field(default_factory=dict)
    # The shop invoice has a negative total and is posted as a credit note (``negative_totals``): external_id
    # is that credit note's id.
    credit_invoice: bool = False

    @classmethod
    def from_legacy(cls, extra: dict[str, str]) -> "EngineState":
        """A document delivered before the engine: its connector kept this in ``extra`` strings."""
        state = cls()
        if extra.get("txn_date") or extra.get("open_date"):  # "open_date": the Odoo connector's name for it
            state.posted_on = date.fromisoformat(extra.get("txn_date") or extra["open_date"])
        if extra.get("sent") == "1":  # Zoho's connector before the engine, once it marked the invoice sent
            state.issued = True
        if extra.get("tax_difference"):
            state.tax_difference = Decimal(extra["tax_difference"])
        for key, value in extra.items():
            if key.startswith("credit_applied:"):
                external_id, amount = value.split(":", 1)
                state.applications[key.split(":", 1)[1]] = CreditApplication(external_id=external_id,
                                                                             amount=Decimal(amount))
        for entry in json.loads(extra.get("adjustments", "[]")):
            if entry.get("kind") in ("redated", "increase", "decrease") and entry.get("id"):
                state.adjustments.append(Adjustment(
                    kind=entry["kind"], external_id=str(entry["id"]), reference=str(entry.get("doc_number") or entry.get("number", "")),
                    total=Decimal(str(entry.get("total") or "0")), tax=Decimal(str(entry.get("tax") or "0")),
                    version=int(entry.get("version") or 0), reason=str(entry.get("reason", ""))))
        return state  # invoice_digest unknown: the first engine delivery sends one (idempotent) update
