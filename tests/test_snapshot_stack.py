"""The initial snapshot and a re-snapshot on the real stack: a shop database that already holds invoices
when Debezium is first registered is folded from its snapshot into exactly the invoices SELECT returns
(never half-written), and an incremental re-snapshot of unchanged rows produces no new versions. Also:
stored totals that disagree with the lines are flagged, not corrected, and counted."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest

from daemon import metrics

from daemon.localstack import generator

from daemon.localstack import stack
from daemon.source.fold_runner import FoldRunner
from tests.conftest import ShopEnv
from tests.test_fold_stack import comparable, read_canonical, snapshot_from_select

pytestmark = pytest.mark.stack


def test_initial_snapshot_then_idempotent_resnapshot(local_stack, monkeypatch, report):
    from cryptography.fernet import Fernet

    monkeypatch.setenv("LEDGERWIRE_SECRET_KEY", Fernet.generate_key().decode())
    name = f"s{uuid.uuid4().hex[:8]}"
    shop_dsn = stack.create_shop_database(local_stack, name)
    with psycopg.connect(shop_dsn, autocommit=True) as conn:
        generator.seed_reference_data(conn, random.Random(6))
        generator.Workload(conn, seed=6).run(60)
        # One invoice whose stored total disagrees with its lines (the shop software's bug, not ours).
        bad = conn.execute("SELECT id FROM invoices ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE invoices SET total = total + 1.00 WHERE id=%s", (bad,))
    # Debezium is registered only now: everything above arrives as the initial snapshot.
    stack.register_connector(local_stack, name=f"{name}-source", db=name, prefix=name, slot=name)
    env = ShopEnv(local_stack, name, shop_dsn, local_stack.dsn("postgres"), local_stack.bootstrap)
    config = env.app_config()
    mismatches_before = metrics.FOLD_TOTALS_MISMATCH._value.get()  # noqa: SLF001
    stop = threading.Event()
    fold = FoldRunner(config, stop, transactional_id=f"{name}-fold")
    thread = threading.Thread(target=fold.run, daemon=True)
    thread.start()
    try:
        expected = {i: comparable(e) for i, e in snapshot_from_select(shop_dsn).items()}
        deadline = time.monotonic() + 90
        events = []
        while time.monotonic() < deadline:
            events = read_canonical(env.bootstrap, config.kafka.canonical_topic)
            latest = {e.invoice_id: e for e in events}
            if all(i in latest and comparable(latest[i]) == h for i, h in expected.items()):
                break
            time.sleep(1)
        latest = {e.invoice_id: e for e in events}
        assert all(i in latest and comparable(latest[i]) == h for i, h in expected.items())
        # From the snapshot, every invoice appears once, whole: no version built from half its rows.
        assert len(events) == len(expected), "the snapshot produced partial versions"
        assert latest[bad].totals_mismatch and latest[bad].stored.total == latest[bad].computed.total + Decimal("1.00")
        assert metrics.FOLD_TOTALS_MISMATCH._value.get() > mismatches_before  # noqa: SLF001

        # Re-snapshot the invoices and their rows through Debezium's signal table: nothing changed, so
        # no invoice gets a new version.
        with psycopg.connect(shop_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO debezium_signal (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
                         (uuid.uuid4().hex, json.dumps({"type": "incremental", "data-collections": [
                             "public.invoices", "public.invoice_lines", "public.line_taxes", "public.payments"]})))
        resnapshot_rows = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and resnapshot_rows < len(expected):
            time.sleep(2)
            resnapshot_rows = _incremental_rows(env.bootstrap, f"{name}.public.invoices")
        assert resnapshot_rows >= len(expected), "Debezium did not re-read the invoices"
        time.sleep(3)  # the fold has seen them too
        again = read_canonical(env.bootstrap, config.kafka.canonical_topic)
        assert len(again) == len(events), f"re-snapshot produced {len(again) - len(events)} new versions"
        report(f"snapshot: {len(expected)} invoices folded whole from the initial snapshot; re-snapshot added none")
    finally:
        stop.set()
        thread.join(30)
        stack.remove_connector(local_stack, f"{name}-source", slot=name)


def _incremental_rows(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"inc-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    consumer.subscribe([topic])
    count, deadline = 0, time.monotonic() + 15
    while time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            break
        if m.value() and json.loads(m.value())["payload"]["source"].get("snapshot") == "incremental":
            count += 1
    consumer.close()
    return count
