"""Patriot Accounting: no API — an export connector writing Patriot's import files and a bookkeeper's worksheet."""

from connectors.patriot.connector import PatriotExportConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__all__ = ["CONNECTOR", "Sandbox"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
