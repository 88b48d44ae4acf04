"""Canonical events → Oracle Fusion Receivables REST bodies (field names as Oracle's farfa pages and examples
give them; ``oracle-erp/SOURCE.md`` holds the tables the tests validate against).

Pure functions of the event, the settings and the mapping; ids come in resolved. Oracle computes tax from its
tax rules unless the line carries manual tax lines: every taxed line carries the shop's own tax amounts
(``receivablesInvoiceLineTaxLines``, rate code per shop tax code from ``mapping.tax_codes``) so Oracle keeps
the shop's rounding. Revenue accounts come from Oracle's AutoAccounting (a prerequisite), not from us.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import PermanentError, invoice_memo, line_text, payment_account
from connectors.oracle_erp.settings import OracleErpSettings
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund
from daemon.config import MappingConfig

ZERO, CENT = Decimal("0"), Decimal("0.01")
REVERSAL_PREFIX = "RV"  # a credit memo reversing a replaced or voided invoice: RV<invoice id>


def account_number(customer: Customer) -> str:
    """Our customer accounts are numbered ``LWC<shop customer id>``: a retry finds what it made."""
    return f"LWC{customer.id}"


def customer_payload(customer: Customer) -> dict[str, Any]:
    return {"AccountNumber": account_number(customer), "AccountName": customer.name[:240]}


def customer_digest(customer: Customer) -> str:
    return references.payload_digest(customer_payload(customer))


def reversal_number(invoice_id: str) -> str:
    return f"{REVERSAL_PREFIX}{invoice_id}"


def _tax_lines(line: InvoiceLine, settings: OracleErpSettings, mapping: MappingConfig, sign: int = 1
               ) -> list[dict[str, Any]]:
    taxes = []
    for tax in line.taxes:
        if tax.code not in mapping.tax_codes:
            raise PermanentError(f"mapping.tax_codes names no Oracle tax rate code for {tax.code!r}")
        taxes.append({"TaxRegimeCode": settings.tax_regime, "TaxRateCode": mapping.tax_codes[tax.code],
                      "TaxAmount": sign * tax.amount})
    return taxes


def invoice_line(number: int, line: InvoiceLine, event: InvoiceEvent, settings: OracleErpSettings,
                 mapping: MappingConfig) -> dict[str, Any]:
    tax = sum((t.amount for t in line.taxes), ZERO)
    net = line.amount - tax if event.tax_inclusive else line.amount
    # Oracle extends Quantity x UnitSellingPrice: where that is not the shop's amount (rounding, inclusive
    # prices), the line goes as one unit at the shop's net amount.
    quantity, price = (line.quantity, line.unit_price) if (line.quantity * line.unit_price).quantize(CENT) == net \
        else (Decimal("1"), net)
    body: dict[str, Any] = {"LineNumber": number, "Description": line_text(line, 240), "Quantity": quantity,
                            "UnitSellingPrice": price}
    if line.taxes:
        body["receivablesInvoiceLineTaxLines"] = _tax_lines(line, settings, mapping)
    return body


def terms(event: InvoiceEvent, settings: OracleErpSettings, mapping: MappingConfig) -> str:
    days = event.customer.payment_terms_days
    return mapping.payment_terms.get(days, settings.payment_terms) if days else settings.payment_terms


def invoice_payload(event: InvoiceEvent, customer_number: str, settings: OracleErpSettings, mapping: MappingConfig,
                    posted_on: date | None = None) -> dict[str, Any]:
    day = posted_on or event.issue_date
    body: dict[str, Any] = {
        "BusinessUnit": settings.business_unit, "TransactionSource": settings.transaction_source,
        "TransactionType": settings.invoice_type, "TransactionNumber": event.number,
        "TransactionDate": day.isoformat(), "AccountingDate": day.isoformat(),
        "BillToCustomerNumber": customer_number, "InvoiceCurrencyCode": event.currency,
        "PaymentTerms": terms(event, settings, mapping), "Comments": invoice_memo(event, 240),
        "receivablesInvoiceLines": [invoice_line(n, ln, event, settings, mapping)
                                    for n, ln in enumerate(event.lines, start=1)]}
    due = references.terms_due_date(event)
    if due:
        body["DueDate"] = max(due, day).isoformat()
    return body


def _credit_memo(number: str, customer_number: str, day: date, currency: str, comments: str,
                 lines: list[dict[str, Any]], settings: OracleErpSettings) -> dict[str, Any]:
    return {"BusinessUnit": settings.business_unit, "TransactionSource": settings.transaction_source,
            "TransactionType": settings.credit_memo_type, "TransactionNumber": number,
            "TransactionDate": day.isoformat(), "BillToCustomerNumber": customer_number,
            "CreditMemoCurrency": currency, "CreditMemoComments": comments[:240],
            "receivablesCreditMemoLines": lines}


def _split_tax(line: InvoiceLine, tax: Decimal, settings: OracleErpSettings, mapping: MappingConfig
               ) -> list[dict[str, Any]]:
    """A refund's tax over the returned line's components in the line's proportions (the last takes the cent
    left by rounding), negative, on the components' rate codes."""
    whole = sum((t.amount for t in line.taxes), ZERO)
    shares = [(tax * t.amount / whole).quantize(CENT) if whole else ZERO for t in line.taxes]
    shares[-1] = tax - sum(shares[:-1], ZERO)
    return [{**entry, "TaxAmount": -share} for entry, share in zip(_tax_lines(line, settings, mapping), shares)]


def refund_payload(event: InvoiceEvent, refund: Refund, customer_number: str, settings: OracleErpSettings,
                   mapping: MappingConfig) -> dict[str, Any]:
    """A refund or returned part: an on-account credit memo of its amount (negative), with its tax on the returned
    line's components; a goodwill refund (no line) that carries tax on the components of the invoice's largest taxed
    line (``references.main_taxed_line``), so its tax is posted as tax (issue #20)."""
    line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
    body: dict[str, Any] = {"LineNumber": 1, "LineDescription": (f"Returned: {line_text(line, 220)}" if line
                                                                 else refund.reason or "Refund")[:240],
                            "LineQuantityCredit": Decimal("1"), "UnitSellingPrice": -refund.amount}
    if refund.tax_amount:
        taxed = line or references.main_taxed_line(event, refund)
        if taxed is None or not taxed.taxes:
            raise PermanentError(f"refund {refund.id} carries tax but {event.number} has no taxed line to tax it as")
        body["receivablesCreditMemoLineTaxLines"] = _split_tax(taxed, refund.tax_amount, settings, mapping)
    return _credit_memo(references.refund_reference(refund.id), customer_number, refund.created_at.date(),
                        event.currency, f"Refund {refund.id} ({refund.kind}) of shop invoice {event.number}",
                        [body], settings)


def reversal_payload(invoice_id: str, number: str, customer_number: str, net: Decimal, tax: Decimal, currency: str,
                     settings: OracleErpSettings, mapping: MappingConfig, tax_rate_code: str | None) -> dict[str, Any]:
    """The credit memo that takes a replaced or voided invoice's whole amount off (its lines are fixed)."""
    body: dict[str, Any] = {"LineNumber": 1, "LineDescription": f"Reversal of invoice {number}"[:240],
                            "LineQuantityCredit": Decimal("1"), "UnitSellingPrice": -net}
    if tax:
        body["receivablesCreditMemoLineTaxLines"] = [{"TaxRegimeCode": settings.tax_regime,
                                                      "TaxRateCode": tax_rate_code or "", "TaxAmount": -tax}]
    return _credit_memo(reversal_number(invoice_id), customer_number, date.today(), currency,
                        f"Reverses invoice {number} (replaced or voided in the shop)", [body], settings)


def receipt_payload(payment: Payment, customer_number: str, currency: str, settings: OracleErpSettings,
                    mapping: MappingConfig, posted_on: date | None = None) -> dict[str, Any]:
    method = payment_account(payment, mapping, "Oracle", "receipt method")
    day = (posted_on or payment.received_at.date()).isoformat()
    return {"ReceiptNumber": references.payment_reference(payment.id), "BusinessUnit": settings.business_unit,
            "ReceiptMethod": method, "ReceiptDate": day, "AccountingDate": day, "Amount": payment.amount,
            "Currency": currency, "CustomerAccountNumber": customer_number,
            "Comments": f"Shop payment {payment.id} ({payment.method})"[:200]}


def refund_application_payload(event: InvoiceEvent, refund: Refund, amount: Decimal, reference: str, day: date
                               ) -> dict[str, Any]:
    """The money paid back out of the refund's on-account credit memo (the attributes of Oracle's
    OnAccountCreditMemoRefund), ``reference`` (``LWP<refund id>``) as its application reference."""
    return {"AmountApplied": amount, "ApplyDate": day.isoformat(), "GlDate": day.isoformat(),
            "ApplicationReferenceNumber": reference,
            "Comments": f"Refund {refund.id} paid back to the customer, shop invoice {event.number}"[:240]}


def application_payload(invoice_id: str, amount: Decimal, day: date) -> dict[str, Any]:
    """A receipt's or credit memo's application to the invoice (the attribute names of Oracle's receipt and
    on-account credit memo application services)."""
    return {"CustomerTrxId": int(invoice_id) if invoice_id.isdigit() else invoice_id, "AmountApplied": amount, "ApplyDate": day.isoformat()}
