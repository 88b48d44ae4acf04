"""Readiness is "started and connected": a standby daemon whose fold holds no partition — it joined a group
whose active member owns every partition and is busy (not polling), so the rebalance that would hand the
newcomer its (empty) share has not completed — still sends systemd READY=1 and answers /readyz 200, showing
under "active" that it owns nothing. Before, readiness waited for the fold's assignment: no READY=1, and
systemd would kill it at the start timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import random

import httpx
import psycopg
import pytest
import yaml

from connectors.sandbox_kit import free_port

REPO = Path(__file__).resolve().parent.parent


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.stack
def test_a_hot_standby_sends_ready_and_answers_readyz(shop, tmp_path, report):
    from confluent_kafka import Consumer

    from daemon.localstack import generator
    from daemon.source.fold import TABLES

    config = shop.app_config(http={"port": free_port()})
    # The active member: the range assignor hands each single-partition topic to the first member id in sort
    # order, and "0-active-…" sorts before the daemon's "rdkafka-…", so it owns every partition.
    holder = Consumer({"bootstrap.servers": shop.bootstrap, "group.id": config.kafka.fold_group,
                       "client.id": "0-active", "partition.assignment.strategy": "range",
                       "enable.auto.commit": False, "log_level": 0})
    topics = [config.source.table_topic(t) for t in TABLES] + [config.source.tx_topic]
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:  # Debezium creates topics as rows arrive
        generator.seed_reference_data(conn, random.Random(5))
        generator.Workload(conn, seed=5).run(10, mix={"new": 2, "pay": 1})

    def existing() -> set[str]:
        return set(holder.list_topics(timeout=5).topics) & set(topics)

    holder.subscribe(topics)
    _wait(lambda: len(existing()) >= 5 and holder.poll(0.2) is None
          and {tp.topic for tp in holder.assignment()} == existing(), 90,
          "the active member to own the fold's partitions")
    # From here the active member does not poll (a long transaction, a pause): the standby's join waits.
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.5)
    standby = None
    try:
        config_file = tmp_path / "ledgerwire.yml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        standby = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config_file)],
                                   env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify_path)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def ready_message():
            try:
                return b"READY=1" in notify.recv(4096)
            except TimeoutError:
                assert standby.poll() is None, "the standby daemon exited"
                return False

        _wait(ready_message, 90, "READY=1 from the standby daemon")
        answer = httpx.get(f"http://127.0.0.1:{config.http.port}/readyz", timeout=5)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ok"] and body["checks"]["kafka"] and body["checks"]["ledger"] and body["checks"]["fold"]
        assert body["active"] == {"fold": False}, body  # ready, not active
        report("a standby whose fold holds no partition (the group waits on the busy active member) sent READY=1 and "
               "/readyz 200 with active.fold=false")
    finally:
        if standby is not None:
            standby.terminate()
            standby.wait(30)
        notify.close()
        holder.close()
