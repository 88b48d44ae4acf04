"""What every platform sandbox shares: serving an ASGI app on loopback, OAuth2 token issuing with
expiry and rotating refresh tokens, rate limiting answered as the platform answers, and fault injection
(500s, 429s, timeouts, slow answers) for chaos tests. Each platform's sandbox builds on these.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel

from connectors.serving import RunningServer as _ServingServer
from connectors.serving import free_port  # noqa: F401 - part of the kit every sandbox uses

# Set per request by ``_AnswerDropper``: a one-element flag a fault raises to lose the request's answer.
_ANSWER_LOST: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("sandbox_answer_lost", default=None)


class _AnswerDropper:
    """ASGI wrapper: when a fault marks the request's answer lost, the client gets the status line and then a
    closed connection — a write applied whose answer never arrives, as certain as a timeout (the client cannot
    know what happened) but immediate, so the fault sweeps need no race between a sleep and a client timeout."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lost = [False]
        _ANSWER_LOST.set(lost)

        async def send_unless_lost(message) -> None:
            if not lost[0]:
                await send(message)

        await self.app(scope, receive, send_unless_lost)
        if lost[0]:  # uvicorn closes a connection whose answer was started and never completed
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


class RunningServer(_ServingServer):
    """A sandbox's server: ``connectors.serving.RunningServer`` with the answer-dropping fault wrapper."""

    def __init__(self, app, port: int | None = None, **kwargs: Any) -> None:
        super().__init__(_AnswerDropper(app), port=port, **kwargs)


@dataclass
class TokenIssuer:
    """An OAuth2 authorisation server's token endpoint logic (refresh_token grant).

    Access tokens expire after ``access_ttl_s``; each refresh rotates the refresh token and the old one
    dies at once (single use, as Xero and QuickBooks do) unless ``rotate`` is False.
    """

    clients: dict[str, str] = field(default_factory=dict)  # client_id -> client_secret
    access_ttl_s: float = 3600.0
    rotate: bool = True
    _access: dict[str, float] = field(default_factory=dict)  # token -> expiry
    _refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> client_id
    refresh_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register_client(self, client_id: str, client_secret: str) -> str:
        """Register a client and return an initial refresh token for it (the 'consent' step)."""
        self.clients[client_id] = client_secret
        token = "rt-" + secrets.token_urlsafe(24)
        self._refresh[token] = client_id
        return token

    def refresh(self, client_id: str, client_secret: str, refresh_token: str) -> dict | None:
        """Return the token response, or None for invalid_client / invalid_grant."""
        with self._lock:
            if self.clients.get(client_id) != client_secret or self._refresh.get(refresh_token) != client_id:
                return None
            access = "at-" + secrets.token_urlsafe(24)
            self._access[access] = time.time() + self.access_ttl_s
            new_refresh = refresh_token
            if self.rotate:
                del self._refresh[refresh_token]
                new_refresh = "rt-" + secrets.token_urlsafe(24)
                self._refresh[new_refresh] = client_id
            self.refresh_count += 1
            return {"access_token": access, "token_type": "bearer", "expires_in": int(self.access_ttl_s),
                    "refresh_token": new_refresh}

    def valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        expiry = self._access.get(authorization[len("Bearer "):])
        return expiry is not None and expiry > time.time()

    def expire_all(self) -> None:
        """Test hook: every access token expires now (the next call must refresh)."""
        for token in self._access:
            self._access[token] = 0.0


def new_client(issuer: TokenIssuer) -> tuple[str, str, str]:
    """A registered OAuth client for ``seed_credentials``: its id, secret and first refresh token."""
    client_id, client_secret = secrets.token_hex(10), secrets.token_hex(20)
    return client_id, client_secret, issuer.register_client(client_id, client_secret)


async def refresh_grant(issuer: TokenIssuer, request: Any, extra: Callable[[dict], dict] | None = None, *,
                        basic_only: int | None = None) -> Any:
    """A token endpoint's refresh_token grant, as OAuth2 servers answer it: 400 ``unsupported_grant_type`` for
    another grant, 400 ``invalid_grant`` for a refresh token unknown, used or another client's, else the new
    tokens with what ``extra(answer)`` adds or replaces (the platform's own fields). The client authenticates
    in the form body or by HTTP Basic; ``basic_only``: by HTTP Basic only, else ``invalid_client`` with that
    status."""
    from starlette.responses import JSONResponse

    form = await request.form()
    client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    header = request.headers.get("authorization", "")
    if basic_only is not None or header.startswith("Basic "):
        try:
            client_id, client_secret = base64.b64decode(header[6:]).decode().split(":", 1)
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "invalid_client"}, status_code=basic_only or 400)
    if form.get("grant_type") != "refresh_token":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    answer = issuer.refresh(client_id, client_secret, str(form.get("refresh_token", "")))
    if answer is None:
        return JSONResponse({"error": "invalid_grant"}, status_code=400)
    return JSONResponse(answer | (extra(answer) if extra else {}))


class WindowLimit:
    """Sliding-window request counter: at most ``limit`` requests per ``window_s`` per key."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self.breaches = 0

    def hit(self, key: str) -> float | None:
        """Count a request; None if allowed, else seconds until the window has room."""
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.window_s:
                q.popleft()
            if len(q) >= self.limit:
                self.breaches += 1
                return q[0] + self.window_s - now
            q.append(now)
            return None


@dataclass
class Faults:
    """Fault injection for chaos tests: probabilities per request, decided by a seeded RNG."""

    error_500: float = 0.0
    error_429: float = 0.0
    timeout: float = 0.0  # hang past the client's timeout (the write may still be applied: see apply_then_hang)
    slow_s: float = 0.0
    apply_then_hang: bool = True
    hang_s: float = 30.0  # how long a "timeout" answer is held back (longer than the client's timeout)
    # A "timeout" closes the connection at once instead of holding the answer back: the same lost answer for
    # the client, without depending on its timeout firing first (the conformance suite's sweeps use it).
    drop_answer: bool = False
    seed: int = 7
    # Deterministic triggers for the conformance suite's fault sweeps: every sandbox calls ``draw`` once per
    # write (and per batch request), so ``writes`` counts them; the write numbered ``at_write`` gets
    # ``at_write_fault`` ("timeout" = applied, then no answer in time; "500"; "429") instead of a random draw.
    at_write: int | None = None
    at_write_fault: str = "timeout"
    writes: int = 0

    def __post_init__(self) -> None:
        import random

        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def fault_at(self, write: int, fault: str = "timeout") -> None:
        """Give the ``write``-th write from now ``fault`` (deterministic; once)."""
        with self._lock:
            self.at_write, self.at_write_fault = self.writes + write, fault

    def draw(self) -> str | None:
        with self._lock:
            self.writes += 1
            if self.at_write is not None and self.writes == self.at_write:
                self.at_write = None
                return self.at_write_fault
            r = self._rng.random()
        if r < self.error_500:
            return "500"
        if r < self.error_500 + self.error_429:
            return "429"
        if r < self.error_500 + self.error_429 + self.timeout:
            return "timeout"
        return None

    async def hang(self, seconds: float | None = None) -> None:
        lost = _ANSWER_LOST.get()
        if self.drop_answer and seconds is None and lost is not None:
            lost[0] = True
            return
        await asyncio.sleep(self.hang_s if seconds is None else seconds)


class BookedInvoice(BaseModel):
    """A platform-neutral view of one invoice document in a sandbox's books (for end-to-end checks)."""

    number: str  # the shop's invoice number as the platform stores it (DocNumber, InvoiceNumber, RefNumber…)
    external_id: str
    voided: bool  # voided, cancelled or deleted at the platform
    total: Decimal
    tax_total: Decimal
    line_count: int
    payments_applied: Decimal  # sum of live (not voided/deleted) payment amounts applied to it
    payment_count: int  # live payments applied to it
    currency: str | None = None  # ISO code where the sandbox books currencies (None: the company's, not modelled)


class Sandbox(Protocol):
    """What every platform sandbox module offers as ``Sandbox`` (demo, end-to-end tests, chaos tests)."""

    app: Any  # the ASGI app
    faults: Faults

    def serve(self, port: int | None = None) -> RunningServer: ...

    def seed_credentials(self) -> dict[str, Any]:
        """Register an app/company and return the credential document the connector starts from."""
        ...

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        """A TargetConfig dict (platform, base_url, settings, mapping) that works against this sandbox."""
        ...

    def booked_invoices(self) -> list[BookedInvoice]:
        """Every invoice document in the books, duplicates included (so a test can count them)."""
        ...

    def rate_limit_breaches(self) -> int:
        """Requests that arrived over one of the platform's request limits (and were answered 429), summed over
        every limit window, daily quota and concurrency cap it enforces; 0 for a platform that documents none.
        Injected faults (``Faults.error_429``) are not breaches."""
        ...
