"""Zoho Books (API v3): mapping, client, connector, and a sandbox built from Zoho's public API docs."""

from connectors.zoho_books.connector import ZohoBooksConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

# The demo and the end-to-end test need more than Zoho's documented 100 requests/minute to finish in minutes.
LOCAL_SANDBOX_OPTIONS = {"api_per_minute": 1000}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]
