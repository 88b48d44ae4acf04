"""Settings of a Reckon One (API v2) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReckonOneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The book (a GUID in every path). Unset: found through ``GET /books`` when the grant reaches exactly one.
    book_id: str | None = Field(None, min_length=1)
    token_url: str = "https://identity.reckon.com/connect/token"
    # Reckon publishes no request limit (the OpenAPI names no 429): ours, to stay a polite client.
    requests_per_minute: float = Field(120, gt=0)
    concurrency: int = Field(4, ge=1)
    per_page: int = Field(100, ge=1, le=500)
