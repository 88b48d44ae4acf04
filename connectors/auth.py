"""Every authentication scheme the supported platforms use, as pluggable ``httpx.Auth`` objects.

A connector picks one and hands it to ``connectors.http.PlatformHttp(auth=...)`` (or to any ``httpx.Client``);
none writes its own. Each signs the outgoing request and, when the platform answers 401, renews what can be
renewed (token, session) and sends the request once more — never more than once.

| class | scheme | platforms |
|---|---|---|
| ``OAuth2RefreshAuth`` | OAuth2 authorization code, rotating (single-use) refresh tokens, persisted | QuickBooks Online, Xero, Zoho Books, FreshBooks, Sage, Reckon … |
| ``OAuth2ClientCredentialsAuth`` | OAuth2 client credentials: client secret or a signed JWT client assertion (``jwt_client_assertion``) | Business Central, NetSuite machine-to-machine |
| ``OAuth1TokenAuth`` | OAuth 1.0a token-based auth, HMAC-SHA256 (or -SHA1) signature over method, URL and parameters, ``realm`` | NetSuite TBA |
| ``SessionLoginAuth`` (``sap_b1_session``, ``bill_com_session``) | log in, send the session, log in again when it expired | SAP Business One Service Layer (``B1SESSION``/``ROUTEID`` cookies), Bill.com (``sessionId`` + ``devKey``) |
| ``ApiKeyAuth``, ``BasicAuth`` | a static key in a header, HTTP Basic | Odoo 19 JSON-2, Oracle Fusion integration user, MYOB's extra key … |

Secrets are read from the target's ``CredentialSource`` on use (``ledgerwire credentials set`` takes effect
without a restart) and never logged. Each class also keeps the older ``apply(headers)``/``refresh()`` pair
(``connectors.http.RequestAuth``) where a scheme can sign from headers alone.

The rotating refresh token is the one secret the platform replaces: losing the answer that carries the new
one loses the grant (Xero and QuickBooks kill the old token on use) until a person re-authorises. So a
refresh (``OAuth2RefreshAuth``):
1. opens a credential session first — the lock and the connection that will store the answer
   (``PgCredentials.session``: an advisory lock on a dedicated ledger connection, not the shared pool) —
   and writes a "refresh in flight" marker with the request time; if that write fails nothing is sent;
2. sends the refresh and stores the answer on that same connection, clearing the marker;
3. if the store fails, keeps the new tokens in process memory and stores them again with back-off on a new
   connection before anything uses the credential (every ``apply`` and refresh first flushes them);
4. never sends a token known to be spent: a marker of another process younger than
   ``IN_FLIGHT_STALE_S`` means that process may still hold the answer, so this one waits (retryable);
   an older marker means the answer died with its process, and the stored token is tried again (the
   platforms that rotate tokens accept the previous one for a grace period: Xero 30 minutes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl

import httpx
import structlog
from authlib.oauth1.rfc5849.signature import construct_base_string, escape

from connectors.base import (AuthError, CredentialSource, DeliveryError, RateLimitedError,
                             ReauthorizationRequired, RetryableError)
from connectors.http import retry_after_seconds
from connectors import metrics

T = TypeVar("T")

log = structlog.get_logger(__name__)

REFRESH_MARGIN_S = 120.0
IN_FLIGHT_KEY = "refresh_in_flight"
IN_FLIGHT_STALE_S = 300.0
PERSIST_BACKOFF_S = (0.1, 0.3, 1.0, 2.0)  # storing an answer the platform already gave: ~3.5 s, then retryable


def renewing_once(call: Callable[[], T], renew: Callable[[], None]) -> T:
    """``call()``; refused as unauthorised (``AuthError``), ``renew()`` what can be renewed (token, session,
    login) and call once more: a second refusal stands. For protocols whose refusal is not an HTTP 401 that
    ``PlatformAuth.auth_flow`` sees (XML-RPC faults, header-only auth)."""
    try:
        return call()
    except AuthError:
        renew()
        return call()


def reauthorisation_required(reason: str, **kwargs: Any) -> DeliveryError:
    """The grant is dead (``invalid_grant``, a revoked app, a wrong password): a person must act, so the sink
    pauses the target (``ReauthorizationRequired``) instead of dead-lettering every invoice."""
    return ReauthorizationRequired(reason, **kwargs)


# --- the common shape: sign, and on 401 renew once ------------------------------------------------------


class PlatformAuth(httpx.Auth):
    """Base of every scheme: ``sign`` the request; on 401 ``renew`` and send it once more."""

    retry_on_401 = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        response = yield request
        if response.status_code == 401 and self.retry_on_401:
            self.renew_after_401(request)
            self.sign(request)
            yield request

    def sign(self, request: httpx.Request) -> None:
        headers: dict[str, str] = {}
        self.apply(headers)
        request.headers.update(headers)

    def apply(self, request_headers: dict[str, str]) -> None:  # connectors.http.RequestAuth
        raise NotImplementedError

    def refresh(self) -> None:  # connectors.http.RequestAuth: renew after a 401
        """Renew what can be renewed (token, session)."""

    def renew_after_401(self, request: httpx.Request) -> None:
        self.refresh()


# --- credential sessions: the lock and the connection that will store a refresh's answer ---------------


class CredentialSession(Protocol):
    def read(self) -> dict[str, Any]:
        """The stored document, read under the session's lock."""
        ...

    def save(self, changes: dict[str, Any]) -> None:
        """Persist ``changes`` on the session's own connection; raise when they could not be stored."""
        ...


class _ProtocolSession:
    """A session for any ``CredentialSource`` without its own ``session()`` (the in-memory test store):
    its ``lock``, ``get`` and ``update``."""

    def __init__(self, source: CredentialSource) -> None:
        self.source = source

    def read(self) -> dict[str, Any]:
        return self.source.get()

    def save(self, changes: dict[str, Any]) -> None:
        self.source.update(changes)


@contextmanager
def credential_session(source: CredentialSource) -> Iterator[CredentialSession]:
    opener = getattr(source, "session", None)
    if opener is not None:
        with opener() as session:
            yield session
        return
    with source.lock():
        yield _ProtocolSession(source)


def _process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_BOOT_ID}"


_BOOT_ID = secrets.token_hex(4)
# Answers the platform gave but the ledger has not taken yet: refresh id -> the changes to store.
_UNSAVED: dict[str, dict[str, Any]] = {}
_UNSAVED_LOCK = threading.Lock()


def unsaved_refresh_count() -> int:
    with _UNSAVED_LOCK:
        return len(_UNSAVED)


# --- OAuth2 authorization code with rotating refresh tokens ---------------------------------------------


class OAuth2RefreshAuth(PlatformAuth):
    """Bearer tokens obtained with a (rotating) refresh token kept in the target's credential store.

    The credential document holds: client_id, client_secret, refresh_token, access_token,
    access_token_expires_at (Unix seconds) and any platform extras (realm id, tenant id …).
    """

    def __init__(
        self,
        *,
        target: str,
        token_url: str,
        credentials: CredentialSource,
        extra_headers: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        client_auth: str = "basic",  # "basic" (HTTP Basic client auth) or "body"
        scheme: str = "Bearer",  # the Authorization scheme; Zoho's is "Zoho-oauthtoken"
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self.token_url = token_url
        self.credentials = credentials
        self.extra_headers = extra_headers
        self.client_auth = client_auth
        self.scheme = scheme
        self.clock = clock
        self._sleep = sleep
        self._http = httpx.Client(timeout=20.0, transport=transport)

    # -- signing --
    def apply(self, request_headers: dict[str, str]) -> None:
        cred = self._current()
        if not cred.get("access_token") or float(cred.get("access_token_expires_at", 0)) - self.clock() < REFRESH_MARGIN_S:
            cred = self._refresh(if_token=cred.get("access_token"))
        request_headers["Authorization"] = f"{self.scheme} {cred['access_token']}"
        if self.extra_headers:
            request_headers.update(self.extra_headers(cred))

    def refresh(self) -> None:
        self._refresh(if_token=self._current().get("access_token"))

    def renew_after_401(self, request: httpx.Request) -> None:
        sent = request.headers.get("Authorization", "").removeprefix(f"{self.scheme} ")
        self._refresh(if_token=sent or None)

    def _current(self) -> dict[str, Any]:
        """The stored credential, after storing an answer this process still holds in memory."""
        cred = self.credentials.get()
        marker = cred.get(IN_FLIGHT_KEY) or {}
        if marker.get("id") in _UNSAVED:
            self._store_unsaved(marker["id"])
            cred = self.credentials.get()
        return cred

    # -- the refresh --
    def _refresh(self, *, if_token: str | None) -> dict[str, Any]:
        with credential_session(self.credentials) as session:
            outcome = self._refresh_in(session, if_token)
        if isinstance(outcome, dict):
            return outcome
        # An answer this process holds but has not stored: store it on a NEW session, after the one that
        # failed is closed (its lock released — a live connection still holding it would block the retry).
        return self._store_unsaved(outcome)

    def _refresh_in(self, session: CredentialSession, if_token: str | None) -> dict[str, Any] | str:
        """The credential to use, or the id of an answer that still has to be stored."""
        cred = session.read()
        marker = cred.get(IN_FLIGHT_KEY) or {}
        if marker.get("id") in _UNSAVED:
            return marker["id"]  # this process got the answer but could not store it: send nothing
        # Another worker refreshed while we waited for the lock: use its token.
        if cred.get("access_token") and cred.get("access_token") != if_token and \
                float(cred.get("access_token_expires_at", 0)) - self.clock() >= REFRESH_MARGIN_S:
            return cred
        if marker:
            self._check_in_flight(marker)
        if not cred.get("refresh_token"):
            raise reauthorisation_required("no refresh token stored; run `ledgerwire credentials set` for the target")
        refresh_id = uuid.uuid4().hex
        try:
            session.save({IN_FLIGHT_KEY: {"id": refresh_id, "owner": _process_owner(), "at": self.clock()}})
        except Exception as exc:  # noqa: BLE001 - any storage failure: do not send
            metrics.TOKEN_REFRESHES.labels(self.target, "not_sent").inc()
            raise RetryableError(f"credential store unavailable, refresh not sent: {type(exc).__name__}") from exc
        token = self._request_token(session, cred)
        changes = self._changes(token)
        try:
            session.save(changes)  # persisted before the token is used
        except Exception as exc:  # noqa: BLE001 - the platform already replaced the old token: keep the answer
            with _UNSAVED_LOCK:
                _UNSAVED[refresh_id] = changes
            metrics.TOKEN_REFRESHES.labels(self.target, "unsaved").inc()
            log.error("token_refresh_not_stored", target=self.target, error=type(exc).__name__)
            return refresh_id
        metrics.TOKEN_REFRESHES.labels(self.target, "ok").inc()
        metrics.TOKEN_EXPIRY.labels(self.target).set(changes["access_token_expires_at"])
        log.info("token_refreshed", target=self.target, rotated=bool(token.get("refresh_token")))
        return cred | changes

    def _check_in_flight(self, marker: dict[str, Any]) -> None:
        """A refresh was sent and its answer never stored. Ours (this process): the answer never arrived, so
        the stored token is the newest we can know — try it. Another process's, recently: it may still be
        storing the answer — wait. Older: its answer is lost — try the stored token (the grace period)."""
        age = self.clock() - float(marker.get("at", 0))
        if marker.get("owner") != _process_owner() and age < IN_FLIGHT_STALE_S:
            metrics.TOKEN_REFRESHES.labels(self.target, "in_flight_elsewhere").inc()
            raise RetryableError(f"a token refresh by {marker.get('owner')} {age:.0f} s ago is not stored yet; "
                                 "waiting for it rather than spending the refresh token twice")
        log.warning("token_refresh_answer_lost", target=self.target, age_s=round(age), owner=marker.get("owner"))

    def _request_token(self, session: CredentialSession, cred: dict[str, Any]) -> dict[str, Any]:
        # A transport error leaves the marker: the token may or may not be spent; this process retries it.
        response, body = _post_token(self._http, self.target, self.token_url, cred, self.client_auth,
                                     {"grant_type": "refresh_token", "refresh_token": cred["refresh_token"]})
        if response.status_code == 200 and "access_token" in body:
            return body
        _clear_marker(session)  # a definite answer: the token was not rotated
        # invalid_grant (or Zoho's 200 {"error": "invalid_code"}): the refresh token is dead.
        raise _token_refused(self.target, response, body, "token refresh rejected", "re-authorise the target")

    def _changes(self, token: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {
            "access_token": token["access_token"],
            "access_token_expires_at": self.clock() + float(token.get("expires_in", 3600)),
            IN_FLIGHT_KEY: None,
        }
        if token.get("refresh_token"):
            changes["refresh_token"] = token["refresh_token"]
        if token.get("x_refresh_token_expires_in"):
            changes["refresh_token_expires_at"] = self.clock() + float(token["x_refresh_token_expires_in"])
        return changes

    def _save_unsaved(self, session: CredentialSession, cred: dict[str, Any], refresh_id: str) -> dict[str, Any]:
        with _UNSAVED_LOCK:
            changes = _UNSAVED[refresh_id]
        session.save(changes)
        with _UNSAVED_LOCK:
            _UNSAVED.pop(refresh_id, None)
        metrics.TOKEN_REFRESHES.labels(self.target, "ok").inc()
        metrics.TOKEN_EXPIRY.labels(self.target).set(changes["access_token_expires_at"])
        log.info("token_refresh_stored_late", target=self.target)
        return cred | changes

    def _store_unsaved(self, refresh_id: str) -> dict[str, Any]:
        """Store an answer held in memory, with back-off, on a new session; retryable while it cannot."""
        last: Exception | None = None
        for delay in PERSIST_BACKOFF_S:
            if refresh_id not in _UNSAVED:
                return self.credentials.get()  # another thread of this process stored it
            try:
                with credential_session(self.credentials) as session:
                    cred = session.read()
                    if (cred.get(IN_FLIGHT_KEY) or {}).get("id") != refresh_id:
                        # Someone wrote the credential since (`credentials set`, a takeover of a stale marker):
                        # the newer document wins.
                        with _UNSAVED_LOCK:
                            _UNSAVED.pop(refresh_id, None)
                        log.error("token_refresh_superseded", target=self.target)
                        return cred
                    return self._save_unsaved(session, cred, refresh_id)
            except Exception as exc:  # noqa: BLE001 - the store is down: back off and try again
                last = exc
                self._sleep(delay)
        raise RetryableError("token refreshed but not stored yet (kept in memory; stored before any other use): "
                             f"{type(last).__name__}") from last


def _clear_marker(session: CredentialSession) -> None:
    try:
        session.save({IN_FLIGHT_KEY: None})
    except Exception:  # noqa: BLE001 - best effort: a stale marker of this process is retried at once
        log.warning("refresh_marker_not_cleared")


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _post_token(http: httpx.Client, target: str, token_url: str, cred: dict[str, Any], client_auth: str,
                data: dict[str, str]) -> tuple[httpx.Response, dict[str, Any]]:
    """POST to a token endpoint with the client authenticated by HTTP Basic ("basic"), in the body ("body"),
    or by an assertion already in ``data``; an endpoint that cannot be reached is retryable."""
    auth = None
    if client_auth == "basic":
        auth = (cred["client_id"], cred["client_secret"])
    elif client_auth == "body":
        data = data | {"client_id": cred["client_id"], "client_secret": cred["client_secret"]}
    try:
        response = http.post(token_url, data=data, auth=auth, headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        metrics.TOKEN_REFRESHES.labels(target, "network").inc()
        raise RetryableError(f"token endpoint unreachable: {type(exc).__name__}") from exc
    return response, _json_body(response)


def _token_refused(target: str, response: httpx.Response, body: dict[str, Any], what: str,
                   advice: str) -> DeliveryError:
    if response.status_code >= 500 or response.status_code == 429:
        metrics.TOKEN_REFRESHES.labels(target, "retryable").inc()
        return RetryableError(f"token endpoint answered {response.status_code}", status=response.status_code)
    metrics.TOKEN_REFRESHES.labels(target, "rejected").inc()
    code = body.get("error")
    return reauthorisation_required(f"{what}: {code or response.status_code}; {advice}",
                                    status=response.status_code, platform_code=code)


# --- OAuth2 client credentials (Business Central, NetSuite machine-to-machine) --------------------------


class OAuth2ClientCredentialsAuth(PlatformAuth):
    """Bearer tokens from the client credentials grant, kept in memory (a new process asks for its own).

    Client authentication is the client secret (``client_auth="body"`` or ``"basic"``: Microsoft Entra ID for
    Business Central) or a signed JWT client assertion (``client_assertion=jwt_client_assertion(...)``:
    NetSuite M2M). Credential document: client_id, client_secret or private_key + certificate_id.
    """

    def __init__(self, *, target: str, token_url: str, credentials: CredentialSource, scope: str | None = None,
                 client_auth: str = "body",
                 client_assertion: Callable[[dict[str, Any]], str] | None = None,
                 extra_params: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None) -> None:
        self.target = target
        self.token_url = token_url
        self.credentials = credentials
        self.scope = scope
        self.client_auth = client_auth
        self.client_assertion = client_assertion
        self.extra_params = extra_params or {}
        self.clock = clock
        self._http = httpx.Client(timeout=20.0, transport=transport)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def apply(self, request_headers: dict[str, str]) -> None:
        with self._lock:
            if self._token is None or self._expires_at - self.clock() < REFRESH_MARGIN_S:
                self._fetch()
            request_headers["Authorization"] = f"Bearer {self._token}"

    def refresh(self) -> None:
        with self._lock:
            self._fetch()

    def renew_after_401(self, request: httpx.Request) -> None:
        with self._lock:
            if request.headers.get("Authorization") == f"Bearer {self._token}":
                self._fetch()  # not renewed by another thread since this request was signed

    def _fetch(self) -> None:
        cred = self.credentials.get()
        data = {"grant_type": "client_credentials", **self.extra_params}
        if self.scope:
            data["scope"] = self.scope
        client_auth = self.client_auth
        if self.client_assertion is not None:
            client_auth = "assertion"
            data |= {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                     "client_assertion": self.client_assertion(cred)}
        response, body = _post_token(self._http, self.target, self.token_url, cred, client_auth, data)
        if response.status_code == 200 and body.get("access_token"):
            self._token = body["access_token"]
            self._expires_at = self.clock() + float(body.get("expires_in", 3600))
            metrics.TOKEN_REFRESHES.labels(self.target, "ok").inc()
            metrics.TOKEN_EXPIRY.labels(self.target).set(self._expires_at)
            return
        raise _token_refused(self.target, response, body, "client credentials rejected",
                             "check the app registration and its secret or certificate")


def jwt_client_assertion(token_url: str, *, scope: str | None = None, algorithm: str = "PS256",
                         lifetime_s: int = 300, clock: Callable[[], float] = time.time
                         ) -> Callable[[dict[str, Any]], str]:
    """A client assertion JWT (RFC 7523) as NetSuite's M2M flow wants it: header ``kid`` = the certificate id,
    ``iss`` = client id, ``aud`` = the token URL, ``scope``, ``iat``/``exp`` (≤ 60 min), signed with the private
    key in the credential document (``private_key`` PEM, ``certificate_id``) — by joserfc, authlib's JOSE
    implementation (authlib.jose is deprecated in its favour); PS256 must be allowed explicitly there."""
    from joserfc import jwt  # noqa: PLC0415 - only the M2M flow needs it
    from joserfc.jwk import import_key  # noqa: PLC0415

    def assertion(cred: dict[str, Any]) -> str:
        now = int(clock())
        claims: dict[str, Any] = {"iss": cred["client_id"], "aud": token_url, "iat": now, "exp": now + lifetime_s,
                                  "jti": uuid.uuid4().hex}
        if scope:
            claims["scope"] = scope
        header = {"alg": algorithm, "typ": "JWT", "kid": cred["certificate_id"]}
        key = import_key(cred["private_key"], "EC" if algorithm.startswith("ES") else "RSA")
        return jwt.encode(header, claims, key, algorithms=[algorithm])

    return assertion


# --- OAuth 1.0a token-based authentication (NetSuite TBA) -----------------------------------------------


class OAuth1TokenAuth(PlatformAuth):
    """RFC 5849 signatures with HMAC-SHA256 (NetSuite TBA; ``HMAC-SHA1`` for older services).

    The signature base string is authlib's (RFC 5849 §3.4.1: method, base string URI, the normalised query,
    form-body and ``oauth_*`` parameters, ``realm`` excluded); the ``realm`` (NetSuite: the account id, e.g.
    ``1234567_SB1``) goes into the Authorization header. Credential document: consumer_key, consumer_secret,
    token_id, token_secret. Tokens do not expire; a 401 is answered with a freshly signed retry (new nonce
    and timestamp: NetSuite refuses a reused nonce).
    """

    requires_request_body = True  # form parameters are signed

    def __init__(self, *, credentials: CredentialSource, realm: str | None = None,
                 signature_method: str = "HMAC-SHA256", clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        if signature_method not in _HMAC_DIGESTS:
            raise ValueError(f"unsupported OAuth 1.0a signature method {signature_method!r}")
        self.credentials = credentials
        self.realm = realm
        self.signature_method = signature_method
        self.clock = clock
        self.nonce = nonce

    def apply(self, request_headers: dict[str, str]) -> None:
        raise TypeError("OAuth 1.0a signs the method, URL and body: use it as httpx auth (PlatformHttp does)")

    def sign(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = self.authorization(
            request.method, str(request.url), _form_params(request), request.url.params.multi_items())

    def authorization(self, method: str, url: str, body_params: list[tuple[str, str]] = (),
                      query_params: list[tuple[str, str]] = ()) -> str:
        cred = self.credentials.get()
        oauth = [("oauth_consumer_key", cred["consumer_key"]), ("oauth_token", cred["token_id"]),
                 ("oauth_signature_method", self.signature_method), ("oauth_timestamp", str(int(self.clock()))),
                 ("oauth_nonce", self.nonce()), ("oauth_version", "1.0")]
        signature = sign_base_string(self.base_string(method, url, [*query_params, *body_params, *oauth]),
                                     cred["consumer_secret"], cred["token_secret"], self.signature_method)
        fields = ([("realm", self.realm)] if self.realm else []) + oauth + [("oauth_signature", signature)]
        return "OAuth " + ", ".join(f'{key}="{escape(value)}"' for key, value in fields)

    @staticmethod
    def base_string(method: str, url: str, params: list[tuple[str, str]]) -> str:
        return construct_base_string(method, url, params)


_HMAC_DIGESTS = {"HMAC-SHA256": hashlib.sha256, "HMAC-SHA1": hashlib.sha1}


def sign_base_string(base_string: str, consumer_secret: str, token_secret: str, method: str) -> str:
    """RFC 5849 §3.4.2: key = escaped consumer secret & escaped token secret; base64 of the HMAC."""
    key = f"{escape(consumer_secret or '')}&{escape(token_secret or '')}"
    digest = hmac.new(key.encode(), base_string.encode(), _HMAC_DIGESTS[method]).digest()
    return base64.b64encode(digest).decode()


def _form_params(request: httpx.Request) -> list[tuple[str, str]]:
    if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        return []
    return parse_qsl(request.content.decode(), keep_blank_values=True)


# --- session login (SAP Business One Service Layer, Bill.com) -------------------------------------------


@dataclass
class Session:
    """What a login returned: headers and cookies to send, and the idle timeout it announced."""

    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    idle_timeout_s: float = 1800.0


Login = Callable[[httpx.Client, dict[str, Any]], Session]


class SessionLoginAuth(PlatformAuth):
    """Log in with the stored user credentials, send the session on every request, and log in again when
    it idled out (before, from the announced timeout, or after the platform's session-expired answer:
    ``session_expired``, by default any 401; Bill.com's is ``BDC_1109``). Threads share one session; a
    re-login after an expired answer happens once, not once per thread, and the request is sent once more."""

    requires_response_body = True  # ``session_expired`` may read the platform's error body

    def __init__(self, *, target: str, credentials: CredentialSource, login: Login,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.BaseTransport | None = None,
                 verify: bool | str = True, session_expired: Callable[[httpx.Response], bool] | None = None) -> None:
        self.target = target
        self.credentials = credentials
        self.login = login
        self.session_expired = session_expired or (lambda response: response.status_code == 401)
        self.clock = clock
        self._http = httpx.Client(timeout=30.0, transport=transport, verify=verify)
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._last_used = 0.0
        self.logins = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        response = yield request
        if self.session_expired(response):
            self.renew_after_401(request)
            self.sign(request)
            yield request

    def sign(self, request: httpx.Request) -> None:
        with self._lock:
            session = self._session
            if session is None or self.clock() - self._last_used > session.idle_timeout_s - 60.0:
                session = self._login()
            self._last_used = self.clock()
            request.extensions = {**request.extensions, "ledgerwire_session": self.logins}
        request.headers.update(_session_headers(session))

    def apply(self, request_headers: dict[str, str]) -> None:
        with self._lock:
            session = self._session
            if session is None or self.clock() - self._last_used > session.idle_timeout_s - 60.0:
                session = self._login()
            self._last_used = self.clock()
        request_headers.update(_session_headers(session))

    def refresh(self) -> None:
        with self._lock:
            self._login()

    def renew_after_401(self, request: httpx.Request) -> None:
        with self._lock:
            if request.extensions.get("ledgerwire_session") == self.logins:
                self._login()  # nobody logged in again since this request was signed

    def _login(self) -> Session:
        try:
            self._session = self.login(self._http, self.credentials.get())
        except httpx.TransportError as exc:
            raise RetryableError(f"login unreachable: {type(exc).__name__}") from exc
        self.logins += 1
        self._last_used = self.clock()
        log.info("session_login", target=self.target)
        return self._session


def _session_headers(session: Session) -> dict[str, str]:
    headers = dict(session.headers)
    if session.cookies:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    return headers


def _login_failed(platform: str, response: httpx.Response, throttled: bool = False) -> DeliveryError:
    if throttled:  # the platform's login limit: wait, the credentials are not at fault
        return RateLimitedError(f"{platform} login refused: too many logins", status=response.status_code,
                                retry_after=retry_after_seconds(response))
    if response.status_code >= 500 or response.status_code == 429:
        return RetryableError(f"{platform} login answered {response.status_code}", status=response.status_code)
    return reauthorisation_required(f"{platform} login refused ({response.status_code}); check the stored user "
                                    "credentials", status=response.status_code)


def sap_b1_session(base_url: str) -> Login:
    """SAP Business One Service Layer: ``POST {base_url}/Login`` with CompanyDB, UserName, Password (credential
    document: company_db, username, password) → ``B1SESSION`` and, behind the load balancer, ``ROUTEID``
    cookies, both sent on every request; ``SessionTimeout`` in minutes."""

    def login(http: httpx.Client, cred: dict[str, Any]) -> Session:
        response = http.post(f"{base_url.rstrip('/')}/Login", json={
            "CompanyDB": cred["company_db"], "UserName": cred["username"], "Password": cred["password"]})
        if response.status_code != 200:
            raise _login_failed("SAP Business One", response)
        body = _json_body(response)
        cookies = {name: value for name, value in response.cookies.items() if name in ("B1SESSION", "ROUTEID")}
        cookies.setdefault("B1SESSION", body.get("SessionId", ""))
        return Session(cookies=cookies, idle_timeout_s=float(body.get("SessionTimeout", 30)) * 60.0)

    return login


def bill_com_session(base_url: str, idle_timeout_s: float = 35 * 60.0) -> Login:
    """Bill.com v3: ``POST {base_url}/v3/login`` with username, password, organizationId, devKey (credential
    document: username, password, organization_id, dev_key) → ``sessionId``; headers ``devKey`` and
    ``sessionId`` on every call; the session ends after 35 idle minutes."""

    def login(http: httpx.Client, cred: dict[str, Any]) -> Session:
        response = http.post(f"{base_url.rstrip('/')}/v3/login", json={
            "username": cred["username"], "password": cred["password"],
            "organizationId": cred["organization_id"], "devKey": cred["dev_key"]})
        body = _json_body(response)
        if response.status_code != 200 or not body.get("sessionId"):
            # BDC_1144: the login limit (200 an hour per developer key); BDC_1322: 3 concurrent requests.
            raise _login_failed("Bill.com", response, throttled=bool(
                bill_com_error_codes(response) & {"BDC_1144", "BDC_1322"}))
        return Session(headers={"devKey": cred["dev_key"], "sessionId": body["sessionId"]},
                       idle_timeout_s=idle_timeout_s)

    return login


def bill_com_error_codes(response: httpx.Response) -> set[str]:
    """The ``code`` of each entry of a Bill.com v3 error body (``[{timestamp, code, severity, category,
    message}]``); empty for any other body."""
    try:
        body = response.json()
    except ValueError:
        return set()
    return {str(e.get("code")) for e in body if isinstance(e, dict)} if isinstance(body, list) else set()


def bill_com_session_expired(response: httpx.Response) -> bool:
    """Bill.com's documented answer to a dead session: ``BDC_1109`` "Session is invalid. Please log in."."""
    return "BDC_1109" in bill_com_error_codes(response)


# --- static keys --------------------------------------------------------------------------------------


class ApiKeyAuth(PlatformAuth):
    """A key from the credential document in a header: ``Authorization: bearer <key>`` (Odoo 19 JSON-2) by
    default, or any header/prefix (``x-myobapi-key``, an APIM subscription key)."""

    retry_on_401 = False  # nothing to renew: a 401 is the platform's answer

    def __init__(self, *, credentials: CredentialSource, field_name: str = "api_key",
                 header: str = "Authorization", prefix: str = "Bearer ") -> None:
        self.credentials = credentials
        self.field_name = field_name
        self.header = header
        self.prefix = prefix

    def apply(self, request_headers: dict[str, str]) -> None:
        key = self.credentials.get().get(self.field_name)
        if not key:
            raise reauthorisation_required(f"no {self.field_name} stored; run `ledgerwire credentials set`")
        request_headers[self.header] = f"{self.prefix}{key}"


class BasicAuth(PlatformAuth):
    """HTTP Basic with a user and password from the credential document (integration users)."""

    retry_on_401 = False

    def __init__(self, *, credentials: CredentialSource, username_field: str = "username",
                 password_field: str = "password") -> None:
        self.credentials = credentials
        self.username_field = username_field
        self.password_field = password_field

    def apply(self, request_headers: dict[str, str]) -> None:
        cred = self.credentials.get()
        pair = f"{cred.get(self.username_field, '')}:{cred.get(self.password_field, '')}".encode()
        request_headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()


__all__ = [
    "ApiKeyAuth", "AuthError", "BasicAuth", "CredentialSession", "OAuth1TokenAuth", "OAuth2ClientCredentialsAuth",
    "OAuth2RefreshAuth", "PlatformAuth", "Session", "SessionLoginAuth", "bill_com_error_codes", "bill_com_session",
    "bill_com_session_expired", "credential_session",
    "jwt_client_assertion", "reauthorisation_required", "sap_b1_session", "sign_base_string",
]
