"""Settings of an Oracle Fusion Cloud Receivables target (``targets[].settings`` in the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OracleErpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Reference data Oracle requires to exist (its prerequisites: business unit, transaction source and type,
    # payment terms; receipt methods per payment method are ``mapping.payment_accounts``); named exactly as set up in Receivables.
    business_unit: str = Field(min_length=1, max_length=240)
    transaction_source: str = Field("Manual", min_length=1)  # must number manually: ours is the shop's number
    invoice_type: str = Field("Invoice", min_length=1)
    credit_memo_type: str = Field("Credit Memo", min_length=1)
    payment_terms: str = Field("IMMEDIATE", min_length=1)
    tax_regime: str = Field(min_length=1)  # the regime of the manual tax lines (``mapping.tax_codes``: rate codes)
    # "basic": an integration user (credentials ``username``/``password``); "oauth": client credentials through
    # the identity domain (``client_id``/``client_secret``; ``token_url`` required).
    auth: Literal["basic", "oauth"] = "basic"
    token_url: str | None = None
    scope: str | None = None
    rest_framework_version: str = "4"  # 4+: errors answer as JSON with ``o:errorDetails``
    # Oracle publishes no request limit for Fusion REST (fair use); our own pacing.
    requests_per_minute: float = Field(600, gt=0)
    concurrency: int = Field(4, ge=1)
    page_size: int = Field(100, ge=1, le=500)
