"""Operating it on the real stack: `offsets show`, `offsets reset` (plan, dry run, refusal while workers
run, pausing them with --stop-workers, to-datetime resolution), and `status`, through the real CLI."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from daemon import cli, ops
from daemon.config import TargetConfig
from daemon.deliver import DaemonRuntime, SinkWorker
from daemon.fold_runner import FoldRunner
from daemon.ledger import Ledger, load_secret_key
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
    stop.set()
    for t in threads:
        t.join(30)
    ledger.close()
