"""Closed-period adjustments at Odoo, line by line: what Odoo holds for an invoice (the original and every
adjustment ``<number>-A<n>`` / ``-C<n>``, read back per account and tax set; Odoo computes each line's tax) against
the shop's version, and the ``out_invoice`` (increase) or ``out_refund`` (decrease) that posts the difference on
the first open day."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from connectors import adjustments, references
from connectors.base import PermanentError
from connectors.odoo import wire
from connectors.odoo.client import OdooClient
from connectors.odoo.mapping import line_account, record_id, tax_ids, tracking
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig

LINE_FIELDS = ["account_id", "tax_ids", "price_subtotal", "price_total", "display_type"]


def group_key(account_id: int, taxes: list[int]) -> str:
    """The posting key of an amount: account and tax set, e.g. "5|9,10"."""
    return f"{account_id}|{','.join(str(t) for t in sorted(taxes))}"


def posting_lines(event: InvoiceEvent, mapping: MappingConfig) -> list[tuple[str, Decimal]]:
    """The shop's version as (posting key, net) per line: what Odoo should hold in the end."""
    return [(group_key(line_account(line.kind, mapping), tax_ids([t.code for t in line.taxes], mapping)),
             line.amount - sum((t.amount for t in line.taxes), Decimal("0")) if event.tax_inclusive else line.amount)
            for line in event.lines]


def adjustment_vals(event: InvoiceEvent, kind: str, seq: int, partner_id: int, lines: list[tuple[str, Decimal]],
                    open_day: str, original_name: str | None, mapping: MappingConfig, reason: str) -> dict[str, Any]:
    """An ``out_invoice`` (increase) or ``out_refund`` (decrease) dated the first open day, one line per ``lines``
    entry (posting key, net as the document carries it) with the key's taxes — line by line, so Odoo rounds each
    line's tax as it did on the original —, ``payment_reference`` = its own number (looked up on retries),
    ``ref`` = the shop's invoice number and Odoo's number of the original, ``narration`` = why."""
    where = tracking(event, mapping)
    commands = []
    for key, net in lines:
        account, _, taxes = key.partition("|")
        line: dict[str, Any] = {"display_type": "product",
                                "name": f"Adjustment of {event.number} ({reason})"[:2000],
                                "quantity": Decimal("1"), "price_unit": net, "account_id": int(account),
                                "tax_ids": [(6, 0, [int(t) for t in taxes.split(",") if t])]}
        if where and where[0] == "analytic":
            line["analytic_distribution"] = {str(where[1]): 100}
        commands.append((0, 0, line))
    vals: dict[str, Any] = {
        "move_type": "out_invoice" if kind == "increase" else "out_refund", "partner_id": partner_id,
        "payment_reference": references.adjustment_number(event.number, seq, kind),
        "ref": f"{event.number} {original_name}" if original_name else event.number,
        "invoice_date": open_day, "narration": f"Closed-period adjustment of shop invoice {event.number}: {reason}",
        "invoice_line_ids": commands,
    }
    if where and where[0] == "journal":
        vals["journal_id"] = where[1]
    return vals


def lines_to_post(client: OdooClient, config: MappingConfig, included: Callable[[], dict[int, int]],
                  event: InvoiceEvent, kind: str, original: dict[str, Any] | None, fields: list[str]
                  ) -> list[tuple[str, Decimal]]:
    """The difference between what Odoo holds (the original and every adjustment, read back with ``fields``) and
    the shop's version, per account and tax set, as the adjustment document carries it."""
    held = [(1, move_lines(client, config, included, original))]  # (posting key, net) of the original and each adjustment
    pattern = re.compile(rf"{re.escape(event.number)}-([AC])\d+")
    for move in client.search_read("account.move", [("payment_reference", "ilike", f"{event.number}-"),
                                                    ("state", "=", "posted")], fields, order="id asc"):
        if found := pattern.fullmatch(str(move.get("payment_reference") or "")):
            held.append((1 if found.group(1) == "A" else -1, move_lines(client, config, included, move)))
    wanted = [] if event.status.value in ("void", "deleted") else posting_lines(event, config)
    sign = 1 if kind == "increase" else -1  # a credit note carries a decrease as positive amounts
    lines = [(key, sign * net) for key, net in adjustments.line_difference(held, wanted)]
    if not lines:
        raise PermanentError(f"Odoo: {event.number} differs from what Odoo holds only by Odoo's own tax "
                             "rounding; no adjustment line to post")
    return lines


def move_lines(client: OdooClient, config: MappingConfig, included: Callable[[], dict[int, int]],
           move: dict[str, Any] | None) -> list[tuple[str, Decimal]]:
    """A posted move's lines as (posting key, net), read back from Odoo; a tax-inclusive invoice's
    price-included taxes are keyed by the mapped (excluded) tax they stand for."""
    if not move or move.get("state") != "posted" or not move.get("invoice_line_ids"):
        return []
    rows = client.search_read("account.move.line", [("id", "in", list(move["invoice_line_ids"]))],
                                   LINE_FIELDS)
    mapped = {record_id(v, f"tax_codes.{k}") for k, v in config.tax_codes.items()}
    excluded: dict[int, int] = {}
    if any(t not in mapped for row in rows for t in row.get("tax_ids") or []):
        excluded = {incl: excl for excl, incl in sorted(included().items(), reverse=True)}
    return [(group_key(int(row["account_id"][0] if isinstance(row["account_id"], list) else row["account_id"]),
                               [excluded.get(t, t) for t in row.get("tax_ids") or []]), wire.money(row["price_subtotal"]))
            for row in rows if row.get("display_type") in ("product", False, None)]
