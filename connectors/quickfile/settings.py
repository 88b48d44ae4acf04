"""Settings of a QuickFile (JSON API v1.2) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QuickFileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # QuickFile's daily call allowance per account (research notes: ~1,000/day, raisable on request; no official
    # page states it). The connector paces itself below it; the sandbox refuses beyond it.
    requests_per_day: float = Field(1000, gt=0)
    requests_per_minute: float = Field(60, gt=0)  # our pacing; QuickFile documents no per-minute limit
    concurrency: int = Field(1, ge=1)  # one in flight per account (QuickFile documents none)
    return_count: int = Field(200, ge=1, le=200)  # Search methods: ReturnCount 1-200
    # Payment_Create's PayMethod codes are account-specific (Payment_GetPayMethods); shop method -> code.
    pay_methods: dict[str, str] = Field(default_factory=lambda: {
        "card": "CCARD", "cash": "CASH", "check": "CHEQUE", "eft": "BACS"})
