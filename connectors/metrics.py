"""The Prometheus series connectors record themselves (platform calls and their latency, 429s, token
refreshes and expiry, Web Connector logins refused). Defined here so that connectors never import the
daemon's internals; ``daemon.metrics`` re-exports them with every other series (same names, one registry),
so the README's metric table, the dashboards and the alert rules are unchanged."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

API_CALLS = Counter(
    "ledgerwire_api_calls_total", "HTTP/SOAP/XML-RPC calls to a platform, by result class.",
    ["target", "platform", "result"],  # ok | retryable | auth | stale | permanent | rate_limited | network
)
API_LATENCY = Histogram(
    "ledgerwire_api_call_seconds", "Platform API call latency.", ["target", "platform"], buckets=LATENCY_BUCKETS
)
RATE_LIMITED = Counter("ledgerwire_rate_limited_total", "429 answers received from the platform.", ["target"])
TOKEN_EXPIRY = Gauge(
    "ledgerwire_credential_expiry_timestamp_seconds", "When the target's access token expires (Unix time).",
    ["target"],
)
TOKEN_REFRESHES = Counter("ledgerwire_token_refreshes_total", "OAuth2 token refreshes.", ["target", "result"])
QBWC_AUTH_REFUSALS = Counter(
    "ledgerwire_qbwc_auth_refusals_total",
    "QuickBooks Web Connector logins refused at the endpoint (bad_credentials, throttled).", ["target", "reason"])
