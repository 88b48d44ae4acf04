"""SAP Business One Service Layer (OData v3, /b1s/v1): mapping, client, connector on the delivery engine, sandbox."""

from connectors.sap_business_one.connector import SapBusinessOneConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# The Service Layer documents no request rate limit (it is installed on the customer's own server): nothing to
# relax for the end-to-end run and the demo.
LOCAL_SANDBOX_OPTIONS: dict[str, int] = {}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
