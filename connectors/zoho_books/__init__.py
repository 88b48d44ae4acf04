"""Zoho Books (API v3): mapping, client, connector, and a sandbox built from Zoho's public API docs."""

from connectors.zoho_books.connector import ZohoBooksConnector as CONNECTOR
from connectors.zoho_books.sandbox import Sandbox

# The end-to-end test's workload needs more than Zoho's documented 100 requests/minute to finish in time.
E2E_SANDBOX_OPTIONS = {"api_per_minute": 1000}

__all__ = ["CONNECTOR", "Sandbox", "E2E_SANDBOX_OPTIONS"]
