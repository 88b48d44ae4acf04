"""Freshness and source health (issue #13): how old is the oldest shop change not yet posted, per target, and
is the source side alive — Debezium's heartbeats, the replication slot, the Connect task.

Freshness of a target = the oldest of
- its oldest unsent canonical event (the record at the target's stored offset: its ``source.committed_at``,
  the shop database's commit time Debezium reported as ``source.ts_ms``);
- the fold's oldest unfolded source record (the record at the fold group's committed offset, its ``ts_ms``);
- while the connector is stalled or failed: the time since its last heartbeat (a change made since then
  cannot have been posted; the slot's WAL is not read here).

Source verdicts: ``flowing`` (heartbeats arrive, changes seen in the last ``QUIET_AFTER_S``), ``quiet``
(heartbeats arrive, no change: a quiet shop), ``stalled`` (the task says RUNNING but no heartbeat within
``heartbeat_stale_s``), ``failed`` (the connector or a task FAILED/UNASSIGNED, or missing), ``unknown``
(Connect unreachable, or no heartbeat ever seen: is ``heartbeat.interval.ms`` set?).

The same functions serve ``ledgerwire status`` (one shot) and the daemon's ``SourceWatch`` loop, which also
exports the gauges and restarts the Connect task when the runbook's answer is mechanical (bounded, logged,
counted)."""

from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Literal

import httpx
import psycopg
import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import BaseModel

from daemon import metrics
from daemon.canonical import decode_invoice_event
from daemon.config import AppConfig
from daemon.kafka_util import kafka_conf
from daemon.sink.ledger import Ledger
from daemon.source.fold import TABLES

log = structlog.get_logger(__name__)

QUIET_AFTER_S = 300.0  # no source change for this long (heartbeats arriving): a quiet shop
READ_DEADLINE_S = 3.0  # reading the records at a set of offsets: give up (nothing waiting) after this
Verdict = Literal["flowing", "quiet", "stalled", "failed", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("flowing", "quiet", "stalled", "failed", "unknown")


class SlotState(BaseModel):
    name: str
    exists: bool
    active: bool = False
    active_pid: int | None = None
    lag_bytes: int | None = None  # current WAL position minus the slot's confirmed_flush_lsn
    confirmed_flush_lsn: str | None = None
    replay_lag_s: float | None = None  # pg_stat_replication for the walsender holding it (NULL when idle)


class ConnectorState(BaseModel):
    name: str
    reachable: bool
    state: str | None = None  # RUNNING | PAUSED | FAILED | UNASSIGNED | None (not registered)
    tasks: list[tuple[int, str]] = []

    @property
    def running(self) -> bool:
        return self.state == "RUNNING" and bool(self.tasks) and all(s == "RUNNING" for _, s in self.tasks)


class SourceHealth(BaseModel):
    verdict: Verdict
    cause: str
    heartbeat_age_s: float | None
    last_change_age_s: float | None
    connector: ConnectorState | None
    slot: SlotState | None

    @property
    def stall_age_s(self) -> float:
        """What a stalled source adds to freshness: the time since its last heartbeat."""
        if self.verdict in ("stalled", "failed") and self.heartbeat_age_s is not None:
            return self.heartbeat_age_s
        return 0.0


def read_slot(shop_dsn: str, slot: str) -> SlotState:
    with psycopg.connect(shop_dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT s.active, s.active_pid, pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint, "
            "s.confirmed_flush_lsn::text, extract(epoch FROM r.replay_lag)::float8 "
            "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
            "WHERE s.slot_name = %s", (slot,)).fetchone()
    if row is None:
        return SlotState(name=slot, exists=False)
    active, pid, lag, confirmed, replay = row
    return SlotState(name=slot, exists=True, active=bool(active), active_pid=pid, lag_bytes=lag,
                     confirmed_flush_lsn=confirmed, replay_lag_s=replay)


def read_connector(connect_url: str, name: str) -> ConnectorState:
    try:
        response = httpx.get(f"{connect_url.rstrip('/')}/connectors/{name}/status", timeout=5)
        if response.status_code == 404:
            return ConnectorState(name=name, reachable=True)
        body = response.json()
        return ConnectorState(name=name, reachable=True, state=body["connector"]["state"],
                              tasks=[(int(t["id"]), t["state"]) for t in body.get("tasks", [])])
    except (httpx.HTTPError, ValueError, KeyError):
        return ConnectorState(name=name, reachable=False)


def restart_connector(connect_url: str, name: str) -> None:
    """Connect's REST restart of the connector and all its tasks (a RUNNING task that stopped publishing
    needs it as much as a FAILED one)."""
    response = httpx.post(f"{connect_url.rstrip('/')}/connectors/{name}/restart",
                          params={"includeTasks": "true", "onlyFailed": "false"}, timeout=30)
    if response.status_code >= 300:
        raise RuntimeError(f"Kafka Connect refused the restart: {response.status_code} {response.text[:200]}")


def terminate_slot_holder(shop_dsn: str, slot: str, pid: int) -> bool:
    """End the walsender still holding the slot for a task Connect already replaced (its thread hung, its
    replication connection left open: the new task retries the slot and takes it). Only that pid, and only while
    it still holds that slot. Needs ``pg_signal_backend`` or membership in the replication role."""
    with psycopg.connect(shop_dsn, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                           "WHERE slot_name = %s AND active_pid = %s", (slot, pid)).fetchone()
    return bool(row and row[0])


def _ms_to_datetime(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if isinstance(ms, (int, float)) and ms > 0 else None


def _kafka_time(message: Any) -> datetime | None:
    return _ms_to_datetime(message.timestamp()[1])


def _source_time(message: Any) -> datetime | None:
    """A Debezium record's commit time in the shop database (``source.ts_ms``; a transaction event's
    ``ts_ms``); the Kafka timestamp when the value carries none (a tombstone)."""
    try:
        value = json.loads(message.value()) if message.value() else None
    except ValueError:
        value = None
    payload = value.get("payload", value) if isinstance(value, dict) else None
    if isinstance(payload, dict):
        found = _ms_to_datetime((payload.get("source") or {}).get("ts_ms")) or _ms_to_datetime(payload.get("ts_ms"))
        if found is not None:
            return found
    return _kafka_time(message)


def records_at(consumer: Consumer, wanted: list[TopicPartition], ends: dict[tuple[str, int], int] | None = None
               ) -> dict[tuple[str, int], Any]:
    """The first record at or after each offset (read_committed), within ``READ_DEADLINE_S``. A partition with
    nothing readable there (only a transaction marker, or an open transaction) is absent from the answer; with
    ``ends`` (the high watermarks), one whose position reached its end is given up at once (a trailing marker)."""
    if not wanted:
        return {}
    found: dict[tuple[str, int], Any] = {}
    done: set[tuple[str, int]] = set()
    consumer.assign(wanted)
    try:
        deadline = time.monotonic() + READ_DEADLINE_S
        while len(found) + len(done) < len(wanted) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(wanted) * 4, timeout=0.2):
                if message.error():
                    continue
                found.setdefault((message.topic(), message.partition()), message)
            if ends:
                for tp in consumer.position(wanted):
                    key = (tp.topic, tp.partition)
                    if key not in found and tp.offset >= 0 and tp.offset >= ends.get(key, tp.offset + 1):
                        done.add(key)
    finally:
        consumer.unassign()
    return found


def _unread(consumer: Consumer, positions: dict[tuple[str, int], int | None]
            ) -> tuple[list[TopicPartition], dict[tuple[str, int], int]]:
    """The partitions with records past their position (a missing position: from the start), and their ends."""
    out, ends = [], {}
    for (topic, partition), position in positions.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        start = position if position is not None and position >= 0 else low
        if max(start, low) < high:
            out.append(TopicPartition(topic, partition, max(start, low)))
            ends[(topic, partition)] = high
    return out, ends


def fold_topics(config: AppConfig) -> list[str]:
    return [config.source.table_topic(t) for t in TABLES] + [config.source.tx_topic]


def oldest_unfolded(config: AppConfig, consumer: Consumer) -> datetime | None:
    """The shop commit time of the oldest source record the fold has not committed past."""
    topics = fold_topics(config)
    existing = consumer.list_topics(timeout=10).topics
    group = Consumer(kafka_conf(config.kafka, {"group.id": config.kafka.fold_group, "enable.auto.commit": False}))
    try:
        committed = group.committed([TopicPartition(t, 0) for t in topics if t in existing], timeout=10)
    finally:
        group.close()
    wanted, ends = _unread(consumer, {(tp.topic, tp.partition): tp.offset for tp in committed})
    times = [_source_time(m) for m in records_at(consumer, wanted, ends).values()]
    return min((t for t in times if t is not None), default=None)


def oldest_unsent(config: AppConfig, ledger: Ledger, consumer: Consumer, target: str) -> datetime | None:
    """The shop commit time of the oldest canonical event past the target's stored offsets."""
    topic = config.kafka.canonical_topic
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    stored = ledger.offsets(target, topic)
    wanted, ends = _unread(consumer, {(topic, p): stored.get(p) for p in partitions})
    times = []
    for message in records_at(consumer, wanted, ends).values():
        try:
            times.append(decode_invoice_event(message.value()).source.committed_at or _kafka_time(message))
        except Exception:  # noqa: BLE001 - an undecodable record is the sink's dead letter; its Kafka time counts
            times.append(_kafka_time(message))
    return min((t for t in times if t is not None), default=None)


def newest_record_time(consumer: Consumer, topics: list[str], source_time: bool = False) -> datetime | None:
    """When the newest record among ``topics`` (partition 0 of each) was written."""
    existing = consumer.list_topics(timeout=10).topics
    wanted = []
    for topic in topics:
        if topic not in existing:
            continue
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
        if high > low:
            wanted.append(TopicPartition(topic, 0, high - 1))
    times = [(_source_time if source_time else _kafka_time)(m) for m in records_at(consumer, wanted).values()]
    return max((t for t in times if t is not None), default=None)


def judge(config: AppConfig, connector: ConnectorState | None, slot: SlotState | None,
          heartbeat_age_s: float | None, last_change_age_s: float | None) -> tuple[Verdict, str]:
    """The verdict and its cause in one line (what `status` prints and the logs carry)."""
    stale_s = config.source.health.heartbeat_stale_s
    slot_note = ""
    if slot is not None:
        slot_note = (f"; slot {slot.name} missing" if not slot.exists else
                     f"; slot {slot.name} {'held by pid ' + str(slot.active_pid) if slot.active else 'not held'}, "
                     f"{slot.lag_bytes or 0:,} bytes behind")
    beat = "never seen" if heartbeat_age_s is None else f"{heartbeat_age_s:.0f}s ago"
    if connector is not None and not connector.reachable:
        return "unknown", f"Kafka Connect unreachable; last heartbeat {beat}{slot_note}"
    if connector is not None and connector.state is None:
        return "failed", f"connector {connector.name} is not registered{slot_note}"
    if connector is not None and not connector.running:
        tasks = ", ".join(f"task {i} {s}" for i, s in connector.tasks) or "no task"
        return "failed", f"connector {connector.name} {connector.state} ({tasks}); last heartbeat {beat}{slot_note}"
    if heartbeat_age_s is None:
        return "unknown", f"no Debezium heartbeat seen on {config.source.heartbeat_topic} (is heartbeat.interval.ms " \
                          f"set on the connector?){slot_note}"
    if heartbeat_age_s > stale_s:
        return "stalled", f"connector stalled: task RUNNING but no heartbeat for {heartbeat_age_s:.0f}s " \
                          f"(bound {stale_s:.0f}s){slot_note}"
    if last_change_age_s is None or last_change_age_s > QUIET_AFTER_S:
        since = "ever" if last_change_age_s is None else f"for {last_change_age_s:.0f}s"
        return "quiet", f"quiet shop: heartbeat {beat}, no change captured {since}{slot_note}"
    return "flowing", f"changes flowing: heartbeat {beat}, last change {last_change_age_s:.0f}s ago{slot_note}"


def _age(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


def assess(config: AppConfig, ledger: Ledger, consumer: Consumer, now: datetime | None = None
           ) -> tuple[SourceHealth, float | None, dict[str, tuple[float | None, float]]]:
    """(source health, fold's oldest unfolded age, per target (oldest unsent age, freshness)). Ages in seconds;
    a stage with nothing waiting has age None and adds nothing to freshness."""
    now = now or datetime.now(timezone.utc)
    src = config.source
    connector = read_connector(src.connect_url, src.connector) if src.connect_url else None
    slot = None
    if src.shop_dsn:
        try:
            slot = read_slot(src.shop_dsn, src.slot_name)
        except psycopg.Error as exc:
            log.warning("slot_unreadable", slot=src.slot_name, error=type(exc).__name__)
    heartbeat_age = _age(newest_record_time(consumer, [src.heartbeat_topic]), now)
    last_change_age = _age(newest_record_time(consumer, fold_topics(config)), now)
    verdict, cause = judge(config, connector, slot, heartbeat_age, last_change_age)
    health = SourceHealth(verdict=verdict, cause=cause, heartbeat_age_s=heartbeat_age,
                          last_change_age_s=last_change_age, connector=connector, slot=slot)
    unfolded_age = _age(oldest_unfolded(config, consumer), now)
    targets: dict[str, tuple[float | None, float]] = {}
    for target in config.targets:
        if not target.enabled:
            continue
        unsent_age = _age(oldest_unsent(config, ledger, consumer, target.name), now)
        targets[target.name] = (unsent_age, max(unsent_age or 0.0, unfolded_age or 0.0, health.stall_age_s))
    return health, unfolded_age, targets


def ops_consumer(config: AppConfig) -> Consumer:
    return Consumer(kafka_conf(config.kafka, {"group.id": f"ledgerwire-health-{time.time_ns()}",
                                              "enable.auto.commit": False, "isolation.level": "read_committed"}))


class SelfHeal:
    """Restarts the Connect task when the answer is mechanical, within a budget; says when the budget is spent."""

    def __init__(self, config: AppConfig, restart=restart_connector, terminate=terminate_slot_holder,
                 clock=time.monotonic) -> None:
        self.config = config
        self.restart = restart
        self.terminate = terminate
        self.holder_at_restart: int | None = None  # the walsender holding the slot when we last restarted
        self.clock = clock
        self.restarts: deque[float] = deque()
        self.exhausted = False
        # A daemon that just started (or restarted) gives the connector one stale bound to recover by itself
        # before acting: several restarts of the daemon must not become a burst of connector restarts.
        self.started = clock()

    @staticmethod
    def reason(health: SourceHealth) -> str | None:
        connector, slot = health.connector, health.slot
        if connector is None or not connector.reachable:
            return None
        if health.verdict == "failed" and connector.state is not None:
            held = slot is not None and slot.active
            return "slot_held_by_dead_task" if held else "task_failed"
        if health.verdict == "stalled":
            return "no_heartbeat"
        return None

    def consider(self, health: SourceHealth) -> str | None:
        """Restart if due; returns the reason when it restarted."""
        rules = self.config.source.health
        reason = self.reason(health) if rules.self_heal else None
        if reason is None:
            if self.exhausted:
                log.info("source_recovered", verdict=health.verdict)
            self.exhausted = False
            metrics.SOURCE_SELF_HEAL_EXHAUSTED.set(0)
            return None
        now = self.clock()
        if now - self.started < rules.heartbeat_stale_s:
            return None
        while self.restarts and now - self.restarts[0] > rules.restart_window_s:
            self.restarts.popleft()
        slot = health.slot
        holder = slot.active_pid if slot is not None and slot.active else None
        src = self.config.source
        name = src.connector
        # The walsender outlived our restart by a stale bound: the old task's thread hung with its replication
        # connection open, and the new task cannot take the slot. That is checked sooner than the next restart
        # is due (the new task is still starting, a restart now would set it back).
        orphaned = (holder is not None and holder == self.holder_at_restart and src.shop_dsn is not None
                    and self.restarts and now - self.restarts[-1] >= rules.heartbeat_stale_s)
        if not orphaned and self.restarts and now - self.restarts[-1] < rules.restart_spacing_s:
            return None  # the last restart gets its time to recover
        if len(self.restarts) >= rules.max_restarts:
            if not self.exhausted:
                log.error("source_self_heal_exhausted", connector=name, restarts=len(self.restarts),
                          window_s=rules.restart_window_s, cause=health.cause)
            self.exhausted = True
            metrics.SOURCE_SELF_HEAL_EXHAUSTED.set(1)
            return None
        self.restarts.append(now)
        if orphaned:
            reason = "slot_held_by_dead_task"
            self.holder_at_restart = None
            try:
                ended = self.terminate(src.shop_dsn, src.slot_name, holder)
            except psycopg.Error as exc:
                log.error("source_slot_holder_not_terminated", slot=src.slot_name, pid=holder,
                          error=f"{type(exc).__name__}: {str(exc)[:200]}",
                          hint="grant pg_signal_backend (or the replication role) to source.shop_dsn's login")
                ended = False
            if ended:
                metrics.SOURCE_CONNECTOR_RESTARTS.labels(name, reason).inc()
                log.warning("source_slot_holder_terminated", connector=name, slot=src.slot_name, pid=holder,
                            cause=health.cause, restarts_in_window=len(self.restarts))
                return reason
            return None
        self.holder_at_restart = holder
        try:
            self.restart(src.connect_url, name)
        except (httpx.HTTPError, RuntimeError) as exc:
            log.error("source_connector_restart_failed", connector=name, reason=reason, error=str(exc)[:200])
            return None
        metrics.SOURCE_CONNECTOR_RESTARTS.labels(name, reason).inc()
        log.warning("source_connector_restarted", connector=name, reason=reason, cause=health.cause,
                    restarts_in_window=len(self.restarts))
        return reason


class SourceWatch:
    """The daemon's loop: every ``source.health.interval_s`` read freshness and the source's health, export
    them, and let ``SelfHeal`` act. An observer: an error in one round is logged and the next round runs."""

    def __init__(self, config: AppConfig, ledger: Ledger, stop) -> None:
        self.config = config
        self.ledger = ledger
        self.stop = stop
        self.heal = SelfHeal(config)
        self._slot_position: tuple[str | None, float] = (None, time.monotonic())
        self.last: SourceHealth | None = None

    def run(self) -> None:
        consumer = None
        metrics.init_source(self.config.source.connector)
        try:
            while not self.stop.is_set():
                try:
                    consumer = consumer or ops_consumer(self.config)
                    self.round(consumer)
                except (KafkaException, psycopg.Error, httpx.HTTPError, RuntimeError) as exc:
                    log.warning("source_watch_round_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                except Exception:  # noqa: BLE001 - an observer: a surprise is logged with its traceback, not fatal
                    log.exception("source_watch_round_failed")
                self.stop.wait(self.config.source.health.interval_s)
        finally:
            if consumer is not None:
                consumer.close()

    def round(self, consumer: Consumer) -> None:
        health, unfolded_age, targets = assess(self.config, self.ledger, consumer)
        self.last = health
        for verdict in VERDICTS:
            metrics.SOURCE_STATE.labels(verdict).set(1 if verdict == health.verdict else 0)
        metrics.SOURCE_HEARTBEAT_AGE.set(health.heartbeat_age_s if health.heartbeat_age_s is not None else float("nan"))
        metrics.FOLD_OLDEST_UNFOLDED_AGE.set(unfolded_age or 0.0)
        for name, (unsent_age, freshness) in targets.items():
            metrics.TARGET_OLDEST_UNSENT_AGE.labels(name).set(unsent_age or 0.0)
            metrics.FRESHNESS.labels(name).set(freshness)
        slot = health.slot
        if slot is not None and slot.exists:
            metrics.SOURCE_SLOT_ACTIVE.set(1 if slot.active else 0)
            metrics.SOURCE_SLOT_LAG_BYTES.set(slot.lag_bytes or 0)
            metrics.SOURCE_SLOT_LAG_SECONDS.set(self._slot_stuck_s(slot))
        if health.verdict in ("stalled", "failed", "unknown"):
            log.warning("source_unhealthy", verdict=health.verdict, cause=health.cause)
        self.heal.consider(health)

    def _slot_stuck_s(self, slot: SlotState) -> float:
        """Slot lag in time: how long the slot's confirmed position has not moved while WAL waits behind it."""
        position, since = self._slot_position
        if slot.confirmed_flush_lsn != position or not slot.lag_bytes:
            self._slot_position = (slot.confirmed_flush_lsn, time.monotonic())
            return 0.0
        return time.monotonic() - since
