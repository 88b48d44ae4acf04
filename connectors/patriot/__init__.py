"""Patriot Accounting: no API — an export connector writing Patriot's import files and a bookkeeper's worksheet."""

from connectors.patriot.connector import PatriotExportConnector as CONNECTOR
from connectors.patriot.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
