"""Xero: mapping (canonical → Accounting API 2.0 JSON), client, connector, sandbox."""

from connectors.xero.connector import XeroConnector as CONNECTOR
from connectors.xero.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
