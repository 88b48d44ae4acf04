"""OAuth2 (refresh-token grant) shared by the connectors whose platforms use it.

Rules it keeps:
* the access token is refreshed shortly before it expires, and at once after a 401;
* refreshes are serialised (credential lock across threads and processes) and re-read the stored
  credential under the lock, so two workers never spend the same single-use refresh token;
* a rotated refresh token is persisted atomically (``CredentialSource.update``) before the new access
  token is used — a crash right after the refresh cannot lose it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from connectors.base import AuthError, CredentialSource, ReauthorizationRequired, RetryableError
from daemon import metrics

log = structlog.get_logger(__name__)

REFRESH_MARGIN_S = 120.0


class OAuth2RefreshAuth:
    """``connectors.http.RequestAuth`` for bearer tokens obtained with a refresh token.

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
    ) -> None:
        self.target = target
        self.token_url = token_url
        self.credentials = credentials
        self.extra_headers = extra_headers
        self.client_auth = client_auth
        self.scheme = scheme
        self.clock = clock
        self._http = httpx.Client(timeout=20.0, transport=transport)

    def apply(self, request_headers: dict[str, str]) -> None:
        cred = self.credentials.get()
        if not cred.get("access_token") or float(cred.get("access_token_expires_at", 0)) - self.clock() < REFRESH_MARGIN_S:
            cred = self._refresh(if_token=cred.get("access_token"))
        request_headers["Authorization"] = f"{self.scheme} {cred['access_token']}"
        if self.extra_headers:
            request_headers.update(self.extra_headers(cred))

    def refresh(self) -> None:
        self._refresh(if_token=self.credentials.get().get("access_token"))

    def _refresh(self, *, if_token: str | None) -> dict[str, Any]:
        with self.credentials.lock():
            cred = self.credentials.get()
            # Another worker refreshed while we waited for the lock: use its token.
            if cred.get("access_token") and cred.get("access_token") != if_token and \
                    float(cred.get("access_token_expires_at", 0)) - self.clock() >= REFRESH_MARGIN_S:
                return cred
            data = {"grant_type": "refresh_token", "refresh_token": cred["refresh_token"]}
            auth = None
            if self.client_auth == "basic":
                auth = (cred["client_id"], cred["client_secret"])
            else:
                data |= {"client_id": cred["client_id"], "client_secret": cred["client_secret"]}
            try:
                response = self._http.post(self.token_url, data=data, auth=auth,
                                           headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                metrics.TOKEN_REFRESHES.labels(self.target, "network").inc()
                raise RetryableError(f"token endpoint unreachable: {type(exc).__name__}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                metrics.TOKEN_REFRESHES.labels(self.target, "retryable").inc()
                raise RetryableError(f"token endpoint answered {response.status_code}", status=response.status_code)
            if response.status_code != 200:
                metrics.TOKEN_REFRESHES.labels(self.target, "rejected").inc()
                # invalid_grant: the refresh token is dead; a person must re-authorise the app.
                body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
                raise ReauthorizationRequired(
                    f"token refresh rejected: {body.get('error', response.status_code)}; re-authorise the target",
                    status=response.status_code, platform_code=body.get("error"),
                )
            token = response.json()
            if "access_token" not in token:  # Zoho answers a dead refresh token with 200 {"error": "invalid_code"}
                metrics.TOKEN_REFRESHES.labels(self.target, "rejected").inc()
                raise ReauthorizationRequired(f"token refresh rejected: {token.get('error', 'no access_token')}; "
                                     "re-authorise the target", status=response.status_code,
                                     platform_code=token.get("error"))
            changes = {
                "access_token": token["access_token"],
                "access_token_expires_at": self.clock() + float(token.get("expires_in", 3600)),
            }
            if token.get("refresh_token"):
                changes["refresh_token"] = token["refresh_token"]
            if token.get("x_refresh_token_expires_in"):
                changes["refresh_token_expires_at"] = self.clock() + float(token["x_refresh_token_expires_in"])
            self.credentials.update(changes)  # persisted before the token is used
            metrics.TOKEN_REFRESHES.labels(self.target, "ok").inc()
            metrics.TOKEN_EXPIRY.labels(self.target).set(changes["access_token_expires_at"])
            log.info("token_refreshed", target=self.target, rotated=bool(token.get("refresh_token")))
            return self.credentials.get()


__all__ = ["OAuth2RefreshAuth", "AuthError"]
