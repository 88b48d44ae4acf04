"""MYOB AccountRight (API v2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.myob_accountright.connector import MyobAccountRightConnector as CONNECTOR
from connectors.myob_accountright.sandbox import Sandbox

# MYOB's 8 calls/second per API key (the sandbox's default) would stretch the spine's end-to-end workload and
# the demo; they build the sandbox with this (the connector's limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"per_second_limit": 40}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]
