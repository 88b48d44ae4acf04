"""Settings of a KashFlow target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

LIVE_WSDL = "https://securedwebapp.com/api/service.asmx?WSDL"


class KashFlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where the client is generated from: KashFlow's live WSDL by default (a local copy's path works too).
    wsdl: str = Field(LIVE_WSDL, min_length=1)
    # KashFlow documents no request limit; a gentle pace and few parallel calls per account.
    requests_per_minute: float = Field(120, gt=0)
    concurrency: int = Field(2, ge=1)
    # Look-ups by our reference scan invoices by date (the SOAP API has no search by reference): this far back.
    lookup_days: int = Field(730, ge=1)
    pay_method: int = Field(1, ge=0)  # KashFlow's payment method id (GetInvPayMethods) for shop payments
