"""FreshBooks (the accounting API): mapping, client, connector on the delivery engine, sandbox."""

from connectors.freshbooks.connector import FreshBooksConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# FreshBooks publishes no limit; the sandbox stands in with our own default (60 requests/minute), which would
# stretch the spine's end-to-end workload and the demo to many minutes: they build the sandbox with this (the
# connector's limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 1200}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
