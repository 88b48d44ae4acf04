"""Liveness by progress (issue #13 item 3), as systemd runs the daemon: the fold hangs inside its Kafka
transaction (``send_offsets_to_transaction`` never returns, injected by tests/fold_hang_daemon.py); the process
notices it made no progress within ``liveness.stall_timeout_s``, stops feeding the watchdog, exits 75, and the
supervisor in this test (Restart=on-failure + WatchdogSec over $NOTIFY_SOCKET, like the unit) starts it again;
the new process folds the shop's changes. Before: the hung fold kept /healthz 200 and the watchdog fed forever."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WATCHDOG_S = 4.0
STALL_TIMEOUT_S = 8.0


class Supervisor:
    """The part of systemd's service manager the daemon talks to: READY=1 / WATCHDOG=1 on a notify socket,
    a kill when the watchdog is not fed within WatchdogSec, a restart when the process ends non-zero."""

    def __init__(self, tmp_path: Path, argv: list[str]) -> None:
        self.argv = argv
        self.socket_path = tmp_path / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.sock.settimeout(0.2)
        self.logs: list[Path] = []
        self.events: list[tuple[float, str]] = []  # (monotonic time, what happened)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log_file = self.socket_path.parent / f"daemon-{len(self.logs)}.log"
        self.logs.append(log_file)
        env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(self.socket_path),
               "WATCHDOG_USEC": str(int(WATCHDOG_S * 1_000_000))}
        with open(log_file, "w") as out:
            self.process = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.last_ping = None
        self.events.append((time.monotonic(), "started"))

    def run_until(self, condition, timeout: float) -> None:
        """Serve notifications, enforce the watchdog and Restart=on-failure until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                message = ""
            now = time.monotonic()
            if "READY=1" in message:
                self.events.append((now, "ready"))
                self.last_ping = now
            if "WATCHDOG=1" in message:
                self.last_ping = now
            code = self.process.poll()
            if code is not None:
                self.events.append((now, f"exited {code}"))
                if code == 0:
                    return
                self.start()
            elif self.last_ping is not None and now - self.last_ping > WATCHDOG_S:
                self.events.append((now, "watchdog timeout"))
                self.process.send_signal(signal.SIGABRT)  # systemd's WatchdogSignal
                self.process.wait(30)
                self.events.append((time.monotonic(), f"exited {self.process.returncode}"))
                self.start()
        raise AssertionError(f"timed out; events so far: {self.events}")

    def first(self, what: str, after: float = 0.0) -> float | None:
        return next((t for t, e in self.events if e.startswith(what) and t >= after), None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.sock.close()


class CanonicalInvoices:
    """The invoice ids on the canonical topic (committed records only), read as they arrive."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{time.time_ns()}",
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False, "log_level": 0})
        self.consumer.subscribe([topic])
        self.ids: set[bytes] = set()

    def count(self) -> int:
        for m in self.consumer.consume(num_messages=500, timeout=0.5):
            if not m.error() and m.key() is not None:
                self.ids.add(m.key())
        return len(self.ids)

    def close(self) -> None:
        self.consumer.close()


@pytest.mark.stack
def test_a_fold_hung_in_its_kafka_transaction_is_restarted_by_its_own_liveness_check(shop, tmp_path, report):
    from daemon.localstack import generator

    config = shop.app_config(kafka={**shop.app_config().kafka.model_dump(), "call_timeout_s": 5},
                             liveness={"stall_timeout_s": STALL_TIMEOUT_S}, run_sinks=False)
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    marker = tmp_path / "hung-at"
    supervisor = Supervisor(tmp_path, [sys.executable, str(REPO / "tests" / "fold_hang_daemon.py"), str(marker),
                                       "run", "--config", str(config_file)])
    watcher = CanonicalInvoices(shop.bootstrap, config.kafka.canonical_topic)
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(7))
            supervisor.start()
            supervisor.run_until(lambda: supervisor.first("ready") is not None, 120)
            generator.Workload(conn, seed=7).run(3, mix={"new": 1})  # the fold's first transaction hangs
            supervisor.run_until(marker.exists, 120)
            hung_at = time.monotonic() - (time.time() - float(marker.read_text()))
            supervisor.run_until(lambda: supervisor.first("exited", hung_at) is not None, 60)
            detected = supervisor.first("exited", hung_at)
            supervisor.run_until(lambda: supervisor.first("ready", detected) is not None, 120)
            restarted = supervisor.first("ready", detected)
            generator.Workload(conn, seed=8).run(3, mix={"new": 1})
            supervisor.run_until(lambda: watcher.count() >= 6, 120)
        first_run = [json.loads(line) for line in supervisor.logs[0].read_text().splitlines() if line.startswith("{")]
        stalled = [line for line in first_run if line["event"] == "component_stalled"]
        assert stalled and stalled[0]["component"] == "fold", first_run[-5:]
        assert "send_offsets_to_transaction" in stalled[0]["stack"]
        exits = [e for _, e in supervisor.events if e.startswith("exited")]
        assert exits[0] == "exited 75", supervisor.events  # its own liveness check, before the watchdog's kill
        assert detected - hung_at < STALL_TIMEOUT_S + WATCHDOG_S + 10
        report(f"fold hung in send_offsets_to_transaction: process exited 75 after {detected - hung_at:.1f} s "
               f"(stall_timeout_s {STALL_TIMEOUT_S}); restarted and READY again {restarted - detected:.1f} s later; "
               f"the new process folded the hung transaction and 3 new invoices; events {supervisor.events}")
    finally:
        supervisor.stop()
        watcher.close()


@pytest.mark.stack
def test_an_unknown_line_kind_from_the_shop_is_dead_lettered_and_the_fold_goes_on(shop, report):
    """A shop-software update adds a line kind the canonical schema has no symbol for: that invoice's version is
    dead-lettered with its reason, the fold thread lives on and later invoices are folded (issue #13 item 4)."""
    from confluent_kafka import Consumer, TopicPartition

    from daemon import app
    from daemon.localstack import generator

    config = shop.app_config(run_sinks=False)
    daemon = app.Daemon(config, serve_http=False)
    watcher = CanonicalInvoices(shop.bootstrap, config.kafka.canonical_topic)
    dead = Consumer({"bootstrap.servers": shop.bootstrap, "group.id": f"dead-{time.time_ns()}", "log_level": 0,
                     "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(3))
            generator.Workload(conn, seed=3).run(2, mix={"new": 1})
            daemon.start()
            supervise_until(daemon, lambda: watcher.count() >= 2, 120)
            conn.execute("ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_kind_check")  # the update
            poisoned = conn.execute("UPDATE invoice_lines SET kind = 'subscription' WHERE id = (SELECT min(id) "
                                    "FROM invoice_lines) RETURNING invoice_id").fetchone()[0]
            generator.Workload(conn, seed=4).run(2, mix={"new": 1})
            supervise_until(daemon, lambda: watcher.count() >= 4, 120)
        dead.assign([TopicPartition(config.kafka.dead_letter_topic, 0, 0)])
        records = []
        supervise_until(daemon, lambda: records.extend(m for m in dead.consume(100, 0.5) if not m.error())
                        or records, 60)
        headers = dict(records[0].headers())
        assert records[0].key() == str(poisoned).encode()
        assert headers["ledgerwire-stage"] == b"fold" and b"subscription" in headers["ledgerwire-reason"]
        alive = daemon.liveness()  # the fold and the source-health watcher (no targets in this config)
        assert alive["fold"] is True and all(alive.values()) and daemon.exit_code is None
        report(f"invoice {poisoned} with line kind 'subscription' dead-lettered ({headers['ledgerwire-reason'][:80]!r}); "
               f"the fold went on: {watcher.count()} invoices on the canonical topic, the thread alive")
    finally:
        daemon.stop.set()
        daemon.shutdown()
        watcher.close()
        dead.close()


def supervise_until(daemon, condition, timeout: float) -> None:
    """Wait for ``condition`` while doing what the daemon's main loop does (supervision), failing on a death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.supervise()
        assert daemon.exit_code is None, "a loop died or stalled"
        if condition():
            return
        daemon.stop.wait(0.2)
    raise AssertionError("timed out")
