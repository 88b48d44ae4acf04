"""Settings of a Bill.com (API v3, accounts receivable) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BillComSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # BILL's limits (developer.bill.com "API rate limits"): 20,000 requests an hour per developer key and 3
    # concurrent requests per developer key per organisation (BDC_1144 / BDC_1322).
    requests_per_hour: float = Field(20_000, gt=0)
    concurrency: int = Field(3, ge=1, le=3)
    session_idle_minutes: float = Field(35, gt=1)  # a session ends after 35 minutes without calls
    page_size: int = Field(100, ge=1, le=100)
    # BILL refuses a customer without an e-mail ("email: must not be blank"): shop customers without one get this.
    fallback_email: str | None = Field(None, min_length=3)
