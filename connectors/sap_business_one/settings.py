"""Settings of an SAP Business One Service Layer target (``targets[].settings`` in the config). The company
database, user name and password are the stored credentials (``company_db``, ``username``, ``password``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SapBusinessOneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The G/L account shop payments are received on (IncomingPayments ``TransferAccount``), e.g. the bank's.
    transfer_account: str = Field(min_length=1, max_length=15)
    # The Service Layer runs on the customer's server and documents no rate limit: stay gentle with it.
    requests_per_minute: float = Field(600, gt=0)
    concurrency: int = Field(2, ge=1, le=8)
    page_size: int = Field(100, ge=1, le=1000)  # ``Prefer: odata.maxpagesize`` (the server's default is 20)
