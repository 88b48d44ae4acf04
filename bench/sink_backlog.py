"""Benchmark 3: every registered connector draining a backlog at its platform's documented limits.

For each platform in ``connectors.registry`` (the table grows as connector packages land), writes a backlog of
canonical invoice versions (a quarter of the invoices edited and paid while the platform was away, so some
invoices have two versions) straight onto a fresh canonical topic, then lets one sink drain it into that
platform's local sandbox. The target runs with the connector's documented default limits (its
``settings.py``; a sandbox's relaxed test limits are removed), shared through PostgreSQL
(``daemon/sink/shared_ratelimit.py``), as the daemon runs them.

Every HTTP request the sandbox receives passes a counting middleware that also checks it against the
platform's documented windows (``DOCUMENTED``) — independently of whether the sandbox enforces them (Odoo's
does not) — so a breach is counted even where the platform would not have answered 429. Prints, per
platform: API requests per invoice (the token endpoint excluded), the share of the binding limit used over
the drain, breaches (requests over a documented window, and 429s), beside the baseline of one request per
version. QuickBooks Desktop is a pull platform: its simulated Web Connector polls the sink's SOAP service,
one qbXML request per exchange; it has no request limit to use a share of.

    ledgerwire stack up && python bench/sink_backlog.py                   # every platform, ~2-4 min each
    python bench/sink_backlog.py --platform quickbooks-online --invoices 8000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from connectors.registry import PLATFORM_PACKAGES, connector_class, known_platforms  # noqa: E402
from connectors.testing import invoice_event, next_version, payment  # noqa: E402
from daemon.localstack import stack  # noqa: E402
from daemon.canonical import encode_invoice_event  # noqa: E402
from daemon.config import AppConfig  # noqa: E402
from daemon.kafka_util import ensure_topics  # noqa: E402
from daemon.sink.ledger import Ledger, load_secret_key  # noqa: E402

# The platforms' documented request windows (limit, seconds), what the counting middleware checks, and
# which of them "binding limit used" is measured against; "batch" windows count /batch requests only.
# Sources: the connectors' settings.py (each cites the platform's documentation).
DOCUMENTED: dict[str, dict] = {
    "quickbooks-online": {"windows": [(500, 60.0)], "batch_windows": [(40, 60.0)], "invoices": 1500},
    "xero": {"windows": [(60, 60.0), (5000, 86400.0)], "invoices": 400},
    "zoho-books": {"windows": [(100, 60.0)], "invoices": 120},
    "odoo": {"windows": [(10, 1.0)], "invoices": 400},
    "quickbooks-desktop": {"windows": [], "invoices": 200},
    # Round 3b: the connectors that landed since. Where the platform documents no limit, the window is the
    # connector's own conservative default (settings.py says so) and is what "binding" is measured against.
    "sage-accounting": {"windows": [(100, 60.0), (2500, 86400.0)], "invoices": 60},
    "freshbooks": {"windows": [(60, 60.0)], "invoices": 45},  # FreshBooks publishes none: ours
    "freeagent": {"windows": [(120, 60.0), (3600, 3600.0)], "invoices": 60},
    # MYOB refuses a request over its limits with 403 RateLimitError, not 429.
    "myob-accountright": {"windows": [(8, 1.0), (1_000_000, 86400.0)], "invoices": 300, "refusal_status": 403},
    "reckon-one": {"windows": [(120, 60.0)], "invoices": 45},  # Reckon publishes none: ours
    "business-central": {"windows": [(6000, 300.0)], "invoices": 1100},
    "sap-business-one": {"windows": [(600, 60.0)], "invoices": 550},  # customer-hosted, none: ours
    "oracle-erp": {"windows": [(600, 60.0)], "invoices": 600},  # Oracle publishes none (fair use): ours
    "kashflow": {"windows": [(120, 60.0)], "invoices": 80},  # KashFlow documents none: ours
    "wave": {"windows": [(60, 60.0)], "invoices": 50},  # Wave publishes none: ours
    "bill-com": {"windows": [(20_000, 3600.0)], "invoices": 400},
    "quickfile": {"windows": [(60, 60.0), (1000, 86400.0)], "invoices": 60},  # 60/min is ours, 1,000/day QuickFile's
    "patriot": {"windows": [], "invoices": 400},  # file export: no requests at all
    # Round 4: NetSuite documents no request rate, only concurrency governance: at most 5 requests in flight per
    # account on the smallest service tier. A concurrency limit is used in proportion to how long each request
    # takes, so the middleware holds every request for ``service_s`` (our assumption of NetSuite's time to
    # write a record; the local sandboxes answer in milliseconds) and measures the time-averaged requests in
    # flight against the limit.
    "netsuite-rest": {"windows": [], "concurrency": 5, "service_s": 0.5, "invoices": 300},
    "netsuite-soap": {"windows": [], "concurrency": 5, "service_s": 0.5, "invoices": 300},
}
_SANDBOX_RELAXATIONS = ("requests_per_second", "requests_per_minute", "requests_per_hour", "requests_per_five_minutes",
                        "requests_per_day", "concurrency", "batch_requests_per_minute")


def is_token_endpoint(path: str) -> bool:
    """The OAuth token endpoint is another host at the platform (MYOB's ``secure.myob.com/oauth2/v1/authorize``,
    Intuit's ``oauth.platform.intuit.com``): not an API request, not counted against the API's limits."""
    return "token" in path or "/oauth2/" in path


class Counting:
    """ASGI middleware: counts requests (token endpoint apart), /batch requests, 429 answers, and requests over
    a documented window or the documented concurrency."""

    def __init__(self, app, windows: list[tuple[int, float]], batch_windows: list[tuple[int, float]],
                 concurrency: int | None = None, service_s: float = 0.0, refusal_status: int = 429) -> None:
        self.app = app
        self.windows = [(limit, span, deque()) for limit, span in windows]
        self.batch_windows = [(limit, span, deque()) for limit, span in batch_windows]
        self.peak: dict[tuple[int, float], int] = {}  # (limit, span) -> most requests seen in one sliding window
        # (limit, span) -> shortest time limit + 1 consecutive requests took: below span is a breach; how far above
        # it is the margin the limiter left for jitter.
        self.closest: dict[tuple[int, float], float] = {}
        self._recent = {(limit, span): deque(maxlen=limit + 1) for limit, span in windows + batch_windows
                        if limit <= 1000}
        self.requests = self.batches = self.token_requests = self.answered_429 = self.over_window = 0
        self.first = self.last = None
        self.concurrency, self.service_s, self.refusal_status = concurrency, service_s, refusal_status
        self.in_flight = self.peak_in_flight = 0
        self.in_flight_seconds = 0.0  # the integral of requests in flight over time
        self._in_flight_since = time.monotonic()
        self._lock = threading.Lock()

    def _in_flight_changes(self, by: int, now: float) -> None:
        self.in_flight_seconds += self.in_flight * (now - self._in_flight_since)
        self._in_flight_since = now
        self.in_flight += by
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _count(self, windows, now: float) -> None:
        for limit, span, hits in windows:
            while hits and hits[0] <= now - span:
                hits.popleft()
            if len(hits) >= limit:
                self.over_window += 1
            hits.append(now)
            self.peak[(limit, span)] = max(self.peak.get((limit, span), 0), len(hits))
            recent = self._recent.get((limit, span))
            if recent is not None:
                recent.append(now)
                if len(recent) == recent.maxlen:
                    self.closest[(limit, span)] = min(self.closest.get((limit, span), float("inf")),
                                                      recent[-1] - recent[0])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        now = time.monotonic()
        token = is_token_endpoint(path)
        with self._lock:
            if token:
                self.token_requests += 1
            else:
                self.requests += 1
                self.first = self.first or now
                self.last = now
                if path.endswith("/batch"):
                    self.batches += 1
                    self._count(self.batch_windows, now)
                else:
                    self._count(self.windows, now)
                if self.concurrency is not None:
                    if self.in_flight >= self.concurrency:
                        self.over_window += 1
                    self._in_flight_changes(+1, now)

        async def counting_send(message):
            if message["type"] == "http.response.start" and message.get("status") in (429, self.refusal_status):
                with self._lock:
                    self.answered_429 += 1
            await send(message)

        try:
            if self.service_s and not token:
                await asyncio.sleep(self.service_s)  # the platform's time to do the work (see DOCUMENTED)
            return await self.app(scope, receive, counting_send)
        finally:
            if self.concurrency is not None and not token:
                with self._lock:
                    self._in_flight_changes(-1, time.monotonic())


def drain(platform: str, invoices: int, cfg: stack.StackConfig, history: bool = False, relaxed: bool = False) -> dict:
    """Drain a backlog into the platform's sandbox. ``history``: every invoice one version with its payments as
    the history generator writes them (85 % paid, a tenth of those in two payments) — what a history import
    sends. ``relaxed``: keep the sandbox's test limits, to count requests quickly (no share of a limit)."""
    from daemon.app import seed_credentials  # noqa: PLC0415
    from daemon.sink.deliver import DaemonRuntime, SinkWorker  # noqa: PLC0415

    documented = DOCUMENTED.get(platform, {"windows": []})
    package = importlib.import_module(PLATFORM_PACKAGES[platform])
    sandbox = package.Sandbox()
    pull = hasattr(sandbox, "attach")
    counter = None
    if not pull:
        counter = Counting(sandbox.app, documented["windows"], documented.get("batch_windows", []),
                           documented.get("concurrency"), 0.0 if relaxed else documented.get("service_s", 0.0),
                           documented.get("refusal_status", 429))
        sandbox.app = counter
    server = sandbox.serve()
    name = f"snk{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    workdir = Path(tempfile.mkdtemp())
    (workdir / "cred.json").write_text(json.dumps(sandbox.seed_credentials()))
    (workdir / "key").write_bytes(Fernet.generate_key())
    target = sandbox.target_config("backlog", server.url) | {"credentials_file": str(workdir / "cred.json")}
    # The connector's documented defaults, not the sandbox's relaxed test settings.
    if not relaxed:
        target["settings"] = {k: v for k, v in target.get("settings", {}).items() if k not in _SANDBOX_RELAXATIONS}
        target.pop("rate_limit", None)
    config = AppConfig.model_validate({
        "kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                  "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                  "sink_group_prefix": f"{name}-sink-"},
        "postgres": {"dsn": cfg.dsn(f"{name}_ledger")}, "secret_key_file": str(workdir / "key"),
        "targets": [target]})
    ensure_topics(config)
    producer = Producer({"bootstrap.servers": cfg.bootstrap, "linger.ms": 20})
    versions = paid = 0
    for n in range(invoices):
        if history:  # generator.generate_history's shape: 85 % paid, a tenth of those in two payments
            payments = [] if n % 20 >= 17 else [payment(2 * n + 1, "100.00")] if n % 10 else \
                [payment(2 * n + 1, "60.00"), payment(2 * n + 2, "40.00")]
            chain = [invoice_event(100_000 + n, payments=payments)]
            paid += len(payments)
        else:
            chain = [invoice_event(100_000 + n)]
        if not history and n % 4 == 0:  # a quarter of the invoices were edited and paid while the platform was away
            chain.append(next_version(chain[-1], payments=[payment(n + 1, "100.00")]))
            paid += 1
        for e in chain:
            producer.produce(config.kafka.canonical_topic, key=e.key.encode(), value=encode_invoice_event(e))
            versions += 1
    producer.flush(60)

    ledger = Ledger(config.postgres.dsn)
    ledger.ensure_schema([connector_class(platform).ledger_ddl()])  # as the daemon does at start
    os.environ["LEDGERWIRE_SECRET_KEY"] = (workdir / "key").read_text()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    seed_credentials(config, runtime)
    stop = threading.Event()
    sink = SinkWorker(config, config.targets[0], ledger, runtime, stop)
    if pull:  # the simulated Web Connector polls the sink's SOAP service, as QBWC polls the daemon
        sandbox.attach(sink.connector.asgi_app())
        sandbox.start_polling(0.2)
    started = time.monotonic()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    timeout = 3600
    while time.monotonic() - started < timeout:
        booked = [b for b in sandbox.booked_invoices() if not b.voided]
        if len({b.number for b in booked}) >= invoices and sum(b.payment_count for b in booked) >= paid:
            break
        stop.wait(1)  # polling the sandbox's books for the end of the drain; no synchronisation depends on it
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(60)
    if pull:
        sandbox.stop_polling()
    server.stop()
    ledger.close()
    result = {"platform": platform, "invoices": invoices, "versions": versions, "seconds": elapsed,
              "complete": elapsed < timeout}
    if pull:
        requests = sum(s.get("requests", 0) for s in sandbox.sessions)
        result.update(requests=requests, per_invoice=requests / invoices, binding=None, share=None, breaches=0,
                      answered_429=0, batches=0)
        return result
    span = max(1e-9, (counter.last or started) - (counter.first or started))
    # The drain's pace against each window's average pace; the binding one is the highest. A window longer than
    # the drain (Business Central's 5 minutes, FreeAgent's and BILL's hour) cannot be filled by it: the peak fill
    # of every window is printed beside the share.
    shares = [(f"{limit}/{int(window)}s", (counter.requests - counter.batches) / span / (limit / window))
              for limit, window in documented["windows"] if window <= 3600]
    shares += [(f"{limit} /batch per {int(window)}s", counter.batches / span / (limit / window))
               for limit, window in documented.get("batch_windows", [])]
    if counter.concurrency:  # time-averaged requests in flight against the documented concurrency
        shares.append((f"{counter.concurrency} in flight", counter.in_flight_seconds / span / counter.concurrency))
    binding, share = max(shares, key=lambda s: s[1]) if shares else (None, None)
    result.update(requests=counter.requests, per_invoice=counter.requests / invoices, batches=counter.batches,
                  binding=binding, share=share, breaches=counter.over_window, answered_429=counter.answered_429,
                  token_requests=counter.token_requests,
                  peaks=", ".join([f"{n}/{limit} in {int(w)}s" for (limit, w), n in sorted(counter.peak.items(),
                                                                                        key=lambda kv: kv[0][1])]
                                  + ([f"{counter.peak_in_flight}/{counter.concurrency} in flight"]
                                     if counter.concurrency else [])),
                  closest=", ".join(f"{limit + 1} requests in {gap:.3f} s (window {w:g} s)"
                                    for (limit, w), gap in sorted(counter.closest.items())))
    return result


# Platforms whose limit is not a request window: QuickBooks Desktop is pulled by the Web Connector, one qbXML
# request per exchange (~1/s while a session runs: an estimate); Patriot is a file export the bookkeeper imports.
PULL_PER_SECOND = {"quickbooks-desktop": 1.0}


def requests_per_day(platform: str) -> tuple[float | None, float | None, str]:
    """(requests, /batch requests) a day the platform's documented limits allow, and which limit binds."""
    documented = DOCUMENTED.get(platform, {"windows": []})
    if platform in PULL_PER_SECOND:
        return PULL_PER_SECOND[platform] * 86400, None, "one request per Web Connector exchange (~1/s, estimate)"
    caps = [(limit * 86400 / window, f"{limit:,}/{int(window)}s") for limit, window in documented["windows"]]
    if documented.get("concurrency"):
        per_s = documented["concurrency"] / documented["service_s"]
        caps.append((per_s * 86400, f"{documented['concurrency']} in flight at {documented['service_s']} s a request"))
    batch = [(limit * 86400 / window, f"{limit:,} /batch per {int(window)}s")
             for limit, window in documented.get("batch_windows", [])]
    if not caps:
        return None, None, "no requests (file export)"
    per_day, binding = min(caps)
    return per_day, (min(batch)[0] if batch else None), binding


def days_to_post(result: dict, invoices: int) -> float | None:
    """Days to post ``invoices`` history invoices at the requests per invoice ``result`` measured."""
    per_day, batch_per_day, _ = requests_per_day(result["platform"])
    if per_day is None:
        return 0.0
    singles = (result["requests"] - result["batches"]) / result["invoices"] * invoices
    days = singles / per_day
    if batch_per_day:
        days = max(days, result["batches"] / result["invoices"] * invoices / batch_per_day)
    return days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", action="append", help="only these platforms (default: every registered one)")
    parser.add_argument("--invoices", type=int, default=None, help="backlog size (default: ~2-4 minutes at the limit)")
    parser.add_argument("--history-shape", action="store_true", help="every invoice new with its payments (a "
                        "history import's shape); prints the days to post --days-for invoices at the documented limits")
    parser.add_argument("--relaxed", action="store_true", help="keep the sandboxes' test limits: count requests fast")
    parser.add_argument("--days-for", type=int, default=250_000, help="history size for the days-to-post column")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = stack.StackConfig()
    print("load average at start (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    results = []
    for platform in args.platform or known_platforms():
        invoices = args.invoices or DOCUMENTED.get(platform, {}).get("invoices", 200)
        r = drain(platform, invoices, cfg, history=args.history_shape, relaxed=args.relaxed)
        results.append(r)
        share = "n/a (pull)" if r["share"] is None else f"{r['share']:.0%} of {r['binding']}"
        print(f"{platform:<20} {r['invoices']:>6} invoices, {r['versions']:>6} versions (baseline "
              f"{r['versions'] / r['invoices']:.2f} requests/invoice): {r['per_invoice']:.2f} requests/invoice "
              f"({r['requests']} requests, {r['batches']} /batch), binding limit used {share}, breaches "
              f"{r['breaches']} over a documented window + {r['answered_429']} refused (429, MYOB's 403), drained in "
              f"{r['seconds']:.0f} s{'' if r['complete'] else ' (INCOMPLETE: timed out)'}; peak window fill "
              f"{r.get('peaks') or 'n/a'}; closest approach {r.get('closest') or 'n/a'}", flush=True)
    print("\n| platform | invoices (versions) | requests per invoice (baseline) | binding limit used | peak fill | "
          "breaches | drained in |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        share = f"{r['share']:.0%} of {r['binding']}" if r["share"] is not None else \
            "n/a (file export: no requests)" if not r["requests"] else \
            "n/a (pull: one request per Web Connector exchange)"
        print(f"| {r['platform']} | {r['invoices']:,} ({r['versions']:,}) | {r['per_invoice']:.2f} "
              f"({r['versions'] / r['invoices']:.2f}) | {share} | {r.get('peaks') or 'n/a'} | "
              f"{r['breaches'] + r['answered_429']} | "
              f"{r['seconds']:.0f} s |")
    if args.history_shape:
        print(f"\n| platform | requests per history invoice (measured) | requests for {args.days_for:,} invoices | "
              f"documented limit that binds | requests a day | days to post {args.days_for:,} |")
        print("|---|---|---|---|---|---|")
        for r in results:
            per_day, _, binding = requests_per_day(r["platform"])
            days = days_to_post(r, args.days_for)
            print(f"| {r['platform']} | {r['per_invoice']:.2f} | {r['per_invoice'] * args.days_for:,.0f} | {binding} | "
                  f"{'n/a' if per_day is None else f'{per_day:,.0f}'} | {days:,.1f} |")
    print("load average at end (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
