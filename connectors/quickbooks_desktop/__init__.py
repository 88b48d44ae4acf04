"""QuickBooks Desktop through the QuickBooks Web Connector (pull): qbXML mapping, the QBWC SOAP service,
the queue/state store, the sandbox (company file + simulated Web Connector), the .qwc file."""

from connectors.quickbooks_desktop.connector import QuickBooksDesktopConnector as CONNECTOR
from connectors.quickbooks_desktop.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
