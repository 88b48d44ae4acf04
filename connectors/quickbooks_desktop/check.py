"""Issue #5's mapping check for QuickBooks Desktop: resolved against the lists QuickBooks last sent
(AccountQuery/ItemQuery/ClassQuery at the start of a Web Connector session, at most hourly) — a pull platform
cannot be asked on demand."""

from __future__ import annotations

import time
from typing import Any

from lxml import etree

from connectors.pull_queue import PullQueue


def list_queries() -> list[Any]:
    out = []
    for request in ("AccountQueryRq", "ItemQueryRq", "ClassQueryRq"):
        rq = etree.Element(request)
        if request != "ClassQueryRq":
            etree.SubElement(rq, "ActiveStatus").text = "All"
        for name in (("FullName",) if request != "ItemQueryRq" else ("Name", "FullName")):
            etree.SubElement(rq, "IncludeRetElement").text = name
        out.append(rq)
    return out


def store_lists(queue: PullQueue, responses: list[dict[str, Any]]) -> None:
    names: dict[str, Any] = {"accounts": [], "items": [], "tax_items": [], "classes": [], "at": time.time()}
    for rs in responses:
        for ret in rs["rets"]:
            name = ret.get("FullName") or ret.get("Name")
            if not name:
                continue
            if rs["type"] == "AccountQueryRs":
                names["accounts"].append(name)
            elif rs["type"] == "ClassQueryRs":
                names["classes"].append(name)
            else:
                names["items"].append(name)
                if ret["_tag"] in ("ItemSalesTaxRet", "ItemSalesTaxGroupRet"):
                    names["tax_items"].append(name)
    queue.put_entity("lists", "names", "-", names)


def check_mapping(queue: PullQueue, mapping: Any, settings: Any) -> list[str]:
    lists = queue.entity("lists", "names")
    if lists is None:
        return ["lists not synced yet: the Web Connector has not run a session since Ledgerwire started"]
    known = {kind: set(lists.get(kind, [])) for kind in ("accounts", "items", "tax_items", "classes")}
    wanted = [(f"income_accounts.{kind.value}", "account", "accounts", name)
              for kind, name in mapping.income_accounts.items()]
    if mapping.core_account:
        wanted.append(("core_account", "account", "accounts", mapping.core_account))
    wanted += [(f"payment_accounts.{method}", "account", "accounts", name)
               for method, name in mapping.payment_accounts.items()]
    wanted += [(f"tax_codes.{code}", "sales-tax item", "tax_items", name) for code, name in mapping.tax_codes.items()]
    wanted.append(("settings.invoice_tax_item", "sales-tax item", "tax_items", settings.invoice_tax_item))
    wanted += [(f"items.{kind.value}", "item", "items", name) for kind, name in mapping.items.items()]
    wanted += [(f"location_tracking.{code}", "class", "classes", name)
               for code, name in mapping.location_tracking.items()]
    return [f"{where}: {what} {name!r} not found" for where, what, kind, name in wanted if name not in known[kind]]
