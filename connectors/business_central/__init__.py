"""Dynamics 365 Business Central (API v2.0): mapping, client, connector on the delivery engine, sandbox."""

from connectors.business_central.connector import BusinessCentralConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__all__ = ["CONNECTOR", "Sandbox"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
