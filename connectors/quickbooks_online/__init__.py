"""QuickBooks Online: mapping (canonical → Finance.xsd JSON), client (API v3), connector, sandbox."""

from connectors.quickbooks_online.connector import QuickBooksOnlineConnector as CONNECTOR
from connectors.quickbooks_online.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
