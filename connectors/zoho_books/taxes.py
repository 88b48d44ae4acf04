"""Zoho Books tax ids for the shop's tax components: one Zoho tax per component (``mapping.tax_codes``), and
for a line with several components the tax group Zoho holds that combines exactly their taxes (read from
``/settings/taxes`` once, and again when a combination is not found: the bookkeeper may have just made it)."""

from __future__ import annotations

import threading

from connectors.base import PermanentError
from connectors.zoho_books.client import ZohoClient
from daemon.canonical import InvoiceEvent
from daemon.config import MappingConfig


class ZohoTaxes:
    def __init__(self, client: ZohoClient, mapping: MappingConfig) -> None:
        self.client = client
        self.mapping = mapping
        self._lock = threading.Lock()
        self._groups: dict[frozenset[str], str] | None = None

    def for_lines(self, event: InvoiceEvent) -> dict[int, str | None]:
        """Each line's tax id (None: untaxed)."""
        return {ln.id: self.tax_id(tuple(t.code for t in ln.taxes)) for ln in event.lines}

    def tax_id(self, codes: tuple[str, ...]) -> str | None:
        if not codes:
            return None
        if len(codes) > 1:
            for key in ("+".join(codes), "+".join(sorted(codes))):
                if key in self.mapping.tax_codes:
                    return self.mapping.tax_codes[key]
        missing = [c for c in codes if c not in self.mapping.tax_codes]
        if missing:
            raise PermanentError(f"tax code(s) {', '.join(missing)} have no Zoho tax in mapping.tax_codes")
        if len(codes) == 1:
            return self.mapping.tax_codes[codes[0]]
        members = frozenset(self.mapping.tax_codes[c] for c in codes)
        group = self._tax_groups().get(members) or self._tax_groups(reload=True).get(members)
        if group is None:
            raise PermanentError(f"no Zoho tax group combines {' + '.join(codes)} (tax ids {sorted(members)}); "
                                 f"create one or map '{'+'.join(codes)}' in mapping.tax_codes")
        return group

    def _tax_groups(self, reload: bool = False) -> dict[frozenset[str], str]:
        with self._lock:
            if self._groups is None or reload:
                groups: dict[frozenset[str], str] = {}
                for tax in self.client.list("/settings/taxes", "taxes"):
                    if tax.get("tax_type") == "tax_group":
                        detail = self.client.get(f"/settings/taxgroups/{tax['tax_id']}", "tax_group") or {}
                        groups[frozenset(str(t["tax_id"]) for t in detail.get("taxes", []))] = str(tax["tax_id"])
                self._groups = groups
            return self._groups
