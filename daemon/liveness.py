"""Supervision and liveness (issue #13 items 3, 4 and 6): what a loop reports so the process can tell "working" or
"waiting" from "stuck", which failures are transient, and librdkafka's own log lines through structlog.

- ``Progress``: each loop (the fold, each sink's consumer loop, each sink's partition workers) calls ``beat()``
  whenever it turns — idle turns and back-off waits included — so only a loop blocked inside a call (a Kafka
  transaction that never returns, a socket with no timeout, a platform call hung on a lock) ages past
  ``liveness.stall_timeout_s``. A known wait (a back-off, a rate-limit window) is ``excuse``d for its length.
  ``ProgressGroup`` reports a sink's consumer loop and its partition workers as one component.
- ``TRANSIENT``: the failures a loop retries with back-off (Kafka or PostgreSQL away, the pool exhausted); they
  are logged and counted (``ledgerwire_transient_failures_total``), never fatal and never a dead letter.
  Anything else raised by a loop ends the process non-zero (``daemon/app.py``).
- ``KafkaLogRelay``: the ``logger`` handed to librdkafka — one JSON line per message, the same message at
  most once per interval, with the count of the ones it suppressed.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import traceback

import psycopg
import structlog
from confluent_kafka import KafkaException

from daemon import metrics

log = structlog.get_logger(__name__)

# psycopg_pool.PoolTimeout is a psycopg.OperationalError: a connection lost, refused or not to be had in time.
# TimeoutError: a Kafka admin future (topic creation) that did not answer within kafka.call_timeout_s.
TRANSIENT: tuple[type[BaseException], ...] = (KafkaException, psycopg.OperationalError, TimeoutError)

EXIT_COMPONENT_DIED = 70  # EX_SOFTWARE: a loop raised an unexpected error (logged with its traceback)
EXIT_STALLED = 75  # EX_TEMPFAIL: a loop made no progress within liveness.stall_timeout_s


def dependency_of(exc: BaseException) -> str:
    return "postgresql" if isinstance(exc, psycopg.Error) else "kafka"


def report_transient(component: str, exc: BaseException, backoff_s: float, **fields) -> None:
    """Log and count one transient failure a loop is about to retry after ``backoff_s``."""
    dependency = dependency_of(exc)
    metrics.TRANSIENT_FAILURES.labels(component, dependency).inc()
    log.warning("transient_failure_retrying", component=component, dependency=dependency,
                error=f"{type(exc).__name__}: {exc}", backoff_s=backoff_s, **fields)


class Progress:
    """When a loop last showed it is not stuck. ``beat`` is a single assignment: cheap on hot paths."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._at = clock()
        self.thread_id: int | None = None  # the loop's thread, for the stack logged when it stalls

    def beat(self) -> None:
        self._at = self._clock()
        if self.thread_id is None:
            self.thread_id = threading.get_ident()

    def excuse(self, seconds: float) -> None:
        """A known wait of ``seconds`` (a back-off, a rate-limit window, a daily quota) is not being stuck: the
        bound counts from its end."""
        self._at = max(self._at, self._clock() + seconds)
        if self.thread_id is None:
            self.thread_id = threading.get_ident()

    def stalled_for(self, bound_s: float) -> float | None:
        """Seconds since the last beat when that is more than ``bound_s``, else None."""
        age = self._clock() - self._at
        return age if age > bound_s else None

    def stack(self) -> str:
        """Where the loop's thread is now (the call it is stuck in), for the log line."""
        frame = sys._current_frames().get(self.thread_id) if self.thread_id is not None else None  # noqa: SLF001
        return "".join(traceback.format_stack(frame)) if frame is not None else "unknown"


class ProgressGroup:
    """Several loops supervised as one component (a sink: its consumer loop and one worker per partition, which
    come and go with rebalances): stalled when any member is, and ``stack`` is that member's."""

    def __init__(self, members) -> None:
        self._members = members  # () -> the current members
        self._stalled: Progress | None = None

    def stalled_for(self, bound_s: float) -> float | None:
        worst: tuple[float, Progress] | None = None
        for member in list(self._members()):
            age = member.stalled_for(bound_s)
            if age is not None and (worst is None or age > worst[0]):
                worst = (age, member)
        self._stalled = worst[1] if worst else None
        return worst[0] if worst else None

    def stack(self) -> str:
        return self._stalled.stack() if self._stalled is not None else "unknown"


_CURRENT = threading.local()  # the Progress of the loop running on this thread, if it is supervised


def supervise_this_thread(progress: Progress) -> None:
    _CURRENT.progress = progress


def excuse_current(seconds: float) -> None:
    """Called from deep inside a turn (the rate limiter before each platform request): the current thread's loop
    is alive and, for ``seconds``, knowingly waiting."""
    progress = getattr(_CURRENT, "progress", None)
    if progress is not None:
        progress.excuse(seconds)


_VARYING = re.compile(r"\[rdkafka#[^\]]*\]|\(after \d+ms[^)]*\)|\d+(\.\d+)?\s*ms")


class KafkaLogRelay(logging.Logger):
    """librdkafka's log callback target: JSON through structlog, each distinct message at most once per
    ``interval_s`` (librdkafka repeats "Connect to ipv4#… failed" several times a second while a broker is away);
    the next line of a suppressed message carries how many were dropped."""

    def __init__(self, interval_s: float = 30.0, clock=time.monotonic) -> None:
        super().__init__("librdkafka", logging.DEBUG)
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # message without its varying prefix -> (last shown, dropped)
        self._lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        # The same trouble from two clients, or after a different number of milliseconds, is one message.
        key = _VARYING.sub("", text)[:300]
        now = self._clock()
        with self._lock:
            shown, dropped = self._seen.get(key, (None, 0))
            if shown is not None and now - shown < self.interval_s:
                self._seen[key] = (shown, dropped + 1)
                return
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded: forget the oldest
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(record.levelno, "error")
        getattr(log, level)("librdkafka", message=text[:1000], suppressed=dropped)


_RELAY: KafkaLogRelay | None = None


def kafka_log_relay(interval_s: float | None = None) -> KafkaLogRelay:
    """The process's one relay (shared, so the rate limit spans every client); ``interval_s`` sets its window."""
    global _RELAY
    if _RELAY is None:
        _RELAY = KafkaLogRelay()
    if interval_s is not None:
        _RELAY.interval_s = interval_s
    return _RELAY
