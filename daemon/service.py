"""The daemon's HTTP side and its service-manager integration.

Two listeners. The metrics listener (``http.host``/``http.port``, plain HTTP, nothing secret): ``/metrics``
(Prometheus), ``/healthz`` (liveness: every loop alive), ``/readyz`` (readiness: started and connected —
every loop alive, Kafka and the ledger database reachable; a hot standby that holds no partition is ready
too, and ``/readyz`` shows what it is active for), and the bookkeeper's console under ``/console`` when
enabled. The Web Connector listener (``web_connector.*``, TLS or behind a proxy): each pull connector's own
endpoint (the QuickBooks Web Connector SOAP service) under ``/connectors/<target>/``. systemd's
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


def build_web_connector_app(connector_apps: dict[str, object]) -> Starlette:
    return Starlette(routes=[Mount(f"/connectors/{name}", app=app) for name, app in connector_apps.items()])


def build_http_app(liveness: Callable[[], dict[str, bool]], readiness: Callable[[], dict[str, bool]],
                   activity: Callable[[], dict[str, bool]] = dict, console_app: object | None = None) -> Starlette:
    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        checks = liveness()
        return JSONResponse({"ok": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)

    async def readyz(_: Request) -> Response:
        checks = readiness()
        # "active": which loops hold partitions now (false on a hot standby); informative, not a condition.
        return JSONResponse({"ok": all(checks.values()), "checks": checks, "active": activity()},
                            status_code=200 if all(checks.values()) else 503)

    routes = [Route("/metrics", metrics_endpoint), Route("/healthz", healthz), Route("/readyz", readyz)]
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
