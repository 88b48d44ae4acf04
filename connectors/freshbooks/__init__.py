"""FreshBooks (the accounting API): mapping, client, connector on the delivery engine, sandbox."""

from connectors.freshbooks.connector import FreshBooksConnector as CONNECTOR
from connectors.freshbooks.sandbox import Sandbox

# FreshBooks publishes no limit; the sandbox stands in with our own default (60 requests/minute), which would
# stretch the spine's end-to-end workload and the demo to many minutes: they build the sandbox with this (the
# connector's limiter follows the sandbox through target_config()).
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 1200}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]
