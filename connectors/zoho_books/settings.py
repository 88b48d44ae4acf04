"""Settings of a Zoho Books target (``targets[].settings`` in the config).

Zoho runs separate data centres; an organisation lives in one of them and both its API host and its
OAuth (accounts) host follow from it. Table from Zoho's OAuth page (https://www.zoho.com/books/api/v3/oauth/)
and its API root page (https://www.zoho.com/books/api/v3/introduction/).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# data centre -> (API root, token endpoint)
DATA_CENTRES: dict[str, tuple[str, str]] = {
    "com": ("https://www.zohoapis.com/books/v3", "https://accounts.zoho.com/oauth/v2/token"),
    "eu": ("https://www.zohoapis.eu/books/v3", "https://accounts.zoho.eu/oauth/v2/token"),
    "in": ("https://www.zohoapis.in/books/v3", "https://accounts.zoho.in/oauth/v2/token"),
    "com.au": ("https://www.zohoapis.com.au/books/v3", "https://accounts.zoho.com.au/oauth/v2/token"),
    "jp": ("https://www.zohoapis.jp/books/v3", "https://accounts.zoho.jp/oauth/v2/token"),
    "ca": ("https://www.zohoapis.ca/books/v3", "https://accounts.zohocloud.ca/oauth/v2/token"),
    "sa": ("https://www.zohoapis.sa/books/v3", "https://accounts.zoho.sa/oauth/v2/token"),
    "com.cn": ("https://www.zohoapis.com.cn/books/v3", "https://accounts.zoho.com.cn/oauth/v2/token"),
}


class ZohoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization_id: str = Field(min_length=1, pattern=r"^[0-9]+$")
    data_centre: str = "com"
    token_url: str | None = None  # default: the data centre's accounts host
    # Zoho's documented limits: 100 requests/minute per organisation (whatever the plan), a daily cap by
    # plan (1,000 Free … 10,000 on the top plans; set yours to have the client respect it) and a cap on
    # concurrent calls (https://www.zoho.com/books/api/v3/introduction/#api-call-limit).
    requests_per_minute: float = 100
    requests_per_day: float | None = None
    concurrency: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _known_data_centre(self) -> "ZohoSettings":
        if self.data_centre not in DATA_CENTRES:
            raise ValueError(f"unknown data_centre {self.data_centre!r}; one of {sorted(DATA_CENTRES)}")
        return self

    def api_root(self, base_url: str | None) -> str:
        return (base_url or DATA_CENTRES[self.data_centre][0]).rstrip("/")

    def token_endpoint(self) -> str:
        return self.token_url or DATA_CENTRES[self.data_centre][1]
