"""``ledgerwire config check --online`` for Zoho Books: every account, tax, item and tracking value the
target's mapping names, resolved against the organisation (read-only calls)."""

from __future__ import annotations

from connectors.zoho_books.client import ZohoClient
from daemon.config import MappingConfig


def check_mapping(client: ZohoClient, mapping: MappingConfig) -> list[str]:
    problems: list[str] = []
    accounts = {str(a["account_id"]) for a in client.list("/chartofaccounts", "chartofaccounts")}
    for kind, account in sorted(mapping.income_accounts.items()):
        if account not in accounts:
            problems.append(f"income_accounts.{kind.value}: account '{account}' not found")
    if mapping.core_account and mapping.core_account not in accounts:
        problems.append(f"core_account: account '{mapping.core_account}' not found")
    for method, account in sorted(mapping.payment_accounts.items()):
        if account not in accounts:
            problems.append(f"payment_accounts.{method}: account '{account}' not found")
    taxes = {str(t["tax_id"]): t for t in client.list("/settings/taxes", "taxes")}
    for code, tax_id in sorted(mapping.tax_codes.items()):
        if tax_id not in taxes:
            problems.append(f"tax_codes.{code}: tax '{tax_id}' not found")
    if mapping.items:
        items = {str(i["item_id"]) for i in client.list("/items", "items")}
        for kind, item in sorted(mapping.items.items()):
            if item not in items:
                problems.append(f"items.{kind.value}: item '{item}' not found")
    locations = branches = tags = None
    for code, value in sorted(mapping.location_tracking.items()):
        kind, _, rest = value.partition(":")
        kind, rest = (kind, rest) if rest else ("location", value)
        if kind == "location":
            locations = locations if locations is not None else {
                str(x["location_id"]) for x in client.list("/locations", "locations")}
            if rest not in locations:
                problems.append(f"location_tracking.{code}: location '{rest}' not found")
        elif kind == "branch":
            branches = branches if branches is not None else {
                str(x["branch_id"]) for x in client.list("/branches", "branches")}
            if rest not in branches:
                problems.append(f"location_tracking.{code}: branch '{rest}' not found")
        elif kind == "tag":
            tags = tags if tags is not None else {
                (str(t["tag_id"]), str(o["tag_option_id"])) for t in client.list("/settings/tags", "reporting_tags")
                for o in t.get("tag_options", [])}
            if tuple(rest.split(":", 1)) not in tags:
                problems.append(f"location_tracking.{code}: reporting tag option '{rest}' not found")
        else:
            problems.append(f"location_tracking.{code}: unknown kind '{kind}' (location:, branch:, tag:)")
    return problems
