"""Issue #13 (5): the consumer-lag gauge is true for idle partitions. librdkafka's ``position()`` is
OFFSET_INVALID for a partition nothing was consumed from since the assignment (an idle table topic at steady
state); the gauge then fell back to the low watermark and reported the whole topic as lag (46 at steady state,
3,018 during a stall). The committed offset is where such a partition stands."""

from __future__ import annotations

from confluent_kafka import OFFSET_INVALID, TopicPartition

from daemon import metrics
from daemon.kafka_util import publish_lag


class IdleConsumer:
    """Three partitions: one consumed from (position known), one idle but committed, one never committed."""

    def __init__(self) -> None:
        self.watermarks = {("t", 0): (0, 100), ("t", 1): (0, 46), ("t", 2): (0, 7)}
        self.committed_offsets = {("t", 0): 90, ("t", 1): 46, ("t", 2): OFFSET_INVALID}

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, 95 if tp.partition == 0 else OFFSET_INVALID)
                for tp in partitions]

    def committed(self, partitions, timeout=None):
        return [TopicPartition(tp.topic, tp.partition, self.committed_offsets[(tp.topic, tp.partition)])
                for tp in partitions]

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return self.watermarks[(tp.topic, tp.partition)]


def test_an_idle_partition_reports_its_lag_from_the_committed_offset_not_the_whole_topic():
    consumer = IdleConsumer()
    assigned = [TopicPartition("t", p) for p in range(3)]
    lags = publish_lag(consumer, "g-idle", assigned)
    # partition 1 is idle and fully committed: lag 0, not 46; partition 2 never committed: all 7 wait.
    assert lags == {("t", 0): 5, ("t", 1): 0, ("t", 2): 7}
    assert metrics.CONSUMER_LAG.labels("g-idle", "t", "1")._value.get() == 0
