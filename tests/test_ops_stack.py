"""Operating it on the real stack: `offsets show`, `offsets reset` (plan, dry run, refusal while workers
run, pausing them with --stop-workers, to-datetime resolution), and `status`, through the real CLI."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from daemon import cli

from daemon.operations import offsets as ops
from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime, SinkWorker
from daemon.source.fold_runner import FoldRunner
from daemon.sink.ledger import Ledger, load_secret_key
from tests.test_pipeline_stack import RecordingBooks, RecordingConnector, new_invoice, seed, wait_until

pytestmark = pytest.mark.stack


def test_offsets_show_reset_and_status(shop, tmp_path, capsys):
    target = TargetConfig(name="rec", platform="quickbooks-online")
    config = shop.app_config(targets=[target.model_dump(mode="json")],
                             source={"topic_prefix": shop.name, "connect_url": shop.stack.connect_url})
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    ledger = Ledger(shop.ledger_dsn)
    ledger.ensure_schema()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    books = RecordingBooks()
    stop = threading.Event()
    fold = FoldRunner(config, stop, transactional_id=f"{shop.name}-fold")
    sink = SinkWorker(config, target, ledger, runtime, stop, connector=RecordingConnector(target, runtime, books))
    threads = [threading.Thread(target=fold.run, daemon=True), threading.Thread(target=sink.run, daemon=True)]
    for t in threads:
        t.start()
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        seed(conn)
        for n in range(1, 13):
            new_invoice(conn, n, f"{50 + n}.00")
    wait_until(lambda: len(books.latest) == 12, 90, "12 invoices delivered")
    ends = {r.partition: r.end for r in ops.positions(config, ledger, "rec")}
    assert sum(ends.values()) > 12, "transaction markers take offsets after the records"
    wait_until(lambda: ledger.offsets("rec", config.kafka.canonical_topic) == ends, 30,
               "idle partitions' offsets moved past the transaction markers")

    assert cli.main(["offsets", "show", "--config", str(config_file)]) == 0
    shown = capsys.readouterr().out
    assert f"{shop.name}-sink-rec" in shown and f"{shop.name}-fold" in shown

    # A reset while the target's workers run is refused; the plan is shown and nothing changes.
    before = ledger.offsets("rec", config.kafka.canonical_topic)
    assert cli.main(["offsets", "reset", "--config", str(config_file), "--target", "rec", "--to-earliest"]) == 3
    assert ledger.offsets("rec", config.kafka.canonical_topic) == before
    assert cli.main(["offsets", "reset", "--config", str(config_file), "--target", "rec", "--shift", "-2",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing changed" in out and ledger.offsets("rec", config.kafka.canonical_topic) == before

    # With --stop-workers the sink leaves its group, the reset lands in the ledger, and the sink comes back.
    assert cli.main(["offsets", "reset", "--config", str(config_file), "--target", "rec", "--to-earliest",
                     "--stop-workers"]) == 0
    assert not ledger.target_paused("rec")
    wait_until(lambda: ops.group_members(config, f"{shop.name}-sink-rec") == 1, 60, "sink rejoined")
    # Replaying from the start re-checks every version against the ledger: nothing is posted twice.
    wait_until(lambda: ledger.offsets("rec", config.kafka.canonical_topic) == ends, 60, "replayed")
    assert all(times == 1 for times in books.deliveries.values())

    # to-datetime resolves through offsets-for-times: a time in the future means "the end".
    plan = ops.plan_reset(config, ledger, "rec", "to-datetime", datetime.now(timezone.utc) + timedelta(hours=1))
    assert {r.partition: r.new for r in plan} == ends
    past = ops.plan_reset(config, ledger, "rec", "to-datetime", datetime.now(timezone.utc) - timedelta(days=1))
    assert sum(r.new for r in past) == 0

    capsys.readouterr()
    assert cli.main(["status", "--config", str(config_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["targets"]["rec"]["lag"] == 0 and report["targets"]["rec"]["last_success"]
    assert report["targets"]["rec"]["dead_letters_open"] == 0
    assert report["debezium"][f"{shop.name}-source"]["connector"] == "RUNNING"
    # Issue #13: caught up, nothing waits; the connector's heartbeats say it is alive.
    assert report["targets"]["rec"]["freshness_s"] == 0 and report["targets"]["rec"]["oldest_unsent_age_s"] is None
    assert report["source"]["verdict"] in ("flowing", "quiet"), report["source"]
    stop.set()
    for t in threads:
        t.join(30)

    # With the daemon stopped, a new invoice waits before the fold: the target's line says so in time (it said
    # "lag 0, oldest unsent -" before issue #13), and names the stage.
    topic = config.source.table_topic("invoices")
    watermarks = ops._consumer(config)
    before_high = watermarks.get_watermark_offsets(ops.TopicPartition(topic, 0), timeout=10)[1]
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        new_invoice(conn, 13, "63.00")
    wait_until(lambda: watermarks.get_watermark_offsets(ops.TopicPartition(topic, 0), timeout=10, cached=False)[1]
               > before_high, 60, "Debezium published the new invoice")
    watermarks.close()
    capsys.readouterr()
    assert cli.main(["status", "--config", str(config_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fold"]["oldest_unfolded_age_s"] is not None
    assert report["targets"]["rec"]["freshness_s"] >= report["fold"]["oldest_unfolded_age_s"] > 0
    assert cli.main(["status", "--config", str(config_file)]) == 0
    printed = capsys.readouterr().out
    assert "target rec: freshness 00:00:" in printed and "source: flowing" in printed, printed
    ledger.close()


def test_fold_reset_to_earliest_during_a_workload_never_reverts_an_invoice(local_stack, tmp_path, monkeypatch):
    """`offsets reset --target fold --to-earliest` while the shop keeps writing (issue #19 item 1): the fold
    re-reads its snapshot and every streaming transaction, yet no canonical version goes back to older
    content, the invoices end equal to SELECT, and the changes written after the reset are folded."""
    import random
    import time
    import uuid
    from collections import defaultdict

    from cryptography.fernet import Fernet

    from daemon.localstack import stack
    from tests.conftest import ShopEnv
    from tests.test_fold_stack import ShopWriter, comparable, read_canonical, snapshot_from_select

    monkeypatch.setenv("LEDGERWIRE_SECRET_KEY", Fernet.generate_key().decode())
    name = f"r{uuid.uuid4().hex[:8]}"
    shop_dsn = stack.create_shop_database(local_stack, name)
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    conn = psycopg.connect(shop_dsn, autocommit=True)
    conn.execute("INSERT INTO locations (id, code, name) VALUES (1, 'MAIN', 'Main')")
    conn.execute("INSERT INTO customers (id, location_id, name, email, is_fleet) VALUES (1, 1, 'Fleet', 'a@x', true)")
    conn.execute("INSERT INTO tax_rates (id, code, name, rate) VALUES (1, 'GST', 'GST', 0.05), (2, 'PST', 'PST', 0.07)")
    writer = ShopWriter(conn, random.Random(19))

    def new_invoice() -> None:
        with conn.transaction():
            writer.n += 1
            job = conn.execute("INSERT INTO jobs (number, location_id, customer_id, description) VALUES "
                               "(%s,1,1,'Starter') RETURNING id", (f"R{writer.n}",)).fetchone()[0]
            inv = conn.execute("INSERT INTO invoices (number, job_id, customer_id, location_id, status, issue_date) "
                               "VALUES (%s,%s,1,1,'issued',current_date) RETURNING id", (f"INV-{job:05d}", job)).fetchone()[0]
            writer.add_line(inv)
            writer.restate(inv)

    def grow(count: int) -> None:
        """Edits that only add lines: any older content re-emitted later is a revert, never a real change."""
        for _ in range(count):
            inv = writer.rng.choice(writer.invoices())
            with conn.transaction():
                writer.add_line(inv)
                writer.restate(inv)

    for _ in range(15):  # in the database before Debezium is registered: the initial snapshot
        new_invoice()
    stack.register_connector(local_stack, name=f"{name}-source", db=name, prefix=name, slot=name)
    env = ShopEnv(local_stack, name, shop_dsn, local_stack.dsn(f"{name}_ledger"), local_stack.bootstrap)
    config = env.app_config()
    config_file = tmp_path / "ledgerwire.yml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    def folded_equals_select() -> bool:
        expected = {i: comparable(e) for i, e in snapshot_from_select(shop_dsn).items()}
        latest = {e.invoice_id: e for e in read_canonical(env.bootstrap, config.kafka.canonical_topic)}
        return all(i in latest and comparable(latest[i]) == h for i, h in expected.items())

    def run_fold(tag: str):
        stop = threading.Event()
        fold = FoldRunner(config, stop, transactional_id=f"{name}-fold-{tag}")
        thread = threading.Thread(target=fold.run, daemon=True)
        thread.start()
        return stop, thread

    try:
        stop, thread = run_fold("a")
        grow(20)
        for _ in range(5):
            new_invoice()
        wait_until(folded_equals_select, 120, "the fold caught up with the snapshot and the edits")
        stop.set()
        thread.join(30)
        wait_until(lambda: ops.group_members(config, config.kafka.fold_group) == 0, 60, "the fold left its group")
        versions_before = len(read_canonical(env.bootstrap, config.kafka.canonical_topic))

        grow(5)  # written while the fold is down, before the reset: read after it
        assert cli.main(["offsets", "reset", "--config", str(config_file), "--target", "fold", "--to-earliest"]) == 0
        ledger = Ledger(env.ledger_dsn)
        try:
            plan = ops.plan_reset(config, ledger, "fold", "to-earliest")
        finally:
            ledger.close()
        assert all(r.current == r.new for r in plan), "the fold's offsets are at the start of every source topic"
        stop, thread = run_fold("b")
        grow(10)  # and while it replays
        new_invoice()
        wait_until(folded_equals_select, 120, "the rewound fold caught up, with the changes after the reset")
        stop.set()
        thread.join(30)
    finally:
        conn.close()
        stack.remove_connector(local_stack, f"{name}-source", slot=name)

    events = read_canonical(env.bootstrap, config.kafka.canonical_topic)
    history: dict[int, list] = defaultdict(list)
    for e in events:
        history[e.invoice_id].append(e)
    reverted = []
    for invoice_id, versions in history.items():
        assert [e.version for e in versions] == list(range(1, len(versions) + 1)), f"invoice {invoice_id}: versions"
        seen: set[str] = set()
        for e in versions:
            content = comparable(e)
            if content in seen:
                reverted.append((invoice_id, e.version, str(e.computed.total)))
            seen.add(content)
        totals = [e.computed.total for e in versions]
        assert totals == sorted(totals), f"invoice {invoice_id}: a total went down {totals}"
    assert not reverted, f"versions with older content after the reset: {reverted[:5]}"
    assert len(events) > versions_before, "the changes written after the reset were folded"
    print(f"checked {len(history)} invoices, {versions_before} versions before the reset and {len(events)} after")
