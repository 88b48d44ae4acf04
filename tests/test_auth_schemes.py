"""Every auth scheme in ``connectors.auth`` against known answers: OAuth 1.0a signatures from published
examples (RFC 5849, NetSuite's documentation, Twitter's signing guide), and client credentials, session
logins and static keys against small local platforms (httpx MockTransport)."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.auth import (
    ApiKeyAuth,
    BasicAuth,
    OAuth1TokenAuth,
    OAuth2ClientCredentialsAuth,
    SessionLoginAuth,
    bill_com_session,
    jwt_client_assertion,
    sap_b1_session,
)
from connectors.base import AuthError, ReauthorizationRequired
from connectors.http import PlatformHttp
from connectors.ratelimit import limiter_from
from connectors.testing import MemoryCredentials


def _http(auth, transport, base_url="http://platform") -> PlatformHttp:
    return PlatformHttp(target="t1", platform="test", base_url=base_url, auth=auth,
                        limiter=limiter_from(None, None, None, 8), transport=transport)


# --- OAuth 1.0a (NetSuite TBA) --------------------------------------------------------------------------


def test_oauth1_base_string_is_rfc5849s_example():
    """RFC 5849 §3.4.1.1: query, form body and oauth parameters, percent-encoded and sorted; realm excluded."""
    request = httpx.Request("POST", "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b", content=b"c2&a3=2+q",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    from connectors.auth import _form_params  # noqa: PLC0415 - the parameters the auth collects from a request

    oauth = [("oauth_consumer_key", "9djdj82h48djs9d2"), ("oauth_token", "kkk9d7dh3k39sjv7"),
             ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131201"), ("oauth_nonce", "7d8f3e4a"),
             ("realm", "Example")]
    params = [*request.url.params.multi_items(), *_form_params(request), *oauth]
    assert OAuth1TokenAuth.base_string("POST", str(request.url), params) == (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D"
        "%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method"
        "%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7")


def test_oauth1_base_string_is_netsuites_published_hmac_sha256_example():
    """NetSuite help, 'Constructing the Signature for Step One of the TBA Authorization Flow'."""
    key = "60712990bc09623786e7047c226bcb3f86d49dca0b04efc21001dc76d97a81f5"
    params = [("oauth_callback", "https://my.example.com/TBA/?callbackRequest"), ("oauth_consumer_key", key),
              ("oauth_nonce", "bUvpxBX93OWo0FLswq5M"), ("oauth_signature_method", "HMAC-SHA256"),
              ("oauth_timestamp", "1575998103"), ("oauth_version", "1.0"), ("role", "45678")]
    assert OAuth1TokenAuth.base_string("POST", "https://1234567.restlets.api.netsuite.com/rest/requesttoken", params) == (
        "POST&https%3A%2F%2F1234567.restlets.api.netsuite.com%2Frest%2Frequesttoken&oauth_callback%3Dhttps%253A%252F"
        "%252Fmy.example.com%252FTBA%252F%253FcallbackRequest%26oauth_consumer_key%3D" + key +
        "%26oauth_nonce%3DbUvpxBX93OWo0FLswq5M%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1575998103"
        "%26oauth_version%3D1.0%26role%3D45678")


TWITTER = {"consumer_key": "xvz1evFS4wEEPTGEFPHBog", "consumer_secret": "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
           "token_id": "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
           "token_secret": "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"}


def _twitter_auth(method: str, realm: str | None = None) -> OAuth1TokenAuth:
    return OAuth1TokenAuth(credentials=MemoryCredentials(TWITTER), realm=realm, signature_method=method,
                           clock=lambda: 1318622958, nonce=lambda: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg")


def _signature(header: str) -> str:
    fields = dict(part.strip().split("=", 1) for part in header.removeprefix("OAuth ").split(","))
    return httpx.URL("?s=" + fields["oauth_signature"].strip('"')).params["s"]


def test_oauth1_signature_of_a_whole_request_matches_twitters_published_example():
    """Twitter's 'Creating a signature' guide: the whole request (query + form body) signed with HMAC-SHA1,
    giving the published signature — the same code path as HMAC-SHA256, another digest."""
    request = httpx.Request("POST", "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
                            data={"status": "Hello Ladies + Gentlemen, a signed OAuth request!"})
    _twitter_auth("HMAC-SHA1").sign(request)
    assert _signature(request.headers["Authorization"]) == "hCtSmYh+iHYCEqBWrE7C7hYmtUk="


def test_oauth1_hmac_sha256_header_carries_the_realm_and_signs_with_sha256():
    request = httpx.Request("GET", "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/invoice/40")
    _twitter_auth("HMAC-SHA256", realm="1234567_SB1").sign(request)
    header = request.headers["Authorization"]
    assert header.startswith('OAuth realm="1234567_SB1", oauth_consumer_key="xvz1evFS4wEEPTGEFPHBog"')
    assert 'oauth_signature_method="HMAC-SHA256"' in header and 'oauth_version="1.0"' in header
    assert len(base64.b64decode(_signature(header))) == 32  # a SHA-256 digest, not SHA-1's 20 bytes


def test_oauth1_through_platform_http_signs_body_and_query_and_retries_a_401_with_a_new_nonce():
    seen: list[str] = []
    auth = OAuth1TokenAuth(credentials=MemoryCredentials(TWITTER), realm="123456")

    def handler(request: httpx.Request) -> httpx.Response:
        header = request.headers["Authorization"]
        fields = dict(part.strip().split("=", 1) for part in header.removeprefix("OAuth ").split(","))
        nonce = fields["oauth_nonce"].strip('"')
        again = OAuth1TokenAuth(credentials=MemoryCredentials(TWITTER), realm="123456",
                                clock=lambda: int(fields["oauth_timestamp"].strip('"')), nonce=lambda: nonce)
        expected = again.authorization(request.method, str(request.url),
                                       parse_qsl(request.content.decode()), request.url.params.multi_items())
        assert header == expected, "the platform recomputes the same signature over method, URL, query and body"
        seen.append(nonce)
        return httpx.Response(401 if len(seen) == 1 else 200, json={})  # the first nonce "was already used"

    response = _http(auth, httpx.MockTransport(handler)).request("POST", "/restlet.nl?script=6&deploy=1",
                                                                 data={"name": "A & B"})
    assert response.status_code == 200 and len(seen) == 2 and seen[0] != seen[1]


# --- OAuth2 client credentials (Business Central, NetSuite M2M) -----------------------------------------


class TokenEndpoint:
    def __init__(self, check_form) -> None:
        self.check_form = check_form
        self.issued: list[str] = []
        self.revoked: set[str] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            form = dict(parse_qsl(request.content.decode()))
            error = self.check_form(form)
            if error:
                return httpx.Response(401, json={"error": error})
            self.issued.append(f"cc-{len(self.issued)}")
            return httpx.Response(200, json={"access_token": self.issued[-1], "token_type": "Bearer",
                                             "expires_in": 3599})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        ok = token in self.issued and token not in self.revoked
        return httpx.Response(200 if ok else 401, json={"token": token})


def test_client_credentials_with_a_secret_business_central():
    scope = "https://api.businesscentral.dynamics.com/.default"
    endpoint = TokenEndpoint(lambda form: None if form == {
        "grant_type": "client_credentials", "scope": scope, "client_id": "app", "client_secret": "s3"}
        else "invalid_client")
    transport = httpx.MockTransport(endpoint.handler)
    auth = OAuth2ClientCredentialsAuth(target="bc", token_url="http://platform/token", scope=scope,
                                       credentials=MemoryCredentials({"client_id": "app", "client_secret": "s3"}),
                                       transport=transport)
    http = _http(auth, transport)
    assert http.request("GET", "/companies").json() == {"token": "cc-0"}
    assert http.request("GET", "/companies").json() == {"token": "cc-0"}  # kept until it expires
    endpoint.revoked.add("cc-0")  # the platform says 401: one new token, the request once more
    assert http.request("GET", "/companies").json() == {"token": "cc-1"}
    assert endpoint.issued == ["cc-0", "cc-1"]


def test_client_credentials_refused_needs_a_person():
    endpoint = TokenEndpoint(lambda form: "invalid_client")
    transport = httpx.MockTransport(endpoint.handler)
    auth = OAuth2ClientCredentialsAuth(target="bc", token_url="http://platform/token", transport=transport,
                                       credentials=MemoryCredentials({"client_id": "app", "client_secret": "bad"}))
    # A refused client secret is not retried and not a dead letter per invoice: the target pauses.
    with pytest.raises(ReauthorizationRequired, match="invalid_client"):
        _http(auth, transport).request("GET", "/companies")


def test_client_credentials_with_a_jwt_assertion_netsuite_m2m():
    from joserfc import jwt  # noqa: PLC0415
    from joserfc.jwk import RSAKey  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token_url = "http://platform/token"
    claims_seen: list[dict] = []

    def check(form):
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        token = jwt.decode(form["client_assertion"], RSAKey.import_key(public), algorithms=["PS256"])  # verifies it
        claims_seen.append(dict(token.claims) | {"kid": token.header["kid"], "alg": token.header["alg"]})
        return None

    endpoint = TokenEndpoint(check)
    transport = httpx.MockTransport(endpoint.handler)
    auth = OAuth2ClientCredentialsAuth(
        target="ns", token_url=token_url, transport=transport,
        client_assertion=jwt_client_assertion(token_url, scope="rest_webservices", clock=lambda: 1_700_000_000),
        credentials=MemoryCredentials({"client_id": "ns-app", "certificate_id": "cert-1", "private_key": pem}))
    assert _http(auth, transport).request("GET", "/record/v1/invoice").status_code == 200
    [claims] = claims_seen
    assert claims["iss"] == "ns-app" and claims["aud"] == token_url and claims["scope"] == "rest_webservices"
    assert claims["kid"] == "cert-1" and claims["alg"] == "PS256"
    assert claims["exp"] - claims["iat"] <= 3600


# --- session login (SAP Business One Service Layer, Bill.com) -------------------------------------------


class SapServiceLayer:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.logins = 0
        self.lock = threading.Lock()
        self.honour_sessions = True

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/b1s/v1/Login":
            body = httpx.Response(200, content=request.content).json()
            if body != {"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "pw"}:
                return httpx.Response(401, json={"error": {"code": 100000027, "message": "Login failed"}})
            with self.lock:
                self.logins += 1
                session = f"s{self.logins}"
                self.sessions.add(session)
            return httpx.Response(200, json={"SessionId": session, "Version": "1000190", "SessionTimeout": 30},
                                  headers=[("Set-Cookie", f"B1SESSION={session}; path=/b1s/v1; HttpOnly"),
                                           ("Set-Cookie", "ROUTEID=.node1; path=/b1s")])
        cookies = dict(part.strip().split("=", 1) for part in request.headers.get("Cookie", "").split(";") if "=" in part)
        if not self.honour_sessions or cookies.get("B1SESSION") not in self.sessions or cookies.get("ROUTEID") != ".node1":
            return httpx.Response(401, json={"error": {"code": 301, "message": "Invalid session."}})
        return httpx.Response(200, json={"session": cookies["B1SESSION"]})


def _sap(service: SapServiceLayer, password="pw", clock=None):
    transport = httpx.MockTransport(service.handler)
    base = "https://b1.example:50000/b1s/v1"
    kwargs = {"clock": clock} if clock else {}
    auth = SessionLoginAuth(target="b1", login=sap_b1_session(base), transport=transport,
                            credentials=MemoryCredentials({"company_db": "SBODEMOUS", "username": "manager",
                                                           "password": password}), **kwargs)
    return auth, _http(auth, transport, base_url=base)


def test_sap_b1_sends_both_cookies_and_logs_in_again_once_when_the_session_expired():
    service = SapServiceLayer()
    auth, http = _sap(service)
    assert http.request("GET", "/Invoices(1)").json() == {"session": "s1"}
    assert http.request("GET", "/Invoices(1)").json() == {"session": "s1"}
    service.sessions.clear()  # the Service Layer restarted or the session idled out
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http.request("GET", "/Invoices(1)").json(), range(6)))
    assert {a["session"] for a in answers} == {"s2"} and service.logins == 2, "one re-login, not one per thread"


def test_sap_b1_logs_in_again_before_the_announced_idle_timeout():
    service = SapServiceLayer()
    now = [0.0]
    auth, http = _sap(service, clock=lambda: now[0])
    http.request("GET", "/Items")
    now[0] += 29 * 60 + 1  # within a minute of SessionTimeout (30 min) since the last use
    assert http.request("GET", "/Items").json() == {"session": "s2"}
    assert service.logins == 2


def test_sap_b1_wrong_password_is_permanent_and_a_rejected_request_is_an_auth_error():
    with pytest.raises(ReauthorizationRequired, match="login refused"):
        _sap(SapServiceLayer(), password="wrong")[1].request("GET", "/Items")
    service = SapServiceLayer()
    _, http = _sap(service)
    http.request("GET", "/Items")
    service.honour_sessions = False  # logins succeed but no session is honoured (a licence problem)
    with pytest.raises(AuthError):
        http.request("GET", "/Items")
    assert service.logins == 2, "one re-login after the 401, then the platform's answer stands"


def test_bill_com_session_headers_and_relogin_after_401():
    logins: list[dict] = []
    live: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/connect/v3/login":
            logins.append(httpx.Response(200, content=request.content).json())
            live.add(f"sid{len(logins)}")
            return httpx.Response(200, json={"sessionId": f"sid{len(logins)}", "organizationId": "00801ABC"})
        if request.headers.get("devKey") != "dk" or request.headers.get("sessionId") not in live:
            return httpx.Response(401, json=[{"code": "BDC_1109", "message": "Session is invalid"}])
        return httpx.Response(200, json={"sessionId": request.headers["sessionId"]})

    transport = httpx.MockTransport(handler)
    base = "https://gateway.stage.bill.com/connect"
    auth = SessionLoginAuth(target="bill", login=bill_com_session(base), transport=transport,
                            credentials=MemoryCredentials({"username": "u", "password": "p",
                                                           "organization_id": "00801ABC", "dev_key": "dk"}))
    http = _http(auth, transport, base_url=base)
    assert http.request("GET", "/v3/invoices").json() == {"sessionId": "sid1"}
    live.clear()
    assert http.request("GET", "/v3/invoices").json() == {"sessionId": "sid2"}
    assert logins[0] == {"username": "u", "password": "p", "organizationId": "00801ABC", "devKey": "dk"}


# --- API key and Basic ----------------------------------------------------------------------------------


def test_api_key_and_basic_read_the_current_credentials():
    seen: list[str] = []
    transport = httpx.MockTransport(lambda r: (seen.append(r.headers["Authorization"]), httpx.Response(200))[1])
    creds = MemoryCredentials({"api_key": "k1", "username": "int", "password": "pw"})
    _http(ApiKeyAuth(credentials=creds, prefix="bearer "), transport).request("GET", "/json/2/res.partner")
    creds.update({"api_key": "k2"})  # `credentials set` rotated it: no restart needed
    _http(ApiKeyAuth(credentials=creds, prefix="bearer "), transport).request("GET", "/json/2/res.partner")
    _http(BasicAuth(credentials=creds), transport).request("GET", "/fscmRestApi/resources")
    assert seen == ["bearer k1", "bearer k2", "Basic " + base64.b64encode(b"int:pw").decode()]


def test_api_key_missing_is_permanent_and_401_is_not_retried():
    calls: list[int] = []
    transport = httpx.MockTransport(lambda r: (calls.append(1), httpx.Response(401))[1])
    with pytest.raises(ReauthorizationRequired, match="no api_key"):
        _http(ApiKeyAuth(credentials=MemoryCredentials({})), transport).request("GET", "/x")
    with pytest.raises(AuthError):
        _http(ApiKeyAuth(credentials=MemoryCredentials({"api_key": "k"})), transport).request("GET", "/x")
    assert calls == [1]
