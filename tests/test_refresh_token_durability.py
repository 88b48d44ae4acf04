"""Issue #19: a rotated single-use refresh token can never be lost.

The platform answers a refresh (the old refresh token is dead from that moment), then the ledger database
drops every connection before the new token is written — as a PoolTimeout, a database restart or a network
cut would. The next refresh must never send the spent token, and the new one must end up stored.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import parse_qsl

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from connectors.auth import IN_FLIGHT_STALE_S, OAuth2RefreshAuth
from connectors.base import RetryableError
from connectors.http import PlatformHttp
from connectors.ratelimit import limiter_from
from connectors.sandbox_kit import TokenIssuer
from connectors.xero.connector import XeroConnector
from connectors.xero.sandbox import Sandbox as XeroSandbox
from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime
from daemon.sink.ledger import Ledger
from tests.pg_only import ledger_dsn, pg_cluster, terminate_backends  # noqa: F401  (fixtures)


class RecordingIssuer:
    """Wraps the sandbox's token issuer: records every refresh token presented and whether the platform
    still honoured it, and runs ``after_answer`` once the platform has rotated the token."""

    def __init__(self, issuer, after_answer) -> None:
        self.issuer = issuer
        self.after_answer = after_answer
        self.presented: list[tuple[str, bool]] = []
        self._real = issuer.refresh
        issuer.refresh = self.refresh

    def refresh(self, client_id, client_secret, refresh_token):
        answer = self._real(client_id, client_secret, refresh_token)
        self.presented.append((refresh_token, answer is not None))
        if answer is not None:
            self.after_answer()
        return answer


@pytest.fixture
def xero(ledger_dsn):
    sandbox = XeroSandbox()
    server = sandbox.serve()
    ledger = Ledger(ledger_dsn, min_size=2, max_size=4)
    ledger.ensure_schema()
    runtime = DaemonRuntime(ledger, Fernet.generate_key())
    runtime.credentials("xero-main").put(sandbox.seed_credentials())
    target = TargetConfig.model_validate(sandbox.target_config("xero-main", server.url))
    connector = XeroConnector(target, runtime)
    try:
        yield sandbox, ledger, runtime, connector
    finally:
        connector.close()
        ledger.close()
        server.stop()


def test_database_dies_between_the_platforms_answer_and_the_write(xero, ledger_dsn):
    sandbox, ledger, runtime, connector = xero
    kills = [1]  # only the first refresh is followed by the outage

    def database_outage() -> None:
        if kills:
            kills.pop()
            assert terminate_backends(ledger_dsn) >= 1, "the refresh must hold a ledger connection while it is sent"

    recorder = RecordingIssuer(sandbox.issuer, database_outage)
    try:
        assert connector.fetch_invoice(str(uuid.uuid4())) is None
    except RetryableError:
        pass  # acceptable: the answer is kept in memory and written before anything else uses the credential
    # The access token expires: the next call refreshes again, with the token the platform issued last.
    sandbox.issuer.expire_all()
    assert connector.fetch_invoice(str(uuid.uuid4())) is None
    spent = [token for token, honoured in recorder.presented if not honoured]
    assert spent == [], "a refresh token the platform had already replaced was sent"
    assert len(recorder.presented) == 2
    stored = runtime.credentials("xero-main").get()
    assert sandbox.issuer.refresh(stored["client_id"], stored["client_secret"], stored["refresh_token"]) is not None, \
        "the stored refresh token is the one the platform honours"
    assert not stored.get("refresh_in_flight")


def test_a_new_process_after_the_outage_uses_the_stored_token(xero, ledger_dsn):
    """The credential is persisted, not only held in memory: a fresh runtime (another daemon process) on the
    same database refreshes with the token the platform issued last."""
    sandbox, ledger, runtime, connector = xero
    kills = [1]

    def database_outage() -> None:
        if kills:
            kills.pop()
            terminate_backends(ledger_dsn)

    recorder = RecordingIssuer(sandbox.issuer, database_outage)
    try:
        connector.fetch_invoice(str(uuid.uuid4()))
    except RetryableError:
        connector.fetch_invoice(str(uuid.uuid4()))
    sandbox.issuer.expire_all()
    other_ledger = Ledger(ledger_dsn, min_size=1, max_size=2)
    try:
        other = XeroConnector(connector.target, DaemonRuntime(other_ledger, runtime._secret_key))  # noqa: SLF001
        try:
            assert other.fetch_invoice(str(uuid.uuid4())) is None
        finally:
            other.close()
    finally:
        other_ledger.close()
    assert [honoured for _, honoured in recorder.presented] == [True, True]


# --- the same rules without a database: a store that fails on demand ------------------------------------


class FlakyCredentials:
    """A credential store whose writes fail while ``down`` (a ledger outage), with a lock and sessions."""

    def __init__(self, document):
        self.doc = dict(document)
        self.down = False
        self.fail_after_marker = 0  # fail this many writes that follow an in-flight marker write
        self._lock = threading.RLock()

    def get(self):
        return dict(self.doc)

    def update(self, changes):
        if self.down:
            raise ConnectionError("ledger down")
        if self.fail_after_marker and "access_token" in changes:
            self.fail_after_marker -= 1
            raise ConnectionError("ledger connection terminated")
        self.doc.update(changes)

    @contextmanager
    def lock(self):
        with self._lock:
            yield


@pytest.fixture
def token_platform():
    issuer = TokenIssuer(access_ttl_s=3600)
    refresh_token = issuer.register_client("cid", "secret")
    presented: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            form = dict(parse_qsl(request.content.decode()))
            answer = issuer.refresh("cid", "secret", form["refresh_token"])
            presented.append((form["refresh_token"], answer is not None))
            return httpx.Response(200, json=answer) if answer else httpx.Response(400, json={"error": "invalid_grant"})
        ok = issuer.valid(request.headers.get("authorization"))
        return httpx.Response(200 if ok else 401, json={"ok": ok})

    return issuer, refresh_token, presented, httpx.MockTransport(handler)


def _client(transport, credentials, sleeps=None):
    auth = OAuth2RefreshAuth(target="t1", token_url="http://platform/token", credentials=credentials,
                             client_auth="body", transport=transport,
                             sleep=(sleeps.append if sleeps is not None else lambda s: None))
    return PlatformHttp(target="t1", platform="test", base_url="http://platform", auth=auth,
                        limiter=limiter_from(None, None, None, 4), transport=transport)


def test_an_answer_that_cannot_be_stored_is_kept_and_stored_before_any_other_use(token_platform):
    issuer, refresh_token, presented, transport = token_platform
    creds = FlakyCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token})
    creds.fail_after_marker = 1
    sleeps: list[float] = []
    client = _client(transport, creds, sleeps)

    original_update = creds.update

    def update_then_outage(changes):
        try:
            original_update(changes)
        except ConnectionError:
            creds.down = True  # the outage lasts: the back-off cannot store it either
            raise

    creds.update = update_then_outage
    with pytest.raises(RetryableError, match="kept in memory"):
        client.request("GET", "/api")
    assert sleeps, "storing was retried with back-off"
    assert creds.doc["refresh_token"] == refresh_token and creds.doc["refresh_in_flight"]
    # While the ledger is down nothing uses the credential, and nothing is sent to the token endpoint again.
    with pytest.raises(RetryableError):
        client.request("GET", "/api")
    assert len(presented) == 1
    creds.down = False
    assert client.request("GET", "/api").status_code == 200
    assert [honoured for _, honoured in presented] == [True], "the spent refresh token was never sent again"
    assert creds.doc["refresh_token"] != refresh_token and not creds.doc["refresh_in_flight"]
    assert issuer.refresh("cid", "secret", creds.doc["refresh_token"]) is not None


def test_a_young_marker_of_another_process_is_waited_for_an_old_one_retried(token_platform):
    issuer, refresh_token, presented, transport = token_platform
    now = time.time()
    creds = FlakyCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token,
                              "refresh_in_flight": {"id": "x", "owner": "other-host:1:ab", "at": now - 10}})
    client = _client(transport, creds)
    with pytest.raises(RetryableError, match="not stored yet"):
        client.request("GET", "/api")
    assert presented == [], "another process may still store the answer: its refresh token is not spent twice"
    creds.doc["refresh_in_flight"]["at"] = now - IN_FLIGHT_STALE_S - 1  # that process died with the answer
    assert client.request("GET", "/api").status_code == 200
    assert [honoured for _, honoured in presented] == [True]


def test_no_refresh_is_sent_when_the_marker_cannot_be_written(token_platform):
    _, refresh_token, presented, transport = token_platform
    creds = FlakyCredentials({"client_id": "cid", "client_secret": "secret", "refresh_token": refresh_token})
    creds.down = True
    with pytest.raises(RetryableError, match="refresh not sent"):
        _client(transport, creds).request("GET", "/api")
    assert presented == []


@pytest.mark.timeout(60)
def test_a_write_that_fails_on_a_live_connection_is_stored_again_without_waiting_on_its_own_lock(xero, monkeypatch):
    """The answer's write fails while the session's connection stays alive (still holding the advisory lock):
    it is stored again on a new session once the first is closed — not on a second connection that would
    wait forever for the lock the first one holds."""
    from daemon.sink.ledger import PgCredentialSession  # noqa: PLC0415

    sandbox, ledger, runtime, connector = xero
    recorder = RecordingIssuer(sandbox.issuer, lambda: None)
    real_save = PgCredentialSession.save
    failures = [1]

    def save(self, changes):
        if "access_token" in changes and failures:
            failures.pop()
            raise psycopg.errors.SerializationFailure("injected: the write of the answer fails")
        return real_save(self, changes)

    monkeypatch.setattr(PgCredentialSession, "save", save)
    assert connector.fetch_invoice(str(uuid.uuid4())) is None
    stored = runtime.credentials("xero-main").get()
    assert not failures and not stored.get("refresh_in_flight")
    assert [honoured for _, honoured in recorder.presented] == [True]
    assert sandbox.issuer.refresh(stored["client_id"], stored["client_secret"], stored["refresh_token"]) is not None
