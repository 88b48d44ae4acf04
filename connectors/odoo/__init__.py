"""Odoo: mapping (canonical → account.move / account.payment.register values), client (XML-RPC
execute_kw over PlatformHttp with exact-Decimal marshalling), connector, sandbox."""

from connectors.odoo.connector import OdooConnector as CONNECTOR
from connectors.odoo.sandbox import Sandbox

__all__ = ["CONNECTOR", "Sandbox"]
