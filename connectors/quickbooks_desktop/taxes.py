"""A refund's tax shared over the shop's tax components (each agency's sales-tax item): apart from its payload."""

from __future__ import annotations

from decimal import Decimal

from daemon.canonical import CENT, InvoiceEvent, Refund


def refund_tax_components(refund: Refund, event: InvoiceEvent) -> list[tuple[str, str, Decimal]]:
    """The refund's tax on each tax component, (code, name, amount), in proportion to what the refunded line
    (else the whole invoice) carries of each; the last component takes the rounding so the parts sum to the
    refund's tax. GST 2.50 + PST 3.50, never one GST 6.00 line in the wrong agency's liability."""
    if not refund.tax_amount:
        return []
    lines = [ln for ln in event.lines if ln.id == refund.line_id and ln.taxes] or list(event.lines)
    components: dict[str, tuple[str, Decimal]] = {}
    for tax in (tax for ln in lines for tax in ln.taxes):
        components[tax.code] = (tax.name, components.get(tax.code, ("", Decimal("0")))[1] + tax.amount)
    whole = sum((amount for _, amount in components.values()), Decimal("0"))
    if not components or not whole:
        return []
    out, left = [], refund.tax_amount
    for index, (code, (name, amount)) in enumerate(sorted(components.items())):
        share = left if index == len(components) - 1 else (refund.tax_amount * amount / whole).quantize(CENT)
        out.append((code, name, share))
        left -= share
    return [part for part in out if part[2]]
