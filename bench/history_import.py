"""Benchmark 6: a shop switching Ledgerwire on with years of history — generate, snapshot, fold, and how
long each platform takes to post it under its documented limits.

1. Generates ``--invoices`` closed invoices with payments over ``--years`` years into a fresh shop database
   (``ledgerwire generate --history``: COPY in batches; its own process, timed).
2. Registers a Debezium connector: its initial snapshot reads every row into the table topics.
3. Runs the fold (``FoldRunner``, Kafka transactions, state changelog) in this process from the connector's
   registration until every invoice's first canonical version is readable, and reports the time, the
   rows/s and the peak RSS of this process (the fold's state for the whole history is in it). Progress is
   printed every few seconds.
4. Computes the days each platform needs to post the history under its documented limits (requests per
   invoice as each connector sends a new invoice and its payments, the per-minute limit, the daily quota),
   from the generated counts.

5. With ``--deliver-to P,...``: starts the real daemon (``ledgerwire run``) on the same topics and fold group
   with one target per platform named, each against its sandbox (served from this process, the platform's
   documented limits), and prints what ``ledgerwire status --config F --watch 10`` shows a person watching
   the delivery (done, remaining, rate, ETA per target) for ``--watch-s`` seconds.

    ledgerwire stack up && python bench/history_import.py --invoices 25000
    python bench/history_import.py --invoices 250000      # the five-year shop of issue #21
    python bench/history_import.py --invoices 5000 --deliver-to quickbooks-online,xero,odoo --watch-s 120
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from daemon.localstack import stack  # noqa: E402
from daemon.config import AppConfig  # noqa: E402
from daemon.source.fold import TABLES  # noqa: E402
from daemon.source.fold_runner import FoldRunner  # noqa: E402
from daemon.kafka_util import ensure_topics  # noqa: E402

from memory import rss_mib, serve_targets  # noqa: E402  (bench/ is on sys.path as the script's dir)

# How each connector posts a NEW invoice and its payments, under the platform's documented limits (the
# defaults in connectors/<platform>/settings.py). ``invoice`` / ``payment``: requests each (a batch request
# carrying up to N invoices counts 1/N); ``per_minute`` / ``per_day``: the binding request limits.
PLATFORM_LIMITS = {
    # /batch of 30 operations, 40 batch requests/min (its own allowance); payments one by one on the 500/min.
    "quickbooks-online": {"invoice": 1 / 30, "payment": 1.0, "per_minute": 500, "batch_per_minute": 40,
                          "per_day": None, "note": "500/min + 40 /batch per min, no daily quota"},
    # PUT /Invoices with 50 per request; payments one by one; 60/min and 5,000/day per tenant.
    "xero": {"invoice": 1 / 50, "payment": 1.0, "per_minute": 60, "per_day": 5000, "note": "60/min, 5,000/day"},
    # one request per invoice (+ mark as sent) and per payment; 100/min; the daily cap is by plan.
    "zoho-books": {"invoice": 2.0, "payment": 1.0, "per_minute": 100, "per_day": 10000,
                   "note": "100/min; 10,000/day on the top plans (1,000 on Free)"},
    # create + action_post per invoice, register-payment wizard (create + action) per payment; 10/s.
    "odoo": {"invoice": 2.0, "payment": 2.0, "per_minute": 600, "per_day": None, "note": "10/s, no quota"},
    # one qbXML request per sendRequestXML; the Web Connector polls every minute and drains the queue.
    "quickbooks-desktop": {"invoice": 1.0, "payment": 1.0, "per_minute": 60, "per_day": None,
                           "note": "one request per Web Connector exchange (~1/s while a session runs)"},
}


def days_to_post(invoices: int, payments: int, limits: dict) -> tuple[float, int]:
    """(days, requests) to post the history at the platform's binding limit."""
    invoice_requests = invoices * limits["invoice"]
    requests = math.ceil(invoice_requests + payments * limits["payment"])
    per_day = limits["per_minute"] * 1440
    if limits.get("batch_per_minute"):  # QBO: batches have their own allowance; payments use the 500/min
        batch_days = invoice_requests / (limits["batch_per_minute"] * 1440)
        single_days = payments * limits["payment"] / per_day
        return max(batch_days, single_days), requests
    if limits["per_day"]:
        per_day = min(per_day, limits["per_day"])
    return requests / per_day, requests


def watch_delivery(cfg: stack.StackConfig, name: str, config: AppConfig, platforms: list[str], watch_s: float) -> None:
    """The daemon delivers the folded history to each platform's sandbox at its documented limits while
    ``ledgerwire status --watch 10`` prints done / remaining / rate / ETA per target, as a person would watch it."""
    import tempfile

    import httpx
    import yaml
    from cryptography.fernet import Fernet

    from connectors.sandbox_kit import free_port
    from sink_backlog import _SANDBOX_RELAXATIONS  # noqa: PLC0415  (the platforms' documented limits, not the tests')

    workdir = Path(tempfile.mkdtemp())
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    targets, servers = serve_targets(platforms, workdir, _SANDBOX_RELAXATIONS)
    http_port = free_port()
    (workdir / "secret.key").write_bytes(Fernet.generate_key())
    (workdir / "secret.key").chmod(0o600)  # the daemon refuses a key others can read
    daemon_config = {"kafka": config.kafka.model_dump(mode="json") | {"sink_group_prefix": f"{name}-sink-"},
                     "postgres": {"dsn": cfg.dsn(f"{name}_ledger")},
                     "source": {"topic_prefix": name, "connect_url": cfg.connect_url},
                     "http": {"port": http_port}, "secret_key_file": str(workdir / "secret.key"), "targets": targets}
    config_file = workdir / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(daemon_config, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    daemon_log = (workdir / "daemon.log").open("wb")  # kept for the reader: why a target shows no progress
    daemon = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config_file)],
                              stdout=daemon_log, stderr=subprocess.STDOUT, env=env)
    # `status` reads the ledger the daemon creates at start: watch once the daemon is ready.
    ready_by = time.monotonic() + 600
    while time.monotonic() < ready_by and daemon.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling /readyz with a deadline
    print(f"\ndelivering to {', '.join(platforms)} with `ledgerwire run` (its log: {workdir / 'daemon.log'}); "
          f"`ledgerwire status --config {config_file} "
          f"--watch 10` for {watch_s:.0f} s:", flush=True)
    watch = subprocess.Popen([sys.executable, "-m", "daemon.cli", "status", "--config", str(config_file), "--watch", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + watch_s
    try:
        for line in watch.stdout:
            print("  " + line.rstrip(), flush=True)
            if time.monotonic() > deadline or daemon.poll() is not None:
                break
    finally:
        watch.terminate()
        watch.wait(30)
        daemon.terminate()
        daemon.wait(60)
        for server in servers:
            server.stop()
        with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_ledger" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=25_000)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database, connector and topics")
    parser.add_argument("--deliver-to", default="", help="comma-separated platforms: deliver the history with the "
                        "daemon and print `ledgerwire status --watch` meanwhile")
    parser.add_argument("--watch-s", type=float, default=120.0, help="how long to watch the delivery")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = stack.StackConfig()
    name = f"hist{uuid.uuid4().hex[:6]}"
    print("load average at start (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    dsn = stack.create_shop_database(cfg, name)
    # A run stopped early (Ctrl-C, SIGTERM) still removes its Debezium connector, which would otherwise go on
    # snapshotting the whole history on the shared machine.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        started = time.monotonic()
        generated = subprocess.run([sys.executable, "-m", "daemon.cli", "generate", "--dsn", dsn, "--history",
                                    str(args.invoices), "--years", str(args.years)], check=True, capture_output=True,
                                   text=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
        generation_s = time.monotonic() - started
        counts = json.loads(generated.stdout.strip().splitlines()[-1])["history"]
        rows = sum(v for k, v in counts.items() if k.endswith("_rows"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            reference_rows = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                                 for t in ("locations", "customers", "vehicles", "tax_rates"))
        rows += reference_rows
        print(f"generated {args.invoices:,} invoices over {args.years} years ({rows:,} rows: {counts}) in "
              f"{generation_s:.1f} s = {args.invoices / generation_s:,.0f} invoices/s", flush=True)

        config = AppConfig.model_validate({
            "kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                      "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                      "fold_group": f"{name}-fold"},
            "source": {"topic_prefix": name}})
        ensure_topics(config, [config.source.table_topic(t) for t in TABLES] + [config.source.tx_topic])
        stop = threading.Event()
        runner = FoldRunner(config, stop, transactional_id=f"{name}-fold")
        counter = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": f"{name}-count", "auto.offset.reset": "earliest",
                            "isolation.level": "read_committed"})
        counter.subscribe([config.kafka.canonical_topic])
        rss_before = rss_mib()
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        runner.ready.wait(120)
        started = time.monotonic()
        stack.register_connector(cfg, name=f"{name}-source", db=name, prefix=name, slot=name)
        seen: set[bytes] = set()
        last_print = started
        peak = rss_mib()
        deadline = started + 6 * 3600
        while len(seen) < args.invoices and time.monotonic() < deadline:
            for m in counter.consume(num_messages=5000, timeout=0.2):
                if not m.error():
                    seen.add(m.key())
            peak = max(peak, rss_mib())
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                elapsed = last_print - started
                rate = len(seen) / elapsed
                eta = (args.invoices - len(seen)) / rate if rate else float("nan")
                print(f"  {elapsed:6.0f} s: {len(seen):>9,} / {args.invoices:,} invoices folded ({rate:,.0f}/s, ETA "
                      f"{eta:,.0f} s), RSS {rss_mib():,.0f} MiB", flush=True)
        fold_s = time.monotonic() - started
        stop.set()
        thread.join(60)
        counter.close()
        print(f"snapshot + fold: {len(seen):,} invoices ({rows:,} source rows) in {fold_s:.1f} s = "
              f"{rows / fold_s:,.0f} rows/s, {len(seen) / fold_s:,.0f} invoices/s")
        print(f"RSS of this process: {rss_before:,.0f} MiB before the fold, peak {peak:,.0f} MiB during it "
              f"(ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB)")
        payments = counts.get("payments_rows", 0)
        print(f"\ndays to post {args.invoices:,} invoices and {payments:,} payments at each platform's documented limits:")
        print(f"{'platform':<20} {'requests':>10} {'days':>8}  limits")
        for platform, limits in PLATFORM_LIMITS.items():
            days, requests = days_to_post(args.invoices, payments, limits)
            print(f"{platform:<20} {requests:>10,} {days:>8.2f}  {limits['note']}")
        if args.deliver_to:
            watch_delivery(cfg, name, config, [p for p in args.deliver_to.split(",") if p], args.watch_s)
        print("load average at end (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg())
    finally:
        if not args.keep:
            remove(cfg, name)


def remove(cfg: stack.StackConfig, name: str) -> None:
    """The run's Debezium connector and slot, its topics and its shop database."""
    stack.remove_connector(cfg, f"{name}-source", slot=name)
    admin = AdminClient({"bootstrap.servers": cfg.bootstrap})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(f"{name}.")]
    if topics:
        admin.delete_topics(topics)
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
