"""Supervision (issue #13 item 4): a poison record goes to the dead-letter topic with its reason and the stream
goes on; transient failures are retried with back-off and reported; anything else ends the process non-zero."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaException

from daemon.config import AppConfig
from daemon.source.fold_runner import FoldRunner
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

    runner._commit([], force=True)  # noqa: SLF001

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
