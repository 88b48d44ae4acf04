"""Canonical invoice, payment and refund → Zoho Books request bodies (field names as Zoho's docs).

Pure functions of the event and the mapping configuration; ids (contact, tax ids/groups) come in resolved.
Zoho computes tax itself from each line's ``tax_id`` (a tax, or a tax group for two components); the
shop's tax amounts are compared with what Zoho computed by the engine (``note_tax``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import invoice_memo, line_text, posting_account
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

# Ledgerwire payment method -> Zoho's documented payment_mode values
PAYMENT_MODES = {"card": "creditcard", "cash": "cash", "check": "check", "cheque": "check", "eft": "banktransfer",
                 "ach": "banktransfer", "wire": "bankremittance"}


def contact_name(customer: Customer) -> str:
    # contact_name is unique in a Zoho organisation; the shop's customer id keeps two "Dana Whitfield"s apart
    # and is how a contact is found again ("(#77)" suffix, searchable with contact_name_contains).
    suffix = contact_suffix(customer)
    return f"{customer.name[:200 - len(suffix) - 1]} {suffix}"


def contact_suffix(customer: Customer) -> str:
    return f"(#{customer.id})"


def contact_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"contact_name": contact_name(customer), "company_name": customer.name[:200],
                            "contact_type": "customer",
                            "customer_sub_type": "business" if customer.is_fleet else "individual"}
    if customer.payment_terms_days:
        body["payment_terms"] = customer.payment_terms_days
    person: dict[str, Any] = {}
    if customer.email:
        person["email"] = customer.email[:100]
    if customer.phone:
        person["phone"] = customer.phone[:50]
    if person:
        body["contact_persons"] = [{"first_name": customer.name[:100], **person, "is_primary_contact": True}]
    if customer.billing_address:
        body["notes"] = customer.billing_address[:5000]
    return body


def contact_hash(customer: Customer) -> str:
    return references.payload_digest(contact_payload(customer))


def tracking(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    """``location_tracking[code]``: "location:<id>" (or a bare id), "branch:<id>", "tag:<tag_id>:<option_id>"."""
    value = mapping.location_tracking.get(event.location.code)
    if not value:
        return {}
    kind, _, rest = value.partition(":")
    if not rest:
        return {"location_id": value}
    if kind == "location":
        return {"location_id": rest}
    if kind == "branch":
        return {"branch_id": rest}
    if kind == "tag":
        tag_id, _, option_id = rest.partition(":")
        return {"tags": [{"tag_id": tag_id, "tag_option_id": option_id}]}
    raise ValueError(f"location_tracking for {event.location.code}: unknown kind {kind!r}")


def per_part_number(line: InvoiceLine, mapping: MappingConfig) -> bool:
    """``item_mode: per_part_number``: a part line with a part number has its own Zoho item."""
    return mapping.item_mode == "per_part_number" and line.kind == LineKind.PART and bool(line.part_number)


def item_name(line: InvoiceLine) -> str:
    """The Zoho item of a part number (item names are unique in an organisation): the part number itself."""
    return (line.part_number or "")[:100]


def item_payload(line: InvoiceLine, mapping: MappingConfig) -> dict[str, Any]:
    """POST /items: a sales item for a part number, on the part lines' income account."""
    body: dict[str, Any] = {"name": item_name(line), "sku": (line.part_number or "")[:100],
                            "description": line.description[:2000], "rate": line.unit_price,
                            "item_type": "sales", "product_type": "goods"}
    account = posting_account(line.kind, mapping)
    if account:
        body["account_id"] = account
    return body


def line_posting(item: dict[str, Any], account: str | None, tax_id: str | None, track: dict[str, Any]) -> dict[str, Any]:
    """A line item's account, tax (Zoho computes the amount) and reporting tags."""
    return item | {k: v for k, v in (("account_id", account), ("tax_id", tax_id), ("tags", track.get("tags"))) if v}


def line_item(line: InvoiceLine, tax_id: str | None, mapping: MappingConfig, track: dict[str, Any],
              item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    configured = item_id or mapping.items.get(line.kind)
    if configured:
        item["item_id"] = configured
    else:
        kind_name = references.LINE_KIND_NAMES[line.kind]
        item["name"] = (f"{kind_name} {line.part_number}" if line.part_number else kind_name)[:100]
    item |= {"description": line_text(line, 2000), "item_order": line.position, "rate": line.unit_price,
             "quantity": line.quantity}
    return line_posting(item, posting_account(line.kind, mapping), tax_id, track)


def invoice_payload(event: InvoiceEvent, customer_id: str, tax_ids: dict[int, str | None],
                    mapping: MappingConfig, item_ids: dict[int, str] | None = None) -> dict[str, Any]:
    track = tracking(event, mapping)
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "invoice_number": event.number[:100],  # sent with ignore_auto_number_generation=true
        "reference_number": (event.job.number if event.job else event.number)[:100],
        "is_inclusive_tax": event.tax_inclusive,
        "notes": invoice_memo(event, 5000),
        "line_items": [line_item(ln, tax_ids.get(ln.id), mapping, track, (item_ids or {}).get(ln.id))
                       for ln in event.lines],
    }
    if event.issue_date:
        body["date"] = event.issue_date.isoformat()
    if due := references.terms_due_date(event):  # a fleet customer's terms give it when the shop left it empty
        body["due_date"] = due.isoformat()
    body |= {k: v for k, v in track.items() if k != "tags"}
    return body


def credit_refund_payload(event: InvoiceEvent, refund: Refund, amount: Decimal, reference: str,
                          mapping: MappingConfig) -> dict[str, Any]:
    """Money paid back on a refund's credit note, from the account of the payment it refunds."""
    method = references.refund_method(event, refund) or ""
    body: dict[str, Any] = {"date": refund.created_at.date().isoformat(), "amount": amount,
                            "refund_mode": PAYMENT_MODES.get(method, "others"), "reference_number": reference,
                            "description": f"Shop refund {refund.id} on invoice {event.number}"[:500]}
    account = mapping.payment_accounts.get(method)
    if account:
        body["from_account_id"] = account
    return body


def payment_payload(payment: Payment, invoice_id: str, customer_id: str, event: InvoiceEvent,
                    mapping: MappingConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer_id, "payment_mode": PAYMENT_MODES.get(payment.method, "others"),
        "amount": payment.amount, "date": payment.received_at.date().isoformat(),
        "reference_number": references.payment_reference(payment.id),
        "description": f"Shop payment {payment.id} on invoice {event.number}"[:500],
        "invoices": [{"invoice_id": invoice_id, "amount_applied": payment.amount}],
    }
    account = mapping.payment_accounts.get(payment.method)
    if account:
        body["account_id"] = account
    location = tracking(event, mapping).get("location_id")
    if location:
        body["location_id"] = location
    return body


def creditnote_payload(refund: Refund, event: InvoiceEvent, customer_id: str, tax_id: str | None,
                       mapping: MappingConfig) -> dict[str, Any]:
    """One line: the returned part (taxed like its invoice line), a goodwill refund without a line (taxed like
    the invoice's main taxed line, ``tax_id``: its tax is posted as tax, issue #20), or an untaxed refund."""
    track = tracking(event, mapping)
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    kind = line.kind if line is not None else LineKind.PART
    if tax_id and refund.tax_amount:
        rate = refund.amount
        description = f"Returned: {line_text(line, 2000)}" if line is not None else f"Refund on invoice {event.number}"
    else:
        rate, description, tax_id = refund.amount + refund.tax_amount, f"Refund on invoice {event.number}", None
    item = line_posting({"name": f"{'Return' if refund.kind == 'return' else 'Refund'} {event.number}"[:100],
                     "description": description[:2000], "item_order": 1, "rate": rate, "quantity": Decimal("1")},
                    posting_account(kind, mapping), tax_id, track)
    body: dict[str, Any] = {"customer_id": customer_id, "date": refund.created_at.date().isoformat(),
                            "reference_number": references.refund_reference(refund.id), "is_inclusive_tax": event.tax_inclusive,
                            "notes": f"Shop {refund.kind} {refund.id} against invoice {event.number}",
                            "line_items": [item]}
    body |= {k: v for k, v in track.items() if k != "tags"}
    return body
