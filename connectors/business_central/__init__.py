"""Dynamics 365 Business Central (API v2.0): mapping, client, connector on the delivery engine, sandbox."""

from connectors.business_central.connector import BusinessCentralConnector as CONNECTOR
from connectors.business_central.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
