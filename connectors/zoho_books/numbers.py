"""Zoho Books keeps a voided invoice's number: a new invoice with that number is refused (1001 "already
exists"). When the shop deleted an invoice and reused its number, the voided holder is renamed — Zoho's way:
mark it as draft, rename it ``<number>-VOID<id>``, void it again — so the new invoice can take the number."""

from __future__ import annotations

import structlog

from connectors.zoho_books.client import ZohoClient

log = structlog.get_logger(__name__)
# What a PUT /invoices line may carry (Zoho refuses what it computes itself): a renamed voided invoice's lines
LINE_FIELDS = ("item_id", "name", "description", "item_order", "rate", "quantity", "account_id", "tax_id",
               "location_id", "tags")


def free_voided_number(client: ZohoClient, number: str) -> bool:
    """Rename every voided invoice holding ``number``; False (nothing renamed) when none holds it or a live
    invoice does: that one stays, and the create is retried until its void arrives."""
    held = [r for r in client.list("/invoices", "invoices", invoice_number=number) if r.get("invoice_number") == number]
    if not held or any(r.get("status") != "void" for r in held):
        return False
    for row in held:
        invoice_id = row["invoice_id"]
        client.call("POST", f"/invoices/{invoice_id}/status/draft")
        held_lines = (client.get(f"/invoices/{invoice_id}", "invoice") or {}).get("line_items") or []
        lines = [{k: v for k, v in line.items() if k in LINE_FIELDS and v is not None} for line in held_lines]
        client.call("PUT", f"/invoices/{invoice_id}",
                    {"customer_id": row["customer_id"], "invoice_number": f"{number}-VOID{invoice_id}"[:100],
                     "line_items": lines}, ignore_auto_number_generation="true")
        client.call("POST", f"/invoices/{invoice_id}/status/void")
        log.warning("zoho_voided_invoice_number_freed", external_id=str(invoice_id))
    return True
