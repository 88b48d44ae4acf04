"""The QuickBooks Web Connector endpoint: its own listener (TLS from a certificate and key), separate from
/metrics; authenticate throttled per username and per client address; a request size limit (413); the login
compared in constant time on bytes (a non-ASCII password is an ordinary refusal, never an HTTP 500)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from connectors.quickbooks_desktop import CONNECTOR, Sandbox, soap
from connectors.quickbooks_desktop.endpoint import AuthThrottle, WebConnectorGuard, guarded_endpoint
from connectors.testing import MemoryRuntime
from daemon.config import AppConfig, ConfigError, TargetConfig, WebConnectorConfig, load_config
from connectors.sandbox_kit import RunningServer
from daemon.service import build_http_app, build_web_connector_app

URL = "/connectors/qbd/qbwc"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endpoint():
    """The qbd target's SOAP service behind the guard, as the daemon wires it (credentials from the store)."""
    sandbox = Sandbox(validate=False)
    credentials = sandbox.seed_credentials()
    target = TargetConfig.model_validate(sandbox.target_config("qbd", "http://127.0.0.1"))
    runtime = MemoryRuntime({"qbd": credentials})
    connector = CONNECTOR(target, runtime)
    web = WebConnectorConfig(max_request_bytes=64 * 1024, auth_free_failures=2, auth_base_delay_s=10,
                             auth_max_delay_s=60)
    guard = guarded_endpoint(connector.asgi_app(), target, runtime.credentials("qbd"), web)
    clock = Clock()
    guard.throttle.clock = clock
    app = build_web_connector_app({"qbd": guard})
    return TestClient(app), credentials, clock, guard


def login(client: TestClient, username: str, password: str, forwarded_for: str | None = None) -> list[str]:
    body = soap.envelope("authenticate", [("strUserName", username), ("strPassword", password)])
    headers = {"content-type": "text/xml; charset=utf-8"}
    if forwarded_for:
        headers["x-forwarded-for"] = forwarded_for
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text
    name, result = soap.parse_response(response.content)
    assert name == "authenticateResponse"
    return result


def test_a_non_ascii_password_is_refused_like_any_wrong_one_not_a_500(endpoint):
    client, credentials, _, _ = endpoint
    assert login(client, credentials["username"], "pässwörd-€") == ["", "nvu"]
    assert login(client, "bücher", credentials["password"]) == ["", "nvu"]
    assert soap.credentials_match("bücher", "pässwörd-€", "bücher", "pässwörd-€")
    assert not soap.credentials_match("bücher", "pässwörd-€", "bücher", "passwörd-€")
    assert not soap.credentials_match("", "", "", "")  # no stored password: nobody gets in


def test_authenticate_is_throttled_per_username_with_growing_delays(endpoint):
    client, credentials, clock, _ = endpoint
    user, password = credentials["username"], credentials["password"]
    assert login(client, user, password)[1] != "nvu"  # the right login works
    for _ in range(2):  # the free failures
        assert login(client, user, "wrong") == ["", "nvu"]
    assert login(client, user, "wrong") == ["", "nvu"]  # third failure: from now on a delay applies
    # Even the right password is refused while the delay runs (the password is not even looked at).
    clock.now += 9
    assert login(client, user, password) == ["", "nvu"]
    clock.now += 2  # 10 s after the last failure: one try allowed
    assert login(client, user, "wrong again") == ["", "nvu"]
    clock.now += 19  # the delay doubled to 20 s
    assert login(client, user, password) == ["", "nvu"]
    clock.now += 2
    ticket, _ = login(client, user, password)
    assert ticket  # accepted, and the counters are reset
    assert login(client, user, "typo") == ["", "nvu"]
    assert login(client, user, password)[0]


def test_authenticate_is_throttled_per_client_address_across_usernames(endpoint):
    client, credentials, clock, guard = endpoint
    guard.behind_proxy = True  # the address is the proxy's last X-Forwarded-For hop
    for n in range(3):
        assert login(client, f"guess{n}", "x", forwarded_for="198.51.100.7") == ["", "nvu"]
    # The real user from that address waits too; the same user from another address does not.
    assert login(client, credentials["username"], credentials["password"], forwarded_for="198.51.100.7") == ["", "nvu"]
    assert login(client, credentials["username"], credentials["password"], forwarded_for="203.0.113.9")[0]
    # A client cannot pick its own address: only the right-most hop counts.
    assert login(client, "guess9", "x", forwarded_for="203.0.113.9, 198.51.100.7") == ["", "nvu"]
    assert guard.throttle.wait_s("addr:198.51.100.7") > 0 and guard.throttle.wait_s("addr:203.0.113.9") == 0


def test_the_delay_is_capped():
    clock = Clock()
    throttle = AuthThrottle(free_failures=0, base_delay_s=1, max_delay_s=30, clock=clock)
    for _ in range(40):
        throttle.failed("user:x")
    assert throttle.wait_s("user:x") == 30


def test_a_request_over_the_size_limit_is_413_declared_or_streamed(endpoint):
    client, credentials, _, _ = endpoint
    big = b"<x>" + b"a" * (64 * 1024) + b"</x>"
    assert client.post(URL, content=big).status_code == 413

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(40):
            yield b"a" * 4096

    assert client.post(URL, content=chunks()).status_code == 413
    assert login(client, credentials["username"], credentials["password"])[0]  # a normal request still works


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "qbwc.crt", tmp_path / "qbwc.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


def test_the_endpoint_serves_tls_on_its_own_listener_apart_from_metrics(endpoint, tmp_path):
    _, credentials, _, guard = endpoint
    certfile, keyfile = _self_signed(tmp_path)
    web = RunningServer(build_web_connector_app({"qbd": guard}), name="web-connector", certfile=certfile,
                        keyfile=keyfile).start()
    metrics = RunningServer(build_http_app(lambda: {"fold": True}, lambda: {"fold": True}), name="metrics").start()
    try:
        assert web.url.startswith("https://") and web.port != metrics.port
        body = soap.envelope("authenticate", [("strUserName", credentials["username"]),
                                              ("strPassword", credentials["password"])])
        with httpx.Client(verify=ssl.create_default_context(cafile=str(certfile)), timeout=10) as https:
            answer = https.post(f"{web.url}{URL}", content=body, headers={"content-type": "text/xml"})
            assert answer.status_code == 200 and soap.parse_response(answer.content)[1][0]
            assert https.get(f"{web.url}/metrics").status_code == 404  # no metrics on the endpoint's listener
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken there
            httpx.post(f"http://127.0.0.1:{web.port}{URL}", content=body, timeout=5)
        assert httpx.get(f"{metrics.url}/metrics", timeout=5).status_code == 200
        assert httpx.post(f"{metrics.url}{URL}", content=body, timeout=5).status_code == 404  # nor SOAP on metrics
    finally:
        web.stop()
        metrics.stop()


def test_plain_http_on_a_public_address_is_refused_for_a_desktop_target(tmp_path):
    target = {"name": "books", "platform": "quickbooks-desktop"}
    with pytest.raises(ValueError, match="requires HTTPS for any host but localhost"):
        AppConfig.model_validate({"targets": [target], "web_connector": {"host": "0.0.0.0"}})
    AppConfig.model_validate({"targets": [target], "web_connector": {"host": "0.0.0.0", "behind_proxy": True}})
    AppConfig.model_validate({"targets": [target], "web_connector": {"host": "0.0.0.0", "tls_certfile": "/c",
                                                                     "tls_keyfile": "/k"}})
    config = tmp_path / "ledgerwire.yml"
    config.write_text("web_connector: {host: 0.0.0.0, tls_certfile: /c}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.lines == [f"{config}: web_connector: tls_certfile and tls_keyfile go together (the certificate "
                                "chain and its private key)"]


def test_the_guard_passes_everything_but_refused_logins_to_the_service(endpoint):
    client, _, _, guard = endpoint
    assert isinstance(guard, WebConnectorGuard)
    assert client.get(URL).status_code == 200  # the service's own GET answer
    version = client.post(URL, content=soap.envelope("serverVersion", []))
    assert version.status_code == 200 and soap.parse_response(version.content)[0] == "serverVersionResponse"


def test_a_correct_non_ascii_login_is_accepted_by_the_service_itself():
    """Past the guard, the Web Connector service compares the login on bytes too (it answered HTTP 500 with
    ``hmac.compare_digest``'s TypeError for a correct non-ASCII password)."""
    sandbox = Sandbox(validate=False)
    credentials = sandbox.seed_credentials() | {"username": "bücher", "password": "pässwörd-€"}
    target = TargetConfig.model_validate(sandbox.target_config("qbd", "http://127.0.0.1"))
    runtime = MemoryRuntime({"qbd": credentials})
    client = TestClient(build_web_connector_app({"qbd": CONNECTOR(target, runtime).asgi_app()}))
    ticket, status = login(client, "bücher", "pässwörd-€")
    assert ticket and status != "nvu"
    assert login(client, "bücher", "wrong") == ["", "nvu"]
