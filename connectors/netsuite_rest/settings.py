"""Settings of a NetSuite target reached through SuiteTalk REST web services: the shared NetSuite settings
(``connectors.netsuite_common.settings``) and what only the REST transport needs."""

from __future__ import annotations

from pydantic import Field

from connectors.netsuite_common.settings import NetSuiteSettings


class NetSuiteRestSettings(NetSuiteSettings):
    # SuiteQL pages: NetSuite answers at most 1,000 rows per request.
    page_size: int = Field(1000, ge=1, le=1000)
