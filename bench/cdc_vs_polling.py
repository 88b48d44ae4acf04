"""Benchmark 5: CDC against polling, on the same workload.

Two shop databases get the same generated workload (new invoices, edits, payments) at the same rate.
One is synced by Ledgerwire (Debezium → Kafka → fold → sink), the other by the plain alternative: a loop
that every N seconds runs "select invoices changed since the last poll", reads each one whole (lines,
taxes, payments) and posts it through the same QuickBooks Online connector to its own sandbox. Printed side
by side: latency from commit to posted document, and the load each puts on its shop database
(transactions and rows read, from PostgreSQL's pg_stat_database).

    ledgerwire stack up && python bench/cdc_vs_polling.py --rate 10 --seconds 30 --poll-every 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from connectors.base import DocumentState  # noqa: E402
from connectors.quickbooks_online import CONNECTOR, Sandbox  # noqa: E402
from connectors.testing import MemoryContext, MemoryEntities, MemoryRuntime  # noqa: E402
from daemon.localstack import generator
from daemon.localstack import stack  # noqa: E402
from daemon.app import Daemon  # noqa: E402
from daemon.config import AppConfig, TargetConfig  # noqa: E402
from daemon.source.decode import RowChange, SourceInfo  # noqa: E402
from daemon.source.fold import Mirror, SourceTransaction  # noqa: E402


def db_load(dsn: str, db: str) -> tuple[int, int]:
    """(transactions, rows read) so far for the database, from PostgreSQL's own statistics."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit + xact_rollback, tup_returned + tup_fetched FROM pg_stat_database "
                           "WHERE datname=%s", (db,)).fetchone()
    return int(row[0]), int(row[1])


def timed_sandbox() -> tuple[Sandbox, dict[str, float]]:
    sandbox = Sandbox()
    from connectors.sandbox_kit import WindowLimit

    sandbox.window = WindowLimit(6000, 60.0)  # measure the sync method, not the platform's throttle
    sandbox.concurrency = 32
    created: dict[str, float] = {}
    original = sandbox._invoice  # noqa: SLF001

    def timed(realm, table, operation, body):
        result = original(realm, table, operation, body)
        created[result["DocNumber"]] = time.time()
        return result

    sandbox._invoice = timed  # noqa: SLF001
    return sandbox, created


def poller(dsn: str, sandbox: Sandbox, server_url: str, every: float, stop: threading.Event) -> None:
    """The plain alternative: poll for changed invoices, read each whole, post it."""
    target = TargetConfig.model_validate(sandbox.target_config("poll", server_url)
                                         | {"rate_limit": {"per_minute": 6000, "concurrency": 16}})
    connector = CONNECTOR(target, MemoryRuntime({"poll": sandbox.seed_credentials()}))
    entities, docs, versions = MemoryEntities(), {}, {}
    since = "-infinity"
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(every):
            changed = conn.execute("SELECT id, updated_at FROM invoices WHERE updated_at > %s ORDER BY updated_at",
                                   (since,)).fetchall()
            if not changed:
                continue
            since = changed[-1][1]
            for invoice_id, _ in changed:
                mirror = Mirror()
                rows = []
                for table, where in (("invoices", "id"), ("invoice_lines", "invoice_id"), ("line_taxes", "invoice_id"),
                                     ("payments", "invoice_id")):
                    cur = conn.execute(f"SELECT * FROM {table} WHERE {where}=%s", (invoice_id,))
                    names = [d.name for d in cur.description]
                    rows += [(table, dict(zip(names, r))) for r in cur.fetchall()]
                for table, key in (("customers", "customer_id"), ("locations", "location_id"), ("jobs", "job_id")):
                    ref = rows[0][1][key]
                    cur = conn.execute(f"SELECT * FROM {table} WHERE id=%s", (ref,))
                    names = [d.name for d in cur.description]
                    rows += [(table, dict(zip(names, r))) for r in cur.fetchall()]
                for rate in conn.execute("SELECT * FROM tax_rates").fetchall():
                    rows.append(("tax_rates", {"id": rate[0], "code": rate[1], "name": rate[2], "rate": rate[3]}))
                tx = SourceTransaction(None, [RowChange(table=t, op="r", before=None, after=r,
                                                        source=SourceInfo(db="x", table=t, ts_ms=0, snapshot="true"),
                                                        transaction=None, topic=t, partition=0, offset=n)
                                              for n, (t, r) in enumerate(rows)], "snapshot")
                mirror.apply(tx)
                mirror.versions[invoice_id] = (versions.get(invoice_id, 0), "")
                event = mirror.build_event(invoice_id, tx)
                if event is None or event.status.value != "issued":
                    continue
                versions[invoice_id] = event.version
                doc = docs.get(invoice_id, DocumentState())
                docs[invoice_id] = connector.deliver(event, doc, MemoryContext("poll", event, entities))
    connector.close()


def latency(committed: dict[str, float], created: dict[str, float]) -> str:
    values = [created[k] - t for k, t in committed.items() if k in created]
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:6.2f} s   p95 {q[94]:6.2f} s   p99 {q[98]:6.2f} s   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="new invoices per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--poll-every", type=float, default=5.0)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = stack.StackConfig()
    name = f"cvp{uuid.uuid4().hex[:6]}"
    cdc_dsn = stack.create_shop_database(cfg, f"{name}_cdc")
    poll_dsn = stack.create_shop_database(cfg, f"{name}_poll")
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    stack.register_connector(cfg, name=f"{name}-source", db=f"{name}_cdc", prefix=name, slot=name)
    cdc_sandbox, cdc_created = timed_sandbox()
    poll_sandbox, poll_created = timed_sandbox()
    cdc_server, poll_server = cdc_sandbox.serve(), poll_sandbox.serve()
    workdir = Path(tempfile.mkdtemp())
    (workdir / "cred.json").write_text(json.dumps(cdc_sandbox.seed_credentials()))
    (workdir / "key").write_bytes(Fernet.generate_key())
    config = AppConfig.model_validate({
        "kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                  "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                  "fold_group": f"{name}-fold", "sink_group_prefix": f"{name}-sink-"},
        "source": {"topic_prefix": name}, "postgres": {"dsn": cfg.dsn(f"{name}_ledger")},
        "secret_key_file": str(workdir / "key"),
        "targets": [cdc_sandbox.target_config("qbo", cdc_server.url) | {
            "credentials_file": str(workdir / "cred.json"), "rate_limit": {"per_minute": 6000, "concurrency": 16}}]})
    daemon = Daemon(config, serve_http=False)
    daemon.start()
    while not all(daemon.readiness().values()):
        time.sleep(0.2)
    stop = threading.Event()
    polling = threading.Thread(target=poller, args=(poll_dsn, poll_sandbox, poll_server.url, args.poll_every, stop),
                               daemon=True)
    polling.start()
    committed: dict[str, dict[str, float]] = {"cdc": {}, "poll": {}}
    loads_before = {k: db_load(cfg.dsn("postgres"), f"{name}_{k}") for k in ("cdc", "poll")}

    def drive(kind: str, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(3))
            work = generator.Workload(conn, seed=3)
            started, n = time.monotonic(), 0
            while time.monotonic() - started < args.seconds:
                invoice_id = work.new_job_invoice()
                committed[kind][conn.execute("SELECT number FROM invoices WHERE id=%s",
                                             (invoice_id,)).fetchone()[0]] = time.time()
                n += 1
                delay = started + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    drivers = [threading.Thread(target=drive, args=(k, d)) for k, d in (("cdc", cdc_dsn), ("poll", poll_dsn))]
    for t in drivers:
        t.start()
    for t in drivers:
        t.join()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (set(committed["cdc"]) <= set(cdc_created)
                                               and set(committed["poll"]) <= set(poll_created)):
        time.sleep(1)
    loads_after = {k: db_load(cfg.dsn("postgres"), f"{name}_{k}") for k in ("cdc", "poll")}
    stop.set()
    polling.join(60)
    daemon.shutdown()
    stack.remove_connector(cfg, f"{name}-source", slot=name)
    for kind, created in (("cdc", cdc_created), ("poll", poll_created)):
        tx = loads_after[kind][0] - loads_before[kind][0]
        rows = loads_after[kind][1] - loads_before[kind][1]
        label = "baseline: polling every %gs" % args.poll_every if kind == "poll" else "ledgerwire CDC"
        print(f"{label:<28}: latency {latency(committed[kind], created)}; database: {tx} transactions, "
              f"{rows:,} rows read (workload included)")
    cdc_server.stop()
    poll_server.stop()


if __name__ == "__main__":
    main()
