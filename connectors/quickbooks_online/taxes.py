"""QuickBooks Online's TxnTaxDetail from the shop's own tax amounts: shared by the invoice and credit memo payloads."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from daemon.canonical import InvoiceEvent, InvoiceLine, money
from daemon.config import MappingConfig


def tax_detail(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    components: dict[str, dict[str, Any]] = {}
    for line in event.lines:
        net = line.amount - sum((t.amount for t in line.taxes), Decimal("0")) if event.tax_inclusive else line.amount
        for tax in line.taxes:
            c = components.setdefault(tax.code, {"amount": Decimal("0"), "taxable": Decimal("0"), "rate": tax.rate})
            c["amount"] += tax.amount
            c["taxable"] += net
    tax_lines = [_tax_line(c["amount"], code, c["rate"], c["taxable"], mapping) for code, c in sorted(components.items())]
    return {"TotalTax": event.computed.tax_total, "TaxLine": tax_lines}


def _tax_line(amount: Decimal, code: str, rate: Decimal, taxable: Decimal, mapping: MappingConfig) -> dict[str, Any]:
    """One TaxLine: a tax component's amount at its rate on the net amount it was computed from."""
    return {"Amount": amount, "DetailType": "TaxLineDetail",
            "TaxLineDetail": {"TaxRateRef": {"value": mapping.tax_codes.get(code, code)}, "PercentBased": True,
                              "TaxPercent": (rate * 100).normalize(), "NetAmountTaxable": taxable}}


def prorated_tax(line: InvoiceLine | None, taxable: Decimal, tax_amount: Decimal, mapping: MappingConfig
                 ) -> dict[str, Any]:
    """The refund's tax split over the returned line's tax components (the last one takes the rounding)."""
    if not tax_amount:
        return {"TotalTax": Decimal("0.00")}
    taxes = list(line.taxes) if line and line.taxes else []
    if not taxes:
        return {"TotalTax": tax_amount}
    line_tax = sum((t.amount for t in taxes), Decimal("0")) or Decimal("1")
    tax_lines, left = [], tax_amount
    for n, tax in enumerate(taxes):
        amount = left if n == len(taxes) - 1 else money(tax_amount * tax.amount / line_tax)
        left -= amount
        tax_lines.append(_tax_line(amount, tax.code, tax.rate, taxable, mapping))
    return {"TotalTax": tax_amount, "TaxLine": tax_lines}
