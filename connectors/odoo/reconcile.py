"""Where a credit note meets its invoice in Odoo: the credit note's receivable line (the ``payment_term`` line
that ``js_assign_outstanding_line`` reconciles with the invoice) and the ``account.partial.reconcile`` records
that reconciliation made (a credit application, found again on a retry)."""

from __future__ import annotations

from connectors.base import ExternalRef
from connectors.odoo.client import OdooClient


def receivable_line(client: OdooClient, move_id: str) -> int | str:
    move = client.read_one("account.move", move_id, ["line_ids"])
    lines = client.search_read("account.move.line", [("id", "in", move["line_ids"]), (
        "display_type", "=", "payment_term")], ["id"]) if move and move["line_ids"] else []
    return int(lines[0]["id"]) if lines else "<new account.move.line>"  # a preview's credit note


def applications(client: OdooClient, line: int | str) -> list[ExternalRef]:
    """The partial reconciles of a credit note's receivable line, oldest first (none for a preview's)."""
    if not isinstance(line, int):
        return []
    rows = client.search_read("account.partial.reconcile", [("credit_move_id", "=", line)], ["id", "amount"],
                              order="id asc")
    return [ExternalRef(external_id=str(r["id"]), amount=r["amount"]) for r in rows]
