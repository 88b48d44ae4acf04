"""Small Kafka helpers shared by the fold, the sinks and the CLI: client config, topics, lag."""

from __future__ import annotations

from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from daemon import metrics
from daemon.config import AppConfig, KafkaConfig

log = structlog.get_logger(__name__)


def kafka_conf(kafka: KafkaConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """A client's config. librdkafka's own log lines go through structlog as JSON, rate-limited
    (``daemon.liveness.KafkaLogRelay``), instead of raw to stderr (~20 lines a second while a broker is away)."""
    from daemon.liveness import kafka_log_relay

    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers, "log_level": 3,
                            "logger": kafka_log_relay()}
    conf.update(kafka.extra)
    conf.update(extra)
    return conf


def kafka_unreachable(kafka: KafkaConfig, timeout_s: float = 5.0) -> str | None:
    """Why Kafka cannot be reached now (one line), or None when a broker answers within ``timeout_s``."""
    try:
        metadata = AdminClient(kafka_conf(kafka, {})).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        return f"Kafka unreachable at {kafka.bootstrap_servers}: {getattr(error, 'str', lambda: str(error))()}"
    if not metadata.brokers:
        return f"Kafka unreachable at {kafka.bootstrap_servers}: no broker answered"
    return None


def consume_available(consumer: Consumer, max_messages: int, wait_s: float) -> list[Any]:
    """What librdkafka has queued (up to ``max_messages``), else the first record to arrive within
    ``wait_s``. ``consume(n, timeout)`` alone blocks until it has all ``n`` or the timeout passes, which
    under a backlog stalls the caller and at a trickle delays every record by up to the timeout."""
    return consumer.consume(num_messages=max_messages, timeout=0) or consumer.consume(num_messages=1, timeout=wait_s)


def ensure_topics(config: AppConfig, source_topics: list[str] = ()) -> None:
    """Create Ledgerwire's own topics, and the Debezium topics the fold reads, if missing (idempotent).

    Debezium creates a table's topic only at the table's first change; creating them up front with one
    partition lets the fold subscribe to all of them from the start and keeps each table in order.
    """
    kafka = config.kafka
    admin = AdminClient(kafka_conf(kafka, {}))
    wanted = [NewTopic(t, num_partitions=1, replication_factor=-1) for t in source_topics] + [
        NewTopic(kafka.canonical_topic, num_partitions=kafka.canonical_partitions, replication_factor=-1),
        NewTopic(kafka.fold_state_topic, num_partitions=1, replication_factor=-1,
                 config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                         "segment.ms": "3600000"}),
        NewTopic(kafka.dead_letter_topic, num_partitions=1, replication_factor=-1),
    ]
    existing = set(admin.list_topics(timeout=kafka.call_timeout_s).topics)
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, operation_timeout=15).items():
        try:
            future.result(timeout=kafka.call_timeout_s)
            log.info("topic_created", topic=topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def publish_lag(consumer: Consumer, group: str, assigned: list[TopicPartition],
                positions: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """Set the lag gauge for each assigned partition: end offset minus the next offset to process."""
    lags: dict[tuple[str, int], int] = {}
    if not assigned:
        return lags
    try:
        current = consumer.position(assigned)
    except KafkaException:
        return lags
    # An idle partition (nothing consumed since the assignment) has no position: it stands at its committed
    # offset. Falling back to the low watermark reported the whole topic as lag (issue #13).
    unknown = [TopicPartition(tp.topic, tp.partition) for tp in current
               if tp.offset < 0 and (tp.topic, tp.partition) not in (positions or {})]
    committed: dict[tuple[str, int], int] = {}
    if unknown:
        try:
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(unknown, timeout=5)
                         if tp.offset >= 0}
        except KafkaException:
            return lags
    for tp in current:
        key = (tp.topic, tp.partition)
        try:
            # Cached watermarks come with every fetch response: no broker round trip per partition.
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=True)
            if high < 0:
                low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException:
            continue
        position = (positions or {}).get(key, tp.offset)
        if position is None or position < 0:
            position = committed.get(key)
        if position is None or position < 0:  # never committed: everything from the start waits
            position = low
        lags[key] = max(0, high - position)
        metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lags[key])
    return lags
