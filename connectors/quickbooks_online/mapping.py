"""Canonical invoice and payment → QuickBooks Online payloads (JSON field names as in Finance.xsd).

Pure functions of the event and the mapping configuration; ids of customers and items come in resolved.
The shop's own tax amounts are kept: the invoice carries ``TxnTaxDetail.TotalTax`` and one ``TaxLine``
per tax component, and each line is marked taxable ("TAX") or not ("NON").
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import invoice_memo, line_text
from connectors.quickbooks_online.taxes import prorated_tax, tax_detail
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund, money
from daemon.config import MappingConfig

DOC_NUMBER_MAX = 21
DISPLAY_NAME_MAX = 500


def customer_display_name(customer: Customer) -> str:
    # DisplayName is unique in a company; Intuit takes up to 500 characters (the name is cut, never the "(#id)")
    # and refuses ':', tab and newline in it (a sub-customer's path separator).
    return references.customer_label(customer.id, re.sub(r"[:\t\r\n]+", " ", customer.name), DISPLAY_NAME_MAX)


def customer_payload(customer: Customer, mapping: MappingConfig | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"DisplayName": customer_display_name(customer), "CompanyName": customer.name[:100]}
    notes = [f"Fleet account, net {customer.payment_terms_days} days"] if customer.payment_terms_days else []
    if customer.email:
        body["PrimaryEmailAddr"] = {"Address": customer.email}
    if customer.phone:  # Finance.xsd: "Max length: 21 characters"
        body["PrimaryPhone"] = {"FreeFormNumber": references.fitted(customer.phone, 21, "phone", notes,
                                                                    customer_id=customer.id)}
    if customer.billing_address:
        body["BillAddr"] = {"Line1": customer.billing_address[:500]}
    if notes:
        body["Notes"] = "; ".join(notes)[:1024]
    if term := sales_term(customer, mapping):  # fleet customers only
        body["SalesTermRef"] = {"value": term}
    return body


def sales_term(customer: Customer, mapping: MappingConfig | None) -> str | None:
    """The QuickBooks Term of a fleet (account) customer, from ``mapping.payment_terms`` (days -> Term id)."""
    if mapping is None or not customer.payment_terms_days:
        return None
    return mapping.payment_terms.get(customer.payment_terms_days)


def customer_hash(customer: Customer, mapping: MappingConfig | None = None) -> str:
    return references.payload_digest(customer_payload(customer, mapping))


def item_key(line: InvoiceLine, mapping: MappingConfig) -> tuple[str, str]:
    """(entity key, QuickBooks item name) for the item a line posts to."""
    if mapping.item_mode == "per_part_number" and line.part_number:
        return f"part:{line.part_number}", line.part_number[:100]
    return f"kind:{line.kind.value}", references.LINE_KIND_NAMES[line.kind]


def item_payload(name: str, line: InvoiceLine, mapping: MappingConfig) -> dict[str, Any]:
    account = mapping.income_accounts.get(line.kind) or mapping.income_accounts.get(LineKind.PART) or "1"
    if line.kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        account = mapping.core_account
    return {"Name": name, "Type": "Service" if line.kind in (LineKind.LABOUR, LineKind.SUBLET, LineKind.FEE)
            else "NonInventory", "IncomeAccountRef": {"value": account}}


def doc_number(event: InvoiceEvent) -> str:
    return event.number[-DOC_NUMBER_MAX:]


def _class_ref(event: InvoiceEvent, mapping: MappingConfig) -> dict[str, str] | None:
    tracking = mapping.location_tracking.get(event.location.code)
    if tracking and tracking.startswith("class:"):
        return {"value": tracking.split(":", 1)[1]}
    return None


def _item_detail(item_id: str, event: InvoiceEvent, mapping: MappingConfig, taxed: bool | None = None
                 ) -> dict[str, Any]:
    """A SalesItemLineDetail's item, class (location tracking) and, when ``taxed`` is given, its tax code."""
    detail: dict[str, Any] = {"ItemRef": {"value": item_id}}
    if class_ref := _class_ref(event, mapping):
        detail["ClassRef"] = class_ref
    return detail if taxed is None else detail | {"TaxCodeRef": {"value": "TAX" if taxed else "NON"}}


def sales_line(line: InvoiceLine, item_id: str, event: InvoiceEvent, mapping: MappingConfig) -> dict[str, Any]:
    """One shop line as QuickBooks posts it. Discount lines with ``discount_posting: discount_account``
    become a ``DiscountLineDetail`` (positive amount, subtracted by QuickBooks) on ``discount_account``;
    otherwise a line is a ``SalesItemLineDetail`` on its item (a discount: a negative amount)."""
    class_ref = _class_ref(event, mapping)
    tax_code = {"value": "TAX" if line.taxes else "NON"}
    if line.kind == LineKind.DISCOUNT and mapping.discount_posting == "discount_account" and mapping.discount_account:
        detail: dict[str, Any] = {"PercentBased": False, "DiscountAccountRef": {"value": mapping.discount_account}}
        if class_ref:
            detail["ClassRef"] = class_ref
        detail["TaxCodeRef"] = tax_code
        return {"DetailType": "DiscountLineDetail", "Amount": -line.amount, "LineNum": line.position,
                "Description": line_text(line, 4000), "DiscountLineDetail": detail}
    amount = line.amount
    detail = _item_detail(item_id, event, mapping)
    if event.tax_inclusive:
        # Tax-inclusive pricing: QuickBooks' Amount is the line net of tax; the shop's gross goes to
        # TaxInclusiveAmt. Qty × UnitPrice must equal Amount, so a unit price is sent only when exact.
        amount = line.amount - sum((t.amount for t in line.taxes), Decimal("0"))
        unit = (amount / line.quantity).quantize(Decimal("0.0000001")) if line.quantity else None
        if unit is not None and money(unit * line.quantity) == amount:
            detail.update({"UnitPrice": unit.normalize(), "Qty": line.quantity})
        detail.update({"TaxCodeRef": tax_code, "TaxInclusiveAmt": line.amount})
    else:
        detail.update({"UnitPrice": line.unit_price, "Qty": line.quantity, "TaxCodeRef": tax_code})
    return {"DetailType": "SalesItemLineDetail", "Amount": amount, "LineNum": line.position,
            "Description": line_text(line, 4000), "SalesItemLineDetail": detail}


def invoice_payload(event: InvoiceEvent, customer_id: str, item_ids: dict[int, str], mapping: MappingConfig
                    ) -> dict[str, Any]:
    tracking = mapping.location_tracking.get(event.location.code)
    lines = [sales_line(line, item_ids.get(line.id, ""), event, mapping) for line in event.lines]
    body: dict[str, Any] = {
        "DocNumber": doc_number(event),
        "CustomerRef": {"value": customer_id},
        "Line": lines,
        "TxnTaxDetail": tax_detail(event, mapping),
        "PrivateNote": invoice_memo(event, 4000),
        "GlobalTaxCalculation": "TaxInclusive" if event.tax_inclusive else "TaxExcluded",
    }
    if event.issue_date:
        body["TxnDate"] = event.issue_date.isoformat()
    if term := sales_term(event.customer, mapping):
        body["SalesTermRef"] = {"value": term}
    due = references.terms_due_date(event)
    if due:
        body["DueDate"] = due.isoformat()
    if tracking and tracking.startswith("department:"):
        body["DepartmentRef"] = {"value": tracking.split(":", 1)[1]}
    return body


def payment_payload(payment: Payment, invoice_id: str, customer_id: str, mapping: MappingConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_id}, "TotalAmt": payment.amount,
        "TxnDate": payment.received_at.date().isoformat(), "PaymentRefNum": references.payment_reference(payment.id),
        "Line": [{"Amount": payment.amount, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}],
    }
    account = mapping.payment_accounts.get(payment.method)
    if account:
        body["DepositToAccountRef"] = {"value": account}
    return body


# --- refunds, credit applications and closed-period adjustments ------------------------------------------

def credit_memo_payload(event: InvoiceEvent, refund: Refund, customer_id: str, item_id: str,
                        mapping: MappingConfig) -> dict[str, Any]:
    """A refund or returned part: the returned line's amount on its item, plus its tax, as a CreditMemo."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    detail = _item_detail(item_id, event, mapping, taxed=bool(refund.tax_amount))
    description = f"Returned: {line_text(line, 4000)}" if line else (refund.reason or "Refund")
    return {
        "DocNumber": references.refund_reference(refund.id),
        "TxnDate": refund.created_at.date().isoformat(),
        "PrivateNote": f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}"[:4000],
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": refund.amount, "LineNum": 1,
                  "Description": description[:4000], "SalesItemLineDetail": detail}],
        "TxnTaxDetail": prorated_tax(line, refund.amount, refund.tax_amount, mapping),
        "CustomerRef": {"value": customer_id},
    }


def credit_application_payload(customer_id: str, invoice_id: str, credit_memo_id: str, amount: Decimal,
                               txn_date: date, reference: str) -> dict[str, Any]:
    """Apply a credit memo to an invoice the way QuickBooks records it: a Payment of zero whose lines link
    the invoice (amount applied) and the credit memo (the same amount used)."""
    return {"CustomerRef": {"value": customer_id}, "TotalAmt": Decimal("0.00"), "TxnDate": txn_date.isoformat(),
            "PaymentRefNum": reference,
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]},
                     {"Amount": amount, "LinkedTxn": [{"TxnId": credit_memo_id, "TxnType": "CreditMemo"}]}]}


def refund_expense_payload(event: InvoiceEvent, refund: Refund, customer: dict[str, Any], account: dict[str, Any],
                           receivable_id: str, amount: Decimal, reference: str) -> dict[str, Any]:
    """Money paid back to the customer as QuickBooks records a customer credit refunded: an expense (a Purchase)
    to the customer out of the refunded payment's account, its one line on Accounts Receivable, so it is a
    charge on the customer that the credit memo then pays (``refund_link_payload``)."""
    kind = "CreditCard" if account.get("AccountType") == "Credit Card" else "Cash"
    return {"PaymentType": kind, "AccountRef": {"value": str(account["Id"])}, "EntityRef": {**customer, "type": "Customer"},
            "TxnDate": refund.created_at.date().isoformat(), "DocNumber": reference, "TotalAmt": amount,
            "PrivateNote": f"Refund of {event.number} paid back ({reference})"[:4000],
            "Line": [{"Amount": amount, "DetailType": "AccountBasedExpenseLineDetail",
                      "Description": (refund.reason or f"Refund {refund.id}")[:4000],
                      "AccountBasedExpenseLineDetail": {"AccountRef": {"value": receivable_id}}}]}


def refund_link_payload(customer: dict[str, Any], credit_memo_id: str, expense_id: str, amount: Decimal,
                        txn_date: date, reference: str) -> dict[str, Any]:
    """The credit memo used up by the money paid back: a Payment of zero whose lines link the expense (the
    charge it pays) and the credit memo (the same amount used), as QuickBooks' Receive Payment records it."""
    return {"CustomerRef": customer, "TotalAmt": Decimal("0.00"), "TxnDate": txn_date.isoformat(),
            "PaymentRefNum": reference,
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": expense_id, "TxnType": "Expense"}]},
                     {"Amount": amount, "LinkedTxn": [{"TxnId": credit_memo_id, "TxnType": "CreditMemo"}]}]}


def adjustment_doc_number(event: InvoiceEvent, seq: int, kind: str) -> str:
    """DocNumber of a closed-period adjustment: ``A<n>`` (increase) or ``C<n>`` (decrease) + the invoice number."""
    return f"{'A' if kind == 'increase' else 'C'}{seq}-{event.number}"[-DOC_NUMBER_MAX:]


def adjustment_payload(event: InvoiceEvent, kind: str, seq: int, customer_id: str, item_id: str,
                       amount: Decimal, tax: Decimal, txn_date: date, original_id: str | None,
                       mapping: MappingConfig, reason: str) -> dict[str, Any]:
    """The difference between what QuickBooks holds and the shop's new version, as one adjustment document
    (an Invoice for an increase, a CreditMemo for a decrease) dated in the first open period, linked to the
    original by its DocNumber and PrivateNote."""
    detail = _item_detail(item_id, event, mapping, taxed=bool(tax))
    note = (f"Adjustment {seq} to shop invoice {event.number} v{event.version}"
            f"{f' (QuickBooks invoice {original_id})' if original_id else ''}: {reason}; the original is dated in a "
            "closed period")
    return {
        "DocNumber": adjustment_doc_number(event, seq, kind), "TxnDate": txn_date.isoformat(),
        "PrivateNote": note[:4000],
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": amount, "LineNum": 1,
                  "Description": f"Adjustment to invoice {event.number} ({reason})"[:4000],
                  "SalesItemLineDetail": detail}],
        "TxnTaxDetail": {"TotalTax": tax},
        "CustomerRef": {"value": customer_id},
    }
