"""KashFlow (SOAP API, WSDL of 2017): mapping, client, connector on the delivery engine, sandbox."""

from connectors.kashflow.connector import KashFlowConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
