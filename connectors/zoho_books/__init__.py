"""Zoho Books (API v3): mapping, client, connector, and a sandbox built from Zoho's public API docs."""

from connectors.zoho_books.connector import ZohoBooksConnector as CONNECTOR
from connectors.zoho_books.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
