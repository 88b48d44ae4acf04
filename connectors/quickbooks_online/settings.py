"""Settings of a QuickBooks Online target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QboSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    realm_id: str = Field(min_length=1)  # the company ("realm") id
    token_url: str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    minor_version: str = "75"
    # Intuit's documented throttles per realm: 500 requests/minute, 10 concurrent requests.
    requests_per_minute: float = 500
    concurrency: int = 10
    # and 40 batch requests per minute (each up to 30 operations), counted apart from the 500.
    batch_requests_per_minute: float = 40
