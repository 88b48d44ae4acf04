"""The long-running service: the fold, one sink per enabled target, and the HTTP endpoint, in threads.

Start-up: validate config → ledger schema (with connectors' own tables) → seed credentials from files or
env → start the fold and the sinks → serve /metrics, /healthz, /readyz (and the Web Connector endpoint on
its own listener) → READY=1 to systemd once started and connected (a hot standby included).
SIGTERM/SIGINT: stop taking new work, let in-flight deliveries finish (bounded by
``shutdown_grace_s``), commit, exit 0.
Supervision (daemon/liveness.py): a loop that dies of an unexpected error ends the process with exit code 70, a
loop that makes no progress within ``liveness.stall_timeout_s`` with 75 (after /healthz turned 503 and the
watchdog pings stopped); systemd or the container runtime starts it again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import structlog

from connectors.registry import connector_class
from daemon import metrics
from daemon.config import AppConfig
from daemon.sink.deliver import DaemonRuntime, SinkWorker
from daemon.source.fold_runner import FoldRunner
from daemon.sink.ledger import Ledger, load_secret_key
from connectors.serving import RunningServer
from daemon.service import build_http_app, build_web_connector_app, sd_notify, watchdog_interval_s
from daemon.liveness import EXIT_COMPONENT_DIED, EXIT_STALLED, Progress, kafka_log_relay

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


def pool_size(config: AppConfig) -> int:
    """The ledger's connection pool: every partition worker of every target may run one short query at a time,
    and each target may hold two more while refreshing its token (credential lock + read/update); plus the
    fold, the HTTP endpoint and the metrics loop. Locks held across a platform call are not in the pool (each
    worker thread has its own lock connection, see ``Ledger``)."""
    targets = sum(1 for t in config.targets if t.enabled)
    return max(20, targets * (config.kafka.canonical_partitions + 2) + 4)


class Daemon:
    def __init__(self, config: AppConfig, serve_http: bool = True) -> None:
        self.config = config
        self.stop = threading.Event()
        self.serve_http = serve_http
        secret_key = load_secret_key(config.secret_key_file)  # a refused key file fails before any connection
        kafka_log_relay(config.liveness.log_repeat_interval_s)  # librdkafka's lines: JSON, rate-limited
        self.ledger = Ledger(config.postgres.dsn, max_size=pool_size(config))
        self.runtime = DaemonRuntime(self.ledger, secret_key)
        self.fold: FoldRunner | None = None
        self.sinks: list[SinkWorker] = []
        self.threads: list[threading.Thread] = []
        self._components: dict[str, tuple[threading.Thread, object]] = {}  # name -> (thread, its loop)
        self._progress: dict[str, Progress] = {}  # name -> the loop's progress (liveness by progress)
        self._stalled: dict[str, float] = {}  # name -> seconds without progress, once over the bound
        self.exit_code: int | None = None  # set when a loop died or stalled: the process must be restarted
        self.clean = False
        self.crashes = 0  # loop threads that died of an unexpected error (each ends the process)
        self.http: RunningServer | None = None  # /metrics, /healthz, /readyz (and the console)
        self.web_connector: RunningServer | None = None  # pull connectors' endpoints (QuickBooks Web Connector)
        self._reachable: tuple[float, dict[str, bool]] = (0.0, {})

    def start(self) -> None:
        targets = [t for t in self.config.targets if t.enabled]
        ddl = [connector_class(t.platform).ledger_ddl() for t in targets]
        self.ledger.ensure_schema(ddl)
        seed_credentials(self.config, self.runtime)
        if self.config.run_fold:
            self.fold = FoldRunner(self.config, self.stop)
            self._progress["fold"] = self.fold.progress
            self._spawn("fold", self.fold.run)
        if self.config.run_sinks:
            for target in targets:
                sink = SinkWorker(self.config, target, self.ledger, self.runtime, self.stop)
                self.sinks.append(sink)
                self._progress[f"sink:{target.name}"] = sink.liveness
                self._spawn(f"sink:{target.name}", sink.run)
        if self.sinks:
            # Reconciliation on each target's schedule (issue #13, daemon/operations/bookkeeping.py).
            from daemon.operations.bookkeeping import ReconcileSchedule

            self.reconcile = ReconcileSchedule(self.config, self.ledger, {s.target.name: s.connector for s in self.sinks},
                                               self.stop)
            if self.reconcile.connectors:
                self._spawn("reconcile", self.reconcile.run)
        if self.config.source.health.enabled:
            # Freshness, source health and the Connect task's self-healing (issue #13, daemon/source/health.py).
            from daemon.source.health import SourceWatch

            self.source_watch = SourceWatch(self.config, self.ledger, self.stop)
            self._spawn("source-health", self.source_watch.run)
        if self.serve_http:
            app = build_http_app(self.liveness, self.readiness, self.activity, self._console())
            self.http = RunningServer(app, self.config.http.port, self.config.http.host, "metrics").start()
            endpoints = {s.target.name: self._guarded_endpoint(s) for s in self.sinks
                         if s.connector.asgi_app() is not None}
            if endpoints:
                web = self.config.web_connector
                self.web_connector = RunningServer(build_web_connector_app(endpoints), web.port, web.host,
                                                   "web-connector", web.tls_certfile, web.tls_keyfile).start()
        log.info("daemon_started", targets=[t.name for t in targets], fold=self.config.run_fold,
                 http_port=self.http.port if self.http else None,
                 web_connector=self.web_connector.url if self.web_connector else None)

    def _guarded_endpoint(self, sink: SinkWorker):
        """A pull connector's endpoint behind the size limit and the login throttle (its own listener)."""
        from connectors.quickbooks_desktop.endpoint import guarded_endpoint

        return guarded_endpoint(sink.connector.asgi_app(), sink.target, self.runtime.credentials(sink.target.name),
                                self.config.web_connector)

    def _console(self):
        """The bookkeeper's console app when ``console.enabled``; retries use the running sink's worker."""
        if not self.config.console.enabled:
            return None
        from daemon.console import build_console

        sinks = {s.target.name: s for s in self.sinks}
        return build_console(self.config, self.ledger, self.runtime, sinks.get)

    def _spawn(self, name: str, fn) -> None:
        thread = threading.Thread(target=self._guarded, args=(name, fn), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        self._components[name] = (thread, fn)

    def _guarded(self, name: str, fn) -> None:
        """Run a loop. Loops retry transient failures themselves (daemon/liveness.py ``TRANSIENT``) and
        dead-letter poison records; what reaches here is a bug: logged with its traceback, and the whole
        process stops with ``EXIT_COMPONENT_DIED`` — a fresh start from committed offsets, never a thread
        silently dead while the rest runs on."""
        try:
            fn()
        except BaseException:  # noqa: BLE001 - logged here; the process ends non-zero
            log.exception("component_died", component=name, action="the process exits for its supervisor to restart")
            self._fail(name, EXIT_COMPONENT_DIED)

    def _fail(self, name: str, code: int) -> None:
        metrics.UP.labels(name).set(0)
        if self.exit_code is None:
            self.exit_code = code
        self.crashes += 1
        self.stop.set()

    def supervise(self) -> None:
        """A loop thread that ended while the daemon is not stopping ends the process (``_guarded`` says why);
        a loop without progress for ``liveness.stall_timeout_s`` is stalled: /healthz fails, component_up is
        0, the watchdog is not fed, and with ``liveness.exit_on_stall`` the process exits ``EXIT_STALLED``."""
        for name, (thread, _) in list(self._components.items()):
            if not thread.is_alive() and not self.stop.is_set():
                log.error("component_ended", component=name)
                self._fail(name, EXIT_COMPONENT_DIED)
        bound = self.config.liveness.stall_timeout_s
        for name, progress in self._progress.items():
            stalled = progress.stalled_for(bound)
            metrics.STALLED.labels(name).set(stalled or 0)
            if stalled is None or self.stop.is_set():
                if self._stalled.pop(name, None) is not None and not self.stop.is_set():
                    metrics.UP.labels(name).set(1)  # only without exit_on_stall: the call returned after all
                    log.warning("component_progressing_again", component=name)
                continue
            if name not in self._stalled:
                metrics.UP.labels(name).set(0)
                log.error("component_stalled", component=name, seconds_without_progress=round(stalled, 1),
                          stall_timeout_s=bound, stack=progress.stack(),
                          action="exiting for the supervisor to restart" if self.config.liveness.exit_on_stall
                          else "watchdog no longer fed; /healthz 503")
            self._stalled[name] = stalled
            if self.config.liveness.exit_on_stall:
                self._fail(name, EXIT_STALLED)

    def liveness(self) -> dict[str, bool]:
        """Every loop alive and making progress (a stalled one is as good as dead)."""
        return {t.name: t.is_alive() and t.name not in self._stalled for t in self.threads}

    def readiness(self) -> dict[str, bool]:
        """Started and connected: every loop alive, Kafka and the ledger database reachable. Holding partitions
        is not required — a hot standby (another process owns the fold's one partition) is ready too."""
        return {**self.liveness(), **self._connections()}

    def activity(self) -> dict[str, bool]:
        """Which loops hold their partitions now (the fold's state rebuilt, a sink assigned) and still run."""
        checks = {}
        alive = self.liveness()
        if self.fold is not None:
            checks["fold"] = self.fold.ready.is_set() and alive.get("fold", False)
        for sink in self.sinks:
            name = f"sink:{sink.target.name}"
            checks[name] = sink.ready.is_set() and alive.get(name, False)
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
            if thread.name not in self._stalled:  # a loop stuck in a call will not return: do not wait for it
                thread.join(max(0.1, deadline - time.monotonic()))
        for listener in (self.http, self.web_connector):
            if listener is not None:
                listener.stop()
        still_running = sorted(t.name for t in self.threads if t.is_alive())
        stopped = not still_running
        crashes = self.crashes + sum(s.crashes for s in self.sinks)
        self.clean = stopped and crashes == 0
        if stopped:  # a loop stuck in a call holds a pool connection: closing the pool would wait for it
            self.ledger.close()
        # "clean" only when every loop stopped in time AND none died of an unexpected error during the run; the
        # loops still running are named, so an unclean stop says where it was held.
        log.info("daemon_stopped", clean=self.clean, threads_stopped=stopped, crashes=crashes,
                 still_running=still_running)

    def run_forever(self) -> int:
        """The service main loop: signals, readiness, watchdog."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        self.start()
        watchdog = watchdog_interval_s()
        notified_ready = False
        while not self.stop.wait(min(watchdog or 1.0, 1.0)):
            if not notified_ready and all(self.readiness().values()):
                sd_notify("READY=1")
                notified_ready = True
            self.supervise()
            if watchdog and all(self.liveness().values()):
                sd_notify("WATCHDOG=1")
        sd_notify("STOPPING=1")
        self.shutdown()
        if self.exit_code is not None:
            return self.exit_code
        return 0 if self.clean else 1
