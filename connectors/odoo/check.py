"""Issue #5's mapping check for Odoo: resolve every id the mapping names with read-only calls."""

from __future__ import annotations

from typing import Any

from connectors.odoo.client import OdooClient
from daemon.config import MappingConfig


def check_mapping(client: OdooClient, m: MappingConfig) -> list[str]:
    """Resolve every id the mapping names against Odoo with read-only calls; one line per problem."""
    problems: list[str] = []

    def ids_of(refs: dict[str, str], label: str) -> dict[str, int]:
        out = {}
        for name, value in refs.items():
            try:
                out[name] = int(value)
            except (TypeError, ValueError):
                problems.append(f"{name}: {label} {value!r} is not an Odoo record id")
        return out

    def fetch(model: str, ids: dict[str, int], fields: list[str]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        rows = client.search_read(model, [("id", "in", sorted(set(ids.values())))], fields)
        return {int(r["id"]): r for r in rows}

    accounts = {f"income_accounts.{k.value}": v for k, v in m.income_accounts.items()}
    if m.core_account:
        accounts["core_account"] = m.core_account
    if m.discount_posting == "discount_account":
        if m.discount_account:
            accounts["discount_account"] = m.discount_account
        else:
            problems.append("discount_account: required with discount_posting 'discount_account'")
    account_ids = ids_of(accounts, "account")
    found = fetch("account.account", account_ids, ["id", "code", "name"])
    problems += [f"{name}: account '{i}' not found" for name, i in account_ids.items() if i not in found]

    tax_ids = ids_of({f"tax_codes.{k}": v for k, v in m.tax_codes.items()}, "tax")
    taxes = fetch("account.tax", tax_ids, ["id", "name", "amount", "amount_type", "type_tax_use", "price_include"])
    for name, i in tax_ids.items():
        tax = taxes.get(i)
        if tax is None:
            problems.append(f"{name}: tax '{i}' not found")
        elif tax.get("type_tax_use") != "sale":
            problems.append(f"{name}: tax '{i}' is not a sales tax (type_tax_use={tax.get('type_tax_use')})")
        elif tax.get("amount_type") != "percent" or tax.get("price_include"):
            problems.append(f"{name}: tax '{i}' must be a tax-excluded percentage (the shop's prices exclude tax)")

    journal_ids = ids_of({f"payment_accounts.{k}": v for k, v in m.payment_accounts.items()}, "journal")
    analytic_ids: dict[str, int] = {}
    for code, value in m.location_tracking.items():
        kind, _, ident = value.rpartition(":")
        kind = kind or "analytic"
        target = ids_of({f"location_tracking.{code}": ident}, "tracking")
        if kind == "journal":
            journal_ids.update(target)
        elif kind == "analytic":
            analytic_ids.update(target)
        else:
            problems.append(f"location_tracking.{code}: {value!r} is neither analytic:<id> nor journal:<id>")
    journals = fetch("account.journal", journal_ids, ["id", "name", "type"])
    for name, i in journal_ids.items():
        journal = journals.get(i)
        wanted_types = ("sale",) if name.startswith("location_tracking") else ("bank", "cash")
        if journal is None:
            problems.append(f"{name}: journal '{i}' not found")
        elif journal.get("type") not in wanted_types:
            problems.append(f"{name}: journal '{i}' is a {journal.get('type')} journal, not {'/'.join(wanted_types)}")
    analytic = fetch("account.analytic.account", analytic_ids, ["id", "name"])
    problems += [f"{name}: analytic account '{i}' not found" for name, i in analytic_ids.items() if i not in analytic]

    term_ids = ids_of({f"payment_terms.{days}": v for days, v in m.payment_terms.items()}, "payment term")
    terms = fetch("account.payment.term", term_ids, ["id", "name"])
    problems += [f"{name}: payment term '{i}' not found" for name, i in term_ids.items() if i not in terms]

    product_ids = ids_of({f"items.{k.value}": v for k, v in m.items.items()}, "product")
    products = fetch("product.product", product_ids, ["id", "name"])
    problems += [f"{name}: product '{i}' not found" for name, i in product_ids.items() if i not in products]

    # The shop prices to 4 decimals and counts to 3; Odoo rounds price_unit and quantity to its
    # "Product Price" / "Product Unit of Measure" precisions (2 by default), which would change totals.
    precisions = {r["name"]: r["digits"] for r in client.search_read(
        "decimal.precision", [("name", "in", ["Product Price", "Product Unit of Measure"])], ["name", "digits"])}
    for name, needed in (("Product Price", 4), ("Product Unit of Measure", 3)):
        if precisions.get(name, 0) < needed:
            problems.append(f"decimal precision {name!r} is {precisions.get(name, 'unset')}; the shop needs {needed} "
                            f"digits (Settings > Technical > Decimal Accuracy)")
    return problems
