"""How the fold groups its work into Kafka transactions (issue #21 item 1).

Committing a Kafka transaction costs a flush and three broker round trips during which the fold thread waits; one
per 2,000-record batch was a third of the fold's wall time under a backlog. Under a backlog (full batches) one
transaction now spans batches for up to ``TRANSACTION_SPAN_S``; a batch that is not full commits at once (live
latency unchanged); a rebalance while a transaction is open aborts it and rebuilds; a stop commits it. These tests
run the real loop (``_run_once``) against a scripted consumer and a recording producer."""

from __future__ import annotations

import threading

import pytest

from daemon.canonical import decode_invoice_event
from daemon.config import AppConfig
from daemon.source import fold_runner
from daemon.source.decode import RowChange, SourceInfo
from daemon.source.fold_runner import FoldRunner
from tests.test_fold_properties import TX_TOPIC, ShopModel, apply_op, debezium_records
from tests.test_supervision import RecordingProducer, _in_commit_order

BATCH = 10  # records per consumed batch in these tests (BATCH_MESSAGES, patched)


class Message:
    """A consumed record; its value is its index into the decoded records the test feeds."""

    def __init__(self, topic: str, offset: int, index: int) -> None:
        self._topic, self._offset, self._index = topic, offset, index

    def error(self):
        return None

    def topic(self):
        return self._topic

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def value(self):
        return self._index

    def key(self):
        return None


class Partitions:
    def __init__(self, topic: str) -> None:
        self.topics = {topic: type("TopicMetadata", (), {"partitions": {0: None}})()}


class ScriptedConsumer:
    """The fold's consumer (and its state reader, which finds the state topic empty): hands out the scripted
    batches in order, running a scripted rebalance before a batch when told, then sets the stop event."""

    def __init__(self, conf: dict, script: dict) -> None:
        self.reader = "restore" in conf.get("group.id", "")
        self.script = script

    # the state reader
    def list_topics(self, topic, timeout):
        return Partitions(topic)

    def assign(self, partitions):
        pass

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        """The state topic is empty; a source topic ends after the records handed out so far (written = read)."""
        return (0, self.script.get("ends", {}).get(tp.topic, 0))

    # the fold's consumer
    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def consume(self, num_messages, timeout):
        script = self.script
        if not script["assigned"]:
            script["assigned"] = True
            self.on_assign(self, self._partitions())
        if timeout != 0:  # the wait for a first record after an empty poll: the script is used up
            script["stop"].set()
            return []
        script["commits_seen"].append(script["producer"].transactions.count("commit"))
        if script["batches"] and script["batches"][0] == "rebalance":
            script["batches"].pop(0)
            self.on_revoke(self, [])
            self.on_assign(self, self._partitions())
        batch = script["batches"].pop(0) if script["batches"] else []
        ends = script.setdefault("ends", {})
        for m in batch:
            ends[m.topic()] = max(ends.get(m.topic(), 0), m.offset() + 1)
        return batch

    def _partitions(self):
        return [fold_runner.TopicPartition(topic, 0) for topic in self.script.get("topics", [TX_TOPIC])]

    def committed(self, partitions, timeout):
        return []

    def consumer_group_metadata(self):
        return None

    def close(self):
        pass


class FlushingProducer(RecordingProducer):
    def __init__(self, conf: dict) -> None:
        super().__init__()
        self.committed_at: list[int] = []  # len(produced) at each commit: where each transaction ends
        self.offsets_sent_in: list[int] = []  # the transaction (0-based) each send_offsets_to_transaction was in

    def commit_transaction(self, timeout):
        super().commit_transaction(timeout)
        self.committed_at.append(len(self.produced))

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        super().send_offsets_to_transaction(offsets, metadata, timeout)
        self.offsets_sent_in.append(len(self.committed_at))

    def init_transactions(self, timeout):
        pass

    def flush(self, timeout):
        return 0


def fold_with(batches: list, span_s: float, monkeypatch, topics: list[str] | None = None,
              ) -> tuple[FlushingProducer, dict]:
    """Run the fold's loop over ``batches`` (lists of Messages, or "rebalance") until they are used up."""
    config = AppConfig.model_validate({"kafka": {"bootstrap_servers": "127.0.0.1:1"},
                                       "source": {"topic_prefix": "shop"}})
    stop = threading.Event()
    runner = FoldRunner(config, stop)
    producer = FlushingProducer({})
    script = {"batches": list(batches), "assigned": False, "stop": stop, "producer": producer, "commits_seen": [],
              "topics": topics or [TX_TOPIC]}
    monkeypatch.setattr(fold_runner, "BATCH_MESSAGES", BATCH)
    monkeypatch.setattr(fold_runner, "TRANSACTION_SPAN_S", span_s, raising=False)
    monkeypatch.setattr(fold_runner, "COMMIT_INTERVAL_S", 0.0)
    monkeypatch.setattr(fold_runner, "Consumer", lambda conf: ScriptedConsumer(conf, script))
    monkeypatch.setattr(fold_runner, "Producer", lambda conf: producer)
    monkeypatch.setattr(fold_runner, "publish_lag", lambda *args: None)
    runner.tx_topic = TX_TOPIC
    runner._run_once()  # noqa: SLF001
    return producer, script


@pytest.fixture
def decoded(monkeypatch):
    """Six invoices (a few of them edited and paid) as decoded records in commit order; the fold's decoders
    hand back the record a Message's value indexes."""
    model = ShopModel()
    for pick in range(6):
        apply_op(model, "new_invoice", pick)
    apply_op(model, "pay", 1)
    apply_op(model, "change_qty", 2)
    records = debezium_records(model)
    ordered = _in_commit_order(records)
    monkeypatch.setattr(fold_runner, "decode_change", lambda topic, partition, offset, value: ordered[value])
    monkeypatch.setattr(fold_runner, "decode_tx_marker", lambda topic, partition, offset, value: ordered[value])
    return [Message(record.topic, record.offset, index) for index, record in enumerate(ordered)]


def batches_of(messages: list, size: int) -> list[list]:
    return [messages[i:i + size] for i in range(0, len(messages), size)]


def canonical(producer: FlushingProducer) -> list[tuple]:
    """The emitted events, keyed, without their emission time."""
    return [(key, decode_invoice_event(value).model_dump(exclude={"emitted_at"}))
            for topic, key, value, _ in producer.produced if topic == "ledgerwire.invoices"]


def test_under_a_backlog_one_kafka_transaction_spans_full_batches_with_the_same_events(decoded, monkeypatch):
    assert len(decoded) > 4 * BATCH  # several full batches, then a partial one
    spanning, _ = fold_with(batches_of(decoded, BATCH), span_s=3600.0, monkeypatch=monkeypatch)
    per_batch, _ = fold_with(batches_of(decoded, BATCH), span_s=0.0, monkeypatch=monkeypatch)

    assert spanning.transactions == ["begin", "commit"]  # the backlog, up to its last (partial) batch: one
    assert per_batch.transactions.count("commit") == len(batches_of(decoded, BATCH))
    assert canonical(spanning) and canonical(spanning) == canonical(per_batch)  # the same events, in order
    state = [key for topic, key, _, _ in spanning.produced if topic == "ledgerwire.fold-state"]
    invoices = [key for key in state if key.startswith(b"i:")]
    assert len(invoices) == len(set(invoices))  # an invoice touched in several batches: one state record
    assert spanning.offsets == per_batch.offsets  # the same offsets committed at the end


def test_a_batch_that_is_not_full_is_committed_before_the_next_consume(decoded, monkeypatch):
    trickle = [[m] for m in decoded[:12]]  # one record at a time: live use
    producer, script = fold_with(trickle, span_s=3600.0, monkeypatch=monkeypatch)
    assert producer.transactions.count("commit") == len(trickle) and "abort" not in producer.transactions
    # each consume after a batch sees that batch's transaction committed (nothing waits for the span)
    seen = script["commits_seen"][1:len(trickle) + 1]
    assert seen == list(range(1, len(trickle) + 1))


def test_a_rebalance_while_a_transaction_is_open_aborts_it_and_rebuilds(decoded, monkeypatch):
    full = batches_of(decoded, BATCH)
    producer, _ = fold_with(full[:2] + ["rebalance"] + full[2:], span_s=3600.0, monkeypatch=monkeypatch)
    assert producer.transactions[:3] == ["begin", "abort", "begin"]
    assert producer.transactions[3:] == ["commit"]


def test_a_stop_during_a_backlog_commits_the_open_transaction(decoded, monkeypatch):
    full = [batch for batch in batches_of(decoded, BATCH) if len(batch) == BATCH][:3]  # no partial batch at all
    producer, _ = fold_with(full, span_s=3600.0, monkeypatch=monkeypatch)
    assert producer.transactions == ["begin", "commit"]


def snapshot_of(invoices: int) -> tuple[ShopModel, list[RowChange]]:
    """A shop with ``invoices`` invoices as Debezium's initial snapshot writes it (``"last"`` not yet marked)."""
    model = ShopModel()
    for pick in range(invoices):
        apply_op(model, "new_invoice", pick)
    offsets: dict[str, int] = {}
    changes = []
    for table, table_rows in model.tables.items():
        for row in table_rows.values():
            topic = f"shop.public.{table}"
            offsets[topic] = offsets.get(topic, -1) + 1
            changes.append(RowChange(table=table, op="r", before=None, after=dict(row),
                                     source=SourceInfo(db="shop", schema_="public", table=table,
                                                       ts_ms=1_795_000_000_000, snapshot="true", lsn=7000),
                                     transaction=None, topic=topic, partition=0, offset=offsets[topic]))
    return model, changes


def test_a_snapshot_is_released_only_with_the_records_written_after_its_last_one(monkeypatch):
    """Seen on the real stack (tests/test_snapshot_stack.py under load): Connect's producer wrote a batch of line
    taxes after the batch holding the snapshot's "last" record, the fold took the topics' ends at that moment,
    released the snapshot without those taxes, and posted invoices with no tax (their stored totals flagged as
    a mismatch). The ends are read SNAPSHOT_SETTLE_S later, at a later poll: the late taxes are in the release."""
    model, changes = snapshot_of(4)
    offsets = {c.topic: c.offset for c in changes}
    taxes = [c for c in changes if c.table == "line_taxes"]
    late = taxes[len(taxes) // 2:]  # written after the batch holding "last"
    on_time = [c for c in changes if c not in late]
    on_time[-1] = on_time[-1].model_copy(update={"source": on_time[-1].source.model_copy(update={"snapshot": "last"})})
    ordered = on_time + late
    monkeypatch.setattr(fold_runner, "decode_change", lambda topic, partition, offset, value: ordered[value])
    monkeypatch.setattr(fold_runner, "SNAPSHOT_SETTLE_S", 0.0, raising=False)
    messages = [Message(c.topic, c.offset, index) for index, c in enumerate(ordered)]
    batches = [messages[:len(on_time)], messages[len(on_time):]]

    producer, _ = fold_with(batches, span_s=0.0, monkeypatch=monkeypatch, topics=sorted(offsets))

    events = [decode_invoice_event(value) for topic, _, value, _ in producer.produced if topic == "ledgerwire.invoices"]
    assert sorted(e.invoice_id for e in events) == sorted(model.tables["invoices"])  # each once: no partial version
    assert all(e.source.completion == "snapshot" for e in events)
    assert not [e.invoice_id for e in events if e.totals_mismatch], "released without the late line taxes"
    assert sum(len(line.taxes) for e in events for line in e.lines) == len(taxes)


def test_a_release_too_large_for_one_kafka_transaction_is_committed_in_parts_that_restore(monkeypatch):
    """A history import's snapshot (250,000 invoices) took longer to emit than the broker's transaction timeout
    (60 s): the broker aborted it, the fold rebuilt, read the snapshot again and timed out again, for ever (round 5
    of bench/history_import.py). A release now commits what it emitted every CHUNK_S — canonical events and those
    invoices' state records, no offsets, no checkpoint — and the state the parts leave restores: after a crash
    between two parts the invoices already emitted are not emitted again, the others are."""
    from daemon.source.fold import Mirror, SourceTransaction

    model, changes = snapshot_of(6)
    changes[-1] = changes[-1].model_copy(update={"source": changes[-1].source.model_copy(update={"snapshot": "last"})})
    monkeypatch.setattr(fold_runner, "decode_change", lambda topic, partition, offset, value: changes[value])
    monkeypatch.setattr(fold_runner, "SNAPSHOT_SETTLE_S", 0.0, raising=False)
    monkeypatch.setattr(fold_runner, "CHUNK_S", 0.0, raising=False)  # every emitted invoice its own part
    messages = [Message(c.topic, c.offset, index) for index, c in enumerate(changes)]
    producer, _ = fold_with([messages, []], span_s=0.0, monkeypatch=monkeypatch,
                            topics=sorted({c.topic for c in changes}))

    invoices = sorted(model.tables["invoices"])
    canonical_at = [n for n, (topic, *_) in enumerate(producer.produced) if topic == "ledgerwire.invoices"]
    assert len(canonical_at) == len(invoices)
    bounds = list(zip([0] + producer.committed_at[:-1], producer.committed_at))  # each transaction's records
    parts = [t for t, (start, end) in enumerate(bounds) if any(start <= n < end for n in canonical_at)]
    assert len(parts) >= len(invoices), "the whole release in one Kafka transaction"
    assert not set(parts[:-1]) & set(producer.offsets_sent_in)  # a part commits no offsets...
    assert not [key for start, end in (bounds[t] for t in parts[:-1]) for _, key, _, _ in producer.produced[start:end]
                if key and key.startswith(b"m:")]  # ...and no checkpoint
    assert producer.offsets_sent_in[-1] >= parts[-1]  # the offsets go with (or after) the release's last part

    def restored(upto: int) -> Mirror:
        mirror = Mirror()
        for topic, key, value, _ in producer.produced[:upto]:
            if topic == "ledgerwire.fold-state" and not key.startswith(b"m:"):
                mirror.restore(key.decode(), value)
        return mirror

    everything = restored(len(producer.produced))
    assert sorted(i for i in invoices if everything.versions.get(i)) == invoices
    # A crash after the first part: the source is read again from the uncommitted offsets and folded on the state
    # the first part left; only the invoices not yet emitted are emitted.
    first_part = restored(bounds[parts[0]][1])
    emitted_before = [i for i in invoices if first_part.versions.get(i)]
    assert emitted_before and len(emitted_before) < len(invoices)
    again = SourceTransaction(None, changes, "snapshot", committed_at=None)
    rebuilt = [first_part.build_encoded(i, again) for i in sorted(first_part.apply(again))]
    assert sorted(b.invoice_id for b in rebuilt if b is not None) == sorted(set(invoices) - set(emitted_before))
