"""Serving an ASGI app on a local port in a background thread: the daemon's own listeners (metrics, console,
the Web Connector endpoint) and the sandboxes of tests and the demo alike. Production code imports it from
here, never from ``connectors.sandbox_kit`` (which re-exports it for the sandboxes)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """An ASGI app served by uvicorn in a background thread (127.0.0.1 unless told); TLS when given a
    certificate and key (the daemon's Web Connector listener)."""

    def __init__(self, app, port: int | None = None, host: str = "127.0.0.1", name: str = "sandbox",
                 certfile=None, keyfile=None) -> None:
        self.port = port or free_port()
        self.host = host
        self.url = f"{'https' if certfile else 'http'}://{host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off",
                                access_log=False, ssl_certfile=str(certfile) if certfile else None,
                                ssl_keyfile=str(keyfile) if keyfile else None)
        self._server = uvicorn.Server(config)
        self._name = name
        self._thread = threading.Thread(target=self._server.run, name=f"{name}-{self.port}", daemon=True)

    def start(self) -> "RunningServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self._name} on {self.url} did not start (port in use, or unreadable TLS files?)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "RunningServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
