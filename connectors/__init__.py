"""Platform connectors. One package per platform (mapping, client, sandbox) behind ``connectors.base``."""
