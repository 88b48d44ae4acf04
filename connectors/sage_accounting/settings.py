"""Settings of a Sage Business Cloud Accounting (API v3.1) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The business every request acts on (``X-Business``). Unset: found through ``GET /businesses`` when the
    # grant reaches exactly one business; with several it must be set (Sage would otherwise pick the user's
    # "lead" business, which can change).
    business_id: str | None = Field(None, min_length=1)
    token_url: str = "https://oauth.accounting.sage.com/token"
    # 100 requests/minute and 2,500/day per business: third-party figures (no Sage page states them).
    requests_per_minute: float = Field(100, gt=0)
    requests_per_day: float = Field(2500, gt=0)
    concurrency: int = Field(4, ge=1)  # Sage documents no concurrency limit
    items_per_page: int = Field(200, ge=1, le=200)  # Sage's page size maximum
    void_reason: str = Field("Voided in the shop's system", min_length=1)  # required by Sage to void
