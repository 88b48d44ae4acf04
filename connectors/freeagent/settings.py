"""Settings of a FreeAgent (API v2) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FreeAgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_url: str = "https://api.freeagent.com/v2/token_endpoint"
    # FreeAgent: 120 requests/minute and 3,600/hour per user, 5 token refreshes/minute (api-discuss #744).
    requests_per_minute: float = Field(120, gt=0)
    requests_per_hour: float = Field(3600, gt=0)
    concurrency: int = Field(2, ge=1)  # FreeAgent documents none; a user's calls share one allowance
    per_page: int = Field(100, ge=1, le=100)  # FreeAgent's page size maximum
    user_agent: str = Field("Ledgerwire", min_length=1)  # FreeAgent requires a User-Agent naming the app
