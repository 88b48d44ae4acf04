"""Operations: where every consumer stands (offsets, lag, oldest unsent event), moving offsets safely,
and one status view per target. Offsets are changed where they really live: the PostgreSQL ledger for
sinks, Kafka's group offsets for the fold.

A target's workers are stopped for a reset through the ledger's ``sink_control`` table, which every sink polls:
``paused`` makes its workers leave the consumer group; the reset is applied once the group is empty, and
the workers rejoin when the flag is cleared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import httpx
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from daemon.canonical import InvoiceEvent, decode_invoice_event
from daemon.config import AppConfig, TargetConfig
from daemon.source.fold import TABLES
from daemon.kafka_util import kafka_conf
from daemon.sink.ledger import Ledger

FOLD = "fold"


@dataclass
class PartitionPosition:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int | None  # None: Kafka unreachable, only the ledger's stored offset is known
    oldest_unsent: datetime | None

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return max(0, self.end - (self.committed if self.committed is not None and self.committed >= 0 else 0))


def ledger_positions(config: AppConfig, ledger: Ledger, target: str | None = None) -> list[PartitionPosition]:
    """What the ledger alone knows while Kafka is unreachable: each sink's stored offsets (no end, no lag)."""
    canonical = config.kafka.canonical_topic
    return [PartitionPosition(f"{config.kafka.sink_group_prefix}{t.name}", canonical, partition, offset, None, None)
            for t in config.targets if target in (None, t.name)
            for partition, offset in sorted(ledger.offsets(t.name, canonical).items())]


def _consumer(config: AppConfig) -> Consumer:
    return Consumer(kafka_conf(config.kafka, {"group.id": f"ledgerwire-ops-{time.time_ns()}",
                                              "enable.auto.commit": False}))


def _timestamp_at(consumer: Consumer, topic: str, partition: int, offset: int) -> datetime | None:
    consumer.assign([TopicPartition(topic, partition, offset)])
    message = consumer.poll(5)
    consumer.unassign()
    if message is None or message.error():
        return None
    kind, ms = message.timestamp()
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms > 0 else None


def positions(config: AppConfig, ledger: Ledger, target: str | None = None) -> list[PartitionPosition]:
    consumer = _consumer(config)
    out: list[PartitionPosition] = []
    try:
        groups: list[tuple[str, str, dict[int, int | None]]] = []
        canonical = config.kafka.canonical_topic
        meta = consumer.list_topics(canonical, timeout=10).topics[canonical]
        for t in config.targets:
            if target not in (None, t.name):
                continue
            stored = ledger.offsets(t.name, canonical)
            groups.append((f"{config.kafka.sink_group_prefix}{t.name}", canonical,
                           {p: stored.get(p) for p in meta.partitions}))
        if target in (None, FOLD):
            fold_topics = [config.source.table_topic(tb) for tb in TABLES] + [config.source.tx_topic]
            admin_consumer = Consumer(kafka_conf(config.kafka, {"group.id": config.kafka.fold_group,
                                                                "enable.auto.commit": False}))
            committed = admin_consumer.committed([TopicPartition(t, 0) for t in fold_topics], timeout=10)
            admin_consumer.close()
            for tp in committed:
                groups.append((config.kafka.fold_group, tp.topic, {0: tp.offset if tp.offset >= 0 else None}))
        for group, topic, parts in groups:
            for partition, committed_offset in sorted(parts.items()):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                start = committed_offset if committed_offset is not None else low
                oldest = _timestamp_at(consumer, topic, partition, start) if start < high else None
                out.append(PartitionPosition(group, topic, partition, committed_offset, high, oldest))
    finally:
        consumer.close()
    return out


def group_members(config: AppConfig, group: str) -> int:
    admin = AdminClient(kafka_conf(config.kafka, {}))
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return len(description.members)


ResetMode = Literal["to-datetime", "to-earliest", "to-latest", "shift"]


@dataclass
class PlannedReset:
    topic: str
    partition: int
    current: int | None
    new: int


def plan_reset(config: AppConfig, ledger: Ledger, target: str, mode: ResetMode, value: Any = None) -> list[PlannedReset]:
    consumer = _consumer(config)
    try:
        if target == FOLD:
            topics = [config.source.table_topic(t) for t in TABLES] + [config.source.tx_topic]
            fold_consumer = Consumer(kafka_conf(config.kafka, {"group.id": config.kafka.fold_group,
                                                               "enable.auto.commit": False}))
            current = {(tp.topic, tp.partition): tp.offset for tp in
                       fold_consumer.committed([TopicPartition(t, 0) for t in topics], timeout=10)}
            fold_consumer.close()
        else:
            config.target(target)
            topic = config.kafka.canonical_topic
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            stored = ledger.offsets(target, topic)
            current = {(topic, p): stored.get(p, -1) for p in meta.partitions}
        plan = []
        if mode == "to-datetime":
            when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            wanted = [TopicPartition(t, p, int(when.timestamp() * 1000)) for (t, p) in current]
            found = {(tp.topic, tp.partition): tp.offset for tp in consumer.offsets_for_times(wanted, timeout=10)}
        for (topic, partition), cur in sorted(current.items()):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if mode == "to-earliest":
                new = low
            elif mode == "to-latest":
                new = high
            elif mode == "shift":
                base = cur if cur is not None and cur >= 0 else low
                new = min(high, max(low, base + int(value)))
            else:
                new = found[(topic, partition)]
                new = high if new < 0 else new  # no record at or after that time: the end
            plan.append(PlannedReset(topic, partition, cur if cur is not None and cur >= 0 else None, new))
        return plan
    finally:
        consumer.close()


def apply_reset(config: AppConfig, ledger: Ledger, target: str, plan: list[PlannedReset]) -> None:
    if target == FOLD:
        admin = AdminClient(kafka_conf(config.kafka, {}))
        request = ConsumerGroupTopicPartitions(config.kafka.fold_group,
                                               [TopicPartition(r.topic, r.partition, r.new) for r in plan])
        for future in admin.alter_consumer_group_offsets([request]).values():
            future.result(timeout=15)
        return
    # Backwards too, and fencing out any worker still holding these partitions (set_offset never rewinds).
    for topic in {r.topic for r in plan}:
        ledger.reset_offsets(target, topic, {r.partition: r.new for r in plan if r.topic == topic})


WAITING_SCAN_MAX = 200_000  # records read per target to count what waits for its window


def count_waiting(newest: dict[int, InvoiceEvent], documents: dict[int, tuple[int, str, str | None]],
                  target: TargetConfig) -> int:
    """Distinct invoices the target's next window will post: the newest unsent version of each invoice the
    target takes, newer than what the ledger holds, and not a draft/void/deleted that never reached the
    books (the sink skips those). ``documents``: invoice id -> (delivered_version, status, external_id)."""
    waiting = 0
    for invoice_id, event in newest.items():
        if not target.routes(event.location.code):
            continue
        delivered, doc_status, external_id = documents.get(invoice_id, (0, "none", None))
        if event.version <= delivered:
            continue
        if doc_status == "none" and external_id is None and event.status.value in ("draft", "void", "deleted"):
            continue
        waiting += 1
    return waiting


def waiting_for_window(config: AppConfig, ledger: Ledger, target: TargetConfig) -> tuple[int, bool]:
    """(invoices waiting for the target's window, whether every unsent record was read).

    Read from where the truth is — the records between the target's stored offsets and the end of the
    canonical topic, against the ledger — so it is right whether or not a daemon is running."""
    topic = config.kafka.canonical_topic
    consumer = _consumer(config)
    newest: dict[int, InvoiceEvent] = {}
    complete = True
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        stored = ledger.offsets(target.name, topic)
        ends: dict[int, int] = {}
        assignment = []
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            start = max(low, stored.get(partition, low))
            if start < high:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, start))
        if assignment:
            consumer.assign(assignment)
            read = empty_rounds = 0
            deadline = time.monotonic() + 30
            while ends and read < WAITING_SCAN_MAX and time.monotonic() < deadline and empty_rounds < 2:
                messages = consumer.consume(num_messages=500, timeout=1.0)
                empty_rounds = 0 if messages else empty_rounds + 1
                for m in messages:
                    if m.error():
                        continue
                    read += 1
                    event = decode_invoice_event(m.value())
                    held = newest.get(event.invoice_id)
                    if held is None or event.version > held.version:
                        newest[event.invoice_id] = event
                # Transaction markers occupy the last offsets: a partition is done once its position is there.
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends.get(tp.partition, 0):
                        ends.pop(tp.partition, None)
            # Nothing more to read (only records of a still-open transaction remain): that is complete.
            complete = not ends or empty_rounds >= 2
    finally:
        consumer.close()
    documents: dict[int, tuple[int, str, str | None]] = {}
    if newest:
        with ledger.pool.connection() as conn:
            for invoice_id, delivered, doc_status, external_id in conn.execute(
                    "SELECT invoice_id, delivered_version, status, external_id FROM documents "
                    "WHERE target=%s AND invoice_id = ANY(%s)", (target.name, list(newest))):
                documents[int(invoice_id)] = (int(delivered), doc_status, external_id)
    return count_waiting(newest, documents, target), complete


def schedule_status(config: AppConfig, ledger: Ledger, target: TargetConfig,
                    now: datetime | None = None) -> dict[str, Any]:
    """A target's schedule, what waits for its window and when the window next opens."""
    from daemon.sink.schedule import DeliveryWindow

    window = DeliveryWindow(target.schedule)
    if window.realtime:
        return {"schedule": "realtime", "waiting": 0, "next_window": None}
    now = now or datetime.now(timezone.utc)
    waiting, complete = waiting_for_window(config, ledger, target)
    next_open = window.next_open(now)
    return {"schedule": window.describe(), "waiting": waiting if complete else f">={waiting}",
            "next_window": window.local(next_open).isoformat()}


PROGRESS_WINDOW_S = 600  # the delivery rate behind the ETA: the last ten minutes


def progress(conn: Any, target: str, remaining: int, window_s: int = PROGRESS_WINDOW_S) -> dict[str, Any]:
    """What a person watching a history import wants: invoices done, versions remaining, the recent rate and
    the time left at that rate (no ETA until something was delivered in the window). ``remaining`` is the
    target's lag in canonical versions: several versions of one invoice coalesce, so it is an upper bound."""
    done, recent = conn.execute(
        "SELECT (SELECT count(*) FROM documents WHERE target=%s AND delivered_version > 0), "
        "(SELECT count(*) FROM audit_log WHERE target=%s AND at > now() - make_interval(secs => %s))",
        (target, target, window_s)).fetchone()
    per_minute = recent * 60 / window_s
    eta_s = remaining / (per_minute / 60) if remaining and per_minute else (0 if not remaining else None)
    return {"done": int(done), "remaining": int(remaining), "per_minute": round(per_minute, 1),
            "eta_s": None if eta_s is None else round(eta_s)}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    return (f"{days}d " if days else "") + f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def status(config: AppConfig, ledger: Ledger, connect_url: str | None = None) -> dict[str, Any]:
    """Per target: lag, freshness, last success, failures, dead letters, credential expiry; the source's verdict;
    the Debezium connector. With Kafka unreachable, ``unreachable`` says so in one line and lags are None; the
    ledger's part is whole."""
    from daemon.kafka_util import kafka_unreachable
    from daemon.source import health as source_health

    report: dict[str, Any] = {"targets": {}, "fold": {}, "unreachable": []}
    kafka_down = kafka_unreachable(config.kafka)
    if kafka_down:
        report["unreachable"].append(kafka_down)
    pos = positions(config, ledger) if not kafka_down else ledger_positions(config, ledger)
    if kafka_down:  # the source's verdict reads Kafka (heartbeats, unfolded records): unknown while it is away
        report["source"] = {"verdict": "unknown", "cause": "not known while Kafka is away", "heartbeat_age_s": None,
                            "slot_lag_bytes": None, "slot_active_pid": None}
        unfolded_age, ages = None, {}
    else:
        consumer = source_health.ops_consumer(config)
        try:
            source, unfolded_age, ages = source_health.assess(config, ledger, consumer)
        finally:
            consumer.close()
        slot = source.slot
        report["source"] = {"verdict": source.verdict, "cause": source.cause, "heartbeat_age_s": source.heartbeat_age_s,
                            "slot_lag_bytes": slot.lag_bytes if slot else None,
                            "slot_active_pid": slot.active_pid if slot else None}
    with ledger.pool.connection() as conn:
        for t in config.targets:
            group = f"{config.kafka.sink_group_prefix}{t.name}"
            mine = [p for p in pos if p.group == group]
            last = conn.execute("SELECT max(at) FROM audit_log WHERE target=%s", (t.name,)).fetchone()[0]
            failures = conn.execute("SELECT count(*) FROM dead_letters WHERE target=%s AND created_at > now() - "
                                    "interval '24 hours'", (t.name,)).fetchone()[0]
            open_dl, parked = ledger.count_open_dead_letters(t.name)
            expiry = None
            try:
                from daemon.sink.ledger import PgCredentials, load_secret_key

                doc = PgCredentials(ledger, t.name, load_secret_key(config.secret_key_file)).get()
                if doc.get("access_token_expires_at"):
                    expiry = datetime.fromtimestamp(float(doc["access_token_expires_at"]), timezone.utc).isoformat()
                if doc.get("refresh_token_expires_at"):
                    expiry = f"{expiry} (refresh token until {datetime.fromtimestamp(float(doc['refresh_token_expires_at']), timezone.utc):%Y-%m-%d})"
            except RuntimeError:
                expiry = "unknown (no secret key)"
            oldest = min((p.oldest_unsent for p in mine if p.oldest_unsent), default=None)
            operator_paused, reauthorization = ledger.pause_state(t.name)
            report["targets"][t.name] = {
                "platform": t.platform, "enabled": t.enabled, "paused": operator_paused or reauthorization is not None,
                "pause_reason": (f"re-authorisation required: {reauthorization} (`ledgerwire credentials set "
                                 f"--target {t.name}` resumes it)" if reauthorization
                                 else "operator (offsets reset)" if operator_paused else None),
                "lag": _total_lag(mine), "oldest_unsent": oldest.isoformat() if oldest else None,
                "last_success": last.isoformat() if last else None, "dead_letters_24h": failures,
                "dead_letters_open": open_dl, "parked_invoices": parked, "credential_expiry": expiry,
            }
            unsent_age, freshness = ages.get(t.name, (None, 0.0))
            report["targets"][t.name].update(oldest_unsent_age_s=unsent_age, freshness_s=freshness)
            report["targets"][t.name].update(schedule_status(config, ledger, t))
            report["targets"][t.name]["progress"] = progress(conn, t.name, _total_lag(mine) or 0)
    fold = [p for p in pos if p.group == config.kafka.fold_group]
    report["fold"] = {"lag": None if kafka_down else _total_lag(fold), "partitions": len(fold),
                      "oldest_unfolded_age_s": unfolded_age}
    if connect_url:
        try:
            state = httpx.get(f"{connect_url.rstrip('/')}/connectors?expand=status", timeout=5).json()
            report["debezium"] = {name: {"connector": s["status"]["connector"]["state"],
                                         "tasks": [task["state"] for task in s["status"]["tasks"]]}
                                  for name, s in state.items()}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            report["debezium"] = {"error": f"Kafka Connect not reachable: {type(exc).__name__}"}
            report["unreachable"].append(f"Kafka Connect unreachable at {connect_url}: {type(exc).__name__}")
    return report


def _total_lag(rows: list[PartitionPosition]) -> int | None:
    lags = [p.lag for p in rows]
    return None if any(lag is None for lag in lags) else sum(lags)
