"""Oracle Fusion Cloud Receivables (REST, 11.13.18.05): mapping, client, connector on the delivery engine, sandbox."""

from connectors.oracle_erp.connector import OracleErpConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__all__ = ["CONNECTOR", "Sandbox"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
