"""Settings of a Dynamics 365 Business Central (API v2.0) target (``targets[].settings`` in the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BusinessCentralSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1)  # the Microsoft Entra tenant (in the API URL and the token URL)
    environment: str = Field("production", min_length=1)
    # The company every request acts on; unset: the only company ``GET companies`` lists (never a guess).
    company_id: str | None = Field(None, min_length=1)
    # The customer payment journal (a batch of the cash receipt template) payments are entered in, by code.
    payment_journal: str = Field("CASHRCPT", min_length=1)
    # The G/L account a non-taxable line posts Business Central's tax rounding difference on (it rounds sales tax
    # once per document and jurisdiction, the shop per line and component), so the invoice's total is the shop's:
    # the sales tax payable account keeps the tax booked equal to the tax charged. Unset: no line, the invoice
    # keeps Business Central's total (difference logged and recorded).
    tax_rounding_account: str | None = Field(None, min_length=1, max_length=20)
    token_url: str | None = None  # default: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
    scope: str = "https://api.businesscentral.dynamics.com/.default"
    # Per user (the app's service principal): 6,000 requests per 5-minute sliding window, 5 at a time.
    requests_per_five_minutes: int = Field(6000, gt=0)
    concurrency: int = Field(5, ge=1, le=5)
