"""Customer look-ups by the match rules (QuickBooks' queries cannot filter a phone): a helper, not an operation."""

from __future__ import annotations

import re
from typing import Any

from connectors.quickbooks_online import mapping
from daemon.canonical import Customer


class CustomerLookups:
    """Mixed into the connector: uses its ``client``."""

    def _customers_by(self, key: str, value: str, customer: Customer) -> list[dict[str, Any]]:
        if key == "name":
            return self.client.query("Customer", DisplayName=mapping.customer_display_name(customer))
        if key == "email":
            return self.client.query("Customer", PrimaryEmailAddr=value)
        # PrimaryPhone is not a filterable field in QuickBooks' query language: compare digits.
        return [c for c in self.client.query_all("Customer")
                if _digits((c.get("PrimaryPhone") or {}).get("FreeFormNumber", "")) == _digits(value)]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")
