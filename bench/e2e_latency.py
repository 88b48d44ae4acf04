"""Benchmark 2: end-to-end latency from source commit to the document existing in the sandbox.

A steady stream of new invoices (default 50/s for 30 s) is written into a fresh shop database on the local
stack; the daemon (fold + one QuickBooks Online sink, in this process) posts them to the QBO sandbox, which
timestamps each document's creation. Printed beside it, measured in the same run: the baseline — the
latency of the CDC path alone (commit → the row's Debezium event readable in Kafka), the floor that
Ledgerwire adds to.

    ledgerwire stack up && python bench/e2e_latency.py --rate 50 --seconds 30
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from connectors.quickbooks_online import Sandbox  # noqa: E402
from daemon.localstack import generator
from daemon.localstack import stack  # noqa: E402
from daemon.app import Daemon  # noqa: E402
from daemon.canonical import decode_invoice_event  # noqa: E402
from daemon.config import AppConfig  # noqa: E402
from daemon.kafka_util import consume_available  # noqa: E402


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1000:7.0f} ms   p95 {q[94] * 1000:7.0f} ms   p99 {q[98] * 1000:7.0f} ms   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="new invoices per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--documented-limits", action="store_true",
                        help="keep QuickBooks Online's 500 requests/minute (then 50 invoices/s cannot be met by "
                             "any client); by default the sandbox and the client allow 100 requests/s and 10 batch requests/s")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = stack.StackConfig()
    name = f"lat{uuid.uuid4().hex[:6]}"
    shop_dsn = stack.create_shop_database(cfg, name)
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    stack.register_connector(cfg, name=f"{name}-source", db=name, prefix=name, slot=name)

    sandbox = Sandbox()
    target_extra: dict = {}
    if not args.documented_limits:
        # Measure Ledgerwire's own latency, not the platform's throttle.
        from connectors.sandbox_kit import WindowLimit

        sandbox.window = WindowLimit(6000, 60.0)
        sandbox.batch_window = WindowLimit(600, 60.0)
        sandbox.concurrency = 32
        target_extra = {"rate_limit": {"per_minute": 6000, "concurrency": 16}}
    created_at: dict[str, float] = {}
    original = sandbox._invoice  # noqa: SLF001 - timestamp each document as the sandbox books it

    def timed(realm, table, operation, body):
        result = original(realm, table, operation, body)
        if operation == "create":
            created_at.setdefault(result["DocNumber"], time.time())
        return result

    sandbox._invoice = timed  # noqa: SLF001
    server = sandbox.serve()
    workdir = Path(tempfile.mkdtemp())
    (workdir / "cred.json").write_text(json.dumps(sandbox.seed_credentials()))
    (workdir / "key").write_bytes(Fernet.generate_key())
    target = sandbox.target_config("qbo", server.url) | {"credentials_file": str(workdir / "cred.json")} | target_extra
    if not args.documented_limits:  # the batch limit is the connector's own setting (not rate_limit's)
        target["settings"]["batch_requests_per_minute"] = 600
    config = AppConfig.model_validate({
        "kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                  "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                  "fold_group": f"{name}-fold", "sink_group_prefix": f"{name}-sink-"},
        "source": {"topic_prefix": name}, "postgres": {"dsn": cfg.dsn(f"{name}_ledger")},
        "secret_key_file": str(workdir / "key"), "http": {"port": 0},
        "targets": [target]})
    daemon = Daemon(config, serve_http=False)
    daemon.start()
    while not all(daemon.readiness().values()):
        time.sleep(0.2)

    stop = threading.Event()

    def watch(topic: str, number_of: Callable[[bytes], str | None], seen: dict[str, float], **conf: Any) -> None:
        """Note when each invoice number is first readable on ``topic``."""
        consumer = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": f"{name}-watch-{topic}",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10, **conf})
        consumer.subscribe([topic])
        while not stop.is_set():
            for m in consume_available(consumer, 500, 0.05):  # a batch wait would delay the timestamps
                number = number_of(m.value()) if not m.error() and m.value() else None
                if number:
                    seen.setdefault(number, time.time())
        consumer.close()

    # Baseline: when each invoice row's Debezium event becomes readable in Kafka.
    cdc_seen: dict[str, float] = {}
    # Where the time goes: when each invoice's first canonical event (the fold's output) is readable.
    folded_seen: dict[str, float] = {}
    threading.Thread(target=watch, daemon=True, args=(
        f"{name}.public.invoices", lambda v: (json.loads(v)["payload"].get("after") or {}).get("number"),
        cdc_seen)).start()
    threading.Thread(target=watch, daemon=True, kwargs={"isolation.level": "read_committed"}, args=(
        config.kafka.canonical_topic, lambda v: decode_invoice_event(v).number, folded_seen)).start()
    committed: dict[str, float] = {}
    with psycopg.connect(shop_dsn, autocommit=True) as conn:
        generator.seed_reference_data(conn, random.Random(1))
        work = generator.Workload(conn, seed=1)
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.seconds:
            invoice_id = work.new_job_invoice()
            committed[conn.execute("SELECT number FROM invoices WHERE id=%s", (invoice_id,)).fetchone()[0]] = time.time()
            n += 1
            delay = started + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    achieved = n / (time.monotonic() - started)
    deadline = time.monotonic() + 60
    while len([k for k in committed if k in created_at]) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    daemon.shutdown()
    server.stop()
    stack.remove_connector(cfg, f"{name}-source", slot=name)
    e2e = [created_at[k] - t for k, t in committed.items() if k in created_at]
    cdc = [cdc_seen[k] - t for k, t in committed.items() if k in cdc_seen]
    print(f"source rate achieved      : {achieved:.1f} invoices/s for {args.seconds:.0f} s ({n} invoices)")
    folded = [folded_seen[k] - t for k, t in committed.items() if k in folded_seen]
    print(f"baseline  commit → Kafka  : {percentiles(cdc)}")
    print(f"fold      commit → canonical: {percentiles(folded)}")
    print(f"ledgerwire commit → posted: {percentiles(e2e)}   (target: p99 < 2 s)")
    print(f"posted {len(e2e)} of {n}")


if __name__ == "__main__":
    main()
