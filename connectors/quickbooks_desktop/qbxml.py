"""qbXML, the QuickBooks SDK's request and answer format: the request document (one request per document, each
with a requestID), the building blocks of a request (elements, list references, amounts and quantities as
the schema types them), queries and transaction deletes, the answers read into plain dicts, and QuickBooks'
status codes as the engine's error classes."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from lxml import etree

from connectors.base import ClosedPeriodError, DeliveryError, RetryableError, StaleTokenError
from connectors.errors import When, classify_by, facts_of
from daemon.canonical import CENT

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
NOT_FOUND = (1, 500)  # 1: a query matched nothing; 500: a TxnID/ListID asked for does not exist
TRANSIENT = (3180, 3175, 3176)  # error saving / object in use: nothing saved, send again
GONE = 3120  # the object of a Mod/Del/Void cannot be found
STALE = 3200  # EditSequence out of date
CLOSED_PERIOD = 3171  # dated on or before the company's closing date (see sandbox.CLOSED_PERIOD)
RULES = (When(StaleTokenError, on={f"code:{STALE}"}), When(ClosedPeriodError, on={f"code:{CLOSED_PERIOD}"}),
         When(RetryableError, on={f"code:{code}" for code in TRANSIENT}))
_REQUEST = re.compile(r"<(\w+?)(Add|Mod|Query|Del|Void)?Rq requestID")


def amt(value: Decimal) -> str:
    """AMTTYPE: digits with exactly two decimals."""
    return format(Decimal(value).quantize(CENT), "f")


def num(value: Decimal) -> str:
    """QUANTYPE/PRICETYPE: at most five decimals, no exponent."""
    return format(Decimal(value).normalize(), "f")


def el(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def ref(parent: etree._Element, tag: str, *, list_id: str | None = None, full_name: str | None = None) -> None:
    el(el(parent, tag), *(("ListID", list_id) if list_id is not None else ("FullName", full_name)))


def document(version: str, requests: list[etree._Element]) -> str:
    """One qbXML request document; every request carries a requestID, errors don't stop the rest."""
    root = etree.Element("QBXML")
    msgs = el(root, "QBXMLMsgsRq")
    msgs.set("onError", "continueOnError")
    for index, request in enumerate(requests, start=1):
        request.set("requestID", str(index))
        msgs.append(request)
    body = etree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n<?qbxml version="{version}"?>\n{body}'


def query(entity: str, *, ref_number: str | None = None, txn_id: str | None = None, full_name: str | None = None,
          list_id: str | None = None, lines: bool = False) -> etree._Element:
    """``<entity>QueryRq`` by one key (TxnID / ListID / FullName / RefNumber, in the schema's order)."""
    rq = etree.Element(f"{entity}QueryRq")
    for tag, value in (("TxnID", txn_id), ("ListID", list_id), ("FullName", full_name), ("RefNumber", ref_number)):
        if value is not None:
            el(rq, tag, value)
    if lines:
        el(rq, "IncludeLineItems", "true")
    return rq


def txn_del(txn_type: str, txn_id: str, verb: str = "Del") -> etree._Element:
    """TxnDel (or TxnVoid, ``verb`` "Void") of one transaction."""
    rq = etree.Element(f"Txn{verb}Rq")
    el(rq, f"Txn{verb}Type", txn_type)
    el(rq, "TxnID", txn_id)
    return rq


def preferences_query() -> etree._Element:
    """The company's closing date lives in AccountingPreferences/ClosingDate; whether it takes other currencies,
    and its own, in MultiCurrencyPreferences (the connector's ``currency.py``)."""
    rq = etree.Element("PreferencesQueryRq")
    el(rq, "IncludeRetElement", "AccountingPreferences")
    el(rq, "IncludeRetElement", "MultiCurrencyPreferences")
    return rq


# --- responses -----------------------------------------------------------------------------------------


def parse_response(text: str) -> list[dict[str, Any]]:
    """Each ``…Rs`` of a qbXML response: {"type", "requestID", "statusCode", "statusMessage", "rets": [...]}
    with each Ret as a nested dict (repeated children become lists under their tag)."""
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", text.strip())
    root = etree.fromstring(body.encode(), _PARSER)
    msgs = root.find("QBXMLMsgsRs")
    out = []
    for rs in (msgs if msgs is not None else []):
        if not isinstance(rs.tag, str):
            continue
        out.append({"type": rs.tag, "requestID": rs.get("requestID"), "statusCode": int(rs.get("statusCode", "0")),
                    "statusSeverity": rs.get("statusSeverity", ""), "statusMessage": rs.get("statusMessage", ""),
                    "rets": [to_dict(child) for child in rs if isinstance(child.tag, str)]})
    return out


def to_dict(element: etree._Element) -> dict[str, Any]:
    out: dict[str, Any] = {"_tag": element.tag}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        value: Any = to_dict(child) if len(child) else (child.text or "")
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        elif child.tag.endswith("LineRet") or child.tag in ("AppliedToTxnRet", "LinkedTxn"):
            out[child.tag] = [value]
        else:
            out[child.tag] = value
    return out


def invoice_totals(ret: dict[str, Any], tax_items: set[str] | None = None) -> tuple[Decimal, Decimal]:
    """(total, tax) of an InvoiceRet: Subtotal + SalesTaxTotal, and SalesTaxTotal + sales-tax item lines."""
    subtotal = Decimal(ret.get("Subtotal") or "0")
    sales_tax = Decimal(ret.get("SalesTaxTotal") or "0")
    tax_lines = Decimal("0")
    for line in ret.get("InvoiceLineRet", []):
        item = (line.get("ItemRef") or {}).get("FullName", "")
        if tax_items is not None and item in tax_items:
            tax_lines += Decimal(line.get("Amount") or "0")
    return subtotal + sales_tax, sales_tax + tax_lines


def transaction_total(ret: dict[str, Any]) -> Decimal | None:
    """A transaction's total as QuickBooks answers it (an invoice: Subtotal + SalesTaxTotal)."""
    if "Subtotal" in ret and ret["_tag"] == "InvoiceRet":
        return Decimal(ret["Subtotal"]) + Decimal(ret.get("SalesTaxTotal") or "0")
    return Decimal(ret["TotalAmount"]) if ret.get("TotalAmount") else None


def refusal(rs: dict[str, Any], tag: str) -> DeliveryError | None:
    """The engine's error for QuickBooks' answer ``rs`` to a ``tag`` request; None when it is not a refusal
    (done, a query that matched nothing, a delete or void of what is already gone)."""
    code = rs["statusCode"]
    if code == 0 or (code in NOT_FOUND and tag.endswith("QueryRq")) or (code == GONE and tag.startswith("Txn")):
        return None
    reason = f"QuickBooks Desktop refused {tag[:-2]}: QuickBooks {code} ({rs['type']}): {rs['statusMessage']}"
    return classify_by(RULES, reason, facts=facts_of(None, code), code=code)


def preview_answer(request: str) -> tuple[dict[str, Any], bool]:
    """A preview's answer to a request document, and whether the request is a write: a query finds nothing
    new, a write answers "<new …>" ids."""
    entity, verb = _REQUEST.search(request).groups()
    rs: dict[str, Any] = {"type": f"{entity}{verb or ''}Rs", "statusCode": 1, "statusMessage": "", "rets": []}
    write = verb not in (None, "Query")
    if write:
        new = f"<new {entity.lower()}>"
        rs.update(statusCode=0, rets=[{"TxnID": new, "ListID": new, "EditSequence": "<new>"}])
    return rs, write
