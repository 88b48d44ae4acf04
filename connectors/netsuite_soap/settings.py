"""Settings of a NetSuite SuiteTalk SOAP target: the shared NetSuite settings plus where the client is generated from."""

from __future__ import annotations

from pydantic import Field

from connectors.netsuite_common.settings import NetSuiteSettings, suitetalk_host

LIVE_WSDL = "https://webservices.netsuite.com/wsdl/v2023_2_0/netsuite.wsdl"
PORT_PATH = "/services/NetSuitePort_2023_2"


class NetSuiteSoapSettings(NetSuiteSettings):
    # NetSuite's published 2023_2 WSDL by default (a local copy's path works too).
    wsdl: str = Field(LIVE_WSDL, min_length=1)
    page_size: int = Field(1000, ge=5, le=1000)  # searchPreferences pageSize (NetSuite: 5 to 1000)


def endpoint(account_id: str) -> str:
    """The account-specific SuiteTalk endpoint."""
    return f"{suitetalk_host(account_id)}{PORT_PATH}"
