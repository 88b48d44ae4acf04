"""Issue #5: a QuickBooks Online target's mapping resolved online (``ledgerwire config check --online``):
every account, tax rate/code, item, class/department and term it names, read-only."""

from __future__ import annotations

from connectors.quickbooks_online.client import QboClient
from daemon.config import MappingConfig


def check_mapping(client: QboClient, m: MappingConfig) -> list[str]:
    lists = {kind: client.query_all(kind) for kind in
             ("Account", "TaxCode", "TaxRate", "Item", "Class", "Department", "Term")}
    ids = {kind: {str(r["Id"]) for r in rows if r.get("Active", True)} for kind, rows in lists.items()}
    names = {kind: {str(r.get("Name")) for r in rows if r.get("Active", True)} for kind, rows in lists.items()}
    problems: list[str] = []

    def need(kind: str, value: str, where: str, by_name: bool = False) -> None:
        if value not in ids[kind] and not (by_name and value in names[kind]):
            problems.append(f"{where}: {kind.lower()} {value!r} not found")

    for kind, account in m.income_accounts.items():
        need("Account", account, f"income_accounts.{kind.value}")
    for method, account in m.payment_accounts.items():
        need("Account", account, f"payment_accounts.{method}")
    if m.core_account:
        need("Account", m.core_account, "core_account")
    if m.discount_posting == "discount_account":
        if not m.discount_account:
            problems.append("discount_account: required with discount_posting 'discount_account'")
        else:
            need("Account", m.discount_account, "discount_account")
    for code, rate in m.tax_codes.items():
        if rate not in ids["TaxRate"] and rate not in ids["TaxCode"]:
            problems.append(f"tax_codes.{code}: tax rate/code {rate!r} not found")
    for kind, item in m.items.items():
        need("Item", item, f"items.{kind.value}", by_name=True)
    for location, tracking in m.location_tracking.items():
        dimension, _, value = tracking.partition(":")
        if dimension not in ("class", "department"):
            problems.append(f"location_tracking.{location}: {tracking!r} is not class:<id> or department:<id>")
        else:
            need("Class" if dimension == "class" else "Department", value, f"location_tracking.{location}")
    for days, term in m.payment_terms.items():
        need("Term", term, f"payment_terms.{days}")
    return problems
