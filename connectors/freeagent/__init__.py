"""FreeAgent (API v2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.freeagent.connector import FreeAgentConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# FreeAgent's limits (120 requests/minute, 3,600/hour per user; the sandbox's defaults) would stretch the
# spine's end-to-end workload and the demo to many minutes; they build the sandbox with these (the connector's
# limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 2400, "hour_limit": 100_000}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
