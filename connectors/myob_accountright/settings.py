"""Settings of a MYOB AccountRight (API v2) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MyobSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The company file every request acts on: its id as in the list at ``GET /accountright/`` (the target's
    # base_url is ``https://api.myob.com/accountright``; a local API server's works the same).
    company_file_id: str = Field(min_length=1)
    token_url: str = "https://secure.myob.com/oauth2/v1/authorize"  # the SDK's OAuthRequestUri
    # 8 calls/s and 1,000,000/day per API key (a MYOB staff answer; older pages said 5/s and 50,000/day).
    requests_per_second: float = Field(8, gt=0)
    requests_per_day: float = Field(1_000_000, gt=0)
    concurrency: int = Field(4, ge=1)
    page_size: int = Field(400, ge=1, le=1000)  # OData ``$top``: at most 1,000
