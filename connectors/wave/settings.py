"""Settings of a Wave target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WaveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Every write names its business (``businessId`` in the input). Unset: the only business the grant reaches.
    business_id: str | None = Field(None, min_length=1)
    token_url: str = "https://api.waveapps.com/oauth2/token/"
    # Wave publishes no request limit: a cautious default (overridable per target).
    requests_per_minute: float = Field(60, gt=0)
    concurrency: int = Field(2, ge=1)
    page_size: int = Field(50, ge=1, le=100)
    # Wave has no credit note: a refund's credit is applied to its invoice by a manual payment through this
    # account (Wave's "Customer credit" account; Wave's help: record a payment with method "Customer credit").
    customer_credit_account_id: str = Field(..., min_length=1)
