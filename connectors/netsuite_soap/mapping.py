"""The shared NetSuite records (``connectors.netsuite_common.mapping``) rendered as SuiteTalk 2023_2 arguments for
zeep: a reference becomes a ``RecordRef`` (``internalId``/``externalId`` attributes), the ``item`` sublist an
``itemList`` (``replaceAll``: an update replaces the lines), the ``apply`` sublist an ``applyList`` whose ``doc`` is
the applied transaction's internal id (``xsd:long``), dates ``xsd:dateTime`` at midnight. Pure functions; the
look-ups (``search``) are built here too."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from connectors.netsuite_common.mapping import ApplyLine, ItemLine, Ref

# record_type of the shared model -> (namespace key, SuiteTalk type) and the RecordType enum value
RECORD_TYPES = {"invoice": ("sales", "Invoice"), "creditMemo": ("customers", "CreditMemo"),
                "customerPayment": ("customers", "CustomerPayment"), "customerRefund": ("customers", "CustomerRefund"),
                "customer": ("relationships", "Customer")}
SEARCH_TYPES = {"invoice": "_invoice", "creditMemo": "_creditMemo", "customerPayment": "_customerPayment",
                "customerRefund": "_customerRefund"}


def record_ref(ref: Ref | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {k: v for k, v in (("internalId", ref.id), ("externalId", ref.externalId)) if v}


def value(field: Any) -> Any:
    if isinstance(field, Ref):
        return record_ref(field)
    if isinstance(field, datetime | date):
        return datetime(field.year, field.month, field.day)
    if isinstance(field, Decimal):
        return format(field, "f")
    return field


def item_line(line: ItemLine, tax: Decimal | None = None) -> dict[str, Any]:
    """A line; ``tax``: the shop's own tax amount for it (``tax1Amt``), so NetSuite keeps the shop's rounding
    (the shared model carries the tax code only: NetSuite would compute the tax itself)."""
    out = {name: value(getattr(line, name)) for name in ("item", "quantity", "rate", "amount", "description", "taxCode")
           if getattr(line, name) is not None}
    return out | ({"tax1Amt": value(tax)} if tax is not None else {})


def apply_line(line: ApplyLine) -> dict[str, Any]:
    return {"doc": int(line.doc.id or 0), "apply": line.apply, "amount": value(line.amount)}


def fields(record: BaseModel, *, internal_id: str | None = None, replace_applied: bool = False,
           line_taxes: list[Decimal] | None = None) -> dict[str, Any]:
    """The record's SuiteTalk fields: sublists as lists, references as RecordRefs, ``internal_id`` for an update,
    ``line_taxes`` the shop's tax per item line."""
    out: dict[str, Any] = {"internalId": internal_id} if internal_id else {}
    for name in type(record).model_fields:
        field = getattr(record, name)
        alias = type(record).model_fields[name].alias or name
        if name == "record_type" or field is None or (name == "apply" and not field):
            continue
        if name == "item":
            taxes = line_taxes or [None] * len(field)
            if len(taxes) != len(field):
                raise ValueError(f"{len(taxes)} line taxes for {len(field)} item lines")
            out["itemList"] = {"item": [item_line(ln, tax) for ln, tax in zip(field, taxes)], "replaceAll": True}
        elif name == "currencyList":  # lines added to the customer's sublist, the ones it holds kept
            out["currencyList"] = {"currency": [{"currency": record_ref(ln.currency)} for ln in field], "replaceAll": False}
        elif name == "apply":
            out["applyList"] = {"apply": [apply_line(ln) for ln in field], "replaceAll": replace_applied}
        elif name == "undepFunds" and not field:
            continue
        else:
            out[alias] = value(field)
    return out


def record_type(record: BaseModel) -> str:
    return getattr(record, "record_type")


def money_line_taxes(record: BaseModel, tax: Decimal) -> list[Decimal]:
    """A refund's or adjustment's lines (``money_lines``: the taxed part first, an untaxed rest after): the tax on
    the first."""
    return [tax if n == 0 else Decimal("0") for n in range(len(getattr(record, "item")))]


def invoice_line_taxes(event: Any) -> list[Decimal]:
    """The shop's tax of each of the event's lines, in the order the shared mapping lists them."""
    return [sum((t.amount for t in line.taxes), Decimal("0")) for line in event.lines]


def search_transactions(kind: str, external_id: str) -> tuple[str, dict[str, Any]]:
    """(search type, fields) of a TransactionSearchBasic for one type by our external id."""
    return "TransactionSearchBasic", {"type": {"operator": "anyOf", "searchValue": [SEARCH_TYPES[kind]]},
                                      "externalId": {"operator": "anyOf", "searchValue": [{"externalId": external_id}]}}


def search_customers(key: str, text: str) -> tuple[str, dict[str, Any]]:
    """(search type, fields) of a CustomerSearchBasic: ``externalId`` (ours) or a match key's field."""
    if key == "externalId":
        return "CustomerSearchBasic", {"externalId": {"operator": "anyOf", "searchValue": [{"externalId": text}]}}
    field = {"email": "email", "phone": "phone", "name": "companyName"}[key]
    return "CustomerSearchBasic", {field: {"operator": "is", "searchValue": text}}


def search_locked_periods() -> tuple[str, dict[str, Any]]:
    """Accounting periods locked for accounts receivable (no invoice, payment or credit memo posts there)."""
    return "AccountingPeriodSearchBasic", {"arLocked": {"searchValue": True}, "isQuarter": {"searchValue": False},
                                           "isYear": {"searchValue": False}}
