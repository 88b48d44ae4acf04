"""The shared delivery machinery every connector uses: error classes, OAuth2 refresh (including the
refresh race and rotation persisted before use), and the token-bucket limiter."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import (
    AuthError,
    PermanentError,
    RateLimitedError,
    ReauthorizationRequired,
    RetryableError,
    StaleTokenError,
    UncertainOutcomeError,
)
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
from connectors.ratelimit import Limiter, TokenBucket, WindowQuota, limiter_from, minute_limit
from connectors.sandbox_kit import RunningServer, TokenIssuer, free_port
from connectors.testing import MemoryCredentials


@pytest.fixture
def platform():
    issuer = TokenIssuer(access_ttl_s=3600)
    refresh_token = issuer.register_client("cid", "secret")
    writes: list[str] = []

    async def token(request: Request):
        form = await request.form()
        import base64

        cid, secret = base64.b64decode(request.headers["authorization"].split()[1]).decode().split(":")
        answer = issuer.refresh(cid, secret, form["refresh_token"])
        if answer is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        time.sleep(0.05)  # a slow token endpoint widens the race window
        return JSONResponse(answer)

    async def api(request: Request):
        if not issuer.valid(request.headers.get("authorization")):
            return JSONResponse({"fault": "expired"}, status_code=401)
        status = int(request.query_params.get("status", "200"))
        if request.method == "POST":
            writes.append(request.query_params.get("id", ""))
        headers = {"Retry-After": "7"} if status == 429 else {}
        return JSONResponse({"ok": status < 400}, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/token", token, methods=["POST"]), Route("/api", api, methods=["GET", "POST"])])
    with RunningServer(app) as server:
        yield server, issuer, refresh_token, writes


def make_client(server, credentials, limiter=None):
    auth = OAuth2RefreshAuth(target="t1", token_url=f"{server.url}/token", credentials=credentials)
    return PlatformHttp(target="t1", platform="test", base_url=server.url, auth=auth,
                        limiter=limiter or limiter_from(None, None, None, concurrency=16))


def test_expired_token_is_refreshed_and_rotated_token_persisted_before_use(platform):
    server, issuer, refresh_token, _ = platform
    creds = MemoryCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token})
    client = make_client(server, creds)
    assert client.request("GET", "/api").json() == {"ok": True}
    first = creds.get()
    assert first["refresh_token"] != refresh_token, "rotated refresh token stored"
    rotations = [update for update in creds.updates if "refresh_token" in update]
    assert rotations[0]["refresh_token"] == first["refresh_token"]
    assert creds.updates.index(rotations[0]) > 0, "a refresh-in-flight marker is stored before the refresh is sent"
    issuer.expire_all()  # the platform expires the token before we expected: 401, refresh, retry once
    assert client.request("GET", "/api").status_code == 200
    assert issuer.refresh_count == 2
    assert creds.get()["refresh_token"] not in (refresh_token, first["refresh_token"])


def test_concurrent_workers_refresh_once(platform):
    server, issuer, refresh_token, _ = platform
    creds = MemoryCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token})
    clients = [make_client(server, creds) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: c.request("GET", "/api").status_code, clients))
    assert results == [200] * 8
    assert issuer.refresh_count == 1, "a single-use refresh token must be spent exactly once"


def test_dead_refresh_token_is_a_permanent_error(platform):
    server, _, _, _ = platform
    creds = MemoryCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": "rt-revoked"})
    with pytest.raises(ReauthorizationRequired, match="re-authorise"):
        make_client(server, creds).request("GET", "/api")


@pytest.mark.parametrize("method, status, error", [
    ("GET", 500, RetryableError), ("POST", 500, UncertainOutcomeError), ("POST", 503, UncertainOutcomeError),
    ("POST", 400, PermanentError), ("POST", 409, StaleTokenError), ("GET", 429, RateLimitedError),
])
def test_http_errors_are_classified(platform, method, status, error):
    server, _, refresh_token, _ = platform
    creds = MemoryCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token})
    with pytest.raises(error) as caught:
        make_client(server, creds).request(method, f"/api?status={status}")
    assert type(caught.value) is error
    if status == 429:
        assert caught.value.retry_after == 7.0


def test_auth_error_without_refresh_and_unreachable_platform():
    client = PlatformHttp(target="t1", platform="test", base_url=f"http://127.0.0.1:{free_port()}",
                          limiter=limiter_from(None, None, None, 2), timeout_s=1)
    with pytest.raises(RetryableError) as caught:
        client.request("POST", "/api")
    assert not isinstance(caught.value, UncertainOutcomeError), "a request never sent cannot have been applied"
    assert AuthError.error_class.value == "auth"


def test_token_bucket_paces_and_backs_off():
    now = [0.0]
    bucket = TokenBucket(rate=60, per=60.0, capacity=2, clock=lambda: now[0])
    waits = [bucket.reserve() for _ in range(4)]
    assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(1.0) and waits[3] == pytest.approx(2.0)
    now[0] = 10.0
    assert bucket.reserve() == 0.0
    bucket.drain_for(5.0)  # a 429 with Retry-After: 5
    assert bucket.reserve() == pytest.approx(6.0)


def test_daily_quota_does_not_pace_until_it_is_used_up():
    now = [0.0]
    quota = WindowQuota(5000, 86400.0, clock=lambda: now[0])
    waits = []
    for _ in range(5000):  # a backlog: the whole day's allowance passes without waiting
        waits.append(quota.reserve())
        now[0] += 0.1
    assert max(waits) == 0.0
    # The 5,001st call in any 24 h waits until the first has left the window, and never breaches it.
    assert quota.reserve() == pytest.approx(86400.0 - 500.0)
    now[0] = 86400.0
    assert quota.reserve() == pytest.approx(0.1)
    quota.drain_for(30.0)  # a daily 429 with Retry-After: 30
    assert quota.reserve() >= 30.0


def test_limiter_from_daily_limit_lets_a_minute_backlog_through():
    now = [0.0]
    slept: list[float] = []
    limiter = limiter_from(None, 600, 5000, 5, clock=lambda: now[0], sleep=slept.append)
    for _ in range(600):
        with limiter.slot():
            pass
        # 600 calls at the minute limit's own pace (its burst, then 9.34/s: 600/min less the margin a minute
        # window keeps, connectors.ratelimit.MINUTE_JITTER_S): the daily quota never adds a wait
        now[0] += 0.11
    assert sum(slept) < 1.0


def test_limiter_caps_concurrency():
    active, peak, lock = [0], [0], threading.Lock()
    limiter = Limiter([], concurrency=3)

    def work(_):
        with limiter.slot():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(work, range(30)))
    assert peak[0] == 3


def test_target_rate_limit_overrides_the_request_limiter_but_not_qbo_batch_limit():
    """A target's rate_limit is the request limit: QuickBooks Online's separate 40 batch requests/minute stays
    (raising it with the request limit once turned a 50 invoices/s run into 429s and 40 s latencies)."""
    from daemon.config import TargetConfig  # noqa: PLC0415
    from daemon.sink.deliver import DaemonRuntime  # noqa: PLC0415
    from connectors.quickbooks_online.connector import QuickBooksOnlineConnector  # noqa: PLC0415

    target = TargetConfig.model_validate({
        "name": "qbo", "platform": "quickbooks-online", "base_url": "http://127.0.0.1:9",
        "settings": {"realm_id": "1"}, "rate_limit": {"per_minute": 6000, "concurrency": 16}})
    runtime = DaemonRuntime.__new__(DaemonRuntime)  # the limiter needs no ledger
    runtime.credentials = lambda name: MemoryCredentials({})
    connector = QuickBooksOnlineConnector(target, runtime)
    try:
        [requests] = connector.http.limiter.buckets
        [batches] = connector.batch_limiter.buckets
        assert minute_limit(requests) == pytest.approx(6000)
        assert minute_limit(batches) == pytest.approx(40)
    finally:
        connector.close()


def test_slot_if_free_never_waits_and_takes_nothing_when_any_bucket_is_empty():
    now = [0.0]
    minute = TokenBucket(2, 60.0, capacity=2, clock=lambda: now[0])
    day = WindowQuota(10, 86400.0, clock=lambda: now[0])
    limiter = Limiter([day, minute], concurrency=1, sleep=lambda s: (_ for _ in ()).throw(AssertionError("slept")))
    for _ in range(2):
        with limiter.slot_if_free() as free:
            assert free
    with limiter.slot_if_free() as free:
        assert not free  # the minute bucket is empty: the day quota's token was given back
    assert len(day._times) == 2  # noqa: SLF001
    now[0] += 60.0  # both minute tokens back
    with limiter.slot_if_free() as outer:
        assert outer
        with limiter.slot_if_free() as inner:
            assert not inner  # concurrency 1 is taken
    assert len(day._times) == 3  # noqa: SLF001
