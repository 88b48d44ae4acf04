"""QuickBooks Online: mapping (canonical → Finance.xsd JSON), client (API v3), connector, sandbox."""

from connectors.quickbooks_online.connector import QuickBooksOnlineConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
