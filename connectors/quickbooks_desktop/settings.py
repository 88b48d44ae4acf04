"""Settings of a QuickBooks Desktop target (``targets[].settings``): who the Web Connector logs in as, the
.qwc identity, the newest qbXML version spoken, and the company's sales-tax item used on every invoice."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QbdSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field("ledgerwire", min_length=1)  # the .qwc UserName; the password is in the credentials
    owner_id: str = "{57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}"  # .qwc OwnerID (GUID)
    file_id: str = "{90A44FB5-33D9-4815-AC85-BC87A7E7D1EB}"  # .qwc FileID (GUID)
    # The newest qbXML version to speak: a session speaks the highest both sides support (qbwc.negotiated).
    qbxml_version: str = Field("16.0", pattern=r"^(13\.0|16\.0)$")
    company_file: str = ""  # "" = the company file open in QuickBooks (authenticate's second element)
    # The invoice-level sales-tax item: a 0 % item, so QuickBooks adds nothing of its own and the shop's
    # tax amounts travel as sales-tax item lines (one per component).
    invoice_tax_item: str = Field("Shop Tax Lines", max_length=31)
    lease_s: float = Field(120.0, gt=0)  # how long a QBWC session owns an invoice between request and answer
    run_every_minutes: int = Field(1, ge=1)
