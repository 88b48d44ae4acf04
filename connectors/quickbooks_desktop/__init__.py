"""QuickBooks Desktop through the QuickBooks Web Connector (pull): qbXML mapping, the QBWC SOAP service,
the queue/state store, the sandbox (company file + simulated Web Connector), the .qwc file."""

from connectors.quickbooks_desktop.connector import QuickBooksDesktopConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
