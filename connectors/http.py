"""The HTTP client every REST connector uses: rate limits, auth refresh, error classes, metrics.

A connector supplies only what differs per platform: how to authorise a request (``auth``) and how to
read the platform's error body (``classify``). Everything else — the limiter slot, timeouts, the
uncertain-outcome rule for writes, one refresh-and-retry on 401, metrics — is here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import structlog

from connectors.base import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    StaleTokenError,
    UncertainOutcomeError,
)
from connectors.ratelimit import Limiter
from connectors import metrics

log = structlog.get_logger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class RequestAuth(Protocol):
    """The older header-only auth shape. Every scheme in ``connectors.auth`` is also an ``httpx.Auth``, which
    ``PlatformHttp`` prefers: it signs the whole request (OAuth 1.0a needs method, URL and body) and renews
    once on 401 inside the same limiter slot."""

    def apply(self, request_headers: dict[str, str]) -> None:
        """Add credentials (Authorization, tenant headers) to the outgoing headers."""
        ...

    def refresh(self) -> None:
        """Force a token refresh after the platform said 401."""
        ...


Classifier = Callable[[httpx.Response], DeliveryError | None]


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def default_classify(response: httpx.Response) -> DeliveryError:
    """HTTP-status classification, used when the platform's own classifier has no opinion."""
    status = response.status_code
    body = _body(response)
    if status == 401:
        return AuthError("unauthorised", status=status, detail=body)
    if status == 429:
        return RateLimitedError("rate limited", status=status, retry_after=retry_after_seconds(response), detail=body)
    if status in (409, 412):
        return StaleTokenError("concurrency conflict", status=status, detail=body)
    if status >= 500:
        return RetryableError(f"server error {status}", status=status, detail=body)
    return PermanentError(f"rejected with {status}", status=status, detail=body)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


class PlatformHttp:
    def __init__(
        self,
        *,
        target: str,
        platform: str,
        base_url: str,
        limiter: Limiter,
        auth: RequestAuth | None = None,
        classify: Classifier | None = None,
        timeout_s: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.platform = platform
        self.limiter = limiter
        self.auth = auth
        self.classify = classify
        self.client = httpx.Client(
            base_url=base_url, timeout=timeout_s, transport=transport, headers=headers or {}
        )

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; return a 2xx response or raise the classified ``DeliveryError``."""
        if self.auth is None or isinstance(self.auth, httpx.Auth):
            # An httpx.Auth (connectors.auth) renews and retries once inside its own flow.
            return self._send(method, url, **kwargs)
        from connectors.auth import renewing_once  # connectors.auth builds on this module

        return renewing_once(lambda: self._send(method, url, **kwargs), self.auth.refresh)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        method = method.upper()
        headers = dict(kwargs.pop("headers", None) or {})
        flow_auth = self.auth if isinstance(self.auth, httpx.Auth) else None
        if self.auth is not None and flow_auth is None:
            self.auth.apply(headers)
        with self.limiter.slot():
            started = time.monotonic()
            try:
                if flow_auth is not None:  # signs the whole request; on 401 renews and sends it once more
                    kwargs["auth"] = flow_auth
                response = self.client.request(method, url, headers=headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._count("network")
                raise RetryableError(f"not sent: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                # Sent, but no answer: a write may have been applied.
                self._count("network")
                error_type = RetryableError if method in SAFE_METHODS else UncertainOutcomeError
                raise error_type(f"no answer: {type(exc).__name__}") from exc
            finally:
                metrics.API_LATENCY.labels(self.target, self.platform).observe(time.monotonic() - started)
        if response.is_success:
            self._count("ok")
            return response
        error = (self.classify(response) if self.classify else None) or default_classify(response)
        if isinstance(error, RateLimitedError):
            metrics.RATE_LIMITED.labels(self.target).inc()
            self.limiter.back_off(error.retry_after)
            self._count("rate_limited")
        else:
            self._count(error.error_class.value)
        if response.status_code >= 500 and method not in SAFE_METHODS and type(error) is RetryableError:
            error = UncertainOutcomeError(error.reason, status=error.status, detail=error.detail)
        log.info("platform_error", target=self.target, method=method, path=url.split("?")[0], status=response.status_code,
                 error_class=error.error_class.value, code=error.platform_code)
        raise error

    def _count(self, result: str) -> None:
        metrics.API_CALLS.labels(self.target, self.platform, result).inc()
