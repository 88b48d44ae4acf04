"""Settings of a Xero target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class XeroSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The organisation ("tenant") every call is made for: header ``xero-tenant-id``. When neither this nor
    # the credential document holds one, the connector asks GET /connections once and stores the answer.
    tenant_id: str | None = None
    token_url: str = "https://identity.xero.com/connect/token"
    connections_url: str = "https://api.xero.com/connections"
    # Xero's documented limits per tenant (developer.xero.com/documentation/guides/oauth2/limits/):
    # 60 calls per minute, 5,000 per day, 5 calls in progress at once.
    requests_per_minute: float = Field(60, gt=0)
    requests_per_day: float = Field(5000, gt=0)
    concurrency: int = Field(5, ge=1)
    # PUT /Invoices takes several invoices per request; Xero advises at most 50 per request.
    batch_size: int = Field(50, ge=1, le=50)
