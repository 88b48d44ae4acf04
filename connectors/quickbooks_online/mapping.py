"""Canonical invoice and payment → QuickBooks Online payloads (JSON field names as in Finance.xsd).

Pure functions of the event and the mapping configuration; ids of customers and items come in resolved.
The shop's own tax amounts are kept: the invoice carries ``TxnTaxDetail.TotalTax`` and one ``TaxLine``
per tax component, and each line is marked taxable ("TAX") or not ("NON").
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment
from daemon.config import MappingConfig

KIND_ITEM_NAMES = {LineKind.PART: "Parts", LineKind.LABOUR: "Labour", LineKind.SUBLET: "Sublet",
                   LineKind.FEE: "Shop fees", LineKind.DISCOUNT: "Discount", LineKind.CORE_CHARGE: "Core charge",
                   LineKind.CORE_RETURN: "Core return"}
DOC_NUMBER_MAX = 21


def customer_display_name(customer: Customer) -> str:
    # DisplayName is unique in a QuickBooks company: two shop customers called "Dana Whitfield" are kept
    # apart by the shop's customer id.
    return f"{customer.name} (#{customer.id})"[:100]


def customer_payload(customer: Customer) -> dict[str, Any]:
    body: dict[str, Any] = {"DisplayName": customer_display_name(customer), "CompanyName": customer.name[:100]}
    if customer.email:
        body["PrimaryEmailAddr"] = {"Address": customer.email}
    if customer.phone:
        body["PrimaryPhone"] = {"FreeFormNumber": customer.phone}
    if customer.billing_address:
        body["BillAddr"] = {"Line1": customer.billing_address[:500]}
    if customer.payment_terms_days:
        body["Notes"] = f"Fleet account, net {customer.payment_terms_days} days"
    return body


def customer_hash(customer: Customer) -> str:
    return hashlib.sha256(json.dumps(customer_payload(customer), sort_keys=True).encode()).hexdigest()[:16]


def item_key(line: InvoiceLine, mapping: MappingConfig) -> tuple[str, str]:
    """(entity key, QuickBooks item name) for the item a line posts to."""
    if mapping.item_mode == "per_part_number" and line.part_number:
        return f"part:{line.part_number}", line.part_number[:100]
    return f"kind:{line.kind.value}", KIND_ITEM_NAMES[line.kind]


def item_payload(name: str, line: InvoiceLine, mapping: MappingConfig) -> dict[str, Any]:
    account = mapping.income_accounts.get(line.kind) or mapping.income_accounts.get(LineKind.PART) or "1"
    if line.kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        account = mapping.core_account
    return {"Name": name, "Type": "Service" if line.kind in (LineKind.LABOUR, LineKind.SUBLET, LineKind.FEE)
            else "NonInventory", "IncomeAccountRef": {"value": account}}


def doc_number(event: InvoiceEvent) -> str:
    return event.number[-DOC_NUMBER_MAX:]


def invoice_payload(event: InvoiceEvent, customer_id: str, item_ids: dict[int, str], mapping: MappingConfig
                    ) -> dict[str, Any]:
    tracking = mapping.location_tracking.get(event.location.code)
    lines = []
    for line in event.lines:
        detail: dict[str, Any] = {"ItemRef": {"value": item_ids[line.id]}, "Qty": line.quantity,
                                  "UnitPrice": line.unit_price, "TaxCodeRef": {"value": "TAX" if line.taxes else "NON"}}
        if tracking and tracking.startswith("class:"):
            detail["ClassRef"] = {"value": tracking.split(":", 1)[1]}
        lines.append({"DetailType": "SalesItemLineDetail", "Amount": line.amount, "LineNum": line.position,
                      "Description": _description(line), "SalesItemLineDetail": detail})
    body: dict[str, Any] = {
        "DocNumber": doc_number(event),
        "CustomerRef": {"value": customer_id},
        "Line": lines,
        "TxnTaxDetail": tax_detail(event, mapping),
        "PrivateNote": _memo(event),
        "GlobalTaxCalculation": "TaxInclusive" if event.tax_inclusive else "TaxExcluded",
    }
    if event.issue_date:
        body["TxnDate"] = event.issue_date.isoformat()
    if event.due_date:
        body["DueDate"] = event.due_date.isoformat()
    if tracking and tracking.startswith("department:"):
        body["DepartmentRef"] = {"value": tracking.split(":", 1)[1]}
    return body


def tax_detail(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    components: dict[str, dict[str, Any]] = {}
    for line in event.lines:
        for tax in line.taxes:
            c = components.setdefault(tax.code, {"amount": Decimal("0"), "taxable": Decimal("0"), "rate": tax.rate})
            c["amount"] += tax.amount
            c["taxable"] += line.amount
    tax_lines = [{"Amount": c["amount"], "DetailType": "TaxLineDetail",
                  "TaxLineDetail": {"TaxRateRef": {"value": mapping.tax_codes.get(code, code)}, "PercentBased": True,
                                    "TaxPercent": (c["rate"] * 100).normalize(), "NetAmountTaxable": c["taxable"]}}
                 for code, c in sorted(components.items())]
    return {"TotalTax": event.computed.tax_total, "TaxLine": tax_lines}


def _description(line: InvoiceLine) -> str:
    text = f"{line.part_number} {line.description}" if line.part_number else line.description
    return text[:4000]


def _memo(event: InvoiceEvent) -> str:
    parts = [f"Shop invoice {event.number}"]
    if event.job:
        parts.append(f"job {event.job.number}")
        if event.job.vehicle:
            parts.append(event.job.vehicle)
    return "; ".join(parts)[:4000]


def payment_reference(payment: Payment) -> str:
    return f"LW{payment.id}"


def payment_payload(payment: Payment, invoice_id: str, customer_id: str, mapping: MappingConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id}, "TotalAmt": payment.amount,
        "TxnDate": payment.received_at.date().isoformat(), "PaymentRefNum": payment_reference(payment),
        "Line": [{"Amount": payment.amount, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}],
    }
    account = mapping.payment_accounts.get(payment.method)
    if account:
        body["DepositToAccountRef"] = {"value": account}
    return body


def invoice_hash(payload: dict[str, Any]) -> str:
    from connectors.jsonmoney import dumps

    return hashlib.sha256(dumps(payload)).hexdigest()[:24]
