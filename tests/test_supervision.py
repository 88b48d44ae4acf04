"""Supervision (issue #13 item 4): a poison record goes to the dead-letter topic with its reason and the stream
goes on; transient failures are retried with back-off and reported; anything else ends the process non-zero."""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaException

from daemon.config import AppConfig
from daemon.source.fold_runner import FoldRunner
from tests.pg_only import ledger_dsn, pg_cluster  # noqa: F401 - fixtures
from tests.test_fold_properties import TX_TOPIC, ShopModel, apply_op, debezium_records


class RecordingProducer:
    """The fold's transactional producer, recorded: what was produced, and how each transaction ended."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes | None, dict]] = []
        self.transactions: list[str] = []  # "begin", "commit", "abort"

    def begin_transaction(self):
        self.transactions.append("begin")

    def produce(self, topic, key=None, value=None, headers=None):
        self.produced.append((topic, key, value, dict(headers or [])))

    def poll(self, timeout):
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.offsets = offsets

    def commit_transaction(self, timeout):
        self.transactions.append("commit")

    def abort_transaction(self, timeout):
        self.transactions.append("abort")


class GroupMetadataConsumer:
    def consumer_group_metadata(self):
        return None


def fold_runner_fed(model: ShopModel) -> FoldRunner:
    config = AppConfig.model_validate({"kafka": {"bootstrap_servers": "127.0.0.1:1"},
                                       "source": {"topic_prefix": "shop"}})
    runner = FoldRunner(config, threading.Event())
    runner.tx_topic = TX_TOPIC
    runner.producer = RecordingProducer()
    runner.consumer = GroupMetadataConsumer()
    runner.mirror = __import__("daemon.source.fold", fromlist=["Mirror"]).Mirror()
    runner.assembler = runner._new_assembler()  # noqa: SLF001
    runner.positions = {}
    runner._assigned = ["assigned"]  # noqa: SLF001 - only its truth matters to _commit
    records = debezium_records(model)
    for topic, items in records.items():
        for record in items:
            runner.positions[(topic, 0)] = record.offset + 1
    for xid_records in _in_commit_order(records):
        (runner.assembler.add_marker if hasattr(xid_records, "status") else runner.assembler.add_change)(xid_records)
    return runner


def _in_commit_order(records):
    """Markers and row changes in the order one Debezium transaction writes them (BEGIN, rows, END)."""
    markers = records[TX_TOPIC]
    rows = sorted((r for topic, items in records.items() if topic != TX_TOPIC for r in items),
                  key=lambda r: r.source.lsn)
    out = []
    for begin, end in zip(markers[::2], markers[1::2]):
        out.append(begin)
        out += [r for r in rows if r.transaction.id == begin.id]
        out.append(end)
    return out


def test_an_unknown_line_kind_is_dead_lettered_with_its_reason_and_the_other_invoices_go_on():
    model = ShopModel()
    apply_op(model, "new_invoice", 1)
    apply_op(model, "new_invoice", 2)
    poisoned = max(model.tables["invoices"])
    line = next(i for i, ln in model.tables["invoice_lines"].items() if ln["invoice_id"] == poisoned)
    model.begin()
    model.update("invoice_lines", line, kind="subscription")  # a kind this version of the schema has no symbol for
    model.commit()
    apply_op(model, "new_invoice", 3)
    runner = fold_runner_fed(model)
    config = runner.config.kafka

    runner._fold([], force=True)  # noqa: SLF001 - what one batch at a trickle does: fold, then commit
    runner._commit_transaction()  # noqa: SLF001

    producer = runner.producer
    assert producer.transactions == ["begin", "commit"]  # no transaction left open, nothing aborted
    canonical = [key for topic, key, _, _ in producer.produced if topic == config.canonical_topic]
    third = max(model.tables["invoices"])
    # The two first invoices (the poisoned one's first version too), then — after the poison — the third one.
    assert len(canonical) == 3 and canonical[-1] == str(third).encode()
    dead = [(key, headers) for topic, key, _, headers in producer.produced if topic == config.dead_letter_topic]
    assert len(dead) == 1
    key, headers = dead[0]
    assert key == str(poisoned).encode()
    assert headers["ledgerwire-stage"] == b"fold"
    assert b"subscription" in headers["ledgerwire-reason"]


def test_kafka_down_at_start_is_retried_with_back_off_and_counted_not_fatal(monkeypatch):
    from daemon import metrics

    runner = FoldRunner(AppConfig.model_validate({"kafka": {"bootstrap_servers": "127.0.0.1:1"}}), threading.Event())
    attempts: list[int] = []

    def ensure_topics_while_kafka_is_down(config, topics):
        attempts.append(1)
        if len(attempts) == 3:
            runner.stop.set()  # Kafka "came back": the test ends here
            return
        raise KafkaException("Failed to get metadata: Local: Broker transport failure")

    monkeypatch.setattr("daemon.source.fold_runner.ensure_topics", ensure_topics_while_kafka_is_down)
    monkeypatch.setattr(runner, "_wait", lambda seconds: None, raising=False)  # the back-off is not under test
    monkeypatch.setattr(runner, "_run_once", lambda: None)  # the loop proper is not under test
    counted = metrics.TRANSIENT_FAILURES.labels("fold", "kafka")
    before = counted._value.get()  # noqa: SLF001
    runner.run()  # before: the KafkaException from ensure_topics ended the fold thread
    assert len(attempts) == 3 and counted._value.get() == before + 2  # noqa: SLF001


def test_a_loop_without_progress_is_stalled_healthz_fails_component_down_and_the_process_exits_75(ledger_dsn,
                                                                                                 monkeypatch):
    from cryptography.fernet import Fernet

    from daemon import app, metrics

    monkeypatch.setenv("LEDGERWIRE_SECRET_KEY", Fernet.generate_key().decode())
    from daemon.liveness import EXIT_STALLED, Progress

    config = AppConfig.model_validate({"postgres": {"dsn": ledger_dsn}, "run_fold": False, "shutdown_grace_s": 1,
                                       "kafka": {"call_timeout_s": 1}, "liveness": {"stall_timeout_s": 5}})
    daemon = app.Daemon(config, serve_http=False)
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    stuck = threading.Event()

    def loop_stuck_in_a_call():
        progress.beat()
        stuck.wait()  # like a Kafka call that never returns

    daemon._progress["fold"] = progress  # noqa: SLF001
    daemon._spawn("fold", loop_stuck_in_a_call)  # noqa: SLF001
    metrics.UP.labels("fold").set(1)
    now[0] += 4
    daemon.supervise()
    assert daemon.liveness() == {"fold": True} and daemon.exit_code is None  # within the bound: fine
    now[0] += 2
    daemon.supervise()
    assert daemon.liveness() == {"fold": False}  # /healthz 503, and run_forever stops feeding the watchdog
    assert metrics.UP.labels("fold")._value.get() == 0  # noqa: SLF001
    assert metrics.STALLED.labels("fold")._value.get() == 6  # noqa: SLF001
    assert daemon.exit_code == EXIT_STALLED and daemon.stop.is_set()
    started = time.monotonic()
    daemon.shutdown()  # does not wait shutdown_grace_s for the stuck loop
    assert time.monotonic() - started < 1
    stuck.set()
    daemon.ledger.close()  # left open by shutdown while the loop was stuck
