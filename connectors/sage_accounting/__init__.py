"""Sage Business Cloud Accounting (API v3.1): mapping, client, connector on the delivery engine, sandbox."""

from connectors.sage_accounting.connector import SageAccountingConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

# Sage's limits (100 requests/minute, 2,500/day per business; the sandbox's defaults) would stretch the spine's
# end-to-end workload and the demo to many minutes; they build the sandbox with these (the connector's limiter
# follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 1200, "day_limit": 100_000}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]
