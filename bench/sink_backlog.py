"""Benchmark 3: sink efficiency while draining a backlog of invoice versions into QuickBooks Online.

Writes N canonical invoice versions (several versions of some invoices, as a backlog after an outage has)
straight onto a fresh canonical topic, then lets one sink drain them into the QBO sandbox at QuickBooks'
documented limits (500 requests/minute, 10 concurrent, batch: 30 operations per request and 40 batch
requests per minute). Prints API requests per delivered invoice and the achieved request rate as a fraction
of the documented limit, beside the baseline of the same run: one request per invoice version (what a
sink without batching or coalescing sends), and the sandbox's count of limit breaches (429s).

    ledgerwire stack up && python bench/sink_backlog.py --invoices 1500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from connectors.quickbooks_online import Sandbox  # noqa: E402
from connectors.testing import invoice_event, next_version, payment  # noqa: E402
from daemon.localstack import stack  # noqa: E402
from daemon.canonical import encode_invoice_event  # noqa: E402
from daemon.config import AppConfig  # noqa: E402
from daemon.sink.deliver import DaemonRuntime, SinkWorker  # noqa: E402
from daemon.kafka_util import ensure_topics  # noqa: E402
from daemon.sink.ledger import Ledger, load_secret_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=1500)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = stack.StackConfig()
    name = f"snk{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    sandbox = Sandbox()
    server = sandbox.serve()
    workdir = Path(tempfile.mkdtemp())
    (workdir / "cred.json").write_text(json.dumps(sandbox.seed_credentials()))
    (workdir / "key").write_bytes(Fernet.generate_key())
    config = AppConfig.model_validate({
        "kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                  "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                  "sink_group_prefix": f"{name}-sink-"},
        "postgres": {"dsn": cfg.dsn(f"{name}_ledger")}, "secret_key_file": str(workdir / "key"),
        "targets": [sandbox.target_config("qbo", server.url) | {"credentials_file": str(workdir / "cred.json")}]})
    ensure_topics(config)
    producer = Producer({"bootstrap.servers": cfg.bootstrap, "linger.ms": 20})
    versions = 0
    for n in range(args.invoices):
        event = invoice_event(100_000 + n)
        chain = [event]
        if n % 4 == 0:  # a quarter of the invoices were edited and paid while the platform was away
            chain.append(next_version(chain[-1], payments=[payment(n + 1, "100.00")]))
        for e in chain:
            producer.produce(config.kafka.canonical_topic, key=e.key.encode(), value=encode_invoice_event(e))
            versions += 1
    producer.flush(60)

    ledger = Ledger(config.postgres.dsn)
    ledger.ensure_schema()
    import os

    os.environ["LEDGERWIRE_SECRET_KEY"] = (workdir / "key").read_text()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    from daemon.app import seed_credentials

    seed_credentials(config, runtime)
    stop = threading.Event()
    sink = SinkWorker(config, config.targets[0], ledger, runtime, stop)
    requests_at_start = sandbox.api_requests
    started = time.monotonic()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    while len([b for b in sandbox.booked_invoices() if b.number.startswith("INV-1")]) < args.invoices or \
            sum(b.payment_count for b in sandbox.booked_invoices()) < (args.invoices + 3) // 4:
        time.sleep(1)
        if time.monotonic() - started > 1800:
            break
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(60)
    batches = sandbox.batch_requests
    api_requests = sandbox.api_requests - requests_at_start  # every accepted call; a /batch counts once
    print(f"backlog: {versions} invoice versions of {args.invoices} invoices; drained in {elapsed:.0f} s")
    print(f"baseline  one request per version      : {versions / args.invoices:.2f} requests per invoice")
    print(f"ledgerwire (coalesced, /batch)         : {api_requests / args.invoices:.2f} requests per invoice "
          f"({api_requests} requests, {batches} of them /batch)   target <= 1.05")
    limit_per_s = 500 / 60
    request_share, batch_share = api_requests / elapsed / limit_per_s, batches / elapsed * 60 / 40
    print(f"request rate achieved                  : {api_requests / elapsed:.2f}/s = "
          f"{request_share:.0%} of the documented 500/min")
    print(f"batch request rate achieved            : {batches / elapsed * 60:.1f}/min = "
          f"{batch_share:.0%} of the documented 40 batch requests/min")
    print(f"binding limit used                     : {max(request_share, batch_share):.0%}   target >= 90 %  "
          f"(the sink batches while a batch request is free and sends the rest one by one)")
    print(f"limit breaches (429 from the sandbox)  : {sandbox.window.breaches + sandbox.batch_window.breaches}")
    server.stop()
    ledger.close()


if __name__ == "__main__":
    main()
