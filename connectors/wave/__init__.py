"""Wave (public GraphQL API): SDL, mapping, client, connector on the delivery engine, sandbox."""

from connectors.wave.connector import WaveConnector as CONNECTOR
from connectors.registry import lazy_sandbox

# Wave documents no request limit; the connector's cautious default (60/minute, the sandbox's too) would
# stretch the end-to-end workload and the demo to many minutes.
LOCAL_SANDBOX_OPTIONS = {"minute_limit": 6000}

__all__ = ["CONNECTOR", "Sandbox", "LOCAL_SANDBOX_OPTIONS"]

__getattr__ = lazy_sandbox(__name__)  # ``Sandbox``: loaded by tests and the demo only
