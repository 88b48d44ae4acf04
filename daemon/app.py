"""The long-running service: the fold, one sink per enabled target, and the HTTP endpoint, in threads.

Start-up: validate config → ledger schema (with connectors' own tables) → seed credentials from files or
env → start the fold and the sinks → serve /metrics, /healthz, /readyz (and the Web Connector endpoint on
its own listener) → READY=1 to systemd once started and connected (a hot standby included).
SIGTERM/SIGINT: stop taking new work, let in-flight deliveries finish (bounded by
``shutdown_grace_s``), commit, exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import structlog

from connectors.registry import connector_class
from daemon.config import AppConfig
from daemon.deliver import DaemonRuntime, SinkWorker
from daemon.fold_runner import FoldRunner
from daemon.ledger import Ledger, load_secret_key
from connectors.sandbox_kit import RunningServer
from daemon.service import build_http_app, build_web_connector_app, sd_notify, watchdog_interval_s

log = structlog.get_logger(__name__)


def seed_credentials(config: AppConfig, runtime: DaemonRuntime) -> None:
    """Copy credential seeds (file or env JSON) into the encrypted store the first time a target runs.

    A stored document is never overwritten by its seed: the stored one holds rotated refresh tokens.
    """
    from daemon.config import ConfigError

    for target in config.targets:
        raw = None
        if target.credentials_file is not None:
            try:
                raw = target.credentials_file.read_text()
            except OSError as exc:
                raise ConfigError([f"target {target.name!r}: credentials_file {target.credentials_file}: "
                                   f"{exc.strerror or exc}"]) from None
        elif target.credentials_env:
            raw = os.environ.get(target.credentials_env)
            if raw is None:
                raise ConfigError([f"target {target.name!r}: credentials_env {target.credentials_env} is not set"])
        if raw is None:
            continue
        store = runtime.credentials(target.name)
        with store.lock():
            if not store.get():
                try:
                    document = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError([f"target {target.name!r}: credentials are not JSON ({exc})"]) from None
                store.put(document)
                log.info("credentials_seeded", target=target.name)


class Daemon:
    def __init__(self, config: AppConfig, serve_http: bool = True) -> None:
        self.config = config
        self.stop = threading.Event()
        self.serve_http = serve_http
        secret_key = load_secret_key(config.secret_key_file)  # a refused key file fails before any connection
        self.ledger = Ledger(config.postgres.dsn)
        self.runtime = DaemonRuntime(self.ledger, secret_key)
        self.fold: FoldRunner | None = None
        self.sinks: list[SinkWorker] = []
        self.threads: list[threading.Thread] = []
        self.http: RunningServer | None = None  # /metrics, /healthz, /readyz
        self.web_connector: RunningServer | None = None  # pull connectors' endpoints (QuickBooks Web Connector)
        self._reachable: tuple[float, dict[str, bool]] = (0.0, {})

    def start(self) -> None:
        targets = [t for t in self.config.targets if t.enabled]
        ddl = [connector_class(t.platform).ledger_ddl() for t in targets]
        self.ledger.ensure_schema(ddl)
        seed_credentials(self.config, self.runtime)
        if self.config.run_fold:
            self.fold = FoldRunner(self.config, self.stop)
            self._spawn("fold", self.fold.run)
        if self.config.run_sinks:
            for target in targets:
                sink = SinkWorker(self.config, target, self.ledger, self.runtime, self.stop)
                self.sinks.append(sink)
                self._spawn(f"sink-{target.name}", sink.run)
        if self.serve_http:
            app = build_http_app(self.liveness, self.readiness, self.activity)
            self.http = RunningServer(app, self.config.http.port, self.config.http.host, "metrics").start()
            endpoints = {s.target.name: self._guarded(s) for s in self.sinks if s.connector.asgi_app() is not None}
            if endpoints:
                web = self.config.web_connector
                self.web_connector = RunningServer(build_web_connector_app(endpoints), web.port, web.host,
                                                   "web-connector", web.tls_certfile, web.tls_keyfile).start()
        log.info("daemon_started", targets=[t.name for t in targets], fold=self.config.run_fold,
                 http_port=self.http.port if self.http else None,
                 web_connector=self.web_connector.url if self.web_connector else None)

    def _guarded(self, sink: SinkWorker):
        """A pull connector's endpoint behind the size limit and the login throttle (its own listener)."""
        from connectors.quickbooks_desktop.endpoint import guarded_endpoint

        return guarded_endpoint(sink.connector.asgi_app(), sink.target, self.runtime.credentials(sink.target.name),
                                self.config.web_connector)

    def _spawn(self, name: str, fn) -> None:
        thread = threading.Thread(target=fn, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def liveness(self) -> dict[str, bool]:
        return {t.name: t.is_alive() for t in self.threads}

    def readiness(self) -> dict[str, bool]:
        """Started and connected: every loop alive, Kafka and the ledger database reachable. Holding partitions
        is not required — a hot standby (another process owns the fold's one partition) is ready too."""
        return {**self.liveness(), **self._connections()}

    def activity(self) -> dict[str, bool]:
        """Which loops hold their partitions now (the fold's state rebuilt, a sink assigned)."""
        checks = {}
        if self.fold is not None:
            checks["fold"] = self.fold.ready.is_set()
        for sink in self.sinks:
            checks[f"sink:{sink.target.name}"] = sink.ready.is_set()
        return checks

    def _connections(self, max_age_s: float = 5.0) -> dict[str, bool]:
        checked_at, result = self._reachable
        if time.monotonic() - checked_at < max_age_s:
            return result
        from confluent_kafka.admin import AdminClient

        from daemon.kafka_util import kafka_conf

        try:
            with self.ledger.pool.connection(timeout=3) as conn:
                conn.execute("SELECT 1")
            ledger_ok = True
        except Exception:  # noqa: BLE001 - any failure means "not connected"
            ledger_ok = False
        try:
            kafka_ok = bool(AdminClient(kafka_conf(self.config.kafka, {})).list_topics(timeout=3).brokers)
        except Exception:  # noqa: BLE001
            kafka_ok = False
        result = {"kafka": kafka_ok, "ledger": ledger_ok}
        self._reachable = (time.monotonic(), result)
        return result

    def shutdown(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        for listener in (self.http, self.web_connector):
            if listener is not None:
                listener.stop()
        self.ledger.close()
        log.info("daemon_stopped", clean=all(not t.is_alive() for t in self.threads))

    def run_forever(self) -> int:
        """The service main loop: signals, readiness, watchdog."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        self.start()
        watchdog = watchdog_interval_s()
        notified_ready = False
        while not self.stop.wait(watchdog or 1.0):
            if not notified_ready and all(self.readiness().values()):
                sd_notify("READY=1")
                notified_ready = True
            if watchdog and all(self.liveness().values()):
                sd_notify("WATCHDOG=1")
        sd_notify("STOPPING=1")
        self.shutdown()
        return 0
