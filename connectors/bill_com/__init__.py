"""Bill.com (API v3, accounts receivable): mapping, client, connector on the delivery engine, sandbox."""

from connectors.bill_com.connector import BillComConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# BILL's login limit (200 an hour, SOURCE.md) is kept by the sandbox;
# its 20,000 requests an hour already suit the end-to-end run and the demo.
LOCAL_SANDBOX_OPTIONS: dict[str, int] = {}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
