"""Compare what the shop database says the books should hold with what a platform's books hold.

Used by the demo's closing summary and by the end-to-end tests (and the basis of reconciliation):
every issued invoice exactly once with its total and tax to the cent and its received payments applied;
a voided invoice either never posted or voided; a draft never posted.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from connectors.sandbox_kit import BookedInvoice


class Expected(BaseModel):
    number: str
    status: str  # draft | issued | void
    total: Decimal
    tax_total: Decimal
    paid: Decimal  # received (not reversed) payments linked to the invoice
    payment_count: int


class Comparison(BaseModel):
    checked: int = 0
    issued: int = 0
    voided: int = 0
    payments_checked: int = 0
    missing: list[str] = Field(default_factory=list)
    duplicated: list[str] = Field(default_factory=list)
    amount_mismatch: list[str] = Field(default_factory=list)
    payment_mismatch: list[str] = Field(default_factory=list)
    void_mismatch: list[str] = Field(default_factory=list)
    unexpected: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.amount_mismatch or self.payment_mismatch
                    or self.void_mismatch or self.unexpected)

    def problems(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.model_dump().items() if isinstance(v, list) and v}


def expected_from_db(conn: Any) -> dict[str, Expected]:
    rows = conn.execute("""
        SELECT i.number, i.status, i.total, i.tax_total,
               COALESCE(SUM(p.amount) FILTER (WHERE p.status = 'received'), 0),
               COUNT(p.id) FILTER (WHERE p.status = 'received')
        FROM invoices i LEFT JOIN payments p ON p.invoice_id = i.id
        GROUP BY i.id""").fetchall()
    return {r[0]: Expected(number=r[0], status=r[1], total=r[2], tax_total=r[3], paid=r[4], payment_count=r[5])
            for r in rows}


def compare(expected: dict[str, Expected], booked: list[BookedInvoice]) -> Comparison:
    result = Comparison()
    counts = Counter(b.number for b in booked)
    by_number: dict[str, list[BookedInvoice]] = {}
    for b in booked:
        by_number.setdefault(b.number, []).append(b)
    for number, exp in sorted(expected.items()):
        docs = by_number.get(number, [])
        live = [d for d in docs if not d.voided]
        result.checked += 1
        if exp.status == "draft":
            if live:
                result.unexpected.append(number)
            continue
        if exp.status == "void":
            result.voided += 1
            if live:
                result.void_mismatch.append(number)
            continue
        result.issued += 1
        if len(live) > 1:  # voided predecessors (an invoice cancelled and replaced) are not postings twice
            result.duplicated.append(number)
        if not live:
            result.missing.append(number)
            continue
        doc = live[0]
        if doc.total != exp.total or doc.tax_total != exp.tax_total:
            result.amount_mismatch.append(f"{number}: total {doc.total} vs {exp.total}, tax {doc.tax_total} vs {exp.tax_total}")
        result.payments_checked += exp.payment_count
        if doc.payments_applied != exp.paid or doc.payment_count != exp.payment_count:
            result.payment_mismatch.append(
                f"{number}: applied {doc.payments_applied} in {doc.payment_count} vs {exp.paid} in {exp.payment_count}")
    for number in counts:
        if number not in expected:
            result.unexpected.append(number)
    return result
