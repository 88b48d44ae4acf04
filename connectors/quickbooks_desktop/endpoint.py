"""The QuickBooks Web Connector endpoint's guard: what stands between the network and the SOAP service.

* Request size: a body over ``max_request_bytes`` is answered 413 (by its Content-Length before reading,
  or as soon as the streamed body passes the limit) and never parsed.
* ``authenticate``: the login is checked here first, in constant time on bytes (``soap.credentials_match``),
  with throttling per username and per client address — ``auth_free_failures`` failures are free, then each
  further attempt within ``base * 2^(failures - free)`` seconds (capped at ``auth_max_delay_s``) of the last
  failure is refused without looking at the password. A refusal answers as the WSDL says (``nvu``, "not a
  valid user"); it is logged (target, reason — never the username or password) and counted in
  ``ledgerwire_qbwc_auth_refusals_total``. Only a login that passes reaches the connector's service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool

from connectors.quickbooks_desktop import soap

log = structlog.get_logger(__name__)


@dataclass
class AuthThrottle:
    """Consecutive authenticate failures per key ("user:…" / "addr:…") and when the last one happened."""

    free_failures: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, key: str) -> float:
        """Seconds before ``key`` may try again (0 = now)."""
        with self._lock:
            count, last = self._failures.get(key, (0, 0.0))
        if count < self.free_failures:
            return 0.0
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (count - self.free_failures))
        return max(0.0, last + delay - self.clock())

    def failed(self, key: str) -> None:
        with self._lock:
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, self.clock())
            if len(self._failures) > 100_000:  # bounded memory under a spray of made-up usernames
                oldest = sorted(self._failures.items(), key=lambda item: item[1][1])[:50_000]
                for old_key, _ in oldest:
                    del self._failures[old_key]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class RequestTooLarge(Exception):
    pass


class WebConnectorGuard:
    """ASGI middleware around one target's SOAP service (``connector.asgi_app()``)."""

    def __init__(self, app: Any, target: str, credentials: Callable[[], dict[str, Any]], default_username: str,
                 max_request_bytes: int, throttle: AuthThrottle, behind_proxy: bool = False,
                 on_refusal: Callable[[str, str], None] | None = None) -> None:
        self.app = app
        self.target = target
        self.credentials = credentials
        self.default_username = default_username
        self.max_request_bytes = max_request_bytes
        self.throttle = throttle
        self.behind_proxy = behind_proxy
        self.on_refusal = on_refusal

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_request_bytes:
            await self._too_large(send)
            return
        try:
            body = await self._read_body(receive)
        except RequestTooLarge:
            await self._too_large(send)
            return
        if scope.get("method") == "POST" and b"authenticate" in body:
            refusal = await run_in_threadpool(self._check_login, body, self._client_address(scope, headers))
            if refusal is not None:
                payload = soap.envelope("authenticateResponse", [("authenticateResult", ["", "nvu"])])
                await _respond(send, 200, payload, b"text/xml; charset=utf-8")
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise RequestTooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    def _client_address(self, scope, headers: dict[bytes, bytes]) -> str:
        if self.behind_proxy and b"x-forwarded-for" in headers:
            # The right-most hop is the one our own proxy appended; anything left of it the client wrote.
            return headers[b"x-forwarded-for"].decode("latin-1").split(",")[-1].strip()
        client = scope.get("client")
        return client[0] if client else "unknown"

    def _check_login(self, body: bytes, address: str) -> str | None:
        """None when the login may proceed to the service, else the refusal's reason."""
        try:
            operation, params = soap.parse_request(body)
        except Exception:  # noqa: BLE001 - malformed XML: the service answers its own fault
            return None
        if operation != "authenticate":
            return None
        username = params.get("strUserName", "")
        keys = (f"user:{username}", f"addr:{address}")
        if any(self.throttle.wait_s(key) > 0 for key in keys):
            return self._refuse("throttled")
        stored = self.credentials() or {}
        if soap.credentials_match(username, params.get("strPassword", ""),
                                  str(stored.get("username", self.default_username)), str(stored.get("password", ""))):
            self.throttle.succeeded(*keys)
            return None
        for key in keys:
            self.throttle.failed(key)
        return self._refuse("bad_credentials")

    def _refuse(self, reason: str) -> str:
        log.warning("qbwc_authenticate_refused", target=self.target, reason=reason)
        if self.on_refusal is not None:
            self.on_refusal(self.target, reason)
        return reason

    async def _too_large(self, send) -> None:
        log.warning("qbwc_request_too_large", target=self.target, limit=self.max_request_bytes)
        await _respond(send, 413, b"request body too large", b"text/plain; charset=utf-8")


def guarded_endpoint(app: Any, target: Any, credentials: Any, web: Any) -> WebConnectorGuard:
    """``app`` (the target's SOAP service) behind the guard configured by ``web`` (``WebConnectorConfig``);
    ``credentials`` is the target's credential store (its ``get`` is read on each login)."""
    from connectors.metrics import QBWC_AUTH_REFUSALS

    throttle = AuthThrottle(web.auth_free_failures, web.auth_base_delay_s, web.auth_max_delay_s)
    return WebConnectorGuard(app, target.name, credentials.get,
                             default_username=str(target.settings.get("username", "ledgerwire")),
                             max_request_bytes=web.max_request_bytes, throttle=throttle,
                             behind_proxy=web.behind_proxy,
                             on_refusal=lambda name, reason: QBWC_AUTH_REFUSALS.labels(name, reason).inc())


async def _respond(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["AuthThrottle", "WebConnectorGuard", "guarded_endpoint"]
