"""A local QuickBooks Desktop company file AND the QuickBooks Web Connector that drives our SOAP service.

The company side answers qbXML the way QuickBooks does (built from the qbXML 13.0/16.0 XSDs — each request
document is validated against ``qbxmlops*.xsd`` when the specs are present — and Intuit's status codes):
ListIDs/TxnIDs, EditSequence on every object (a stale one → 3200), names unique per list (3100), unknown
TxnID/ListID (3120 for Mod/Del/Void, 500 for a FullName/TxnID query, 1 for a RefNumber query with no match),
invalid references (3140), business-rule refusals (3210), sales tax computed from the invoice's sales-tax
item on its taxable lines, payments applied with AppliedToTxnAdd (a payment changes the invoice's
EditSequence, as QuickBooks does), TxnDel, TxnVoid, credit memos and their application to an invoice
(ReceivePaymentAdd → AppliedToTxnAdd → SetCredit/CreditTxnID + AppliedAmount, a zero TotalAmount: the documented way QuickBooks Desktop uses a credit
memo against an invoice; never more than the invoice's open balance or the memo's remaining credit), and the
company's closing date (``set_closing_date``; Preferences → Accounting → Closing Date, readable with
PreferencesQuery's AccountingPreferences/ClosingDate): an Add, Mod, TxnDel or TxnVoid of a transaction dated on
or before it is refused with statusCode 3171 and QuickBooks' message (see CLOSED_PERIOD below for where the
code and wording come from). Multiple currencies (``set_multicurrency``; on by default, home currency USD, the
Currency List's CAD and EUR active, GBP not): PreferencesQuery's MultiCurrencyPreferences, CurrencyQuery, a
customer's CurrencyRef (an active currency; a foreign one only with multicurrency on; fixed once the customer has
transactions), a transaction in its customer's currency at its ExchangeRate (the list's when none is sent),
CurrencyRef/ExchangeRate on the Rets. A schema-invalid document is refused
as QuickBooks' parser refuses it (hresult 0x80040400), nothing processed.

The Web Connector side (``attach``/``run_session``/``start_polling``) plays QBWC: serverVersion,
clientVersion, authenticate, then sendRequestXML → (QuickBooks) → receiveResponseXML until 100 % or an
error, then closeConnection. A connection error ends the session; the next poll starts over.

``faults`` act on QuickBooks writes: ``error_500``/``error_429`` → statusCode 3180 (error saving, nothing
saved); ``timeout`` → the write is saved but its answer is lost (QBWC dies before receiveResponseXML).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from connectors.quickbooks_desktop import soap
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer
from daemon.canonical import money

CENT = Decimal("0.01")
# The closing-date refusal. Code and wording as QuickBooks Desktop returns them for a Mod, quoted by a QuickBooks
# integrator's help page (https://ayssoftware.com/aysguide/resolvingquickbooksexporterrors.htm, "Error 3171: An
# attempt was made to modify a Invoice with a date that is on or before the closing date of the company ...").
# Intuit's status-code table (developer.intuit.com … status-codes-in-response-messages) could not be read past
# its first rows here, so 3171 for Adds/Dels/Voids (same code, verb adapted) is this sandbox's assumption.
CLOSED_PERIOD = 3171
PARSE_ERROR = "0x80040400"
# The request processor's answer to a document of a qbXML version the installed QuickBooks does not support
# (QBXMLRP2 "The version of QBXML that was requested is not supported or is unknown.").
VERSION_NOT_SUPPORTED = "0x80042500"
_SCHEMAS: dict[str, Any] = {}
_SCHEMA_LOCK = threading.Lock()


def specs_dir() -> Path:
    default = Path(__file__).resolve().parents[3] / "shared" / "specs"
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", default))


def qbxml_schema(version: str) -> Any | None:
    """qbxmlops<ver>.xsd loaded once per process (None when the specs or xmlschema are absent)."""
    tag = version.replace(".", "")
    with _SCHEMA_LOCK:
        if tag not in _SCHEMAS:
            path = specs_dir() / "quickbooks-desktop" / f"qbxml{tag}" / f"qbxmlops{tag}.xsd"
            try:
                import xmlschema

                _SCHEMAS[tag] = xmlschema.XMLSchema(str(path)) if path.exists() else None
            except ImportError:
                _SCHEMAS[tag] = None
        return _SCHEMAS[tag]


class QbError(Exception):
    def __init__(self, code: int, message: str, severity: str = "Error") -> None:
        super().__init__(message)
        self.code, self.message, self.severity = code, message, severity


def _text(el: etree._Element | None, path: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    found = el.find(path)
    return found.text if found is not None and found.text is not None else default


class Company:
    """The company file: lists and transactions, all in memory, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._seq = itertools.count(1000)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.credit_memos: dict[str, dict[str, Any]] = {}
        # Money paid back against credit memos: ARRefundCreditCard and Check transactions ("kind").
        self.refunds: dict[str, dict[str, Any]] = {}
        self.closing_date: date | None = None  # Preferences → Accounting → Closing Date (with a password)
        self.multicurrency = True  # Preferences → Multiple Currencies (once on, QuickBooks cannot turn it off)
        self.currencies: dict[str, dict[str, Any]] = {}  # the Currency List (built-in currencies, a few active)
        for code, name, active, rate in (("USD", "US Dollar", True, "1"), ("CAD", "Canadian Dollar", True, "0.7412"),
                                         ("EUR", "Euro", True, "1.0843"), ("GBP", "British Pound Sterling", False, "1.265")):
            list_id = self.new_id()
            self.currencies[list_id] = {"ListID": list_id, "FullName": name, "CurrencyCode": code, "IsActive": active,
                                        "ExchangeRate": Decimal(rate)}
        self.home_currency = next(iter(self.currencies))  # its ListID: USD

    def new_id(self) -> str:
        return f"{next(self._seq):X}-{int(time.time())}"

    def edit_seq(self) -> str:
        return str(int(time.time()) * 1000 + next(self._seq) % 1000)

    def seed(self) -> None:
        with self.lock:
            if self.accounts:
                return
            for name, kind in (("Parts Sales", "Income"), ("Labour Income", "Income"), ("Sublet Income", "Income"),
                               ("Shop Fees", "Income"), ("Discounts Given", "Income"),
                               ("Core Deposits", "OtherCurrentLiability"), ("Undeposited Funds", "OtherCurrentAsset"),
                               ("Checking", "Bank"), ("Accounts Receivable", "AccountsReceivable"),
                               ("Sales Tax Payable", "OtherCurrentLiability")):
                list_id = self.new_id()
                self.accounts[list_id] = {"ListID": list_id, "FullName": name, "AccountType": kind}
            for name in ("Main St", "North"):
                list_id = self.new_id()
                self.classes[list_id] = {"ListID": list_id, "FullName": name}
            for name, rate in (("Shop Tax Lines", "0"), ("State Sales Tax", "6.0"), ("County Sales Tax", "1.5"),
                               ("GST", "5.0"), ("PST", "7.0")):
                self._add_item("ItemSalesTax", name, None, tax_rate=Decimal(rate))

    def _add_item(self, item_type: str, name: str, account: str | None, **extra: Any) -> dict[str, Any]:
        list_id = self.new_id()
        item = {"ListID": list_id, "Name": name, "FullName": name, "type": item_type, "EditSequence": self.edit_seq(),
                "account": account, **extra}
        self.items[list_id] = item
        return item

    # -- the closing date --
    def _check_open(self, what: str, verb: str, *txn_dates: str | None) -> None:
        if self.closing_date is None:
            return
        for text in txn_dates:
            day = date.fromisoformat(text) if text else date.today()
            if day <= self.closing_date:
                raise QbError(CLOSED_PERIOD, (
                    f"An attempt was made to {verb} a {what} with a date that is on or before the closing date of "
                    "the company. If you are sure you really want to do this, please ask a user with Admin "
                    "privileges to remove the password for editing transactions on or before the closing date "
                    "(this setting is in the Accounting Company Preferences), then try again."))

    def _PreferencesQuery(self, rq: etree._Element) -> list[etree._Element]:
        acct = [("IsUsingAccountNumbers", "false"), ("IsRequiringAccounts", "true"),
                ("IsUsingClassTracking", "true"), ("IsUsingAuditTrail", "true"),
                ("IsAssigningJournalEntryNumbers", "false")]
        if self.closing_date is not None:
            acct.append(("ClosingDate", self.closing_date.isoformat()))
        ret = _ret("PreferencesRet", [("AccountingPreferences", acct)])
        multi = etree.SubElement(ret, "MultiCurrencyPreferences")
        etree.SubElement(multi, "IsMultiCurrencyOn").text = "true" if self.multicurrency else "false"
        if self.multicurrency:
            multi.append(self._currency_ref("HomeCurrencyRef", self.home_currency))
        return [ret]

    # -- currencies --
    def _currency_ref(self, tag: str, list_id: str) -> etree._Element:
        return _ret(tag, [("ListID", list_id), ("FullName", self.currencies[list_id]["FullName"])])

    def _CurrencyQuery(self, rq: etree._Element) -> list[etree._Element]:
        ids, names = [i.text for i in rq.findall("ListID")], [n.text.lower() for n in rq.findall("FullName")]
        status = _text(rq, "ActiveStatus", "ActiveOnly")
        found = [c for c in self.currencies.values() if (not ids or c["ListID"] in ids)
                 and (not names or c["FullName"].lower() in names) and (ids or names or status == "All"
                                                                        or c["IsActive"] == (status == "ActiveOnly"))]
        if (ids or names) and not found:
            raise QbError(500, f'The query request has not been fully completed. There was a required element '
                               f'("{(ids or names)[0]}") that could not be found in QuickBooks.', "Warn")
        return [_ret("CurrencyRet", [("ListID", c["ListID"]), ("EditSequence", "1"), ("Name", c["FullName"]),
                                     ("IsActive", str(c["IsActive"]).lower()), ("CurrencyCode", c["CurrencyCode"]),
                                     ("IsUserDefinedCurrency", "false"), ("ExchangeRate", c["ExchangeRate"])])
                for c in found]

    def _customer_currency(self, body: etree._Element, held: str | None = None) -> str:
        """A customer's CurrencyRef: an active currency, a foreign one only with multicurrency on."""
        ref_el = body.find("CurrencyRef")
        if ref_el is None:
            return held or self.home_currency
        currency = self._by_ref(self.currencies, ref_el, "Currency")
        if currency["ListID"] != self.home_currency and (not self.multicurrency or not currency["IsActive"]):
            raise QbError(3140, f'There is an invalid reference to QuickBooks Currency "{currency["FullName"]}" in '
                                'the Customer. QuickBooks error message: Invalid argument. The specified record does '
                                'not exist in the list.')
        return currency["ListID"]

    def _in_currency(self, el: etree._Element, txn: dict[str, Any]) -> None:
        """A transaction is in its customer's currency, at the ExchangeRate sent, else the Currency List's."""
        currency = self.currencies[self.customers[txn["customer"]].get("currency", self.home_currency)]
        rate = _text(el, "ExchangeRate")
        if rate is not None and Decimal(rate) <= 0:
            raise QbError(3210, f"The exchange rate {rate} is not valid.")
        txn["currency"] = currency["ListID"]
        txn["ExchangeRate"] = Decimal("1") if currency["ListID"] == self.home_currency else (
            Decimal(rate) if rate else currency["ExchangeRate"])

    def _currency_fields(self, txn: dict[str, Any]) -> list[tuple[str, Any]]:
        if not self.multicurrency or "currency" not in txn:
            return []
        currency = self.currencies[txn["currency"]]
        return [("CurrencyRef", [("ListID", currency["ListID"]), ("FullName", currency["FullName"])]),
                ("ExchangeRate", txn["ExchangeRate"])]

    # -- lookups --
    def _by_ref(self, table: dict[str, dict[str, Any]], ref: etree._Element | None, what: str) -> dict[str, Any]:
        if ref is None:
            raise QbError(3140, f"There is a missing reference to a QuickBooks {what}.")
        list_id, full_name = _text(ref, "ListID"), _text(ref, "FullName")
        for entity in table.values():
            if (list_id and entity["ListID"] == list_id) or (
                    full_name and entity["FullName"].lower() == full_name.lower()):
                return entity
        raise QbError(3140, f'There is an invalid reference to QuickBooks {what} "{list_id or full_name}".')

    # -- processing --
    def process(self, request: etree._Element, write_fault: str | None) -> tuple[etree._Element, bool]:
        """One ``…Rq`` → its ``…Rs``; (rs, applied_write)."""
        kind = request.tag[:-2]
        rs = etree.Element(f"{kind}Rs")
        if request.get("requestID"):
            rs.set("requestID", request.get("requestID"))
        is_write = kind.endswith(("Add", "Mod")) or kind in ("TxnDel", "TxnVoid")
        try:
            if is_write and write_fault in ("500", "429"):
                raise QbError(3180, f"There was an error when saving a {kind[:-3] or kind}. QuickBooks error "
                                    "message: This list has been modified by another user.")
            with self.lock:
                rets = getattr(self, f"_{kind}")(request)
            code, severity, message = (0, "Info", "Status OK")
            if not rets and kind.endswith("Query"):
                code, severity, message = (1, "Info", "A query request did not find a matching object in QuickBooks")
            for ret in rets:
                rs.append(ret)
        except QbError as exc:
            code, severity, message = exc.code, exc.severity, exc.message
        rs.set("statusCode", str(code))
        rs.set("statusSeverity", severity)
        rs.set("statusMessage", message)
        return rs, is_write and code == 0

    # lists
    def _CustomerQuery(self, rq: etree._Element) -> list[etree._Element]:
        names = [n.text for n in rq.findall("FullName")] or [n.text for n in rq.findall("ListID")]
        key = "FullName" if rq.find("FullName") is not None else "ListID"
        found = [c for c in self.customers.values() if not names or c[key].lower() in [n.lower() for n in names]]
        name_filter = rq.find("NameFilter")
        if name_filter is not None:  # StartsWith / Contains / EndsWith on the name, case-insensitive
            match, part = name_filter.findtext("MatchCriterion"), name_filter.findtext("Name").lower()
            test = {"StartsWith": str.startswith, "Contains": str.__contains__, "EndsWith": str.endswith}[match]
            found = [c for c in found if test(c["Name"].lower(), part)]
        if names and not found:
            raise QbError(500, f'The query request has not been fully completed. There was a required element '
                               f'("{names[0]}") that could not be found in QuickBooks.', "Warn")
        return [self._customer_ret(c) for c in found]

    def _customer_ret(self, c: dict[str, Any]) -> etree._Element:
        currency = self.currencies.get(c.get("currency", self.home_currency)) if self.multicurrency else None
        return _ret("CustomerRet", [("ListID", c["ListID"]), ("EditSequence", c["EditSequence"]), ("Name", c["Name"]),
                                    ("FullName", c["FullName"]), ("Phone", c.get("Phone")), ("Email", c.get("Email")),
                                    ("CurrencyRef", currency and [("ListID", currency["ListID"]),
                                                                  ("FullName", currency["FullName"])])])

    def _CustomerAdd(self, rq: etree._Element) -> list[etree._Element]:
        add = rq.find("CustomerAdd")
        name = _text(add, "Name")
        if any(c["FullName"].lower() == name.lower() for c in self.customers.values()):
            raise QbError(3100, f'The name "{name}" of the list element is already in use.')
        list_id = self.new_id()
        c = {"ListID": list_id, "Name": name, "FullName": name, "EditSequence": self.edit_seq(),
             "Phone": _text(add, "Phone"), "Email": _text(add, "Email"), "CompanyName": _text(add, "CompanyName"),
             "currency": self._customer_currency(add)}
        self.customers[list_id] = c
        return [self._customer_ret(c)]

    def _CustomerMod(self, rq: etree._Element) -> list[etree._Element]:
        mod = rq.find("CustomerMod")
        c = self.customers.get(_text(mod, "ListID"))
        if c is None:
            raise QbError(3120, f'Object "{_text(mod, "ListID")}" specified in the request cannot be found.')
        if _text(mod, "EditSequence") != c["EditSequence"]:
            raise QbError(3200, f'The provided edit sequence "{_text(mod, "EditSequence")}" is out-of-date.')
        name = _text(mod, "Name", c["Name"])
        if any(o["FullName"].lower() == name.lower() and o is not c for o in self.customers.values()):
            raise QbError(3100, f'The name "{name}" of the list element is already in use.')
        currency = self._customer_currency(mod, c.get("currency"))
        if currency != c.get("currency", self.home_currency) and any(t["customer"] == c["ListID"] for table in (
                self.invoices, self.payments, self.credit_memos) for t in table.values()):
            raise QbError(3210, "The currency of a customer that has transactions cannot be changed.")
        c.update(Name=name, FullName=name, Phone=_text(mod, "Phone") or None, Email=_text(mod, "Email") or None,
                 currency=currency,
                 CompanyName=_text(mod, "CompanyName", c.get("CompanyName")), EditSequence=self.edit_seq())
        return [self._customer_ret(c)]

    def _ItemQuery(self, rq: etree._Element) -> list[etree._Element]:
        names = [n.text.lower() for n in rq.findall("FullName")]
        found = [i for i in self.items.values() if not names or i["FullName"].lower() in names]
        if names and not found:
            raise QbError(500, f'The query request has not been fully completed. There was a required element '
                               f'("{rq.findtext("FullName")}") that could not be found in QuickBooks.', "Warn")
        return [_ret(f"{i['type']}Ret", [("ListID", i["ListID"]), ("EditSequence", i["EditSequence"]),
                                         ("Name", i["Name"]), ("FullName", i["FullName"])]) for i in found]

    def _item_add(self, rq: etree._Element, item_type: str) -> list[etree._Element]:
        add = rq.find(f"{item_type}Add")
        name = _text(add, "Name")
        if any(i["FullName"].lower() == name.lower() for i in self.items.values()):
            raise QbError(3100, f'The name "{name}" of the list element is already in use.')
        sop = add.find("SalesOrPurchase")
        account = self._by_ref(self.accounts, sop.find("AccountRef") if sop is not None else None, "Account")
        item = self._add_item(item_type, name, account["FullName"])
        return [_ret(f"{item_type}Ret", [("ListID", item["ListID"]), ("EditSequence", item["EditSequence"]),
                                         ("Name", name), ("FullName", name)])]

    def _ItemServiceAdd(self, rq):
        return self._item_add(rq, "ItemService")

    def _ItemNonInventoryAdd(self, rq):
        return self._item_add(rq, "ItemNonInventory")

    def _ItemOtherChargeAdd(self, rq):
        return self._item_add(rq, "ItemOtherCharge")

    def _AccountQuery(self, rq):
        return [_ret("AccountRet", [("ListID", a["ListID"]), ("FullName", a["FullName"])])
                for a in self.accounts.values()]

    def _ClassQuery(self, rq):
        return [_ret("ClassRet", [("ListID", c["ListID"]), ("FullName", c["FullName"])]) for c in self.classes.values()]

    # transactions
    def _lines(self, parent: etree._Element, tag: str, existing: dict[str, dict[str, Any]] | None = None
               ) -> list[dict[str, Any]]:
        lines = []
        for el in parent.findall(tag):
            item = self._by_ref(self.items, el.find("ItemRef"), "Item")
            line_id = _text(el, "TxnLineID")
            if existing is not None and line_id != "-1" and line_id not in existing:
                raise QbError(3120, f'Object "{line_id}" specified in the request cannot be found.')
            qty, rate, amount = _text(el, "Quantity"), _text(el, "Rate"), _text(el, "Amount")
            if amount is None:
                if qty is None or rate is None:
                    raise QbError(3210, "The line needs an Amount or a Quantity and Rate.")
                amount_d = money(Decimal(qty) * Decimal(rate))
            else:
                amount_d = Decimal(amount)
                if qty is not None and rate is not None and money(Decimal(qty) * Decimal(rate)) != amount_d:
                    raise QbError(3210, f"The line amount {amount} does not equal quantity {qty} times rate {rate}.")
            taxable = _text(el.find("SalesTaxCodeRef"), "FullName", "Non") == "Tax"
            lines.append({"TxnLineID": line_id if line_id not in (None, "-1") else self.new_id(),
                          "item": item["FullName"], "item_id": item["ListID"], "is_tax": item["type"] == "ItemSalesTax",
                          "Desc": _text(el, "Desc"), "Quantity": qty, "Rate": rate, "Amount": amount_d,
                          "taxable": taxable})
        return lines

    def _totals(self, txn: dict[str, Any]) -> None:
        subtotal = sum((ln["Amount"] for ln in txn["lines"]), Decimal("0"))
        taxable = sum((ln["Amount"] for ln in txn["lines"] if ln["taxable"] and not ln["is_tax"]), Decimal("0"))
        rate = self.items[txn["tax_item"]]["tax_rate"] if txn.get("tax_item") else Decimal("0")
        txn["Subtotal"] = subtotal
        txn["SalesTaxTotal"] = money(taxable * rate / 100)
        txn["Total"] = subtotal + txn["SalesTaxTotal"]

    def applied(self, txn_id: str) -> list[Decimal]:
        """Money received and applied to the invoice (PaymentAmount), not credits."""
        return [a for p in self.payments.values() for t, a in p["applied"] if t == txn_id]

    def credited(self, txn_id: str) -> Decimal:
        """Credit memos applied to the invoice (SetCredit)."""
        return sum((a for p in self.payments.values() for t, _, a in p.get("credits", []) if t == txn_id),
                   Decimal("0"))

    def credit_used(self, memo_id: str) -> Decimal:
        """What of a credit memo is used: applied to invoices (SetCredit) or paid back to the customer."""
        return sum((a for p in self.payments.values() for _, m, a in p.get("credits", []) if m == memo_id),
                   Decimal("0")) + sum((a for r in self.refunds.values() for m, a in r["applied"] if m == memo_id),
                                       Decimal("0"))

    def balance(self, inv: dict[str, Any]) -> Decimal:
        if inv.get("voided"):
            return Decimal("0")
        return inv["Total"] - sum(self.applied(inv["TxnID"]), Decimal("0")) - self.credited(inv["TxnID"])

    def _header(self, el: etree._Element, txn: dict[str, Any]) -> None:
        if el.find("CustomerRef") is not None:
            txn["customer"] = self._by_ref(self.customers, el.find("CustomerRef"), "Customer")["ListID"]
            self._in_currency(el, txn)
        if el.find("ClassRef") is not None:
            txn["class"] = self._by_ref(self.classes, el.find("ClassRef"), "Class")["FullName"]
        if el.find("ItemSalesTaxRef") is not None:
            tax = self._by_ref(self.items, el.find("ItemSalesTaxRef"), "Item")
            if tax["type"] != "ItemSalesTax":
                raise QbError(3140, f'There is an invalid reference to QuickBooks ItemSalesTax "{tax["FullName"]}".')
            txn["tax_item"] = tax["ListID"]
        for field in ("TxnDate", "RefNumber", "PONumber", "DueDate", "Memo", "Other"):
            if el.find(field) is not None:
                txn[field] = _text(el, field, "")

    def _invoice_ret(self, inv: dict[str, Any], lines: bool = True) -> etree._Element:
        balance = self.balance(inv)
        fields: list[tuple[str, Any]] = [
            ("TxnID", inv["TxnID"]), ("EditSequence", inv["EditSequence"]),
            ("CustomerRef", [("ListID", inv["customer"])]), ("TxnDate", inv.get("TxnDate")),
            ("RefNumber", inv.get("RefNumber")), ("PONumber", inv.get("PONumber")),
            ("Subtotal", _amt(inv["Subtotal"])), ("SalesTaxTotal", _amt(inv["SalesTaxTotal"])),
            ("BalanceRemaining", _amt(balance)), *self._currency_fields(inv), ("Memo", inv.get("Memo")),
            ("Other", inv.get("Other"))]
        ret = _ret("InvoiceRet", fields)
        if lines:
            for ln in inv["lines"]:
                ret.append(_ret("InvoiceLineRet", [("TxnLineID", ln["TxnLineID"]),
                                                   ("ItemRef", [("ListID", ln["item_id"]), ("FullName", ln["item"])]),
                                                   ("Desc", ln["Desc"]), ("Amount", _amt(ln["Amount"]))]))
        return ret

    def _InvoiceAdd(self, rq: etree._Element) -> list[etree._Element]:
        add = rq.find("InvoiceAdd")
        inv: dict[str, Any] = {"TxnID": self.new_id(), "EditSequence": self.edit_seq()}
        self._header(add, inv)
        self._check_open("Invoice", "add", inv.get("TxnDate"))
        inv["lines"] = self._lines(add, "InvoiceLineAdd")
        if not inv["lines"]:
            raise QbError(3210, "An invoice needs at least one line.")
        self._totals(inv)
        self.invoices[inv["TxnID"]] = inv
        return [self._invoice_ret(inv)]

    def _InvoiceMod(self, rq: etree._Element) -> list[etree._Element]:
        mod = rq.find("InvoiceMod")
        inv = self.invoices.get(_text(mod, "TxnID"))
        if inv is None:
            raise QbError(3120, f'Object "{_text(mod, "TxnID")}" specified in the request cannot be found.')
        if _text(mod, "EditSequence") != inv["EditSequence"]:
            raise QbError(3200, f'The provided edit sequence "{_text(mod, "EditSequence")}" is out-of-date.')
        if inv.get("voided"):
            raise QbError(3210, "A voided transaction cannot be modified.")
        updated = dict(inv)
        self._header(mod, updated)
        self._check_open("Invoice", "modify", inv.get("TxnDate"), updated.get("TxnDate"))
        if mod.find("InvoiceLineMod") is not None:  # lines left out are deleted
            updated["lines"] = self._lines(mod, "InvoiceLineMod", {ln["TxnLineID"]: ln for ln in inv["lines"]})
        self._totals(updated)
        if sum(self.applied(inv["TxnID"]), Decimal("0")) + self.credited(inv["TxnID"]) > updated["Total"]:
            raise QbError(3210, "The invoice total would be less than the payments applied to it.")
        updated["EditSequence"] = self.edit_seq()
        inv.clear()
        inv.update(updated)
        return [self._invoice_ret(inv)]

    def _InvoiceQuery(self, rq: etree._Element) -> list[etree._Element]:
        txn_ids, refs = [t.text for t in rq.findall("TxnID")], [r.text for r in rq.findall("RefNumber")]
        found = [i for i in self.invoices.values() if (not txn_ids or i["TxnID"] in txn_ids)
                 and (not refs or i.get("RefNumber") in refs)]
        if txn_ids and not found:
            raise QbError(500, f'The query request has not been fully completed. There was a required element '
                               f'("{txn_ids[0]}") that could not be found in QuickBooks.', "Warn")
        with_lines = _text(rq, "IncludeLineItems") == "true"
        return [self._invoice_ret(i, with_lines) for i in found]

    def _ReceivePaymentAdd(self, rq: etree._Element) -> list[etree._Element]:
        add = rq.find("ReceivePaymentAdd")
        customer = self._by_ref(self.customers, add.find("CustomerRef"), "Customer")
        if _text(add, "IsAutoApply") == "true":
            raise QbError(3210, "This sandbox company refuses auto-applied payments (Ledgerwire applies them).")
        txn_date = _text(add, "TxnDate")
        self._check_open("ReceivePayment", "add", txn_date)
        total = Decimal(_text(add, "TotalAmount", "0"))
        applied, credits = [], []
        for el in add.findall("AppliedToTxnAdd"):
            inv = self.invoices.get(_text(el, "TxnID"))
            if inv is None:
                raise QbError(3140, f'There is an invalid reference to QuickBooks Invoice "{_text(el, "TxnID")}".')
            if inv["customer"] != customer["ListID"] or inv.get("voided"):
                raise QbError(3210, "The payment cannot be applied to this transaction.")
            paid = _text(el, "PaymentAmount")
            amount = Decimal(paid) if paid is not None else Decimal("0")
            credit_total = Decimal("0")
            for sc in el.findall("SetCredit"):
                memo = self.credit_memos.get(_text(sc, "CreditTxnID"))
                if memo is None or memo["customer"] != customer["ListID"]:
                    raise QbError(3140, f'There is an invalid reference to QuickBooks CreditMemo '
                                        f'"{_text(sc, "CreditTxnID")}".')
                used = Decimal(_text(sc, "AppliedAmount", "0"))
                remaining = memo["Total"] - self.credit_used(memo["TxnID"])
                if used > remaining:
                    raise QbError(3210, f"The credit amount {used} exceeds the remaining credit {remaining}.")
                credits.append((inv["TxnID"], memo["TxnID"], used))
                credit_total += used
            balance = self.balance(inv)
            if amount + credit_total > balance:
                raise QbError(3210, f"The payment amount {amount + credit_total} exceeds the open balance {balance}.")
            if paid is not None and amount:
                applied.append((inv["TxnID"], amount))
        if sum((a for _, a in applied), Decimal("0")) > total:
            raise QbError(3210, "The amount applied exceeds the payment's total.")
        if add.find("DepositToAccountRef") is not None:
            self._by_ref(self.accounts, add.find("DepositToAccountRef"), "Account")
        payment = {"TxnID": self.new_id(), "EditSequence": self.edit_seq(), "customer": customer["ListID"],
                   "RefNumber": _text(add, "RefNumber"), "TotalAmount": total, "applied": applied,
                   "credits": credits, "TxnDate": txn_date}
        self._in_currency(add, payment)
        self.payments[payment["TxnID"]] = payment
        for txn_id in {t for t, _ in applied} | {t for t, _, _ in credits}:  # paying an invoice changes it
            self.invoices[txn_id]["EditSequence"] = self.edit_seq()
        return [self._payment_ret(payment)]

    def _payment_ret(self, p: dict[str, Any]) -> etree._Element:
        ret = _ret("ReceivePaymentRet", [("TxnID", p["TxnID"]), ("EditSequence", p["EditSequence"]),
                                         ("CustomerRef", [("ListID", p["customer"])]), ("RefNumber", p["RefNumber"]),
                                         ("TotalAmount", _amt(p["TotalAmount"])), *self._currency_fields(p)])
        for txn_id in dict.fromkeys([t for t, _ in p["applied"]] + [t for t, _, _ in p.get("credits", [])]):
            amount = sum((a for t, a in p["applied"] if t == txn_id), Decimal("0"))
            ret.append(_ret("AppliedToTxnRet", [("TxnID", txn_id), ("TxnType", "Invoice"), ("Amount", _amt(amount))]))
        return ret

    def _ReceivePaymentQuery(self, rq: etree._Element) -> list[etree._Element]:
        refs = [r.text for r in rq.findall("RefNumber")]
        return [self._payment_ret(p) for p in self.payments.values() if not refs or p["RefNumber"] in refs]

    def _TxnDel(self, rq: etree._Element) -> list[etree._Element]:
        kind, txn_id = _text(rq, "TxnDelType"), _text(rq, "TxnID")
        table = {"ReceivePayment": self.payments, "CreditMemo": self.credit_memos, "Invoice": self.invoices,
                 "ARRefundCreditCard": self.refunds, "Check": self.refunds}.get(kind)
        if table is None or txn_id not in table or (table is self.refunds and table[txn_id]["kind"] != kind):
            raise QbError(3120, f'Object "{txn_id}" specified in the request cannot be found.')
        self._check_open(kind, "delete", table[txn_id].get("TxnDate"))
        deleted = table.pop(txn_id)
        for inv_id in [t for t, _ in deleted.get("applied", [])] + [t for t, _, _ in deleted.get("credits", [])]:
            if inv_id in self.invoices:
                self.invoices[inv_id]["EditSequence"] = self.edit_seq()
        return [_ret("TxnDelRet", [("TxnDelType", kind), ("TxnID", txn_id)])]  # TxnDelRs carries these directly

    def _TxnVoid(self, rq: etree._Element) -> list[etree._Element]:
        kind, txn_id = _text(rq, "TxnVoidType"), _text(rq, "TxnID")
        inv = self.invoices.get(txn_id) if kind == "Invoice" else None
        if inv is None:
            raise QbError(3120, f'Object "{txn_id}" specified in the request cannot be found.')
        self._check_open("Invoice", "void", inv.get("TxnDate"))
        if self.applied(txn_id) or self.credited(txn_id):
            raise QbError(3210, "This transaction has payments applied to it; delete them before voiding.")
        if not inv.get("voided"):
            inv.update(voided=True, total_before_void=inv["Total"], Memo=f"VOID: {inv.get('Memo') or ''}",
                       EditSequence=self.edit_seq())
            for ln in inv["lines"]:
                ln["Amount_before_void"] = ln["Amount"]
        return [_ret("TxnVoidRet", [("TxnVoidType", kind), ("TxnID", txn_id)])]

    def _CreditMemoAdd(self, rq: etree._Element) -> list[etree._Element]:
        add = rq.find("CreditMemoAdd")
        memo: dict[str, Any] = {"TxnID": self.new_id(), "EditSequence": self.edit_seq()}
        self._header(add, memo)
        self._check_open("CreditMemo", "add", memo.get("TxnDate"))
        memo["lines"] = self._lines(add, "CreditMemoLineAdd")
        self._totals(memo)
        self.credit_memos[memo["TxnID"]] = memo
        return [self._memo_ret(memo)]

    def _memo_ret(self, m: dict[str, Any]) -> etree._Element:
        return _ret("CreditMemoRet", [("TxnID", m["TxnID"]), ("EditSequence", m["EditSequence"]),
                                      ("CustomerRef", [("ListID", m["customer"])]), ("RefNumber", m.get("RefNumber")),
                                      ("TxnDate", m.get("TxnDate")), ("Subtotal", _amt(m["Subtotal"])),
                                      ("TotalAmount", _amt(m["Total"])),
                                      ("CreditRemaining", _amt(m["Total"] - self.credit_used(m["TxnID"]))),
                                      *self._currency_fields(m), ("Memo", m.get("Memo")), ("Other", m.get("Other"))])

    def _CreditMemoQuery(self, rq: etree._Element) -> list[etree._Element]:
        refs, txn_ids = [r.text for r in rq.findall("RefNumber")], [t.text for t in rq.findall("TxnID")]
        found = [m for m in self.credit_memos.values() if (not refs or m.get("RefNumber") in refs)
                 and (not txn_ids or m["TxnID"] in txn_ids)]
        if txn_ids and not found:
            raise QbError(500, f'The query request has not been fully completed. There was a required element '
                               f'("{txn_ids[0]}") that could not be found in QuickBooks.', "Warn")
        return [self._memo_ret(m) for m in found]


    # money paid back against a credit memo
    def _refund_add(self, add: etree._Element, kind: str, account_tag: str, customer_tag: str, applied_tag: str,
                    amount_tag: str, account_types: tuple[str, ...]) -> list[etree._Element]:
        """qbXML's ARRefundCreditCardAdd (RefundAppliedToTxnAdd/RefundAmount) and CheckAdd (ApplyCheckToTxnAdd/
        Amount) applied to a credit memo: the memo is the customer's, the amount at most its CreditRemaining, the
        account one money can leave from (a check: a bank account)."""
        customer = self._by_ref(self.customers, add.find(customer_tag), "Customer")
        account = self._by_ref(self.accounts, add.find(account_tag), "Account")
        if account["AccountType"] not in account_types:
            raise QbError(3250, f'The account "{account["FullName"]}" cannot be used for a {kind} '
                                f'(it must be {" or ".join(account_types)}).')
        txn_date = _text(add, "TxnDate")
        self._check_open(kind, "add", txn_date)
        applied = []
        for link in add.findall(applied_tag):
            memo = self.credit_memos.get(_text(link, "TxnID"))
            if memo is None or memo["customer"] != customer["ListID"]:
                raise QbError(3140, f'There is an invalid reference to QuickBooks CreditMemo "{_text(link, "TxnID")}".')
            amount = Decimal(_text(link, amount_tag) or "0")
            remaining = memo["Total"] - self.credit_used(memo["TxnID"])
            if amount <= 0 or amount > remaining:
                raise QbError(3210, f"The refund amount {amount} must be positive and at most the remaining credit "
                                    f"{remaining}.")
            applied.append((memo["TxnID"], amount))
        if not applied:
            raise QbError(3210, f"A {kind} to the customer must be applied to a credit memo here (sandbox).")
        refund = {"TxnID": self.new_id(), "EditSequence": self.edit_seq(), "kind": kind, "customer": customer["ListID"],
                  "RefNumber": _text(add, "RefNumber"), "TxnDate": txn_date, "account": account["ListID"],
                  "applied": applied, "TotalAmount": sum((a for _, a in applied), Decimal("0"))}
        self._in_currency(add, refund)
        self.refunds[refund["TxnID"]] = refund
        return [self._refund_ret(refund)]

    def _ARRefundCreditCardAdd(self, rq: etree._Element) -> list[etree._Element]:
        return self._refund_add(rq.find("ARRefundCreditCardAdd"), "ARRefundCreditCard", "RefundFromAccountRef",
                                "CustomerRef", "RefundAppliedToTxnAdd", "RefundAmount", ("Bank", "OtherCurrentAsset"))

    def _CheckAdd(self, rq: etree._Element) -> list[etree._Element]:
        return self._refund_add(rq.find("CheckAdd"), "Check", "AccountRef", "PayeeEntityRef", "ApplyCheckToTxnAdd",
                                "Amount", ("Bank",))

    def _refund_ret(self, r: dict[str, Any]) -> etree._Element:
        """ARRefundCreditCardRet / CheckRet, their elements in the schema's order."""
        if r["kind"] == "ARRefundCreditCard":
            return _ret("ARRefundCreditCardRet", [
                ("TxnID", r["TxnID"]), ("EditSequence", r["EditSequence"]), ("CustomerRef", [("ListID", r["customer"])]),
                ("RefundFromAccountRef", [("ListID", r["account"])]), ("TxnDate", r.get("TxnDate")),
                ("RefNumber", r.get("RefNumber")), ("TotalAmount", _amt(r["TotalAmount"]))])
        return _ret("CheckRet", [
            ("TxnID", r["TxnID"]), ("EditSequence", r["EditSequence"]), ("AccountRef", [("ListID", r["account"])]),
            ("PayeeEntityRef", [("ListID", r["customer"])]), ("RefNumber", r.get("RefNumber")),
            ("TxnDate", r.get("TxnDate")), ("Amount", _amt(r["TotalAmount"]))])

    def _refund_query(self, rq: etree._Element, kind: str) -> list[etree._Element]:
        refs = [r.text for r in rq.findall("RefNumber")]
        return [self._refund_ret(r) for r in self.refunds.values()
                if r["kind"] == kind and (not refs or r.get("RefNumber") in refs)]

    def _ARRefundCreditCardQuery(self, rq: etree._Element) -> list[etree._Element]:
        return self._refund_query(rq, "ARRefundCreditCard")

    def _CheckQuery(self, rq: etree._Element) -> list[etree._Element]:
        return self._refund_query(rq, "Check")


def _amt(value: Decimal) -> str:
    return format(Decimal(value).quantize(CENT), "f")


def _ret(tag: str, fields: list[tuple[str, Any]]) -> etree._Element:
    el = etree.Element(tag)
    for name, value in fields:
        if value is None:
            continue
        child = etree.SubElement(el, name)
        if isinstance(value, list):
            for sub, sub_value in value:
                etree.SubElement(child, sub).text = str(sub_value)
        else:
            child.text = str(value)
    return el


class Sandbox:
    """QuickBooks Desktop (company file) + the Web Connector polling our SOAP service."""

    def __init__(self, faults: Faults | None = None, validate: bool = True, qbxml_version: str = "13.0") -> None:
        self.faults = faults or Faults()
        self.company = Company()
        self.validate = validate
        # The newest qbXML version this QuickBooks speaks: reported to the daemon in sendRequestXML's
        # qbXMLMajorVers/qbXMLMinorVers; a document of a newer version is refused, as QuickBooks does.
        self.qbxml_version = qbxml_version
        self.requests: list[str] = []  # every qbXML request document QuickBooks was given
        self.soap_log: list[tuple[bytes, bytes]] = []  # (request envelope, response envelope)
        self.sessions: list[dict[str, Any]] = []  # what each QBWC session did
        self.username = "ledgerwire"
        self.password: str | None = None
        self._url: str | None = None
        self._app: Any = None
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session_lock = threading.Lock()
        self.app = Starlette(routes=[Route("/", lambda r: PlainTextResponse(
            "QuickBooks Desktop sandbox: the company file lives here; its Web Connector polls the daemon"))])

    def set_multicurrency(self, enabled: bool) -> None:
        """A company file with multiple currencies turned on (the default here) or one that never turned it on."""
        with self.company.lock:
            self.company.multicurrency = enabled

    def set_closing_date(self, day: date | None) -> None:
        """The bookkeeper closes the books through ``day`` (None reopens them)."""
        with self.company.lock:
            self.company.closing_date = day

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        self.company.seed()
        if self.password is None:
            self.password = secrets.token_urlsafe(18)
        return {"username": self.username, "password": self.password}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "quickbooks-desktop", "base_url": base_url,
            "settings": {"username": self.username, "owner_id": "{57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}",
                         "file_id": "{90A44FB5-33D9-4815-AC85-BC87A7E7D1EB}", "qbxml_version": "16.0"},
            "mapping": {
                "income_accounts": {"part": "Parts Sales", "labour": "Labour Income", "sublet": "Sublet Income",
                                    "fee": "Shop Fees", "discount": "Discounts Given", "core_charge": "Core Deposits",
                                    "core_return": "Core Deposits"},
                "tax_codes": {"STATE": "State Sales Tax", "COUNTY": "County Sales Tax", "GST": "GST", "PST": "PST"},
                "payment_accounts": {"card": "Undeposited Funds", "cash": "Undeposited Funds",
                                     "check": "Undeposited Funds", "eft": "Checking"},
                "location_tracking": {"MAIN": "Main St", "NORTH": "North"},
            },
        }

    def rate_limit_breaches(self) -> int:
        """0: QuickBooks Desktop has no request limit; its Web Connector asks for one request at a time, so the
        daemon cannot send faster than QuickBooks answers."""
        return 0

    def booked_invoices(self) -> list[BookedInvoice]:
        with self.company.lock:
            out = []
            for inv in self.company.invoices.values():
                amounts = self.company.applied(inv["TxnID"])
                tax_lines = sum((ln.get("Amount_before_void", ln["Amount"]) for ln in inv["lines"] if ln["is_tax"]),
                                Decimal("0"))
                out.append(BookedInvoice(
                    number=inv.get("Other") or inv.get("RefNumber") or "", external_id=inv["TxnID"],
                    voided=bool(inv.get("voided")), total=inv.get("total_before_void", inv["Total"]),
                    tax_total=inv["SalesTaxTotal"] + tax_lines,
                    line_count=sum(1 for ln in inv["lines"] if not ln["is_tax"]),
                    payments_applied=sum(amounts, Decimal("0")), payment_count=len(amounts),
                    currency=self.company.currencies[inv["currency"]]["CurrencyCode"] if inv.get("currency") else None))
            return out

    # -- QuickBooks: one qbXML request document in, its response out --
    def process(self, qbxml: str) -> tuple[str, str, str, bool]:
        """(response, hresult, message, answer_lost)."""
        self.requests.append(qbxml)
        match = re.search(r"<\?qbxml\s+version=\"(\d+\.\d+)\"\s*\?>", qbxml)
        if not match:
            return "", PARSE_ERROR, "QuickBooks found an error when parsing the provided XML text stream.", False
        version = match.group(1)
        if tuple(map(int, version.split("."))) > tuple(map(int, self.qbxml_version.split("."))):
            return "", VERSION_NOT_SUPPORTED, "The version of QBXML that was requested is not supported or is unknown.", False
        try:
            root = etree.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", qbxml.strip()).encode())
        except etree.XMLSyntaxError as exc:
            return "", PARSE_ERROR, f"QuickBooks found an error when parsing the provided XML text stream. {exc}", False
        schema = qbxml_schema(version) if self.validate else None
        if schema is not None:
            error = next(iter(schema.iter_errors(root)), None)
            if error is not None:
                return "", PARSE_ERROR, ("QuickBooks found an error when parsing the provided XML text stream. "
                                         + str(error.reason or error)[:300]), False
        msgs = root.find("QBXMLMsgsRq")
        out = etree.Element("QBXML")
        rs_msgs = etree.SubElement(out, "QBXMLMsgsRs")
        lost = False
        stop = False
        for request in (msgs if msgs is not None else []):
            if not isinstance(request.tag, str):
                continue
            if stop:
                break
            fault = self.faults.draw() if request.tag.endswith(("AddRq", "ModRq")) or request.tag in (
                "TxnDelRq", "TxnVoidRq") else None
            if self.faults.slow_s:
                time.sleep(self.faults.slow_s)
            rs, applied = self.company.process(request, fault)
            rs_msgs.append(rs)
            if fault == "timeout" and applied:
                lost = True
            if rs.get("statusSeverity") == "Error" and msgs.get("onError") == "stopOnError":
                stop = True
        body = etree.tostring(out, encoding="unicode")
        return f'<?xml version="1.0" ?>\n<?qbxml version="{version}"?>\n{body}', "", "", lost

    # -- the Web Connector --
    def attach(self, target: Any) -> None:
        """``target``: the service URL (http://host/connectors/<t>/qbwc), or an ASGI app serving ``/qbwc``."""
        if isinstance(target, str):
            self._url, self._app = target, None
        else:
            self._url, self._app = None, target

    def _call(self, client: Any, url: str, operation: str, params: list[tuple[str, str]]) -> Any:
        request = soap.envelope(operation, params)
        response = client.post(url, content=request, headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"http://developer.intuit.com/{operation}"'})
        if response.status_code != 200:
            raise ConnectionError(f"{operation}: HTTP {response.status_code}")
        self.soap_log.append((request, response.content))
        return soap.parse_response(response.content)[1]

    def run_session(self) -> dict[str, Any]:
        """One Web Connector update: authenticate → send/receive until done or error → closeConnection."""
        with self._session_lock:
            summary: dict[str, Any] = {"requests": 0, "result": None}
            if self._app is not None:
                from starlette.testclient import TestClient

                client, url = TestClient(self._app), "/qbwc"
            else:
                client, url = httpx.Client(timeout=30), self._url
            try:
                self._call(client, url, "serverVersion", [])
                self._call(client, url, "clientVersion", [("strVersion", "2.3.0.215")])
                auth = self._call(client, url, "authenticate", [("strUserName", self.username),
                                                                ("strPassword", self.password or "")])
                ticket, status = (auth + ["", ""])[:2]
                if status in ("nvu", "none") or not ticket:
                    summary["result"] = status or "nvu"
                    return summary
                while not self._stop.is_set() or self._thread is None:
                    xml = self._call(client, url, "sendRequestXML", [
                        ("ticket", ticket), ("strHCPResponse", ""), ("strCompanyFileName", "C:\\Shop\\shop.qbw"),
                        ("qbXMLCountry", "US"), *zip(("qbXMLMajorVers", "qbXMLMinorVers"), self.qbxml_version.split("."))])
                    if not xml:
                        summary["last_error"] = self._call(client, url, "getLastError", [("ticket", ticket)])
                        break
                    summary["requests"] += 1
                    response, hresult, message, lost = self.process(xml)
                    if lost:  # QBWC died with QuickBooks' answer in hand: nothing more this session
                        summary["result"] = "lost"
                        return summary
                    pct = int(self._call(client, url, "receiveResponseXML", [
                        ("ticket", ticket), ("response", response), ("hresult", hresult), ("message", message)]))
                    if pct < 0:
                        summary["last_error"] = self._call(client, url, "getLastError", [("ticket", ticket)])
                        break
                    if pct >= 100:
                        break
                summary["result"] = self._call(client, url, "closeConnection", [("ticket", ticket)])
            except (httpx.HTTPError, ConnectionError, OSError, etree.XMLSyntaxError, ValueError) as exc:
                summary["result"] = f"connection error: {type(exc).__name__}"  # next poll starts over
            finally:
                self.sessions.append(summary)
                if hasattr(client, "close"):
                    client.close()
            return summary

    def start_polling(self, interval_s: float = 1.0) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    result = self.run_session()
                except Exception:  # noqa: BLE001 - QBWC keeps polling whatever happened
                    result = {}
                if result.get("result") in ("none", "nvu") or "connection error" in str(result.get("result")):
                    self._stop.wait(interval_s)
                elif result.get("result") != "lost":
                    self._stop.wait(interval_s / 5)

        self._thread = threading.Thread(target=loop, name="qbwc-sim", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
