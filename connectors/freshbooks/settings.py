"""Settings of a FreshBooks target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FreshBooksSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The short alphanumeric account id accounting paths embed (not the numeric business id). Unset: found
    # through ``GET /auth/api/v1/users/me`` when the grant reaches exactly one business.
    account_id: str | None = Field(None, min_length=1)
    token_url: str = "https://api.freshbooks.com/auth/oauth/token"
    # FreshBooks publishes no rate limit (it answers 429 when exceeded): these defaults are OURS, conservative.
    requests_per_minute: float = Field(60, gt=0)
    concurrency: int = Field(2, ge=1)
    per_page: int = Field(100, ge=1, le=100)  # FreshBooks silently caps pages at 100
