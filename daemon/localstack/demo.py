"""``ledgerwire demo``: the whole path on a real local stack, with a generated shop workload.

PostgreSQL + Kafka + Kafka Connect/Debezium (a private stack under ``.stack/demo``, fresh each run) →
the daemon (fold + one sink) → a platform sandbox. It prints progress while the generator writes jobs,
invoices, edits, payments, reversals and voids, then a closing summary comparing the sandbox's books
with the shop database, and exits non-zero if they differ.

``--keep`` leaves it all running for a look around: the stack, the daemon (metrics), the sandbox and a page
of what the sandbox's books hold (JSON a browser or curl reads), with a ready ``ledgerwire.yml`` for the ops
commands. The demo process stays in the foreground until Ctrl-C or ``ledgerwire stack down --demo`` (which
signals it — by its recorded identity — and then stops the stack). Nothing secret is left in plaintext: the
sandbox's credentials go from memory into the encrypted store (``credentials_env``), and the key is a 0600 file.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import yaml

from connectors.registry import PLATFORM_PACKAGES, known_platforms
from daemon.localstack import stack
from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.localstack.verify import compare, expected_from_db

REPO = Path(__file__).resolve().parents[2]


def demo_stack_config() -> stack.StackConfig:
    return stack.StackConfig(home=REPO / ".stack" / "demo", pg_port=15532, kafka_port=19192,
                             controller_port=19193, connect_port=18183)


DEMO_CREDENTIALS_ENV = "LEDGERWIRE_DEMO_CREDENTIALS"  # the sandbox's seed credentials, in this process only
DEMO_PID = "demo"  # .stack/demo/demo.pid: the kept demo, stopped by `ledgerwire stack down --demo`
BOOKS_PORT = 9466


def write_demo_config(cfg: stack.StackConfig, sandbox, platform: str, workdir: Path, http_port: int = 9464,
                      web_connector_port: int = 9465) -> Path:
    """A daemon config for the stack and one sandbox target. The sandbox's credentials are seeded from this
    process's environment (never written to a file); the key is a new 0600 file."""
    from daemon.cli import write_secret_key

    server_url = sandbox.server.url
    target = sandbox.target_config("demo", server_url)
    os.environ[DEMO_CREDENTIALS_ENV] = json.dumps(sandbox.seed_credentials())
    target["credentials_env"] = DEMO_CREDENTIALS_ENV
    key_file = workdir / "secret.key"
    write_secret_key(key_file)
    config = {
        "kafka": {"bootstrap_servers": cfg.bootstrap},
        "postgres": {"dsn": cfg.ledger_dsn},
        "source": {"topic_prefix": cfg.topic_prefix, "shop_dsn": cfg.shop_dsn, "connect_url": cfg.connect_url},
        "http": {"port": http_port},
        # The bookkeeper's console, without a login: the demo's HTTP server listens on 127.0.0.1 only.
        "console": {"enabled": True, "auth": "none"},
        "web_connector": {"port": web_connector_port},
        "secret_key_file": str(key_file),
        "targets": [target],
    }
    path = workdir / "ledgerwire.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def drop_credential_seed(path: Path) -> None:
    """Once the daemon has seeded the encrypted store, the config no longer names the seed: it is the
    ``ledgerwire.yml`` the ops commands (status, trace, reconcile…) use as they are."""
    config = yaml.safe_load(path.read_text())
    for target in config["targets"]:
        target.pop("credentials_env", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def books_app(sandbox):
    """What the sandbox's books hold, as JSON (read-only; no credentials needed): one entry per invoice."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def books(_request):
        booked = sandbox.booked_invoices()
        return JSONResponse({"invoices": [b.model_dump(mode="json") for b in booked],
                             "live": sum(1 for b in booked if not b.voided),
                             "voided": sum(1 for b in booked if b.voided)})

    return Starlette(routes=[Route("/", books)])


def run_demo(platform: str = "quickbooks-online", count: int = 200, rate: float = 40.0, keep: bool = False,
             seed: int = 2026) -> int:
    from daemon.localstack import generator
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
    config_file = write_demo_config(cfg, sandbox, platform, workdir)
    config = load_config(config_file)
    daemon = Daemon(config)
    daemon.start()
    drop_credential_seed(config_file)
    _wait(lambda: all(daemon.activity().values()), 60, "the daemon's partition assignment")
    print(f"[3/5] daemon running: fold + sink 'demo'; metrics at http://127.0.0.1:{config.http.port}/metrics; "
          f"logs in {log_file}")
    print(f"      bookkeeper's console: http://127.0.0.1:{config.http.port}/console/")
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
    if keep:
        _keep_running(cfg, sandbox, config, config_file)
    daemon.shutdown()
    if hasattr(sandbox, "stop_polling"):
        sandbox.stop_polling()
    sandbox.server.stop()
    if keep:
        print("      demo stopped; if its stack is still up: ledgerwire stack down --demo")
    else:
        stack.down(cfg)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if comparison.ok else 1


def _keep_running(cfg: stack.StackConfig, sandbox, config, config_file: Path) -> None:
    """--keep: print where to look, then serve until SIGTERM/SIGINT (``ledgerwire stack down --demo``)."""
    from connectors.serving import RunningServer

    books = RunningServer(books_app(sandbox), BOOKS_PORT, name="demo-books").start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack.record_process(cfg, DEMO_PID, os.getpid())
    print(f"""
      kept running (--keep):
        sandbox's books (JSON):  curl {books.url}/
        sandbox API:             {sandbox.server.url}
        metrics:                 curl http://127.0.0.1:{config.http.port}/metrics   (/readyz, /healthz)
        configuration:           {config_file}   (credentials are in the encrypted store; key {config.secret_key_file}, 0600)
        try:                     ledgerwire status --config {config_file}
                                 ledgerwire reconcile --config {config_file} --target demo --since 2000-01-01 --until 2100-01-01
        shop database:           psql {cfg.shop_dsn}
        stop everything:         ledgerwire stack down --demo   (or Ctrl-C here, then that command)
""", flush=True)
    try:
        stop.wait()
    finally:
        books.stop()
        stack.forget_process(cfg, DEMO_PID)


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


__all__ = ["books_app", "demo_stack_config", "drop_credential_seed", "run_demo", "write_demo_config"]
