"""The Xero organisation ("tenant") every call names, found once when the settings do not name it."""

from __future__ import annotations

from typing import Any

import structlog

from connectors.http import PlatformHttp
from connectors.rest import ACCEPT_JSON, json_of, sole

log = structlog.get_logger(__name__)


class Tenant:
    """The organisation every call names (header ``xero-tenant-id``): the configured one, else the one stored
    with the credentials, else the only organisation the app is connected to (``GET /connections``, asked
    once and stored)."""

    def __init__(self, target: str, configured: str | None, credentials: Any, connections_url: str) -> None:
        self.target, self.id, self.credentials, self.connections_url = target, configured, credentials, connections_url

    def header(self, cred: dict[str, Any]) -> dict[str, str]:
        tenant = self.id or cred.get("tenant_id")
        return {"xero-tenant-id": tenant} if tenant else {}

    def ensure(self, http: PlatformHttp) -> None:
        self.id = self.id or self.credentials.get().get("tenant_id")
        if self.id:
            return
        connections = json_of(http.request("GET", self.connections_url, headers=ACCEPT_JSON))
        self.id = sole([c for c in connections if c.get("tenantType", "ORGANISATION") == "ORGANISATION"], "Xero",
                       "organisations", "tenant_id")["tenantId"]
        self.credentials.update({"tenant_id": self.id})
        log.info("xero_tenant_selected", target=self.target, tenant_id=self.id)
