"""Settings of an Odoo target (``targets[].settings``). The API key is a secret: it comes from the
credential document (``{"api_key": "…"}``), never from here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OdooSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # the Odoo server, e.g. https://acme.odoo.com; default: the target's base_url
    db: str = Field(min_length=1)
    login: str = Field(min_length=1)  # the user the API key belongs to
    # account.payment field that holds the register wizard's "communication": ``memo`` since 18.0,
    # ``ref`` up to 17.0. Our payment reference (LW<id>) is looked up there on retries.
    payment_memo_field: Literal["memo", "ref"] = "memo"
    # Odoo (Odoo Online / Odoo.sh / on-premise) documents no request-rate quota for the external API.
    # Each XML-RPC call holds one of the server's few HTTP workers (Odoo.sh's smaller plans run 2–4),
    # and an invoice delivery is several calls, so we keep a modest cap that leaves workers for the
    # shop's own users: at most 3 calls in flight and 10 per second per target.
    concurrency: int = Field(3, ge=1)
    requests_per_second: float = Field(10, gt=0)
