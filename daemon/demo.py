"""``ledgerwire demo``: the whole path on a real local stack, with a generated shop workload.

PostgreSQL + Kafka + Kafka Connect/Debezium (a private stack under ``.stack/demo``, fresh each run) →
the daemon (fold + one sink) → a platform sandbox. It prints progress while the generator writes jobs,
invoices, edits, payments, reversals and voids, then a closing summary comparing the sandbox's books
with the shop database, and exits non-zero if they differ.
"""

from __future__ import annotations

import importlib
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import yaml
from cryptography.fernet import Fernet

from connectors.registry import PLATFORM_PACKAGES, known_platforms
from daemon import stack
from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.verify import compare, expected_from_db

REPO = Path(__file__).resolve().parent.parent


def demo_stack_config() -> stack.StackConfig:
    return stack.StackConfig(home=REPO / ".stack" / "demo", pg_port=15532, kafka_port=19192,
                             controller_port=19193, connect_port=18183)


def write_demo_config(cfg: stack.StackConfig, sandbox, platform: str, workdir: Path, http_port: int = 9464) -> Path:
    """A daemon config for the stack and one sandbox target; credentials seeded from a file."""
    server_url = sandbox.server.url
    target = sandbox.target_config("demo", server_url)
    credentials = workdir / "demo-credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    target["credentials_file"] = str(credentials)
    config = {
        "kafka": {"bootstrap_servers": cfg.bootstrap},
        "postgres": {"dsn": cfg.ledger_dsn},
        "source": {"topic_prefix": cfg.topic_prefix},
        "http": {"port": http_port},
        "secret_key_file": str(workdir / "secret.key"),
        "targets": [target],
    }
    (workdir / "secret.key").write_bytes(Fernet.generate_key())
    path = workdir / "ledgerwire.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(platform: str = "quickbooks-online", count: int = 200, rate: float = 40.0, keep_stack: bool = False,
             seed: int = 2026) -> int:
    from daemon import generator
    from daemon.app import Daemon

    if platform not in known_platforms():
        print(f"unknown platform {platform}; choose one of {known_platforms()}")
        return 2
    cfg = demo_stack_config()
    workdir = Path(tempfile.mkdtemp(prefix="ledgerwire-demo-"))
    log_file = cfg.logs / "daemon.log"
    print(f"[1/5] starting the local stack in {cfg.home} (PostgreSQL, Kafka KRaft, Kafka Connect + Debezium)…")
    stack.down(cfg, wipe=True)
    started = time.monotonic()
    stack.up(cfg)
    print(f"      up in {time.monotonic() - started:.0f}s; Kafka {cfg.bootstrap}, Connect {cfg.connect_url}")
    cfg.logs.mkdir(parents=True, exist_ok=True)
    configure_logging("INFO", json_output=True, log_file=log_file)

    sandbox_module = importlib.import_module(PLATFORM_PACKAGES[platform])
    # The demo runs minutes, not hours: a package whose platform allows few calls (Xero 60/min, Zoho 100/min)
    # names faster sandbox limits for local runs, and the demo says so.
    options = getattr(sandbox_module, "LOCAL_SANDBOX_OPTIONS", {})
    sandbox = sandbox_module.Sandbox(**options)
    sandbox.server = sandbox.serve()
    print(f"[2/5] {platform} sandbox listening on {sandbox.server.url}"
          + (f" (rate limits raised for the demo: {options})" if options else ""))
    config = load_config(write_demo_config(cfg, sandbox, platform, workdir))
    daemon = Daemon(config)
    daemon.start()
    _wait(lambda: all(daemon.activity().values()), 60, "the daemon's partition assignment")
    print(f"[3/5] daemon running: fold + sink 'demo'; metrics at http://127.0.0.1:{config.http.port}/metrics; "
          f"logs in {log_file}")
    if hasattr(sandbox, "attach"):  # pull platforms: the simulated Web Connector polls the daemon
        sandbox.attach(f"{daemon.web_connector.url}/connectors/demo/qbwc")
        sandbox.start_polling(1.0)

    print(f"[4/5] generating {count} shop operations at {rate:g}/s …")
    with psycopg.connect(cfg.shop_dsn, autocommit=True) as conn:
        generator.seed_reference_data(conn, random.Random(seed))
        workload = generator.Workload(conn, seed=seed)
        done = threading.Event()
        counts: dict[str, int] = {}

        def produce() -> None:
            counts.update(workload.run(count, rate_per_s=rate))
            done.set()

        threading.Thread(target=produce, daemon=True).start()
        deadline = time.monotonic() + max(180.0, count / max(rate, 1) * 3 + 60)
        comparison = None
        while time.monotonic() < deadline:
            time.sleep(2)
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
            booked = sandbox.booked_invoices()
            print(f"      source: {comparison.checked} invoices ({comparison.issued} issued, {comparison.voided} void) │ "
                  f"{platform}: {sum(1 for b in booked if not b.voided)} posted, {sum(1 for b in booked if b.voided)} voided, "
                  f"{sum(b.payment_count for b in booked)} payments │ differences: {sum(map(len, comparison.problems().values()))}",
                  flush=True)
            if done.is_set() and comparison.ok:
                break
        expected = expected_from_db(conn)
    comparison = compare(expected, sandbox.booked_invoices())
    booked = sandbox.booked_invoices()
    print("[5/5] summary")
    print(f"      operations generated: {dict(sorted(counts.items()))}")
    print(f"      invoices in the shop database: {comparison.checked} "
          f"({comparison.issued} issued, {comparison.voided} void, {comparison.checked - comparison.issued - comparison.voided} draft)")
    print(f"      posted to {platform}: {sum(1 for b in booked if not b.voided)} live, {sum(1 for b in booked if b.voided)} voided, "
          f"{sum(b.payment_count for b in booked)} payments applied, total "
          f"{sum((b.total for b in booked if not b.voided), start=0):,.2f}")
    if comparison.ok:
        print("      books match the shop database: every issued invoice exactly once, totals and tax to the cent, "
              "payments applied to the right invoices, voids propagated")
    else:
        print(f"      DIFFERENCES: {comparison.problems()}")
    daemon.shutdown()
    if hasattr(sandbox, "stop_polling"):
        sandbox.stop_polling()
    sandbox.server.stop()
    if keep_stack:
        print("      stack left running (stop it with: ledgerwire stack down --demo)")
    else:
        stack.down(cfg)
    return 0 if comparison.ok else 1


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


__all__ = ["run_demo", "write_demo_config", "demo_stack_config"]
