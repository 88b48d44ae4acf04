"""Xero: mapping (canonical → Accounting API 2.0 JSON), client, connector, sandbox."""

from connectors.xero.connector import XeroConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

# Xero's real limit (60 calls/minute per tenant, the sandbox's default) makes the spine's end-to-end
# workload take ~10 minutes; the demo and the end-to-end test build the sandbox with these options (the connector's
# limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 600}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]
