"""Reckon One (API v2): mapping, client, connector on the delivery engine, sandbox."""

from connectors.reckon_one.connector import ReckonOneConnector as CONNECTOR
from connectors.reckon_one.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
