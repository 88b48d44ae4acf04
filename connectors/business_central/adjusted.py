"""Business Central's adjusted invoices, read back: an invoice a refund's credit memo is applied to cannot be
cancelled (no unapply in API v2.0), so its edits and voids are posted as adjustment documents
(``adjust_when_credited``: an increase invoice ``<number>-A<n>``, a decrease credit memo ``<number>-C<n>``); the
shop's invoice is then all of them. The connector reads its total, tax and balance through these."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.business_central import mapping
from connectors.business_central.client import quoted

DRAFT, CANCELED = "Draft", "Canceled"
INVOICES, CREDIT_MEMOS = "salesInvoices", "salesCreditMemos"
LINES = {INVOICES: "salesInvoiceLines", CREDIT_MEMOS: "salesCreditMemoLines"}


class AdjustedInvoices:
    """Mixed into the connector: uses its ``client`` and ``_journal()``."""

    def _adjustments(self, invoice: dict[str, Any], lines: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """The adjustment documents posted for a posted invoice, found by their numbers (``<number>-A<n>``, an
        increase invoice: +1; ``-C<n>``, a decrease credit memo: -1), in sequence until one is missing."""
        number, out = str(invoice.get("externalDocumentNumber") or ""), []
        for sequence in range(1, 100):
            found = None
            for kind, resource in (("increase", INVOICES), ("decrease", CREDIT_MEMOS)):
                wanted = quoted(mapping.adjustment_number(number, sequence, kind))
                expand = {"$expand": LINES[resource]} if lines else {}
                rows = [d for d in self.client.list(resource, f"externalDocumentNumber eq {wanted}", **expand)
                        if d.get("status") not in (CANCELED, DRAFT) and d.get("customerId") == invoice.get("customerId")]
                if rows:
                    found = (1 if kind == "increase" else -1, rows[0])
                    break
            if found is None:
                return out
            out.append(found)
        return out

    def _owed(self, invoice: dict[str, Any], adjustments: list[tuple[int, dict[str, Any]]]) -> Decimal:
        """What the customer still owes on a shop invoice posted as several documents (adjustments): the invoice's
        and its increases' totals less the payment lines applied to them and the credit memos linked to the invoice
        (refunds and decreases), never below zero. Not their open amounts: a payment line applies to one document,
        so a payment larger than the invoice's open amount leaves an increase open while the shop's invoice is paid
        (the README says what the bookkeeper applies)."""
        documents = [invoice] + [doc for sign, doc in adjustments if sign > 0]
        ids = {doc["id"] for doc in documents}
        owed = sum((Decimal(str(doc.get("totalAmountIncludingTax") or 0)) for doc in documents), Decimal("0"))
        for line in self.client.list(f"{self._journal()}/customerPayments",
                                     f"customerNumber eq {quoted(str(invoice.get('customerNumber') or ''))}"):
            if line.get("appliesToInvoiceId") in ids:
                owed -= Decimal(str(line.get("amount") or 0))
        for memo in self.client.list(CREDIT_MEMOS, f"invoiceNumber eq {quoted(str(invoice.get('number') or ''))}"):
            if memo.get("status") in ("Open", "Paid"):
                owed -= Decimal(str(memo.get("totalAmountIncludingTax") or 0))
        return max(owed, Decimal("0"))
