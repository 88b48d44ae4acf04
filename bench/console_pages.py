"""Benchmark 6: the bookkeeper's console's page render times with 100,000 invoices in the ledger.

Fills a fresh ledger database on the local stack's PostgreSQL with N posted invoices (one document each,
with a payment, an audit record each in a valid hash chain, 2 % of them issued per day over ~4 years) and a
few hundred dead letters over a dozen reasons, then times every console page through the daemon's HTTP
app in-process (Starlette's test client: routing, auth, queries, Jinja2 rendering — no network), logged
in. Beside each page: the same run's ``/healthz`` round trip, the floor of the HTTP path. Target: every
page under 200 ms. The whole-chain verification (``/console/audit``, on demand) is printed separately: it
recomputes every audit record and grows with the ledger.

    ledgerwire stack up && python3 bench/console_pages.py --invoices 100000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from connectors.testing import invoice_event  # noqa: E402
from daemon.localstack import stack  # noqa: E402
from daemon.canonical import encode_invoice_event  # noqa: E402
from daemon.config import AppConfig  # noqa: E402
from daemon.console import build_console  # noqa: E402
from daemon.console.password import hash_password  # noqa: E402
from daemon.sink.ledger import GENESIS, Ledger  # noqa: E402
from daemon.service import build_http_app  # noqa: E402

REASONS = ["QBO 2500: Invalid Reference Id : Account {n} not found", "Account Period Closed, Cannot Update Through "
           "Services API", "QBO 6000: The customer {n} has been made inactive", "QBO 6140: Duplicate Document Number "
           "Error", "TaxType OUTPUT{n} is not valid", "Item {n} not found", "Email address is invalid",
           "A business validation error has occurred", "QBO 2020: Required param missing, need to supply the "
           "required value for the API", "Contact {n} archived", "invalid_grant: refresh token revoked",
           "unexpected answer {n}"]


def fill(conn: psycopg.Connection, invoices: int, dead_letters: int) -> None:
    today = date.today()
    at0 = datetime.now(timezone.utc) - timedelta(days=2)
    docs, audit = io.StringIO(), io.StringIO()
    prev = GENESIS
    for i in range(1, invoices + 1):
        number = f"INV-{i:07d}"
        issued = today - timedelta(days=(invoices - i) // max(1, invoices // 1460))
        location = ("MAIN", "NORTH", "EAST")[i % 3]
        total = f"{100 + (i % 900)}.{i % 100:02d}"
        paid = "50.00" if i % 4 else total
        state = {"external_id": str(1000 + i), "status": "posted", "delivered_version": 1, "token": "0",
                 "payments": {str(i): {"external_id": f"P{i}", "amount": paid, "status": "applied", "token": "0"}}}
        at = at0 + timedelta(milliseconds=i)
        delivered = datetime.combine(issued, datetime.min.time(), timezone.utc) + timedelta(hours=12)  # issue day
        docs.write("\t".join(["books", str(i), number, "1", "posted", str(1000 + i),
                              json.dumps(state).replace("\\", "\\\\"), issued.isoformat(), location,
                              min(delivered, at).isoformat()]) + "\n")
        summary = {"status": "issued", "lines": 3, "payments": 1, "total": total, "attempts": 1}
        body = {"target": "books", "invoice_id": i, "invoice_number": number, "version": 1, "action": "create",
                "payload_hash": "h", "request_summary": summary, "response_status": "posted",
                "external_id": str(1000 + i), "source_tx": str(5000 + i), "at": at.isoformat(), "prev_hash": prev}
        record = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        audit.write("\t".join(["books", str(i), number, "1", "create", "h", json.dumps(summary), "posted",
                               str(1000 + i), str(5000 + i), at.isoformat(), prev, record]) + "\n")
        prev = record
    with conn.cursor() as cur:
        with cur.copy("COPY documents (target, invoice_id, invoice_number, delivered_version, status, external_id, "
                      "state, issue_date, location_code, updated_at) FROM STDIN") as copy:
            copy.write(docs.getvalue())
        with cur.copy("COPY audit_log (target, invoice_id, invoice_number, version, action, payload_hash, "
                      "request_summary, response_status, external_id, source_tx, at, prev_hash, record_hash) "
                      "FROM STDIN") as copy:
            copy.write(audit.getvalue())
        event = encode_invoice_event(invoice_event(invoices + 1, 1))
        for k in range(dead_letters):
            invoice_id = invoices + 1 + k
            cur.execute("INSERT INTO dead_letters (target, invoice_id, invoice_number, version, topic, partition, "
                        "kafka_offset, error_class, reason, event) VALUES ('books',%s,%s,1,'t',0,%s,'permanent',%s,%s)",
                        (invoice_id, f"INV-{invoice_id:07d}", k, REASONS[k % len(REASONS)].format(n=4000 + k % 7),
                         event))
    conn.execute("ANALYZE")


def timed(client: TestClient, path: str, runs: int) -> list[float]:
    for _ in range(2):
        assert client.get(path).status_code == 200, path
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--dead-letters", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    cfg = stack.StackConfig()
    name = f"bench_console_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    ledger = Ledger(cfg.dsn(name), min_size=1, max_size=4)
    try:
        ledger.ensure_schema()
        started = time.perf_counter()
        with psycopg.connect(cfg.dsn(name), autocommit=True) as conn:
            fill(conn, args.invoices, args.dead_letters)
        print(f"ledger filled: {args.invoices} invoices, {args.dead_letters} dead letters in "
              f"{time.perf_counter() - started:.1f}s ({name})")
        password = "bench-password-1"
        config = AppConfig.model_validate({
            "postgres": {"dsn": cfg.dsn(name)},
            "targets": [{"name": "books", "platform": "quickbooks-online", "settings": {"realm_id": "1"}}],
            "console": {"enabled": True, "password_hash": hash_password(password)}})
        app = build_http_app(lambda: {"fold": True}, lambda: {}, {}, build_console(config, ledger, None))
        client = TestClient(app, base_url="http://testserver", follow_redirects=False)
        assert client.post("/console/login", data={"username": "bookkeeper", "password": password}).status_code == 303
        started = time.perf_counter()
        assert client.get("/console/cash").status_code == 200
        print(f"cash, first load (waits for the receivables summary of {args.invoices} documents, built when the console starts): "
              f"{(time.perf_counter() - started) * 1000:.0f} ms; later loads refresh only what changed")
        middle = args.invoices // 2
        recent = date.today() - timedelta(days=30)
        pages = [("/healthz (baseline: the HTTP path alone)", "/healthz"),
                 ("invoices, newest first", "/console/invoices"),
                 ("invoices, page 20", "/console/invoices?page=20"),
                 ("invoices, number search", f"/console/invoices?number=INV-{middle:07d}"[:-2]),
                 ("invoices, last 30 days", f"/console/invoices?from={recent}&to={date.today()}"),
                 ("one invoice with history", f"/console/invoices/INV-{middle:07d}"),
                 ("needs attention", "/console/attention"),
                 ("reconcile (form)", "/console/reconcile"),
                 ("cash (aging over every invoice)", "/console/cash")]
        print(f"{'page':<42} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}  (runs: {args.runs})")
        for label, path in pages:
            times = sorted(timed(client, path, args.runs))
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            flag = "" if path == "/healthz" or p95 < 200 else "  OVER 200 ms"
            print(f"{label:<42} {statistics.median(times):>10.1f} {p95:>8.1f} {times[-1]:>8.1f}{flag}")
        with ledger.pool.connection() as conn:
            conn.execute("UPDATE documents SET updated_at = now() WHERE invoice_id > %s", (args.invoices - 1000,))
        started = time.perf_counter()
        assert client.get("/console/cash").status_code == 200
        print(f"{'cash, right after 1,000 new deliveries':<42} {(time.perf_counter() - started) * 1000:>10.1f}")
        times = timed(client, "/console/audit", 3)
        print(f"{'whole audit chain verified (on demand)':<42} {statistics.median(times):>10.1f} "
              f"{'':>8} {max(times):>8.1f}  ({args.invoices} records)")
    finally:
        ledger.close()
        with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    main()
