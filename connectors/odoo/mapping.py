"""Canonical invoice, payment and refund → Odoo ``account.move`` / ``account.payment.register`` values.

Pure functions of the event and the mapping configuration. Field names and value shapes follow the
official field table (``odoo/account-move-fields.md``): x2many fields are written with Command tuples
((0, 0, vals) create, (5, 0, 0) clear, (6, 0, ids) replace), dates as 'YYYY-MM-DD', ids as ints, and
money/quantities stay ``Decimal`` (``wire.money_to_wire`` turns them into XML-RPC doubles at the edge).

Where the shop's numbers land: ``payment_reference`` = the shop's invoice number (what we look the
invoice up by), ``ref`` = the job number, line ``name`` = part number and description.
Mapping values are Odoo record ids: income accounts → account.account, tax codes → account.tax,
payment methods → account.journal (bank/cash), items → product.product, location tracking →
"analytic:<account.analytic.account id>" (or a bare id) or "journal:<account.journal id>" (a sale journal
per location).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, line_text, posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

CLEAR = (5, 0, 0)


def record_id(value: str | int, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PermanentError(f"mapping {what}: {value!r} is not an Odoo record id") from None


def refund_reference(event: InvoiceEvent, refund: Refund) -> str:
    return f"{event.number}/R{refund.id}"


# -- customers --
def partner_vals(customer: Customer) -> dict[str, Any]:
    vals: dict[str, Any] = {"name": customer.name, "ref": str(customer.id), "customer_rank": 1, "is_company": False,
                            "email": customer.email or False, "phone": customer.phone or False}
    if customer.billing_address:
        vals["street"] = customer.billing_address[:200]
    return vals


def customer_hash(customer: Customer) -> str:
    return references.payload_digest(partner_vals(customer))


# -- invoices --
def tracking(event: InvoiceEvent, mapping: MappingConfig) -> tuple[str, int] | None:
    """('analytic', id) or ('journal', id) for the event's location, or None."""
    value = mapping.location_tracking.get(event.location.code)
    if not value:
        return None
    kind, _, ident = value.rpartition(":")
    kind = kind or "analytic"
    if kind not in ("analytic", "journal"):
        raise PermanentError(f"location_tracking.{event.location.code}: {value!r} is neither analytic:<id> nor journal:<id>")
    return kind, record_id(ident, f"location_tracking.{event.location.code}")


def line_account(kind: LineKind, mapping: MappingConfig) -> int:
    """The account.account id the line posts to (``base.posting_account``)."""
    account = posting_account(kind, mapping)
    if account is None:
        raise PermanentError(f"mapping income_accounts has no account for line kind {kind.value!r}")
    return record_id(account, f"account of {kind.value} lines")


def tax_ids(codes: list[str], mapping: MappingConfig) -> list[int]:
    ids = []
    for code in codes:
        if code not in mapping.tax_codes:
            raise PermanentError(f"mapping tax_codes has no Odoo tax for source tax code {code!r}")
        ids.append(record_id(mapping.tax_codes[code], f"tax_codes.{code}"))
    return ids


def part_key(line: InvoiceLine, mapping: MappingConfig) -> str | None:
    """The part number a line's product is made for (item_mode "per_part_number"), or None: the line then
    uses the generic product of its kind (``mapping.items``), if any."""
    if mapping.item_mode == "per_part_number" and line.part_number and line.kind in (LineKind.PART,
                                                                                     LineKind.CORE_CHARGE,
                                                                                     LineKind.CORE_RETURN):
        return line.part_number.strip()[:64] or None
    return None


def product_vals(line: InvoiceLine) -> dict[str, Any]:
    """``product.product`` create values of a part number's product (default_code = the part number)."""
    return {"name": line_text(line, 200), "default_code": part_key_text(line), "type": "consu",
            "sale_ok": True}


def part_key_text(line: InvoiceLine) -> str:
    return (line.part_number or "").strip()[:64]


def line_vals(line: InvoiceLine, mapping: MappingConfig, where: tuple[str, int] | None,
              products: dict[int, int] | None = None, included: dict[int, int] | None = None) -> dict[str, Any]:
    vals: dict[str, Any] = {
        "display_type": "product",
        "name": line_text(line, 2000),
        "quantity": line.quantity,
        "price_unit": line.unit_price,
        "account_id": line_account(line.kind, mapping),
        "tax_ids": [(6, 0, tax_ids([t.code for t in line.taxes], mapping))],
    }
    if included is not None:
        missing = [t for t in vals["tax_ids"][0][2] if t not in included]
        if missing:
            raise PermanentError(f"Odoo has no price-included sales tax like tax {missing[0]} (tax-inclusive prices)")
        vals["tax_ids"] = [(6, 0, [included[t] for t in vals["tax_ids"][0][2]])]
    product = mapping.items.get(line.kind)
    if products and line.id in products:
        vals["product_id"] = products[line.id]
    elif product:
        vals["product_id"] = record_id(product, f"items.{line.kind.value}")
    if where and where[0] == "analytic":
        vals["analytic_distribution"] = {str(where[1]): 100}
    return vals


def invoice_vals(event: InvoiceEvent, partner_id: int | str, mapping: MappingConfig,
                 products: dict[int, int] | None = None, open_date: str | None = None,
                 included: dict[int, int] | None = None) -> dict[str, Any]:
    """``account.move`` create values of a customer invoice (lines as (0, 0, vals) commands). ``products``:
    line id → product.product id of its part number; ``open_date``: the first open day an invoice dated in a
    locked period was posted on (it stays there: dated back, every edit would be refused); ``included``: for a
    tax-inclusive invoice, each mapped tax's price-included twin (the shop's prices hold the tax)."""
    if event.tax_inclusive and included is None:
        # The mapped taxes are tax-excluded percentages (check_mapping insists); posting the shop's tax-included
        # prices on them would add the tax again. Refused, never misposted.
        raise PermanentError(f"{event.number}: tax-inclusive prices need price-included sales taxes in Odoo")
    where = tracking(event, mapping)
    vals: dict[str, Any] = {
        "move_type": "out_invoice",
        "partner_id": partner_id,
        "payment_reference": event.number,
        "ref": event.job.number if event.job else event.number,
        "invoice_line_ids": [(0, 0, line_vals(line, mapping, where, products, included if event.tax_inclusive
                                              else None)) for line in
                             sorted(event.lines, key=lambda ln: ln.position)],
    }
    if event.issue_date:
        vals["invoice_date"] = event.issue_date.isoformat()
    term, due = mapping.payment_terms.get(event.customer.payment_terms_days or 0), references.terms_due_date(event)
    if term:  # the fleet customer's payment term; the due date it gives is sent too (the shop's may be empty)
        vals["invoice_payment_term_id"] = record_id(term, f"payment_terms.{event.customer.payment_terms_days}")
    if due:
        vals["invoice_date_due"] = due.isoformat()
    if open_date:
        vals["invoice_date"] = open_date
        vals["invoice_date_due"] = max(vals.get("invoice_date_due") or open_date, open_date)
    if where and where[0] == "journal":
        vals["journal_id"] = where[1]
    return vals


def invoice_update_vals(create_vals: dict[str, Any]) -> dict[str, Any]:
    """``write`` values for a draft invoice: every line replaced ((5,0,0) then (0,0,vals) commands)."""
    vals = {k: v for k, v in create_vals.items() if k not in ("move_type", "journal_id")}
    vals["invoice_line_ids"] = [CLEAR, *create_vals["invoice_line_ids"]]
    return vals


def refund_vals(event: InvoiceEvent, refund: Refund, partner_id: int | str, mapping: MappingConfig) -> dict[str, Any]:
    """A posted credit note (``out_refund``) for one shop refund/return, linked by its ``ref`` (the shop's number)
    and reconciled with the invoice (``reversed_entry_id`` is readonly: only Odoo's reversal wizard sets it).

    A returned part is credited at the returned line's account and taxes (Odoo recomputes the tax, which
    equals the shop's per-line rounding); a goodwill refund without a line that carries tax is credited with
    the taxes of the invoice's largest taxed line, so its tax is posted as tax (issue #20); an untaxed one for
    its full amount."""
    where = tracking(event, mapping)
    source = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    goodwill = references.main_taxed_line(event, refund)
    if goodwill is not None:
        line = {"display_type": "product", "name": (refund.reason or "Refund")[:2000], "quantity": Decimal("1"),
                "price_unit": refund.amount, "account_id": line_account(LineKind.PART, mapping),
                "tax_ids": [(6, 0, tax_ids([t.code for t in goodwill.taxes], mapping))]}
    elif source is not None:
        line = {"display_type": "product", "name": f"Return: {line_vals(source, mapping, where)['name']}"[:2000],
                "quantity": Decimal("1"), "price_unit": refund.amount, "account_id": line_account(source.kind, mapping),
                "tax_ids": [(6, 0, tax_ids([t.code for t in source.taxes], mapping))]}
    else:
        line = {"display_type": "product", "name": (refund.reason or "Refund")[:2000], "quantity": Decimal("1"),
                "price_unit": refund.amount + refund.tax_amount,
                "account_id": line_account(LineKind.PART, mapping), "tax_ids": [(6, 0, [])]}
    if where and where[0] == "analytic":
        line["analytic_distribution"] = {str(where[1]): 100}
    vals: dict[str, Any] = {
        "move_type": "out_refund", "partner_id": partner_id,
        "payment_reference": refund_reference(event, refund), "ref": event.number,
        "invoice_date": refund.created_at.date().isoformat(), "invoice_line_ids": [(0, 0, line)],
    }
    if where and where[0] == "journal":
        vals["journal_id"] = where[1]
    return vals


# -- payments --
def register_vals(payment: Payment, mapping: MappingConfig) -> dict[str, Any]:
    """``account.payment.register`` values: this amount, on this date, into the method's journal, with our
    reference as the memo; a difference stays open (partial payment), never written off."""
    vals: dict[str, Any] = {
        "amount": payment.amount,
        "payment_date": payment.received_at.date().isoformat(),
        "communication": references.payment_reference(payment.id),
        "payment_difference_handling": "open",
        "group_payment": True,
    }
    journal = mapping.payment_accounts.get(payment.method)
    if journal:
        vals["journal_id"] = record_id(journal, f"payment_accounts.{payment.method}")
    return vals


def register_context(invoice_id: int) -> dict[str, Any]:
    return {"context": {"active_model": "account.move", "active_ids": [invoice_id]}}
