"""Xero's read-only look-ups: the mapping check (issue #5) and finding a shop customer's contact."""

from __future__ import annotations

import re
from typing import Any

from connectors.xero import mapping as xero_mapping
from connectors.xero.client import XeroClient, quote
from daemon.canonical import Customer
from daemon.config import MappingConfig


def find_contact(client: XeroClient, customer: Customer, match: list[str]) -> dict[str, Any] | None:
    """By ContactNumber (= the shop's customer id), then by the configured ``customer_match`` keys."""
    for key in ["number", *match]:
        if key == "number":
            found = _contacts(client, f"ContactNumber=={quote(str(customer.id))}")
        elif key == "email" and customer.email:
            found = _contacts(client, f"EmailAddress=={quote(customer.email)}")
        elif key == "name":
            found = _contacts(client, f"Name=={quote(xero_mapping.contact_name(customer))}")
        elif key == "phone" and customer.phone:
            found = _contacts_by_phone(client, customer.phone)
        else:
            continue
        # Never another shop customer's contact (same name or email): ours carry the shop's id.
        found = [c for c in found if c.get("ContactNumber") in (None, "", str(customer.id))]
        if found:
            return found[0]
    return None


def _contacts(client: XeroClient, where: str) -> list[dict[str, Any]]:
    return [c for c in client.get("/Contacts", where=where).get("Contacts") or []
            if c.get("ContactStatus", "ACTIVE") == "ACTIVE"]


def _contacts_by_phone(client: XeroClient, phone: str) -> list[dict[str, Any]]:
    """Xero cannot filter contacts by phone: page through them (100 a page) and compare digits, so
    "(555) 010-4401" finds "555-010-4401". Runs once per new customer, under the customer lock."""
    digits = _digits(phone)
    if not digits:
        return []
    found: list[dict[str, Any]] = []
    for page in range(1, 1000):
        contacts = client.get("/Contacts", page=page).get("Contacts") or []
        for contact in contacts:
            numbers = {_digits(f"{p.get('PhoneAreaCode') or ''}{p.get('PhoneNumber') or ''}")
                       for p in contact.get("Phones") or []} | \
                      {_digits(p.get("PhoneNumber") or "") for p in contact.get("Phones") or []}
            if digits in numbers and contact.get("ContactStatus", "ACTIVE") == "ACTIVE":
                found.append(contact)
        if found or len(contacts) < 100:
            break
    return found


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def check_mapping(client: XeroClient, mapping: MappingConfig) -> list[str]:
    """Resolve every account, tax rate, item and tracking option the mapping names (read-only calls)."""
    accounts = {a.get("Code"): a for a in client.get("/Accounts").get("Accounts") or [] if a.get("Code")}
    tax_rates = {t.get("TaxType"): t for t in client.get("/TaxRates").get("TaxRates") or []}
    problems: list[str] = []

    def account(where: str, code: str, *, payments: bool = False) -> None:
        found = accounts.get(code)
        if found is None:
            problems.append(f"{where}: account '{code}' not found")
        elif found.get("Status", "ACTIVE") != "ACTIVE":
            problems.append(f"{where}: account '{code}' is {found.get('Status')}")
        elif payments and found.get("Type") != "BANK" and not found.get("EnablePaymentsToAccount"):
            problems.append(f"{where}: account '{code}' does not accept payments (not a bank account and "
                            "'Enable payments to this account' is off)")

    for kind, code in sorted(mapping.income_accounts.items()):
        account(f"income_accounts.{kind.value}", code)
    if mapping.core_account:
        account("core_account", mapping.core_account)
    if mapping.discount_posting == "discount_account":
        if not mapping.discount_account:
            problems.append("discount_account: required with discount_posting 'discount_account'")
        else:
            account("discount_account", mapping.discount_account)
    for method, code in sorted(mapping.payment_accounts.items()):
        account(f"payment_accounts.{method}", code, payments=True)
    for source, tax_type in sorted(mapping.tax_codes.items()):
        found = tax_rates.get(tax_type)
        if found is None:
            problems.append(f"tax_codes.{source}: tax rate '{tax_type}' not found")
        elif found.get("Status", "ACTIVE") != "ACTIVE":
            problems.append(f"tax_codes.{source}: tax rate '{tax_type}' is {found.get('Status')}")
    if mapping.items:
        codes = {i.get("Code") for i in client.get("/Items").get("Items") or []}
        for kind, code in sorted(mapping.items.items()):
            if code not in codes:
                problems.append(f"items.{kind.value}: item '{code}' not found")
    if mapping.location_tracking:
        categories = {c.get("Name"): c for c in client.get("/TrackingCategories").get("TrackingCategories") or []}
        for location, value in sorted(mapping.location_tracking.items()):
            name, _, option = value.partition(":")
            category = categories.get(name)
            if not option:
                problems.append(f"location_tracking.{location}: '{value}' is not 'Category:Option'")
            elif category is None:
                problems.append(f"location_tracking.{location}: tracking category '{name}' not found")
            elif option not in {o.get("Name") for o in category.get("Options") or []
                                if o.get("Status", "ACTIVE") == "ACTIVE"}:
                problems.append(f"location_tracking.{location}: option '{option}' not found in category '{name}'")
    return problems
