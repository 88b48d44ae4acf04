"""Platform name -> connector class. Each connector package exports ``CONNECTOR``."""

from __future__ import annotations

import importlib

from connectors.base import Connector

# platform name (as written in the config) -> package under connectors/
PLATFORM_PACKAGES: dict[str, str] = {
    "quickbooks-online": "connectors.quickbooks_online",
    "xero": "connectors.xero",
    "zoho-books": "connectors.zoho_books",
    "odoo": "connectors.odoo",
    "quickbooks-desktop": "connectors.quickbooks_desktop",
}


def known_platforms() -> list[str]:
    return sorted(PLATFORM_PACKAGES)


def connector_class(platform: str) -> type[Connector]:
    try:
        package = PLATFORM_PACKAGES[platform]
    except KeyError:
        raise KeyError(f"unknown platform {platform!r}; known: {known_platforms()}") from None
    return importlib.import_module(package).CONNECTOR
