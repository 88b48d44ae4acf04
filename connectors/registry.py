"""Platform name -> connector class. Each connector package exports ``CONNECTOR``."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

from connectors.base import Connector

# platform name (as written in the config) -> package under connectors/. The first wave of issue #6
# (Xero, Zoho Books, Odoo, QuickBooks Desktop) is listed so their packages slot in; until a package
# exists, the platform is not accepted in a configuration.
PLATFORM_PACKAGES: dict[str, str] = {
    "quickbooks-online": "connectors.quickbooks_online",
    "xero": "connectors.xero",
    "zoho-books": "connectors.zoho_books",
    "odoo": "connectors.odoo",
    "quickbooks-desktop": "connectors.quickbooks_desktop",
    "sage-accounting": "connectors.sage_accounting",
    # Second to fourth waves (issues #15-#17): listed up front so connectors built in parallel never edit this file.
    "freshbooks": "connectors.freshbooks",
    "freeagent": "connectors.freeagent",
    "myob-accountright": "connectors.myob_accountright",
    "reckon-one": "connectors.reckon_one",
    "business-central": "connectors.business_central",
    "netsuite-rest": "connectors.netsuite_rest",
    "netsuite-soap": "connectors.netsuite_soap",
    "sap-business-one": "connectors.sap_business_one",
    "oracle-erp": "connectors.oracle_erp",
    "kashflow": "connectors.kashflow",
    "wave": "connectors.wave",
    "bill-com": "connectors.bill_com",
    "quickfile": "connectors.quickfile",
    "patriot": "connectors.patriot",
}


def known_platforms() -> list[str]:
    """Platforms whose connector package is present."""
    return sorted(p for p, package in PLATFORM_PACKAGES.items() if importlib.util.find_spec(package) is not None)


def connector_class(platform: str) -> type[Connector]:
    if platform not in known_platforms():
        raise KeyError(f"unknown platform {platform!r}; known: {known_platforms()}")
    package = PLATFORM_PACKAGES[platform]
    return importlib.import_module(package).CONNECTOR


def lazy_sandbox(package: str) -> Callable[[str], Any]:
    """A connector package's module ``__getattr__`` that loads its ``Sandbox`` on first use
    (``from connectors.<platform> import Sandbox`` in tests and the demo), so the daemon, which imports the
    package for ``CONNECTOR``, never loads a sandbox."""

    def module_getattr(name: str) -> Any:
        if name == "Sandbox":
            return importlib.import_module(f"{package}.sandbox").Sandbox
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return module_getattr
