"""Reckon One (API v2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.reckon_one.connector import ReckonOneConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__all__ = ["CONNECTOR", "Sandbox"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
