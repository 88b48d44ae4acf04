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
from typing import Any, Protocol
from urllib.parse import parse_qsl

import httpx
import structlog
from authlib.oauth1.rfc5849.signature import construct_base_string, escape

from connectors import base
from connectors.base import AuthError, CredentialSource, DeliveryError, PermanentError, RetryableError
from daemon import metrics

log = structlog.get_logger(__name__)

REFRESH_MARGIN_S = 120.0
IN_FLIGHT_KEY = "refresh_in_flight"
IN_FLIGHT_STALE_S = 300.0
PERSIST_BACKOFF_S = (0.1, 0.3, 1.0, 2.0)  # storing an answer the platform already gave: ~3.5 s, then retryable


def reauthorisation_required(reason: str, **kwargs: Any) -> DeliveryError:
    """The grant is dead (``invalid_grant``, a revoked app, a wrong password): a person must act. A
    ``ReauthorizationRequired`` in ``connectors.base`` (the sink pauses the target) is used when it exists."""
    error_type = getattr(base, "ReauthorizationRequired", PermanentError)
    return error_type(reason, **kwargs)


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
            cred = session.read()
            marker = cred.get(IN_FLIGHT_KEY) or {}
            if marker.get("id") in _UNSAVED:
                # This process got the answer but could not store it: store it now, send nothing.
                return self._save_unsaved(session, cred, marker["id"])
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
                return self._store_unsaved(refresh_id)
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
        data = {"grant_type": "refresh_token", "refresh_token": cred["refresh_token"]}
        auth = None
        if self.client_auth == "basic":
            auth = (cred["client_id"], cred["client_secret"])
        else:
            data |= {"client_id": cred["client_id"], "client_secret": cred["client_secret"]}
        try:
            response = self._http.post(self.token_url, data=data, auth=auth, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            # The marker stays: the token may or may not be spent; this process retries it at once.
            metrics.TOKEN_REFRESHES.labels(self.target, "network").inc()
            raise RetryableError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        body = _json_body(response)
        if response.status_code == 200 and "access_token" in body:
            return body
        _clear_marker(session)  # a definite answer: the token was not rotated
        if response.status_code >= 500 or response.status_code == 429:
            metrics.TOKEN_REFRESHES.labels(self.target, "retryable").inc()
            raise RetryableError(f"token endpoint answered {response.status_code}", status=response.status_code)
        # invalid_grant (or Zoho's 200 {"error": "invalid_code"}): the refresh token is dead.
        metrics.TOKEN_REFRESHES.labels(self.target, "rejected").inc()
        code = body.get("error") if isinstance(body, dict) else None
        raise reauthorisation_required(f"token refresh rejected: {code or response.status_code}; re-authorise the target",
                                       status=response.status_code, platform_code=code)

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


__all__ = ["AuthError", "CredentialSession", "OAuth2RefreshAuth", "PlatformAuth", "credential_session",
           "reauthorisation_required"]
