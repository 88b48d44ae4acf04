"""The fold's Kafka transaction for a large source transaction (a history import's initial snapshot: millions of
changelog records) overflows librdkafka's local producer queue; the fold must wait for room, not die with
BufferError (issue #21 item 3: a 25,000-invoice history import killed the fold thread)."""

from __future__ import annotations

import threading

from daemon.config import AppConfig
from daemon.source.fold_runner import FoldRunner


class QueueOfThree:
    """librdkafka's local queue, three records deep: produce raises BufferError while it is full; poll
    serves delivery reports, which frees it."""

    def __init__(self) -> None:
        self.queued: list[tuple] = []
        self.written: list[tuple] = []
        self.polls = 0

    def produce(self, topic, key=None, value=None, headers=None):
        if len(self.queued) >= 3:
            raise BufferError("Local: Queue full")
        self.queued.append((topic, key, value, headers))

    def poll(self, timeout):
        self.polls += 1
        self.written += self.queued
        self.queued = []
        return 0


def test_produce_waits_for_room_in_a_full_local_queue_instead_of_raising():
    runner = FoldRunner(AppConfig.model_validate({"kafka": {"bootstrap_servers": "127.0.0.1:1"}}), threading.Event())
    runner.producer = QueueOfThree()
    for n in range(10):
        runner._produce("state", f"r:invoice_lines:{n}".encode(), b"[1]", None)  # noqa: SLF001
    produced = runner.producer.written + runner.producer.queued
    assert [key for _, key, _, _ in produced] == [f"r:invoice_lines:{n}".encode() for n in range(10)]
    assert runner.producer.polls == 3


def test_two_daemon_processes_on_one_host_get_their_own_fold_transactional_ids():
    """Found by the chaos test (two daemons in one group on one machine): both folds used
    ``<fold group>-<hostname>``, so each start fenced the other's producer (``_FENCED``) and their folds kept
    restarting each other. Each instance has its own id now, the same across its restarts."""
    from daemon.source.fold_runner import default_transactional_id

    first = AppConfig.model_validate({"http": {"port": 9464}, "targets": []})
    second = AppConfig.model_validate({"http": {"port": 9474}, "targets": []})
    assert default_transactional_id(first) != default_transactional_id(second)
    assert default_transactional_id(first) == default_transactional_id(first.model_copy())  # stable across restarts
    stop = threading.Event()
    assert FoldRunner(first, stop).transactional_id != FoldRunner(second, stop).transactional_id
