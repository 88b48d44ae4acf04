"""Who is using the console, and proof that an action came from the console's own page.

* Sessions live in the daemon's memory (a restart asks for the login again): a random id in an HttpOnly,
  SameSite=Strict cookie scoped to ``/console``, Secure behind HTTPS.
* ``password``: the configured user and its scrypt hash; failed logins are throttled per client address.
  ``proxy``: the reverse proxy's header names the user, believed only from ``trusted_proxies``.
  ``none``: the daemon refuses it unless the HTTP server listens on loopback only.
* CSRF: every session has a random token; every POST must carry it in the form (``csrf``), compared in
  constant time, and a cross-site ``Origin`` is refused outright.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

from daemon.config import AppConfig, ConsoleConfig
from daemon.console.password import verify_password

COOKIE = "ledgerwire_console"
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW_S = 300.0


@dataclass
class Session:
    id: str
    user: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    lifetime_s: float
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: str) -> Session:
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), time.monotonic() + self.lifetime_s)
        with self._lock:
            now = time.monotonic()
            for sid in [sid for sid, s in self._by_id.items() if s.expires < now]:
                del self._by_id[sid]
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None or session.expires < time.monotonic():
                self._by_id.pop(session_id, None)
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)


class ConsoleAuth:
    def __init__(self, config: AppConfig) -> None:
        self.settings: ConsoleConfig = config.console
        check_exposure(config)
        self.sessions = Sessions(self.settings.session_minutes * 60.0)
        self._failures: dict[str, list[float]] = {}
        self._failures_lock = threading.Lock()

    # -- who is it --
    def proxy_user(self, request: Request) -> str | None:
        header = self.settings.proxy_user_header
        client = request.client.host if request.client else ""
        if not header or client not in self.settings.trusted_proxies:
            return None
        user = request.headers.get(header, "").strip()
        return user or None

    def session(self, request: Request) -> tuple[Session | None, bool]:
        """The request's session; (session, created) — created sessions need their cookie set."""
        current = self.sessions.get(request.cookies.get(COOKIE))
        if self.settings.auth == "password":
            return current, False
        user = self.proxy_user(request) if self.settings.auth == "proxy" else "local"
        if user is None:
            return None, False
        if current is not None and current.user == user:
            return current, False
        return self.sessions.create(user), True

    # -- password login --
    def throttled(self, client: str) -> bool:
        now = time.monotonic()
        with self._failures_lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_FAILURE_WINDOW_S]
            self._failures[client] = recent
            return len(recent) >= LOGIN_FAILURES_ALLOWED

    def login(self, client: str, username: str, password: str) -> Session | None:
        ok = (self.settings.password_hash is not None
              and hmac.compare_digest(username.encode(), self.settings.username.encode())
              & verify_password(password, self.settings.password_hash))
        if not ok:
            with self._failures_lock:
                self._failures.setdefault(client, []).append(time.monotonic())
            return None
        return self.sessions.create(self.settings.username)

    # -- CSRF --
    @staticmethod
    def csrf_ok(request: Request, session: Session, submitted: str | None) -> bool:
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            return False
        return bool(submitted) and hmac.compare_digest(submitted.encode(), session.csrf.encode())


def check_exposure(config: AppConfig) -> None:
    """``auth: none`` only on a loopback-bound server: anything else would hand the books to the network."""
    if config.console.auth != "none":
        return
    host = config.http.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"console.auth 'none' is only allowed with http.host on loopback (127.0.0.1), not {host!r}; "
                         "set console.auth to 'password' or 'proxy'")


def secure_cookie(request: Request, config: ConsoleConfig) -> bool:
    if request.url.scheme == "https":
        return True
    client = request.client.host if request.client else ""
    return client in config.trusted_proxies and request.headers.get("x-forwarded-proto") == "https"
