"""The daemon's HTTP side and its service-manager integration.

``/metrics`` (Prometheus), ``/healthz`` (liveness: the process and its loops are alive), ``/readyz``
(readiness: the fold has rebuilt its state and every sink has its partitions), plus any connector's own
endpoint (the QuickBooks Web Connector SOAP service) under ``/connectors/<target>/``, and the
bookkeeper's console under ``/console`` when enabled. systemd's
``Type=notify`` protocol (READY=1, WATCHDOG=1, STOPPING=1) is spoken over ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route


def build_http_app(liveness: Callable[[], dict[str, bool]], readiness: Callable[[], dict[str, bool]],
                   connector_apps: dict[str, object], console_app: object | None = None) -> Starlette:
    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        checks = liveness()
        return JSONResponse({"ok": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)

    async def readyz(_: Request) -> Response:
        checks = readiness()
        return JSONResponse({"ok": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)

    routes = [Route("/metrics", metrics_endpoint), Route("/healthz", healthz), Route("/readyz", readyz)]
    routes += [Mount(f"/connectors/{name}", app=app) for name, app in connector_apps.items()]
    if console_app is not None:
        routes.append(Mount("/console", app=console_app))  # the bookkeeper's console (daemon/console)
    return Starlette(routes=routes)


def sd_notify(state: str) -> bool:
    """Send one sd_notify message; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec, when the unit has one."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
