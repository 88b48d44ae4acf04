"""Deliver: one sink per target consumes the canonical topic and posts each invoice version exactly once.

Flow per target (a consumer group of its own, so targets never hold each other up):
* The poll loop only polls and hands records to one worker thread per assigned partition; it pauses a
  partition whose queue is full (backpressure) instead of blocking, so ``max.poll.interval.ms`` is never
  exceeded by slow platforms.
* A partition worker drains its queue, coalesces several versions of one invoice into the newest,
  skips versions the ledger already holds, and calls the connector under a per-invoice advisory lock.
* Success commits document state + audit record + offset in one PostgreSQL transaction. Offsets live
  in PostgreSQL (``sink_offsets``), not in Kafka: on assignment the consumer seeks to them.
* Failures are classified: retryable ones back off with jitter and try again (never dropped); stale
  concurrency tokens are retried once more; permanent ones go to the dead-letter table and topic with
  their reason, and later versions of that invoice are parked behind them while others keep flowing.
* Schedules (``target.schedule``, ``daemon/sink/schedule.py``): a realtime target delivers as above. Any other
  target's partition worker holds what it reads while the window is closed — coalesced to the newest version
  per invoice, offsets not advanced, so a restart while waiting loses nothing — and counts the distinct
  invoices waiting in ``ledgerwire_waiting_for_schedule``. Once a window has opened since the oldest held
  record arrived, it delivers everything it holds, then holds again. The poll loop never waits for a window.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connectors.base import (
    Connector,
    DeliveryError,
    DocumentState,
    ErrorClass,
    PermanentError,
    ReauthorizationRequired,
    RetryableError,
    UncertainOutcomeError,
)
from connectors.ratelimit import limiter_from
from connectors.registry import connector_class
from daemon import metrics
from daemon.canonical import CanonicalDecodeError, InvoiceEvent, decode_invoice_event, encode_invoice_event
from daemon.config import AppConfig, TargetConfig
from daemon.kafka_util import consume_available, ensure_topics, kafka_conf, publish_lag
from daemon.liveness import TRANSIENT, Progress, ProgressGroup, excuse_current, report_transient, supervise_this_thread
from daemon.sink.ledger import Fence, FencedOut, Ledger, PgCredentials, PgEntities, json_safe
from daemon.sink.schedule import Clock, DeliveryWindow, HeldInvoices, utc_now
from daemon.sink.shared_ratelimit import PgBuckets, limiter_name

log = structlog.get_logger(__name__)

QUEUE_HIGH = 2000
QUEUE_LOW = 200
MAX_BACKOFF_S = 60.0
STALE_RETRIES = 2
HOLD_MAX_INVOICES = 50_000  # a scheduled partition holds at most this many invoices; then backpressure pauses it


class DaemonRuntime:
    """``connectors.base.ConnectorRuntime`` backed by the ledger database."""

    def __init__(self, ledger: Ledger, secret_key: bytes) -> None:
        self.ledger = ledger
        self.pg_pool = ledger.pool
        self._secret_key = secret_key
        self._credentials: dict[str, PgCredentials] = {}

    def credentials(self, target: str) -> PgCredentials:
        if target not in self._credentials:
            self._credentials[target] = PgCredentials(self.ledger, target, self._secret_key)
        return self._credentials[target]

    def limiter(self, target: TargetConfig, *, per_second: float | None = None, per_minute: float | None = None,
                per_day: float | None = None, concurrency: int = 4, overridable: bool = True):
        override = target.rate_limit if overridable else None
        if override is not None:
            per_second = override.per_second if override.per_second is not None else per_second
            per_minute = override.per_minute if override.per_minute is not None else per_minute
            per_day = override.per_day if override.per_day is not None else per_day
            concurrency = override.concurrency
        wait_metric = metrics.RATE_LIMIT_WAIT.labels(target.name)
        # Windows and quotas in the ledger database: every daemon process of the target draws from the same
        # ones, and a restart keeps the day's count. The concurrency cap stays per process.
        pool = getattr(self, "pg_pool", None)
        store = PgBuckets(pool, target.name, limiter_name(overridable, per_second, per_minute, per_day)) \
            if pool is not None else None
        # on_slot: every platform request shows the worker's loop alive, and a rate-limit wait is excused.
        return limiter_from(per_second, per_minute, per_day, concurrency, store=store, on_wait=wait_metric.inc,
                            on_slot=excuse_current)

    def report_failure(self, target: TargetConfig, event: InvoiceEvent, error: DeliveryError) -> None:
        """A pull platform's late refusal: a dead letter like the sink's (so `dlq` lists it and later versions
        of the invoice park behind it), without moving an offset — the version was committed when queued."""
        self.ledger.dead_letter(
            target=target.name, invoice_id=event.invoice_id, invoice_number=event.number, version=event.version,
            topic=f"pull:{target.name}", partition=-1, offset=-1, error_class=error.error_class.value,
            reason=error.reason, detail=json_safe(error.detail), event=encode_invoice_event(event), parked=False,
            next_offset=None)
        metrics.DELIVERY_FAILURES.labels(target.name, error.error_class.value).inc()
        metrics.DELIVERIES.labels(target.name, target.platform, "dead_lettered").inc()
        log.error("dead_lettered", target=target.name, invoice_id=event.invoice_id, invoice_number=event.number,
                  version=event.version, error_class=error.error_class.value, reason=error.reason, stage="platform")


class PgDeliveryContext:
    """``connectors.base.DeliveryContext`` for one delivery attempt of one invoice version."""

    def __init__(self, ledger: Ledger, target: TargetConfig, event: InvoiceEvent, attempt: int,
                 entities: PgEntities, salt: str = "", fence: Fence | None = None) -> None:
        self.ledger = ledger
        self.fence = fence  # the sink worker's partition claim: a checkpoint of a revoked worker is refused
        self.salt = salt  # a resync writes again on purpose: its request ids must not replay old answers
        self.target = target.name
        self.event = event
        self.attempt = attempt
        self.entities = entities
        self._location = event.location.code

    def checkpoint(self, doc: DocumentState) -> None:
        self.ledger.save_document(self.target, self.event.number, self.event.invoice_id, doc,
                                  issue_date=self.event.issue_date, location_code=self._location, fence=self.fence)

    def idempotency_key(self, *parts: object) -> str:
        raw = ":".join(str(p) for p in (self.target, self.event.invoice_id, self.event.version, self.salt, *parts))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass
class _Record:
    partition: int
    offset: int
    value: bytes
    timestamp_ms: int = 0  # Kafka's record timestamp; read only for scheduled targets (0 = unknown)


class Shutdown(Exception):
    """Raised inside a worker when the daemon stops mid-retry: nothing is committed for that event."""


class PausedForReauthorization(Shutdown):
    """The target's grant needs a person: the target was paused, nothing is committed for this event."""


class PartitionLease:
    """A partition worker's hold on its partition: revoked when it must stop, and the ledger fence (the
    generation claimed on assignment) that every one of its ledger writes carries."""

    def __init__(self, partition: int, fence: Fence | None) -> None:
        self.partition = partition
        self.fence = fence
        self._revoked = threading.Event()

    def revoke(self) -> None:
        self._revoked.set()

    def revoked(self) -> bool:
        return self._revoked.is_set()


class SinkWorker:
    def __init__(self, config: AppConfig, target: TargetConfig, ledger: Ledger, runtime: DaemonRuntime,
                 stop: threading.Event, connector: Connector | None = None, rng: random.Random | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.target = target
        self.ledger = ledger
        self.runtime = runtime
        self.stop = stop
        self.connector = connector or connector_class(target.platform)(target, runtime)
        self.entities = PgEntities(ledger, target.name)
        self.topic = config.kafka.canonical_topic
        self.group = f"{config.kafka.sink_group_prefix}{target.name}"
        self.rng = rng or random.Random()
        self.log = log.bind(target=target.name, platform=target.platform)
        self._queues: dict[int, queue.Queue[_Record]] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._leases: dict[int, PartitionLease] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{target.name}"  # shown in sink_owners
        self._paused: set[int] = set()
        self._dlq_producer: Producer | None = None
        self.ready = threading.Event()
        self._pause_seen: tuple[str | None, str | None] = (None, None)
        self.crashes = 0  # partition workers that died of an unexpected error (revived; reported at shutdown)
        # Schedule gating: None for realtime, which keeps the plain path below.
        self.window = None if target.schedule.mode == "realtime" else DeliveryWindow(target.schedule)
        self.clock: Clock = clock or utc_now
        self._waiting: dict[int, int] = {}  # partition -> distinct invoices held for the window
        self._waiting_lock = threading.Lock()
        self.progress = Progress()  # the consumer loop's turns (daemon/liveness.py)
        self._worker_progress: dict[int, Progress] = {}  # partition -> its worker's turns
        # What the daemon supervises as this sink: the consumer loop and every partition worker (a worker hung
        # inside a platform call stalls the sink as surely as a hung poll).
        self.liveness = ProgressGroup(lambda: [self.progress, *self._worker_progress.values()])

    # -- the poll loop --
    def run(self) -> None:
        metrics.init_target(self.target.name, self.target.platform)
        try:
            expires = self.runtime.credentials(self.target.name).get().get("access_token_expires_at")
            if expires:
                metrics.TOKEN_EXPIRY.labels(self.target.name).set(float(expires))
        except Exception:  # noqa: BLE001 - a metric must never stop the sink
            self.log.warning("credential_expiry_unknown")
        backoff = 1.0
        component = f"sink:{self.target.name}"
        while not self.stop.is_set():
            self.progress.beat()
            try:
                if self._target_paused():
                    self.ready.set()  # paused on purpose (offsets reset, re-authorisation): not a readiness failure
                    self.stop.wait(2)
                    continue
                ensure_topics(self.config)
                self._run_consumer()
                backoff = 1.0
            except TRANSIENT as exc:  # Kafka or PostgreSQL away, the pool exhausted: wait and join again
                self.ready.clear()
                metrics.UP.labels(component).set(0)
                report_transient(component, exc, backoff, target=self.target.name)
                deadline = time.monotonic() + backoff
                while not self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))) \
                        and time.monotonic() < deadline:
                    self.progress.beat()  # waiting out a back-off is not being stuck
                backoff = min(backoff * 2, 30.0)
            # Anything else is a bug: it propagates, the daemon logs it with its traceback and exits non-zero
            # (daemon/app.py) so systemd or the container runtime restarts the process cleanly.
        self.connector.close()

    def _run_consumer(self) -> None:
        kafka = self.config.kafka
        self.consumer = Consumer(kafka_conf(kafka, {
            "group.id": self.group, "isolation.level": "read_committed", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky", "max.poll.interval.ms": 300000,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
            "fetch.wait.max.ms": 50,
        }))
        self._dlq_producer = Producer(kafka_conf(kafka, {"enable.idempotence": True, "linger.ms": 20}))
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        metrics.UP.labels(f"sink:{self.target.name}").set(1)
        last_lag = last_control = 0.0
        try:
            while not self.stop.is_set():
                self.progress.beat()
                if time.monotonic() - last_control > 2:
                    last_control = time.monotonic()
                    if self._target_paused():
                        return  # leave the group; run() waits for the pause to end
                for m in consume_available(self.consumer, 500, 0.1):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            self.log.warning("sink_consume_error", error=str(m.error()))
                        continue
                    q = self._queues.get(m.partition())
                    if q is None:
                        continue  # revoked meanwhile
                    q.put(_Record(m.partition(), m.offset(), m.value(),
                                  m.timestamp()[1] if self.window is not None else 0))
                self._apply_backpressure()
                if time.monotonic() - last_lag > 2:
                    self._revive_dead_workers()
                    self._publish_metrics()
                    last_lag = time.monotonic()
        finally:
            self._stop_workers(list(self._threads))
            self.consumer.close()
            self._dlq_producer.flush(self.config.kafka.call_timeout_s)
            self._dlq_producer = None  # release librdkafka's handle now, not at garbage collection
            metrics.UP.labels(f"sink:{self.target.name}").set(0)

    def _target_paused(self) -> bool:
        """Whether the target is paused (operator, or a grant that needs a person); keeps the metric and logs
        each change."""
        operator, reauthorization = self.ledger.pause_state(self.target.name)
        metrics.TARGET_PAUSED.labels(self.target.name, "operator").set(1 if operator else 0)
        metrics.TARGET_PAUSED.labels(self.target.name, "reauthorization_required").set(1 if reauthorization else 0)
        state = ("operator" if operator else None, reauthorization)
        if state != self._pause_seen:
            if reauthorization:
                self.log.error("target_paused_reauthorization_required", reason=reauthorization,
                               action="ledgerwire credentials set --target " + self.target.name)
            elif operator:
                self.log.info("sink_paused_by_operator")
            elif any(self._pause_seen):
                self.log.info("sink_resumed")
            self._pause_seen = state
        return operator or reauthorization is not None

    def _credentials_problem(self) -> str | None:
        """Why the target's stored credentials cannot be used (missing, unreadable), or None."""
        try:
            document = self.runtime.credentials(self.target.name).get()
        except psycopg.OperationalError:
            return None  # the database, not the credentials: retried like any other outage
        except Exception as exc:  # noqa: BLE001 - e.g. not decryptable with this key
            return f"credentials unreadable: {exc}"
        return None if document else "no credentials stored for this target"

    def _revive_dead_workers(self) -> None:
        """A partition worker that died (it should not: it catches everything) is started again on its queue,
        with a new claim; the records it took are replayed from the ledger's offset by a rebalance-free seek."""
        for partition, thread in list(self._threads.items()):
            if thread.is_alive() or self.stop.is_set() or self._leases[partition].revoked():
                continue
            self.crashes += 1
            metrics.COMPONENT_RESTARTS.labels(f"sink:{self.target.name}").inc()
            self.log.error("sink_worker_died_restarting", partition=partition)
            fence = self.ledger.claim_partition(self.target.name, self.topic, partition, self.owner)
            stored = self.ledger.offsets(self.target.name, self.topic).get(partition, OFFSET_BEGINNING)
            self._queues.pop(partition, None)
            self._start_worker(partition, fence)
            self.consumer.seek(TopicPartition(self.topic, partition, stored))

    def _apply_backpressure(self) -> None:
        for partition, q in list(self._queues.items()):
            tp = [TopicPartition(self.topic, partition)]
            if partition not in self._paused and q.qsize() > QUEUE_HIGH:
                self.consumer.pause(tp)
                self._paused.add(partition)
            elif partition in self._paused and q.qsize() < QUEUE_LOW:
                self.consumer.resume(tp)
                self._paused.discard(partition)

    def _advance_idle_offsets(self) -> None:
        """Move stored offsets past Kafka's transaction markers once a partition is idle.

        The canonical topic is written transactionally, so commit markers take offsets after the last
        record; an idle partition whose queue is empty has processed everything before the consumer's
        position, so storing that position is safe and shows a true lag of zero.
        """
        # Idle: every record handed to the partition's worker is finished (``task_done``). Not "queue empty and
        # worker not busy": a worker that has taken a record but not yet marked itself busy would look idle, and
        # the position stored here would pass a record never delivered (lost on a crash; issue #19).
        idle = [p for p, q in self._queues.items() if q.unfinished_tasks == 0]
        if not idle:
            return
        stored = self.ledger.offsets(self.target.name, self.topic)
        for tp in self.consumer.position([TopicPartition(self.topic, p) for p in idle]):
            q = self._queues.get(tp.partition)
            if tp.offset >= 0 and tp.offset > stored.get(tp.partition, -1) and q is not None and q.unfinished_tasks == 0:
                self.ledger.set_offset(self.target.name, self.topic, tp.partition, tp.offset)

    def _publish_metrics(self) -> None:
        self._advance_idle_offsets()
        assigned = [TopicPartition(self.topic, p) for p in self._queues]
        stored = self.ledger.offsets(self.target.name, self.topic)
        publish_lag(self.consumer, self.group, assigned, {(self.topic, p): o for p, o in stored.items()})
        open_dl, parked = self.ledger.count_open_dead_letters(self.target.name)
        metrics.DLQ_SIZE.labels(self.target.name).set(open_dl)
        metrics.PARKED_INVOICES.labels(self.target.name).set(parked)
        if self.connector.pull_model:
            metrics.PULL_UNCONFIRMED.labels(self.target.name).set(self.connector.unconfirmed())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Claim first (fencing out whoever held these partitions before), then read the offsets to seek to.
        fences = {tp.partition: self.ledger.claim_partition(self.target.name, self.topic, tp.partition, self.owner)
                  for tp in partitions}
        stored = self.ledger.offsets(self.target.name, self.topic)
        assigned = []
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            assigned.append(tp)
            self._start_worker(tp.partition, fences[tp.partition])
        consumer.incremental_assign(assigned)
        self.ready.set()
        self.log.info("sink_assigned", partitions=[tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._stop_workers([tp.partition for tp in partitions])
        try:
            consumer.incremental_unassign(partitions)
        except KafkaException:
            pass
        self.log.info("sink_revoked", partitions=[tp.partition for tp in partitions])

    def _start_worker(self, partition: int, fence: Fence | None) -> None:
        self._queues[partition] = queue.Queue()
        self._leases[partition] = PartitionLease(partition, fence)
        self._worker_progress[partition] = Progress()
        thread = threading.Thread(target=self._partition_loop, args=(partition,), daemon=True,
                                  name=f"sink-{self.target.name}-{partition}")
        self._threads[partition] = thread
        thread.start()

    def _stop_workers(self, partitions: list[int]) -> None:
        for p in partitions:
            if p in self._leases:
                self._leases[p].revoke()
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for p in partitions:
            thread = self._threads.pop(p, None)
            lease = self._leases.pop(p, None)
            if thread is not None:
                thread.join(max(0.1, deadline - time.monotonic()))
                if thread.is_alive() and lease is not None and lease.fence is not None:
                    # Still inside a platform call: end its generation so whatever it does next is refused.
                    self.log.warning("sink_worker_outlived_revoke", partition=p)
                    try:
                        self.ledger.fence_out(lease.fence)
                    except Exception:  # noqa: BLE001 - the next claim fences it anyway
                        self.log.exception("sink_fence_out_failed", partition=p)
            self._queues.pop(p, None)
            self._worker_progress.pop(p, None)
            self._paused.discard(p)

    # -- a partition worker --
    def _partition_loop(self, partition: int) -> None:
        progress = self._worker_progress.get(partition)
        if progress is not None:
            supervise_this_thread(progress)
        try:
            if self.window is not None:
                self._scheduled_loop(partition)
            else:
                self._realtime_loop(partition)
        finally:
            self.ledger.release_thread_connection()

    def _realtime_loop(self, partition: int) -> None:
        q = self._queues[partition]
        revoked = self._leases[partition]
        while not revoked.revoked() and not self.stop.is_set():
            excuse_current(0)  # a turn, idle or not
            try:
                first = q.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process_batch(partition, batch, revoked)
                for _ in batch:
                    q.task_done()
            except Shutdown:
                return
            except FencedOut as exc:  # the partition was claimed again: its new owner replays from the ledger
                self.log.warning("sink_worker_fenced_out", partition=partition, reason=str(exc))
                revoked.revoke()  # not a death to revive: the partition has a new owner
                return
            except Exception:  # a bug must not kill the partition silently: log, back off, re-read
                self.log.exception("sink_batch_failed", partition=partition)
                # Put the batch back in front so nothing is skipped; the ledger makes replays no-ops.
                remaining = [batch] + [[q.get_nowait()] for _ in range(q.qsize())]
                for group in remaining:
                    for r in group:
                        q.put(r)
                        q.task_done()  # the same record again: still unfinished once, not twice
                excuse_current(5)
                self.stop.wait(5)

    def _process_batch(self, partition: int, batch: list[_Record], revoked: PartitionLease) -> None:
        # Coalesce: per invoice only the newest version is delivered; groups in order of first appearance.
        groups: OrderedDict[int, list[tuple[_Record, InvoiceEvent]]] = OrderedDict()
        for record in batch:
            event = self._decode(record)
            if event is None:
                continue  # dead-lettered; the offset stored after a later record (or when idle) passes it
            groups.setdefault(event.invoice_id, []).append((record, event))
        group_list = list(groups.values())
        items: list[tuple[_Record, InvoiceEvent, int]] = []
        for index, group in enumerate(group_list):
            # Safe offset after this group: the first record of the next group, or past the batch.
            next_offset = group_list[index + 1][0][0].offset if index + 1 < len(group_list) else batch[-1].offset + 1
            newest_record, newest = max(group, key=lambda pair: pair[1].version)
            if len(group) > 1:
                metrics.DELIVERIES.labels(self.target.name, self.target.platform, "coalesced").inc(len(group) - 1)
            items.append((newest_record, newest, next_offset))
        self._deliver_items(partition, items, revoked)

    def _deliver_items(self, partition: int, items: list[tuple[_Record, InvoiceEvent, int]],
                       revoked: PartitionLease) -> None:
        size = getattr(self.connector, "batch_size", 1) if self.connector.supports_batch else 1
        for start in range(0, len(items), size):
            if revoked.revoked() or self.stop.is_set():
                raise Shutdown()
            chunk = items[start:start + size]
            excuse_current(0)  # each invoice (or batch of them) is a turn
            if len(chunk) > 1:
                self._handle_chunk(partition, chunk, revoked)
            else:
                self._handle(partition, *chunk[0], revoked)

    # -- a scheduled partition worker --
    def _scheduled_loop(self, partition: int) -> None:
        """Hold records while the target's window is closed; deliver all held at the opening."""
        q = self._queues[partition]
        revoked = self._leases[partition]
        held = HeldInvoices()
        records: list[_Record] = []  # taken from the queue, not yet held (kept across a failure)
        taken = 0  # records taken and not yet finished (delivered, or nothing held or pending any more)
        try:
            while not revoked.revoked() and not self.stop.is_set():
                excuse_current(0)
                # Past HOLD_MAX_INVOICES the queue fills and the poll loop's backpressure pauses the partition.
                if len(held) < HOLD_MAX_INVOICES and not records:
                    try:
                        records.append(q.get(timeout=0.2))
                    except queue.Empty:
                        pass
                    else:
                        while len(records) < 500:
                            try:
                                records.append(q.get_nowait())
                            except queue.Empty:
                                break
                        taken += len(records)
                elif not records:
                    self.stop.wait(0.2)
                try:
                    self._gate_batch(partition, held, records, revoked)
                except Shutdown:
                    return
                except FencedOut as exc:
                    self.log.warning("sink_worker_fenced_out", partition=partition, reason=str(exc))
                    revoked.revoke()
                    return
                except Exception:  # keep what is held (offsets untouched); replays are no-ops in the ledger
                    self.log.exception("sink_scheduled_batch_failed", partition=partition)
                    excuse_current(5)
                    self.stop.wait(5)
                finally:
                    if not held and not records:  # held records stay unfinished: they keep the stored offset
                        for _ in range(taken):
                            q.task_done()
                        taken = 0
        finally:
            self._set_waiting(partition, None)

    def _gate_batch(self, partition: int, held: HeldInvoices, records: list[_Record],
                    revoked: PartitionLease) -> bool:
        """Add ``records`` to what ``held`` waits with; when the window has opened since the oldest held
        record arrived, deliver all of it (newest version per invoice) and empty it. True if it delivered.
        ``records`` is emptied as they are held: after a failure the caller still has the rest, in order."""
        assert self.window is not None
        while records:
            record = records[0]
            event = self._decode(record)
            if event is None:
                records.pop(0)
                continue
            arrived = (datetime.fromtimestamp(record.timestamp_ms / 1000, timezone.utc) if record.timestamp_ms > 0
                       else self.clock())
            held.add(record, event, arrived, routed=self.target.routes(event.location.code))
            records.pop(0)
        self._set_waiting(partition, held.waiting)
        if not held or not self.window.is_open(self.clock(), since=held.oldest):
            return False
        self.log.info("schedule_window_open", partition=partition, invoices=held.waiting,
                      schedule=self.window.describe())
        self._deliver_items(partition, held.items(), revoked)
        if held.coalesced:
            metrics.DELIVERIES.labels(self.target.name, self.target.platform, "coalesced").inc(held.coalesced)
        held.clear()
        self._set_waiting(partition, 0)
        return True

    def _set_waiting(self, partition: int, count: int | None) -> None:
        with self._waiting_lock:
            if count is None:
                self._waiting.pop(partition, None)
            else:
                self._waiting[partition] = count
            metrics.WAITING_FOR_WINDOW.labels(self.target.name).set(sum(self._waiting.values()))

    def _handle_chunk(self, partition: int, chunk: list[tuple[_Record, InvoiceEvent, int]],
                      revoked: PartitionLease) -> None:
        """First attempt for several invoices in one ``deliver_many`` (the platform's batch endpoint);
        whatever does not succeed there takes the single path with its retries, in offset order."""
        target = self.target
        eligible = [(r, e, o) for r, e, o in chunk
                    if target.routes(e.location.code) and not self.ledger.parked(target.name, e.invoice_id)]
        results: dict[int, DocumentState] = {}
        recorded: set[int] = set()
        started = time.monotonic()
        if len(eligible) > 1:
            with self.ledger.invoice_locks(target.name, [e.invoice_id for _, e, _ in eligible]):
                prepared = []
                for _, event, _ in eligible:
                    ready = self._prepare_attempt(event, 0, revoked.fence)
                    if ready is not None:
                        doc, attempt = ready
                        prepared.append((event, doc, PgDeliveryContext(self.ledger, target, event, attempt,
                                                                       self.entities, fence=revoked.fence)))
                try:
                    outcomes = self.connector.deliver_many(prepared) if prepared else []
                except UncertainOutcomeError as exc:
                    # The batch may still be applied behind our back: give it the request timeout to land
                    # before the single path looks each document up.
                    self.log.warning("batch_outcome_uncertain", reason=exc.reason)
                    outcomes = []
                    excuse_current(self.target.request_timeout_s)
                    if self.stop.wait(self.target.request_timeout_s):
                        raise Shutdown() from exc
                except Exception:  # noqa: BLE001 - the single path below retries and classifies each one
                    self.log.exception("batch_delivery_failed")
                    outcomes = []
                for (event, _, _), outcome in zip(prepared, outcomes):
                    if isinstance(outcome, DocumentState):
                        results[event.invoice_id] = outcome
                # Recorded while the invoices' locks are still held, so nothing can deliver (or record) a newer
                # version of one of them in between. The offset never passes an invoice still to be delivered:
                # behind one, a success stores the offset before it (0 for the chunk's first: set_offset never
                # moves backwards, so that leaves it alone); a replay skips the recorded ones by version.
                safe_offset: int | None = None
                before = 0
                for record, event, next_offset in chunk:
                    doc = results.get(event.invoice_id)
                    if doc is None:
                        safe_offset = before if safe_offset is None else safe_offset
                    else:
                        self._record_success(partition, event, doc, next_offset if safe_offset is None else safe_offset,
                                             1, "batch", started, revoked.fence)
                        recorded.add(event.invoice_id)
                    before = next_offset
        for record, event, next_offset in chunk:
            if event.invoice_id not in recorded:
                self._handle(partition, record, event, next_offset, revoked)

    def _handle(self, partition: int, record: _Record, event: InvoiceEvent, next_offset: int,
                revoked: PartitionLease) -> None:
        target = self.target
        bound = self.log.bind(invoice_id=event.invoice_id, invoice_number=event.number, version=event.version)
        if not target.routes(event.location.code):
            self.ledger.set_offset(target.name, self.topic, partition, next_offset, fence=revoked.fence)
            return
        if self.ledger.parked(target.name, event.invoice_id):
            bound.warning("delivery_parked", reason="an earlier version of this invoice is dead-lettered")
            self._dead_letter(record, event, None, next_offset, parked=True, fence=revoked.fence)
            return
        started = time.monotonic()
        with self.ledger.invoice_lock(target.name, event.invoice_id):
            outcome = self._deliver_with_retries(event, bound, revoked)
            if outcome is None:  # already delivered (replay after a crash, or older than the ledger)
                metrics.DELIVERIES.labels(target.name, target.platform, "skipped_stale").inc()
                self.ledger.set_offset(target.name, self.topic, partition, next_offset, fence=revoked.fence)
                return
            if isinstance(outcome, DeliveryError):
                self._dead_letter(record, event, outcome, next_offset, parked=False, fence=revoked.fence)
                return
            doc, attempts, action = outcome
            self._record_success(partition, event, doc, next_offset, attempts, action, started, revoked.fence)

    def _record_success(self, partition: int, event: InvoiceEvent, doc: DocumentState, next_offset: int,
                        attempts: int, action: str, started: float, fence: Fence | None) -> None:
        target = self.target
        doc.extra.pop("attempt_version", None)
        doc.extra.pop("attempts", None)
        self.ledger.record_delivery(
            target=target.name, invoice_id=event.invoice_id, invoice_number=event.number, doc=doc,
            topic=self.topic, partition=partition, next_offset=next_offset,
            issue_date=event.issue_date, location_code=event.location.code, fence=fence,
            audit={"version": event.version, "action": action, "payload_hash": doc.payload_hash,
                   "request_summary": {"status": event.status.value, "lines": len(event.lines),
                                       "payments": len(event.payments), "total": str(event.computed.total),
                                       "attempts": attempts},
                   "response_status": doc.status, "external_id": doc.external_id,
                   "source_tx": event.source.tx_id},
        )
        if doc.extra.get("tax_difference") or doc.extra.get("total_difference"):
            # The platform computed tax differently from the shop: kept on the document, counted, logged.
            metrics.TAX_DIFFERENCES.labels(target.name).inc()
            self.log.warning("tax_difference", invoice_id=event.invoice_id, invoice_number=event.number,
                             version=event.version, tax_difference=doc.extra.get("tax_difference"),
                             total_difference=doc.extra.get("total_difference"))
        elapsed = time.monotonic() - started
        outcome_label = "queued" if doc.status == "queued" else "delivered"
        metrics.DELIVERIES.labels(target.name, target.platform, outcome_label).inc()
        metrics.DELIVERY_LATENCY.labels(target.name).observe(elapsed)
        metrics.LAST_SUCCESS.labels(target.name).set(time.time())
        if event.source.committed_at is not None:
            lag = (datetime.now(timezone.utc) - event.source.committed_at).total_seconds()
            metrics.END_TO_END_LATENCY.labels(target.name).observe(max(0.0, lag))
        self.log.info("delivered", invoice_id=event.invoice_id, invoice_number=event.number, version=event.version,
                      action=action, external_id=doc.external_id, status=doc.status, seconds=round(elapsed, 3))

    def _prepare_attempt(self, event: InvoiceEvent, attempt: int, fence: Fence | None = None
                         ) -> tuple[DocumentState, int] | None:
        """The ledger's document for this attempt, or None when there is nothing to deliver."""
        doc = self.ledger.document(self.target.name, event.invoice_id)
        if event.version <= doc.delivered_version:
            return None
        if event.version < int(doc.extra.get("attempt_version", "0")):
            # A newer version was being delivered when the process died: its record lies further on in this
            # partition (its offset was never stored) and will be delivered from what it left. Delivering this
            # older one first would take the newer one's writes off the books (a payment deleted) only for them
            # to be made again.
            return None
        if (doc.status == "none" and doc.external_id is None and event.status.value in ("draft", "void", "deleted")
                and int(doc.extra.get("attempts", "0")) == 0 and (doc.engine is None or doc.engine.intent is None)):
            # Nothing posted yet: a draft is not in the books until issued, and an invoice voided or
            # deleted before it was ever posted has nothing to undo — unless an earlier attempt may have
            # written it (an attempt counted, an open intent): then the connector looks it up and voids it.
            return None
        # Attempts are counted in the ledger until a delivery succeeds, whatever the version: a crash
        # mid-delivery (of this version or an older one) makes the next try an attempt > 1 — and the
        # connector looks the document up before creating it again.
        prior = int(doc.extra.get("attempts", "0"))
        attempt = max(attempt, prior) + 1
        doc.extra.update({"attempt_version": str(event.version), "attempts": str(attempt)})
        self.ledger.save_document(self.target.name, event.number, event.invoice_id, doc,
                                  issue_date=event.issue_date, location_code=event.location.code, fence=fence)
        return doc, attempt

    def _deliver_with_retries(self, event: InvoiceEvent, bound: Any, revoked: PartitionLease, salt: str = ""
                              ) -> tuple[DocumentState, int, str] | DeliveryError | None:
        attempt = 0
        stale_seen = 0
        while True:
            ready = self._prepare_attempt(event, attempt, revoked.fence)
            if ready is None:
                return None
            doc, attempt = ready
            action = "create" if doc.external_id is None else ("void" if event.status.value in ("void", "deleted")
                                                               else "update")
            ctx = PgDeliveryContext(self.ledger, self.target, event, attempt, self.entities, salt=salt,
                                    fence=revoked.fence)
            if attempt > 1:
                metrics.RETRIES.labels(self.target.name).inc()
            unexpected = False  # the connector raised something that is not a DeliveryError
            try:
                new_doc = self.connector.deliver(event, doc, ctx)
                return new_doc, attempt, action
            except DeliveryError as exc:
                error = exc
            except FencedOut:  # a checkpoint refused: this worker's partition has a new owner
                raise
            except psycopg.OperationalError as exc:  # the ledger database (pool exhausted, connection lost): wait
                error = RetryableError(f"ledger database unavailable: {type(exc).__name__}: {exc}")
            except Exception as exc:  # a connector bug: classify as permanent, never crash-loop
                bound.exception("connector_raised_unexpected")
                error = PermanentError(f"connector error: {type(exc).__name__}: {exc}")
                unexpected = True
            if not isinstance(error, ReauthorizationRequired) and (unexpected or error.error_class == ErrorClass.AUTH):
                problem = self._credentials_problem()  # e.g. KeyError 'refresh_token' from an empty store
                if problem is not None:
                    error = ReauthorizationRequired(f"{problem}; run `ledgerwire credentials set`")
            metrics.DELIVERY_FAILURES.labels(self.target.name, error.error_class.value).inc()
            bound.warning("delivery_failed", attempt=attempt, error_class=error.error_class.value,
                          reason=error.reason, status=error.status, code=error.platform_code)
            if isinstance(error, ReauthorizationRequired):
                # Every invoice would fail the same way until a person re-authorises: pause the target
                # (nothing dead-lettered, offsets kept) instead of dead-lettering them one by one.
                self.ledger.pause_for_reauthorization(self.target.name, error.reason)
                metrics.TARGET_PAUSED.labels(self.target.name, "reauthorization_required").set(1)
                revoked.revoke()
                raise PausedForReauthorization(error.reason)
            if error.error_class == ErrorClass.PERMANENT:
                return error
            if error.error_class == ErrorClass.STALE:
                stale_seen += 1
                if stale_seen > STALE_RETRIES:
                    return PermanentError(f"concurrency token still stale after {stale_seen} re-reads: {error.reason}",
                                          status=error.status, platform_code=error.platform_code, detail=error.detail)
                continue
            if error.error_class == ErrorClass.AUTH and attempt >= self.target.max_attempts:
                return error
            # Retryable (and auth within its budget): back off with full jitter; never give up on a
            # platform outage — the events wait, in order, and nothing is lost.
            base = min(MAX_BACKOFF_S, 0.5 * (2 ** min(attempt, 10)))
            delay = max(error.retry_after or 0.0, self.rng.uniform(0, base))
            if isinstance(error, UncertainOutcomeError):
                # A request that may still be in flight gets the request timeout to land before the next
                # attempt looks the document up — otherwise the look-up can miss it and post it twice.
                delay = max(delay, self.target.request_timeout_s)
            if attempt >= self.target.max_attempts:
                bound.error("delivery_still_failing", attempt=attempt, next_try_s=round(delay, 1))
            excuse_current(delay)  # a back-off is waiting, not being stuck
            if self.stop.wait(delay) or revoked.revoked():
                raise Shutdown()

    def _decode(self, record: _Record) -> InvoiceEvent | None:
        """The record's event; one no released schema reads (unknown writer fingerprint, bad bytes) goes to the
        dead-letter topic with its reason and a metric, and the partition goes on without it."""
        try:
            return decode_invoice_event(record.value)
        except CanonicalDecodeError as exc:
            metrics.CANONICAL_DECODE_FAILURES.labels(self.target.name, exc.kind).inc()
            self.log.error("canonical_record_dead_lettered", partition=record.partition, offset=record.offset,
                           reason=str(exc))
            if self._dlq_producer is not None:
                self._dlq_producer.produce(self.config.kafka.dead_letter_topic, value=record.value, headers=[
                    ("ledgerwire-stage", b"canonical-decode"),
                    ("ledgerwire-target", self.target.name.encode()),
                    ("ledgerwire-reason", str(exc).encode()[:1000]),
                    ("ledgerwire-origin", f"{self.topic}/{record.partition}/{record.offset}".encode())])
                self._dlq_producer.poll(0)
            return None

    def _dead_letter(self, record: _Record, event: InvoiceEvent, error: DeliveryError | None, next_offset: int,
                     parked: bool, fence: Fence | None = None) -> None:
        reason = error.reason if error else "parked behind an earlier dead-lettered version"
        error_class = error.error_class.value if error else "parked"
        self.ledger.dead_letter(
            target=self.target.name, invoice_id=event.invoice_id, invoice_number=event.number, version=event.version,
            topic=self.topic, partition=record.partition, offset=record.offset, error_class=error_class,
            reason=reason, detail=json_safe(error.detail) if error else None, event=record.value, parked=parked,
            next_offset=next_offset, fence=fence,
        )
        if self._dlq_producer is not None:
            self._dlq_producer.produce(self.config.kafka.dead_letter_topic, key=str(event.invoice_id).encode(),
                                       value=record.value, headers=[
                                           ("ledgerwire-stage", b"deliver"),
                                           ("ledgerwire-target", self.target.name.encode()),
                                           ("ledgerwire-reason", reason.encode()[:1000]),
                                           ("ledgerwire-error-class", error_class.encode())])
            self._dlq_producer.poll(0)
        metrics.DELIVERIES.labels(self.target.name, self.target.platform,
                                  "parked" if parked else "dead_lettered").inc()
        self.log.error("dead_lettered", invoice_id=event.invoice_id, invoice_number=event.number,
                       version=event.version, error_class=error_class, reason=reason)


def deliver_event_now(worker: SinkWorker, event: InvoiceEvent, salt: str = ""
                      ) -> tuple[DocumentState, int, str] | DeliveryError | None:
    """Deliver one event outside the consumer (``ledgerwire dlq retry``), with the same retry rules.

    ``salt``: a retry after a refusal needs fresh request ids — platforms that deduplicate by request id
    (QuickBooks' requestid, Xero's Idempotency-Key) answer a reused one with the earlier refusal."""
    with worker.ledger.invoice_lock(worker.target.name, event.invoice_id):
        return worker._deliver_with_retries(event, worker.log, PartitionLease(-1, None), salt=salt)


def deliver_pulled_again(worker: SinkWorker, event: InvoiceEvent) -> tuple[DocumentState, int, str] | DeliveryError:
    """``dlq retry`` of a version a pull platform refused after it was queued: queue it again."""
    with worker.ledger.invoice_lock(worker.target.name, event.invoice_id):
        doc = worker.ledger.document(worker.target.name, event.invoice_id)
        ctx = PgDeliveryContext(worker.ledger, worker.target, event, 1, worker.entities)
        try:
            return worker.connector.deliver(event, doc, ctx), 1, "requeue"
        except DeliveryError as exc:
            return exc
