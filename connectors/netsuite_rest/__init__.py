"""NetSuite through SuiteTalk REST web services (record API v1, SuiteQL): connector on the delivery engine,
sandbox. The mapping is NetSuite's, shared with the SOAP connector (``connectors.netsuite_common``)."""

from connectors.netsuite_rest.connector import NetSuiteRestConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
