"""NetSuite SuiteTalk SOAP (2023_2): the shared NetSuite mapping rendered as SuiteTalk XML, client, connector on
the delivery engine, sandbox."""

from connectors.netsuite_soap.connector import NetSuiteSoapConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
