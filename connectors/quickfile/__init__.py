"""QuickFile (JSON API v1.2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.quickfile.connector import QuickFileConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# QuickFile's daily allowance (1,000 calls per account, the sandbox's default) would end the spine's end-to-end
# workload and the demo part-way; they build the sandbox with this (the connector's limiter follows the sandbox
# through target_config()).
LOCAL_SANDBOX_OPTIONS = {"day_limit": 100_000}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
