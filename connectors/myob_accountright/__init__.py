"""MYOB AccountRight (API v2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.myob_accountright.connector import MyobAccountRightConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# MYOB's 8 calls/second per API key (the sandbox's default) would stretch the spine's end-to-end workload and
# the demo; they build the sandbox with this (the connector's limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"per_second_limit": 40}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
