"""Canonical invoice, payment and refund → qbXML requests (element order as in qbxmlops130/160.xsd; the
document, queries and answers are ``qbxml``'s). Pure functions; ListIDs/TxnIDs come in resolved.

Tax: QuickBooks Desktop computes an invoice's sales tax from its ``ItemSalesTaxRef``. The invoice names a
0 % sales-tax item (settings.invoice_tax_item) so QuickBooks adds nothing itself, and each of the shop's tax
components travels as a sales-tax item line (``mapping.tax_codes[code]`` → the ItemSalesTax's name) with
the shop's exact amount: totals and tax match the shop to the cent, and the tax still lands in the
sales-tax liability of the right agency. Lines are marked ``Tax``/``Non`` for QuickBooks' taxable-sales
reports. Whatever QuickBooks answers is compared with the shop's totals afterwards (tax_difference).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from lxml import etree

from connectors import references
from connectors.base import invoice_memo, line_text
from connectors.quickbooks_desktop.numbering import refund_reference, settlement_reference
from connectors.quickbooks_desktop.qbxml import amt, el, num, ref
from connectors.quickbooks_desktop.taxes import refund_tax_components
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Payment, Refund
from daemon.config import MappingConfig

OTHER_MAX = 29  # InvoiceAdd/Other maxLength: the shop's full invoice number lives here
NAME_MAX = 41  # CustomerAdd/Name
ITEM_NAME_MAX = 31  # Item*Add/Name
# qbXML item type per line kind: services, non-inventory parts, other charges.
KIND_ITEM_TYPES = {LineKind.PART: "ItemNonInventory", LineKind.LABOUR: "ItemService", LineKind.SUBLET: "ItemService",
                   LineKind.FEE: "ItemOtherCharge", LineKind.DISCOUNT: "ItemOtherCharge",
                   LineKind.CORE_CHARGE: "ItemOtherCharge", LineKind.CORE_RETURN: "ItemOtherCharge"}


# --- names ---------------------------------------------------------------------------------------------


def customer_name(customer: Customer) -> str:
    """Customer names are unique in a company file (≤ 41 chars): the shop's id keeps namesakes apart."""
    suffix = customer_suffix(customer)
    return customer.name[:NAME_MAX - len(suffix)].strip() + suffix


def customer_suffix(customer: Customer) -> str:
    """The end of every name this connector gives a customer: the shop's id, which a rename never changes."""
    return f" #{customer.id}"


def customer_by_shop_id(customer: Customer) -> etree._Element:
    """CustomerQueryRq for the record whose name ends with the shop id's suffix: a renamed customer is found under
    the name it has at QuickBooks (never under its new name, which QuickBooks does not know yet)."""
    rq = etree.Element("CustomerQueryRq")
    name_filter = el(rq, "NameFilter")
    el(name_filter, "MatchCriterion", "EndsWith")
    el(name_filter, "Name", customer_suffix(customer).strip())
    return rq


def customer_hash(customer: Customer) -> str:
    return references.payload_digest({"name": customer_name(customer), "phone": customer.phone, "email": customer.email})


def item_key(line: InvoiceLine, mapping: MappingConfig) -> tuple[str, str, str]:
    """(entity key, item name, qbXML item type) for the item a line posts to."""
    if mapping.item_mode == "per_part_number" and line.part_number:
        return f"part:{line.part_number}", line.part_number[:ITEM_NAME_MAX], KIND_ITEM_TYPES[line.kind]
    configured = mapping.items.get(line.kind)
    if configured:
        return f"kind:{line.kind.value}", configured, KIND_ITEM_TYPES[line.kind]
    return f"kind:{line.kind.value}", references.LINE_KIND_NAMES[line.kind], KIND_ITEM_TYPES[line.kind]


def income_account(kind: LineKind, mapping: MappingConfig) -> str | None:
    if kind in (LineKind.CORE_CHARGE, LineKind.CORE_RETURN) and mapping.core_account:
        return mapping.core_account
    return (mapping.income_accounts.get(kind) or mapping.income_accounts.get(LineKind.CORE_CHARGE
            if kind == LineKind.CORE_RETURN else kind) or mapping.income_accounts.get(LineKind.PART))


def tax_item(code: str, mapping: MappingConfig) -> str:
    return mapping.tax_codes.get(code, code)[:ITEM_NAME_MAX]


# --- qbXML building ------------------------------------------------------------------------------------


def customer_write(customer: Customer, list_id: str | None = None, edit_sequence: str | None = None
                   ) -> etree._Element:
    """CustomerAdd, or CustomerMod of ``list_id`` at ``edit_sequence`` (a Mod clears what the shop cleared)."""
    verb = "Mod" if list_id else "Add"
    rq = etree.Element(f"Customer{verb}Rq")
    body = el(rq, f"Customer{verb}")
    if list_id:
        el(body, "ListID", list_id)
        el(body, "EditSequence", edit_sequence)
    notes: list[str] = []  # what CustomerAdd's limits (qbxmlops: CompanyName 41, Phone 21) left out, in full
    el(body, "Name", customer_name(customer))
    el(body, "CompanyName", references.fitted(customer.name, NAME_MAX, "company name", notes, customer_id=customer.id))
    for tag, value, limit in (("Phone", customer.phone, 21), ("Email", customer.email, 1023)):
        if value or list_id:
            el(body, tag, references.fitted(value or "", limit, tag.lower(), notes, customer_id=customer.id))
    if notes:
        el(body, "Notes", "; ".join(notes)[:4095])
    return rq


def item_add(item_type: str, name: str, account: str, description: str) -> etree._Element:
    """ItemServiceAdd / ItemNonInventoryAdd / ItemOtherChargeAdd with the income account (SalesOrPurchase)."""
    rq = etree.Element(f"{item_type}AddRq")
    add = el(rq, f"{item_type}Add")
    el(add, "Name", name[:ITEM_NAME_MAX])
    sop = el(add, "SalesOrPurchase")
    el(sop, "Desc", description[:4095])
    el(sop, "Price", "0.00")
    ref(sop, "AccountRef", full_name=account)
    return rq


def _line(parent: etree._Element, tag: str, item: dict[str, str], desc: str, amount: Decimal,
          taxable: bool | None = None, quantity: Decimal | None = None, rate: Decimal | None = None) -> None:
    line = el(parent, tag)
    if tag == "InvoiceLineMod":
        el(line, "TxnLineID", "-1")  # every line sent as new: QuickBooks drops the lines left out
    ref(line, "ItemRef", **item)
    el(line, "Desc", desc[:4095])
    if quantity is not None:
        el(line, "Quantity", num(quantity))
    if quantity is not None and rate is not None:  # without a Rate QuickBooks derives it from Amount / Quantity
        el(line, "Rate", num(rate))
    el(line, "Amount", amt(amount))
    if taxable is not None:
        ref(line, "SalesTaxCodeRef", full_name="Tax" if taxable else "Non")


def invoice_lines(event: InvoiceEvent, item_refs: dict[int, dict[str, str]], mapping: MappingConfig
                  ) -> list[dict[str, Any]]:
    """The invoice's lines as QuickBooks will hold them: the shop's lines, then one sales-tax item line per tax
    component with the shop's amount (sum of its per-line rounded amounts)."""
    lines: list[dict[str, Any]] = [
        {"item": item_refs[line.id], "desc": line_text(line, 4095), "quantity": line.quantity,
         "rate": None if event.tax_inclusive else line.unit_price, "amount": _net(event, line),
         "taxable": bool(line.taxes)} for line in event.lines]
    components: dict[str, tuple[str, Decimal]] = {}
    for tax in (tax for line in event.lines for tax in line.taxes):
        components[tax.code] = (tax.name, components.get(tax.code, ("", Decimal("0")))[1] + tax.amount)
    for code, (name, amount) in sorted(components.items()):
        lines.append({"item": {"full_name": tax_item(code, mapping)}, "desc": name, "amount": amount})
    return lines


def _net(event: InvoiceEvent, line: InvoiceLine) -> Decimal:
    """A line's amount before tax: a tax-inclusive invoice's line amounts hold their tax, which travels on the
    sales-tax item lines; the total is then the shop's (234.99 stays 234.99, not 234.99 plus its tax again)."""
    if not event.tax_inclusive:
        return line.amount
    return line.amount - sum((tax.amount for tax in line.taxes), Decimal("0"))


def _transaction(body: etree._Element, event: InvoiceEvent, customer_list_id: str,
                 txn_date: str | None, ref_number: str, tax_item_name: str, memo: str, other: str,
                 mapping: MappingConfig, invoice: bool = False) -> None:
    """The header an invoice, a credit memo and an adjustment share (elements in the schema's order)."""
    ref(body, "CustomerRef", list_id=customer_list_id)
    tracking = mapping.location_tracking.get(event.location.code)
    if tracking:
        ref(body, "ClassRef", full_name=tracking)
    if txn_date:
        el(body, "TxnDate", txn_date)
    el(body, "RefNumber", ref_number)
    if invoice and event.job:
        el(body, "PONumber", event.job.number[:25])
    terms = mapping.payment_terms.get(event.customer.payment_terms_days or 0)
    if invoice and terms:  # the fleet customer's Term (StandardTerms/DateDrivenTerms name), from mapping.payment_terms
        ref(body, "TermsRef", full_name=str(terms))
    due = references.terms_due_date(event) if invoice else None
    if due:
        el(body, "DueDate", due.isoformat())
    ref(body, "ItemSalesTaxRef", full_name=tax_item_name)
    el(body, "Memo", memo[:4095])
    if event.tax_inclusive:  # the platform's own setting: the amounts are what the customer pays, tax included
        el(body, "IsTaxIncluded", "true")
    el(body, "Other", other)


def invoice_write(event: InvoiceEvent, customer_list_id: str, ref_number: str, lines: list[dict[str, Any]],
                  mapping: MappingConfig, tax_item_name: str, txn_date: str | None = None, txn_id: str | None = None,
                  edit_sequence: str | None = None) -> etree._Element:
    """InvoiceAdd, or InvoiceMod of ``txn_id`` (the whole invoice again) at ``edit_sequence``; ``txn_date``:
    re-dated into the first open day (closed books), said in the memo."""
    verb = "Mod" if txn_id else "Add"
    rq = etree.Element(f"Invoice{verb}Rq")
    body = el(rq, f"Invoice{verb}")
    if txn_id:
        el(body, "TxnID", txn_id)
        el(body, "EditSequence", edit_sequence)
    memo = invoice_memo(event, 4095)
    if txn_date and txn_date != event.issue_date.isoformat():
        memo = f"{memo}; shop date {event.issue_date.isoformat()} is in a closed period"
    _transaction(body, event, customer_list_id, txn_date or event.issue_date.isoformat(), ref_number,
                 tax_item_name, memo, event.number[:OTHER_MAX], mapping, invoice=True)
    for line in lines:
        _line(body, f"InvoiceLine{verb}", line["item"], line["desc"], line["amount"], line.get("taxable"),
              line.get("quantity"), line.get("rate"))
    for name in ("TxnID", "EditSequence", "RefNumber", "Subtotal", "SalesTaxTotal", "BalanceRemaining",
                 "InvoiceLineRet"):
        el(rq, "IncludeRetElement", name)
    return rq


def payment_add(payment: Payment, customer_list_id: str, invoice_txn_id: str, mapping: MappingConfig,
                invoice_number: str, txn_date: str | None = None) -> etree._Element:
    """Applied to THIS invoice (AppliedToTxnAdd), never IsAutoApply."""
    rq = etree.Element("ReceivePaymentAddRq")
    add = el(rq, "ReceivePaymentAdd")
    ref(add, "CustomerRef", list_id=customer_list_id)
    el(add, "TxnDate", txn_date or payment.received_at.date().isoformat())
    el(add, "RefNumber", references.payment_reference(payment.id))  # ≤ 20
    el(add, "TotalAmount", amt(payment.amount))
    el(add, "Memo", f"Shop payment {payment.id} ({payment.method}) for invoice {invoice_number}"[:4095])
    account = mapping.payment_accounts.get(payment.method)
    if account:
        ref(add, "DepositToAccountRef", full_name=account)
    applied = el(add, "AppliedToTxnAdd")
    el(applied, "TxnID", invoice_txn_id)
    el(applied, "PaymentAmount", amt(payment.amount))
    return rq


def credit_memo_add(refund: Refund, event: InvoiceEvent, customer_list_id: str, item: dict[str, str],
                    mapping: MappingConfig, tax_item_name: str, txn_date: str | None = None) -> etree._Element:
    """A returned part or refund as a credit memo for the same customer, linked to the invoice by its
    Other (the shop's invoice number); the tax refunded as a tax line."""
    rq = etree.Element("CreditMemoAddRq")
    add = el(rq, "CreditMemoAdd")
    _transaction(add, event, customer_list_id, txn_date or refund.created_at.date().isoformat(),
                 refund_reference(refund.id), tax_item_name,
                 f"{refund.kind} {refund.id} on invoice {event.number}: {refund.reason or ''}".strip(),
                 event.number[:OTHER_MAX], mapping)
    _line(add, "CreditMemoLineAdd", item, f"{refund.kind}: {refund.reason or 'refund'}", refund.amount, False)
    for code, name, amount in refund_tax_components(refund, event):
        _line(add, "CreditMemoLineAdd", {"full_name": tax_item(code, mapping)}, f"{name} refunded", amount)
    return rq


def credit_application(reference: str, customer_list_id: str, invoice_txn_id: str, memo_txn_id: str,
                       amount: Decimal) -> etree._Element:
    """A credit memo used against THIS invoice, the way QuickBooks Desktop does it: a ReceivePayment of
    0.00 whose AppliedToTxnAdd (the invoice) carries SetCredit (CreditTxnID = the memo, AppliedAmount).
    No TxnDate: QuickBooks dates it the day it applies it (a request must not depend on the day it is built)."""
    rq = etree.Element("ReceivePaymentAddRq")
    add = el(rq, "ReceivePaymentAdd")
    ref(add, "CustomerRef", list_id=customer_list_id)
    el(add, "RefNumber", reference)
    el(add, "TotalAmount", "0.00")
    el(add, "Memo", f"Shop refund credited to its invoice ({reference})"[:4095])
    applied = el(add, "AppliedToTxnAdd")
    el(applied, "TxnID", invoice_txn_id)
    credit = el(applied, "SetCredit")
    el(credit, "CreditTxnID", memo_txn_id)
    el(credit, "AppliedAmount", amt(amount))
    return rq


# The refunded payment's method → the transaction QuickBooks Desktop records money paid back against a credit
# memo with (its "Issue a Refund" window): a card refund is an ARRefundCreditCard, anything else a Check.
CARD_METHODS = ("card", "credit_card", "debit", "debit_card")


def settlement_kind(method: str | None) -> str:
    return "ARRefundCreditCard" if (method or "").lower() in CARD_METHODS else "Check"


def refund_settlement(refund: Refund, event: InvoiceEvent, customer_list_id: str, memo_txn_id: str, amount: Decimal,
                      account: str, method: str | None, txn_date: str | None = None) -> etree._Element:
    """Money paid back against THIS credit memo, out of ``account`` (the refunded payment's): an
    ARRefundCreditCardAdd whose RefundAppliedToTxnAdd names the memo (a card refund), else a CheckAdd to the
    customer whose ApplyCheckToTxnAdd names it. Both leave the memo's CreditRemaining lower by ``amount``."""
    kind = settlement_kind(method)
    rq = etree.Element(f"{kind}AddRq")
    add = el(rq, f"{kind}Add")
    memo = f"Shop refund {refund.id} of invoice {event.number} paid back ({method or 'unknown method'})"[:4095]
    day = txn_date or refund.created_at.date().isoformat()
    if kind == "ARRefundCreditCard":
        ref(add, "CustomerRef", list_id=customer_list_id)
        ref(add, "RefundFromAccountRef", full_name=account)
        el(add, "TxnDate", day)
        el(add, "RefNumber", settlement_reference(refund.id))
        el(add, "Memo", memo)
        applied = el(add, "RefundAppliedToTxnAdd")
        el(applied, "TxnID", memo_txn_id)
        el(applied, "RefundAmount", amt(amount))
        return rq
    ref(add, "AccountRef", full_name=account)
    ref(add, "PayeeEntityRef", list_id=customer_list_id)
    el(add, "RefNumber", settlement_reference(refund.id))
    el(add, "TxnDate", day)
    el(add, "Memo", memo)
    applied = el(add, "ApplyCheckToTxnAdd")
    el(applied, "TxnID", memo_txn_id)
    el(applied, "Amount", amt(amount))
    return rq


def adjustment_add(adjustment: Any, event: InvoiceEvent, customer_list_id: str, item: dict[str, str],
                   tax_item_name: str | None, txn_date: str | None, mapping: MappingConfig,
                   invoice_tax_item: str) -> etree._Element:
    """A closed-period adjustment (``engine.AdjustmentSpec``): an InvoiceAdd (increase) or a CreditMemoAdd
    (decrease) dated the first open day, linked to the original by Other ("A1-<invoice number>") and Memo; the
    net on the invoice's first item, the tax on its tax item."""
    entity = "Invoice" if adjustment.kind == "increase" else "CreditMemo"
    rq = etree.Element(f"{entity}AddRq")
    add = el(rq, f"{entity}Add")
    _transaction(add, event, customer_list_id, txn_date, adjustment.reference, invoice_tax_item,
                 f"Adjustment to invoice {event.number} (TxnID {adjustment.original_id}), {adjustment.reason}",
                 f"{adjustment.reference.split('-')[0]}-{event.number}"[-OTHER_MAX:], mapping)
    net, tax = (adjustment.net, adjustment.tax) if tax_item_name else (adjustment.net + adjustment.tax, Decimal(0))
    _line(add, f"{entity}LineAdd", item, f"Adjustment ({adjustment.reason})", net)
    if tax:
        _line(add, f"{entity}LineAdd", {"full_name": tax_item_name}, "Tax adjustment", tax)
    if entity == "Invoice":
        for name in ("TxnID", "EditSequence", "RefNumber", "Subtotal", "SalesTaxTotal"):
            el(rq, "IncludeRetElement", name)
    return rq
