"""Odoo: mapping (canonical → account.move / account.payment.register values), client (XML-RPC
execute_kw over PlatformHttp with exact-Decimal marshalling), connector, sandbox."""

from connectors.odoo.connector import OdooConnector as CONNECTOR
from connectors.registry import lazy_sandbox

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only

__all__ = ["CONNECTOR", "Sandbox"]
