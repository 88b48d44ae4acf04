"""The fold as a Kafka application: consume Debezium topics → fold → produce canonical events, exactly once.

A Kafka transaction holds the canonical events, the fold-state changelog records (compacted topic) and the
consumed offsets (``send_offsets_to_transaction`` with the consumer's group metadata, so a zombie after a
rebalance is fenced). At a trickle each consumed batch is one transaction, committed at once; under a backlog
(full batches) one transaction spans batches for up to ``TRANSACTION_SPAN_S``, and a rebalance in between aborts
it and rebuilds. Consumers read ``read_committed``. Offsets
committed are the lowest still-buffered offset per partition, so an incomplete source transaction is
re-read after a crash rather than lost. On partition assignment the state is rebuilt from the changelog
(no re-reading of all history).

Debezium's PostgreSQL connector has one task per database, so the source stream is serial: the fold's
topics have one partition each and the range assignor gives all of them to one group member; other
processes in the group are hot standbys that take over on rebalance. Delivery scales out separately
(the canonical topic has many partitions; see ``daemon/sink/deliver.py``).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from daemon import metrics
from daemon.config import AppConfig
from daemon.source.decode import DecodeError, decode_change, decode_tx_marker
from daemon.source.fold import TABLES, Mirror, TransactionAssembler, decode_state, encode_state
from daemon.kafka_util import consume_available, ensure_topics, kafka_conf, publish_lag
from daemon.liveness import TRANSIENT, Progress, report_transient

log = structlog.get_logger(__name__)

META_KEY = "m:assembler"
BATCH_MESSAGES = 2000  # records per consume, and so at most per Kafka transaction
COMMIT_INTERVAL_S = 0.05  # least time between Kafka transactions while records trickle in
# Under a backlog a Kafka transaction stays open across full batches for up to this long. Committing one costs a
# flush and three broker round trips during which the fold thread waits: one per 2,000-record batch was a third
# of the fold's wall time (bench/RESULTS.md, round 5), and at 0.5 s the commits' waits were still ~10 % of it
# (round 6). A batch that is not full (the backlog is drained) commits at once, so live latency is as before and a
# drained backlog's output is readable at once; under a backlog the output comes in steps of up to this long (a
# crash or a rebalance redoes at most this much work).
TRANSACTION_SPAN_S = 2.0
# The snapshot's last record does not mean every earlier snapshot record is in Kafka: Connect's producer fills each
# request from the partitions in turn, so a batch of another table's records can be written after the one holding
# "last" (seen on the real stack: an invoice released without its last line taxes). The topics' ends are read
# this long after the last record is seen, and the snapshot is complete once the fold has read up to them.
SNAPSHOT_SETTLE_S = 5.0
# A Kafka transaction is aborted by the broker ``transaction.timeout.ms`` (60 s) after its first record. A release
# too large to emit in that time (a history import's snapshot: 250,000 invoices, ~45 s of building alone) is split:
# after this long, the invoices emitted so far are committed with their state records — no offsets and no
# checkpoint, so a crash re-reads the source and the restored versions make the re-emission a no-op.
CHUNK_S = 10.0
# Errors raised by one record's or one invoice's data (an enum symbol the schema lacks, a value that does not
# parse, a column a schema change removed): that record or invoice is dead-lettered and the stream goes on.
# Anything else is a bug: fatal.
POISON = (ValueError, TypeError, ArithmeticError, LookupError)
# CPython collects its youngest generation every 700 net allocations of container objects. The fold allocates a
# decoded change (a model, its row images, its source block) per record and keeps it until its transaction is
# released, so young collections keep walking survivors, and each full collection walked every object the
# imports made (pydantic's schemas, the modules): ~8 us of the ~40 us of fold CPU a row event costs
# (bench/fold_cpu.py, timed with gc.callbacks). The fold's own structures hold no reference cycles; what cyclic
# garbage the process makes is still collected, every GC_YOUNG_THRESHOLD allocations.
GC_YOUNG_THRESHOLD = 20_000
_gc_tuned = False


def default_transactional_id(config: AppConfig) -> str:
    """One transactional id per daemon instance, the same across its restarts. Zombies are fenced by the consumer
    group's metadata, not by this id; it only lets a restarted instance abort the transaction its predecessor left
    open. Two daemon processes on one host (scale-out) must not share it: each start would fence the other's
    producer, and their folds would restart each other in turn. The metrics port tells them apart (each instance
    binds its own); without one, the process id does."""
    instance = config.http.port or os.getpid()
    return f"{config.kafka.fold_group}-{socket.gethostname()}-{instance}"


def tune_gc() -> None:
    """Collect once, freeze what survives (the imports' objects: never garbage, so the collector stops walking
    them) and collect young objects less often. Process-wide; only the first call acts (a second freeze would
    also freeze a rebuilt fold's garbage)."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class FoldRunner:
    def __init__(self, config: AppConfig, stop: threading.Event, transactional_id: str | None = None) -> None:
        self.config = config
        self.stop = stop
        self.source_topics = [config.source.table_topic(t) for t in TABLES]
        self.tx_topic = config.source.tx_topic
        self.transactional_id = transactional_id or default_transactional_id(config)
        self.ready = threading.Event()
        self._needs_rebuild = False
        self._assigned: list[TopicPartition] = []
        self._last_transaction = 0.0
        self._transaction_started: float | None = None  # a Kafka transaction is open (monotonic start)
        self._transaction_released = False  # it holds released source transactions: write the checkpoint
        self._emitted: list[int] = []  # invoices emitted in the open Kafka transaction (a part's state records)
        self._snapshot_last_seen: float | None = None  # when the snapshot's last record was read (ends not read yet)
        self.progress = Progress()  # beaten at every turn of the loop (daemon/liveness.py)
        self.timeout_s = config.kafka.call_timeout_s

    # -- lifecycle --
    def run(self) -> None:
        """Transient failures (Kafka away, a fenced or timed-out transaction) rebuild from the committed state
        and offsets after a back-off; anything else propagates and ends the process (daemon/app.py)."""
        metrics.init_fold(TABLES)
        tune_gc()
        backoff = 1.0
        while not self.stop.is_set():
            self.progress.beat()
            try:
                ensure_topics(self.config, self.source_topics + [self.tx_topic])  # Kafka may be down at start
                self._run_once()
                backoff = 1.0
            except TRANSIENT as exc:
                metrics.UP.labels("fold").set(0)
                report_transient("fold", exc, backoff)
                self._wait(backoff)
                backoff = min(backoff * 2, 30.0)
        metrics.UP.labels("fold").set(0)

    def _wait(self, seconds: float) -> None:
        """A back-off wait that still shows the loop alive: waiting is not being stuck."""
        deadline = time.monotonic() + seconds
        while not self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
            self.progress.beat()
        self.progress.beat()

    def _run_once(self) -> None:
        kafka = self.config.kafka
        self.consumer = Consumer(kafka_conf(kafka, {
            "group.id": kafka.fold_group, "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "partition.assignment.strategy": "range",
            "max.poll.interval.ms": 300000, "fetch.wait.max.ms": 50, "topic.metadata.refresh.interval.ms": 10000,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
        }))
        self.producer = Producer(kafka_conf(kafka, {
            "transactional.id": self.transactional_id, "enable.idempotence": True, "linger.ms": 5,
            "partitioner": "murmur2_random", "compression.type": "lz4", "transaction.timeout.ms": 60000,
        }))
        self.producer.init_transactions(self.timeout_s)
        self.mirror = Mirror()
        self.assembler = self._new_assembler()
        self.positions: dict[tuple[str, int], int] = {}
        self._needs_rebuild = False
        self.consumer.subscribe(self.source_topics + [self.tx_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        metrics.UP.labels("fold").set(1)
        last_lag = 0.0
        try:
            while not self.stop.is_set():
                self.progress.beat()
                self._step()
                if time.monotonic() - last_lag > 5:
                    publish_lag(self.consumer, kafka.fold_group, self._assigned)
                    last_lag = time.monotonic()
            if self._transaction_started is not None:  # stopped with a backlog's transaction open: keep its work
                self._commit_transaction()
        except BaseException:
            self._abort_open_transaction()
            raise
        finally:
            try:
                self.consumer.close()
            finally:
                self.producer.flush(self.timeout_s)
                self.producer = None  # release librdkafka's handle now, not at garbage collection

    def _step(self) -> None:
        """One consumed batch: folded into the open Kafka transaction (opened if there is anything to write),
        which is committed unless a backlog is still arriving (a full batch) and it is younger than
        ``TRANSACTION_SPAN_S``."""
        messages = self._next_batch()
        if self._needs_rebuild:
            self._rebuild()
        self._settle_snapshot()  # before this batch is read: never at the poll that read the last record
        self._fold(self._ingest(messages), force=bool(messages))
        if self._transaction_started is not None and (
                len(messages) < BATCH_MESSAGES or self.stop.is_set()
                or time.monotonic() - self._transaction_started >= TRANSACTION_SPAN_S):
            self._commit_transaction()

    def _next_batch(self) -> list[Any]:
        """``consume_available`` (under a backlog, waiting for full batches was ~10 % of the fold's time),
        with a partial batch topped up for what is left of the commit interval, so a trickle of records does
        not become one Kafka transaction each."""
        messages = consume_available(self.consumer, BATCH_MESSAGES, 0.1)
        wait = COMMIT_INTERVAL_S - (time.monotonic() - self._last_transaction)
        if messages and len(messages) < BATCH_MESSAGES and wait > 0:
            messages += self.consumer.consume(num_messages=BATCH_MESSAGES - len(messages), timeout=wait)
        return messages

    def _new_assembler(self) -> TransactionAssembler:
        src = self.config.source
        return TransactionAssembler(timeout_s=src.incomplete_transaction_timeout_s,
                                    max_buffered_events=src.max_buffered_events, schema=src.schema_name)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._abort_open_transaction()
        self._assigned = list(partitions)
        self._needs_rebuild = True
        self.ready.clear()
        log.info("fold_assigned", partitions=len(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A transaction open across batches holds offsets of partitions this member is losing: abort it (its
        # work is redone from the committed state, which the next assignment rebuilds).
        if self._abort_open_transaction():
            self._needs_rebuild = True
        self._assigned = []
        self.ready.clear()
        log.info("fold_revoked", partitions=len(partitions))

    # -- state --
    def _rebuild(self) -> None:
        """Rebuild the mirror from the compacted changelog, and positions from the committed offsets."""
        started = time.monotonic()
        self.mirror = Mirror()
        self.assembler = self._new_assembler()
        self._snapshot_last_seen = None
        kafka = self.config.kafka
        reader = Consumer(kafka_conf(kafka, {
            "group.id": f"{kafka.fold_group}-restore-{uuid.uuid4().hex[:8]}", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True,
        }))
        try:
            metadata = reader.list_topics(kafka.fold_state_topic, timeout=self.timeout_s).topics[kafka.fold_state_topic]
            partitions = [TopicPartition(kafka.fold_state_topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
            reader.assign(partitions)
            remaining = {p.partition for p in partitions if reader.get_watermark_offsets(p, timeout=self.timeout_s)[1] > 0}
            restored = 0
            while remaining:
                self.progress.beat()  # a large state takes minutes to read: each batch is progress
                for m in reader.consume(num_messages=5000, timeout=1.0):
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            remaining.discard(m.partition())
                            continue
                        raise KafkaException(m.error())
                    key = m.key().decode()
                    if key == META_KEY:
                        if m.value() is not None:
                            self.assembler.restore_checkpoint(decode_state(m.value()))
                    else:
                        self.mirror.restore(key, m.value())
                    restored += 1
        finally:
            reader.close()
        committed = self.consumer.committed(self._assigned, timeout=self.timeout_s) if self._assigned else []
        self.positions = {}
        for tp in committed:
            if tp.offset != OFFSET_INVALID and tp.offset >= 0:
                self.positions[(tp.topic, tp.partition)] = tp.offset
        self.assembler.restored_at(self.positions)
        self._needs_rebuild = False
        for table, count in self.mirror.row_counts().items():
            metrics.FOLD_STATE_ROWS.labels(table).set(count)
        self.ready.set()
        log.info("fold_state_rebuilt", records=restored, seconds=round(time.monotonic() - started, 2),
                 last_end_offset=self.assembler.last_applied_end_offset)

    # -- the loop body --
    def _ingest(self, messages: list[Any]) -> list[tuple[Any, str]]:
        dead_letters: list[tuple[Any, str]] = []
        saw_snapshot_last = False
        replays_before = self.assembler.replays_skipped
        for m in messages:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("fold_consume_error", error=str(m.error()))
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            self.positions[(topic, partition)] = offset + 1
            try:
                if topic == self.tx_topic:
                    marker = decode_tx_marker(topic, partition, offset, m.value())
                    if marker is not None:
                        self.assembler.add_marker(marker)
                else:
                    change = decode_change(topic, partition, offset, m.value())
                    if change is not None:
                        self.assembler.add_change(change)
                        saw_snapshot_last |= change.source.snapshot == "last"
            except POISON as exc:  # DecodeError, or a record the assembler cannot take
                reason = str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc}"
                metrics.CDC_DECODE_FAILURES.labels(topic).inc()
                log.error("cdc_record_malformed", topic=topic, partition=partition, offset=offset, reason=reason)
                dead_letters.append((m, reason))
        if saw_snapshot_last:
            self._snapshot_last_seen = time.monotonic()
        if self.assembler.replays_skipped > replays_before:  # offsets were rewound (`offsets reset --target fold`)
            log.info("fold_replayed_records_skipped", records=self.assembler.replays_skipped - replays_before)
        return dead_letters

    def _settle_snapshot(self) -> None:
        """``SNAPSHOT_SETTLE_S`` after the snapshot's last record was read, at a later poll, hand the assembler the
        topics' ends: the snapshot is released once the fold has read up to them."""
        if self._snapshot_last_seen is None or time.monotonic() - self._snapshot_last_seen < SNAPSHOT_SETTLE_S:
            return
        self._snapshot_last_seen = None
        self.assembler.snapshot_seen_last(self._high_watermarks())

    def _high_watermarks(self) -> dict[tuple[str, int], int]:
        marks = {}
        for tp in self._assigned:
            marks[(tp.topic, tp.partition)] = self.consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)[1]
        return marks

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce, waiting for room when librdkafka's local queue is full. One source transaction becomes one
        Kafka transaction, and a history import's initial snapshot is millions of changelog records: more
        than the queue holds (100,000 by default). Serving delivery reports frees it as batches are written;
        raising BufferError instead killed the fold thread."""
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers)
                return
            except BufferError:
                self.progress.beat()  # waiting for the queue to drain: the transaction moves on
                self.producer.poll(0.05)

    def _poison(self, stage: str, tx: Any, invoice_id: int | None, exc: BaseException) -> None:
        """Dead-letter what could not be folded (one invoice of a transaction, or the transaction) with its
        reason, inside the current Kafka transaction; the stream goes on. The invoice keeps its last version:
        its next change is folded again (and dead-lettered again while the cause remains)."""
        reason = f"{stage}: {type(exc).__name__}: {exc}"[:1000]
        metrics.FOLD_POISON.labels(stage).inc()
        log.error("fold_record_poisoned", stage=stage, invoice_id=invoice_id, tx_id=tx.xid, reason=reason)
        body = json.dumps({"invoice_id": invoice_id, "tx_id": tx.xid, "stage": stage, "reason": reason,
                           "changes": [f"{c.table}/{c.op}" for c in tx.changes][:200]}).encode()
        key = str(invoice_id).encode() if invoice_id is not None else f"tx:{tx.xid}".encode()
        self._produce(self.config.kafka.dead_letter_topic, key, body, [
            ("ledgerwire-stage", b"fold"), ("ledgerwire-reason", reason.encode()),
            ("ledgerwire-origin", f"tx/{tx.xid}".encode()),
        ])

    def _fold(self, dead_letters: list[tuple[Any, str]], force: bool) -> None:
        """Apply and emit the released source transactions, and the decode dead letters, into the open Kafka
        transaction (opened here when there is anything to write)."""
        if not self._assigned:
            return
        ready = self.assembler.ready(self.positions)
        if not ready and not dead_letters and not force and not self.assembler.checkpoint_changed:
            return
        if self._transaction_started is None:
            self.producer.begin_transaction()
            self._transaction_started = self._last_transaction = time.monotonic()
            self._transaction_released = False
            self._emitted = []
        kafka = self.config.kafka
        emitted = 0
        completions: dict[str, int] = {}  # counted once per batch (a counter's lock per transaction added up)
        statuses: dict[str, int] = {}
        try:
            for tx in ready:
                completions[tx.completion] = completions.get(tx.completion, 0) + 1
                try:
                    touched = self.mirror.apply(tx, beat=self.progress.beat)
                except POISON as exc:  # a row this version cannot store (a schema change): not the whole stream
                    self._poison("apply", tx, None, exc)
                    self.mirror.end_batch()
                    continue
                chunk_started = time.monotonic()
                for invoice_id in sorted(touched):
                    try:
                        built = self.mirror.build_encoded(invoice_id, tx)
                    except POISON as exc:  # e.g. a line kind or status the canonical schema has no symbol for
                        self._poison("build", tx, invoice_id, exc)
                        continue
                    if built is None:
                        continue
                    self._produce(kafka.canonical_topic, built.key, built.payload,
                                  [("ledgerwire-version", str(built.version).encode())])
                    statuses[built.status] = statuses.get(built.status, 0) + 1
                    emitted += 1
                    self._emitted.append(invoice_id)
                    if time.monotonic() - chunk_started >= CHUNK_S:
                        self._commit_chunk()
                        chunk_started = time.monotonic()
                self.mirror.end_batch()
            for m, reason in dead_letters:
                self._produce(kafka.dead_letter_topic, m.key(), m.value(), [
                    ("ledgerwire-stage", b"decode"), ("ledgerwire-reason", reason.encode()[:1000]),
                    ("ledgerwire-origin", f"{m.topic()}/{m.partition()}/{m.offset()}".encode()),
                ])
        except BaseException:
            # A bug (the process ends): leave no transaction open behind it, so a restart is not fenced
            # waiting for it to time out.
            self._abort_open_transaction()
            raise
        finally:
            for completion, count in completions.items():
                metrics.FOLD_TRANSACTIONS.labels(completion).inc(count)
            for status, count in statuses.items():
                metrics.FOLD_EVENTS_EMITTED.labels(status).inc(count)
            self.mirror.flush_metrics()
        self._transaction_released |= bool(ready)
        if emitted:
            log.debug("fold_folded", transactions=len(ready), events=emitted)

    def _commit_chunk(self) -> None:
        """Commit what the open Kafka transaction emitted so far — canonical events and those invoices' state
        records, never offsets or the checkpoint — and go on in a new one (``CHUNK_S``: a large release)."""
        for key, value in self.mirror.changelog_of(self._emitted):
            self._produce(self.config.kafka.fold_state_topic, key.encode(), value)
        self.producer.commit_transaction(self.timeout_s)
        log.info("fold_release_chunk_committed", invoices=len(self._emitted))
        self._emitted = []
        self.producer.begin_transaction()
        self._transaction_started = time.monotonic()
        self.progress.beat()

    def _commit_transaction(self) -> None:
        """Write the state changelog (once per invoice touched in the whole Kafka transaction) and the
        checkpoint, send the offsets and commit."""
        kafka = self.config.kafka
        try:
            for key, value in self.mirror.changelog():
                self._produce(kafka.fold_state_topic, key.encode(), value)
            if self._transaction_released or self.assembler.checkpoint_changed:
                self._produce(kafka.fold_state_topic, META_KEY.encode(), encode_state(self.assembler.checkpoint()))
            offsets = self.assembler.committable(self.positions)
            self.producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                self.consumer.consumer_group_metadata(), self.timeout_s)
            self.producer.commit_transaction(self.timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and getattr(error, "txn_requires_abort", lambda: False)():
                self._abort_open_transaction()
            self._transaction_started = None
            # The in-memory state already moved on: rebuild from what Kafka committed.
            raise
        except BaseException:
            self._abort_open_transaction()
            raise
        metrics.FOLD_KAFKA_TX_SECONDS.observe(time.monotonic() - self._transaction_started)
        self._transaction_started = None

    def _abort_open_transaction(self) -> bool:
        """Abort the open Kafka transaction, if any (True when there was one). A failure to abort is left to
        the restart: a new producer with the same transactional id fences it."""
        if self._transaction_started is None:
            return False
        self._transaction_started = None
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            log.warning("fold_abort_failed", error=str(exc))
        return True
