"""Per-target delivery schedules (issue #5): the pure DeliveryWindow for every mode (DST included), the
Schedule model's validation, and the sink's gating driven with an injected clock and an in-memory
record source and ledger — no Kafka, no PostgreSQL."""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from connectors.base import Connector, DocumentState, RemoteInvoice
from connectors.testing import MemoryRuntime, invoice_event, next_version
from daemon.canonical import Location, encode_invoice_event
from daemon.config import AppConfig, Schedule, TargetConfig
from daemon.sink.deliver import PartitionLease, SinkWorker, _Record
from daemon.operations.offsets import count_waiting
from daemon.sink.schedule import DeliveryWindow, HeldInvoices

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def eod(at: str, tz: str) -> DeliveryWindow:
    return DeliveryWindow(Schedule(mode="end_of_day", at_local_time=at, timezone=tz))


def every(minutes: int) -> DeliveryWindow:
    return DeliveryWindow(Schedule(mode="interval", every_minutes=minutes))


# --- DeliveryWindow -----------------------------------------------------------------------------------

def test_realtime_is_always_open():
    window = DeliveryWindow(Schedule())
    now = utc(2026, 5, 1, 12, 0, 7)
    assert window.realtime
    assert window.is_open(now) and window.is_open(now, since=now)
    assert window.next_open(now) == now


def test_interval_opens_on_fixed_boundaries_from_the_epoch():
    window = every(15)
    assert window.next_open(utc(2026, 5, 1, 12, 0, 0)) == utc(2026, 5, 1, 12, 15)  # strictly after
    assert window.next_open(utc(2026, 5, 1, 12, 14, 59, 999999)) == utc(2026, 5, 1, 12, 15)
    assert window.previous_open(utc(2026, 5, 1, 12, 14, 59)) == utc(2026, 5, 1, 12, 0)
    assert window.is_open(utc(2026, 5, 1, 12, 15))
    assert not window.is_open(utc(2026, 5, 1, 12, 15, 1))
    # Records that arrived at 12:03 are released by the 12:15 opening, not before.
    assert not window.is_open(utc(2026, 5, 1, 12, 14, 59), since=utc(2026, 5, 1, 12, 3))
    assert window.is_open(utc(2026, 5, 1, 12, 15), since=utc(2026, 5, 1, 12, 3))
    # A 7-minute interval does not divide the hour: still anchored to the epoch, not to the hour.
    seven = every(7)
    opening = seven.next_open(utc(2026, 5, 1, 12, 0))
    assert int(opening.timestamp()) % (7 * 60) == 0 and opening - utc(2026, 5, 1, 12, 0) <= timedelta(minutes=7)


def test_interval_windows_agree_across_instances_and_restarts():
    """Two processes (or one before and after a restart) built at different moments compute the same
    openings: nothing depends on when an instance was created."""
    schedule = Schedule(mode="interval", every_minutes=10)
    first = DeliveryWindow(schedule)
    time.sleep(0.01)
    second = DeliveryWindow(Schedule.model_validate(schedule.model_dump()))
    instants = [utc(2026, 3, 8, 6, 59, 59) + timedelta(seconds=37 * i) for i in range(500)]
    assert [first.next_open(t) for t in instants] == [second.next_open(t) for t in instants]
    assert [first.is_open(t, since=t - timedelta(minutes=4)) for t in instants] == \
           [second.is_open(t, since=t - timedelta(minutes=4)) for t in instants]
    # Same answer whatever time zone the caller's clock uses.
    local = instants[3].astimezone(timezone(timedelta(hours=-7)))
    assert first.next_open(local) == second.next_open(instants[3])


def test_end_of_day_opens_at_local_time_across_daylight_saving():
    window = eod("18:00", "America/New_York")
    # Winter (EST, UTC-5) and summer (EDT, UTC-4): the same local time, different UTC instants.
    assert window.next_open(utc(2026, 1, 15, 12, 0)) == utc(2026, 1, 15, 23, 0)
    assert window.next_open(utc(2026, 7, 15, 12, 0)) == utc(2026, 7, 15, 22, 0)
    # After today's opening the next one is tomorrow's.
    assert window.next_open(utc(2026, 1, 15, 23, 0)) == utc(2026, 1, 16, 23, 0)
    # The day the clocks spring forward (2026-03-08) and the day before.
    assert window.next_open(utc(2026, 3, 7, 23, 30)) == utc(2026, 3, 8, 22, 0)
    # The day they fall back (2026-11-01).
    assert window.next_open(utc(2026, 10, 31, 23, 0)) == utc(2026, 11, 1, 23, 0)
    assert window.local(utc(2026, 11, 1, 23, 0)).isoformat() == "2026-11-01T18:00:00-05:00"


def test_end_of_day_local_time_skipped_by_spring_forward_opens_right_after_the_jump():
    window = eod("02:30", "America/New_York")  # 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 never happens
    opening = window.next_open(utc(2026, 3, 8, 5, 0))  # 00:00 EST
    assert opening == utc(2026, 3, 8, 7, 0)  # 03:00 EDT, the first local minute after the jump
    assert window.local(opening).isoformat() == "2026-03-08T03:00:00-04:00"
    # Normal days either side.
    assert window.next_open(utc(2026, 3, 7, 0, 0)) == utc(2026, 3, 7, 7, 30)  # 02:30 EST
    assert window.next_open(opening) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT
    assert eod("02:01", "America/New_York").next_open(utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)


def test_end_of_day_local_time_repeated_by_fall_back_opens_once():
    window = eod("01:30", "America/New_York")  # 2026-11-01: 01:30 EDT (05:30Z) then 01:30 EST (06:30Z)
    first = window.next_open(utc(2026, 11, 1, 4, 0))
    assert first == utc(2026, 11, 1, 5, 30)
    # Between the two occurrences the next opening is the next day's, not the repeated 01:30.
    assert window.next_open(utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 2, 6, 30)
    assert not window.is_open(utc(2026, 11, 1, 6, 30), since=utc(2026, 11, 1, 5, 31))


def test_end_of_day_in_a_southern_and_a_half_hour_zone():
    # Sydney's DST ends 2026-04-05 03:00 AEDT -> 02:00 AEST; 02:30 happens twice: the first is 15:30Z (4th).
    sydney = eod("02:30", "Australia/Sydney")
    assert sydney.next_open(utc(2026, 4, 4, 12, 0)) == utc(2026, 4, 4, 15, 30)
    assert sydney.next_open(utc(2026, 4, 4, 15, 30)) == utc(2026, 4, 5, 16, 30)
    kolkata = eod("23:45", "Asia/Kolkata")  # UTC+05:30, no DST
    assert kolkata.next_open(utc(2026, 6, 1, 0, 0)) == utc(2026, 6, 1, 18, 15)


def test_backlog_waits_for_the_window_and_a_missed_window_opens_at_once():
    window = eod("18:00", "America/Chicago")  # CDT in June: 18:00 = 23:00Z
    arrived = utc(2026, 6, 10, 15, 0)  # 10:00 local
    assert not window.is_open(utc(2026, 6, 10, 22, 59), since=arrived)
    assert window.is_open(utc(2026, 6, 10, 23, 0), since=arrived)
    # Arrived after today's window: waits for tomorrow's.
    late = utc(2026, 6, 10, 23, 5)
    assert not window.is_open(utc(2026, 6, 11, 9, 0), since=late)
    # The daemon was down at 18:00 and restarts at 19:40 with that morning's records: post them now.
    assert window.is_open(utc(2026, 6, 11, 0, 40), since=arrived)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError):
        every(5).next_open(datetime(2026, 1, 1, 12, 0))


# --- Schedule validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    ({"mode": "interval"}, "needs every_minutes"),
    ({"mode": "interval", "every_minutes": 0}, "greater than or equal to 1"),
    ({"mode": "interval", "every_minutes": 15, "at_local_time": "18:00"}, "only used with schedule mode 'end_of_day'"),
    ({"mode": "end_of_day"}, "needs at_local_time"),
    ({"mode": "end_of_day", "at_local_time": "6pm"}, 'must be a 24-hour local time "HH:MM"'),
    ({"mode": "end_of_day", "at_local_time": "24:00"}, 'must be a 24-hour local time "HH:MM"'),
    ({"mode": "end_of_day", "at_local_time": "18:60"}, 'must be a 24-hour local time "HH:MM"'),
    ({"mode": "end_of_day", "at_local_time": "18:00", "timezone": "Central"}, "IANA time zone"),
    ({"mode": "end_of_day", "at_local_time": "18:00", "timezone": "America/Nowhere"}, "IANA time zone"),
    ({"mode": "end_of_day", "at_local_time": "18:00", "timezone": "../../etc/passwd"}, "IANA time zone"),
    ({"mode": "end_of_day", "at_local_time": "18:00", "every_minutes": 5}, "only used with schedule mode 'interval'"),
    ({"every_minutes": 5}, "'realtime' takes neither"),
    ({"mode": "hourly"}, "realtime"),
    ({"mode": "interval", "every_minutes": 5, "cron": "*/5"}, "Extra inputs are not permitted"),
])
def test_schedule_validation_errors_are_clear(data, message):
    with pytest.raises(ValidationError) as info:
        TargetConfig(name="books", platform="quickbooks-online", schedule=data)
    assert message in str(info.value)


def test_valid_schedules():
    assert TargetConfig(name="books", platform="x").schedule.mode == "realtime"
    s = Schedule(mode="end_of_day", at_local_time="07:05", timezone="Europe/London")
    assert (s.at_local_time, s.timezone) == ("07:05", "Europe/London")
    assert Schedule(mode="interval", every_minutes=30).every_minutes == 30


# --- the sink's gating, with an injected clock and in-memory ledger -----------------------------------

class _Settings(BaseModel):
    pass


class RecordingConnector(Connector):
    platform = "recorder"
    settings_model = _Settings

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        self.posted: list[tuple[int, int]] = []  # (invoice id, version) in delivery order
        self.lock = threading.Lock()

    def deliver(self, event, doc, ctx):
        with self.lock:
            self.posted.append((event.invoice_id, event.version))
        return doc.model_copy(update={"external_id": f"R{event.invoice_id}", "status": "posted",
                                      "delivered_version": event.version, "payload_hash": event.content_hash()})

    def find_invoice(self, event):
        return None

    def fetch_invoice(self, external_id):
        return RemoteInvoice(external_id=external_id)


class MemoryLedger:
    """The slice of ``daemon.sink.ledger.Ledger`` the sink's delivery path uses."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, int], DocumentState] = {}
        self.offsets_set: dict[int, list[int]] = {}
        self.audit: list[dict] = []

    def parked(self, target, invoice_id):
        return False

    @contextmanager
    def invoice_lock(self, target, invoice_id):
        yield

    @contextmanager
    def invoice_locks(self, target, invoice_ids):
        yield

    def document(self, target, invoice_id):
        return self.docs.get((target, invoice_id), DocumentState()).model_copy(deep=True)

    def save_document(self, target, number, invoice_id, doc, issue_date=None, location_code=None, fence=None):
        self.docs[(target, invoice_id)] = doc.model_copy(deep=True)
        return True

    def set_offset(self, target, topic, partition, next_offset, conn=None, fence=None):
        self.offsets_set.setdefault(partition, []).append(next_offset)

    def record_delivery(self, *, target, invoice_id, doc, partition, next_offset, audit, **_):
        self.docs[(target, invoice_id)] = doc.model_copy(deep=True)
        self.set_offset(target, None, partition, next_offset)
        self.audit.append({"invoice_id": invoice_id, **audit})
        return True

    def release_thread_connection(self) -> None:
        """The ledger's per-thread lock connection: none in memory."""

    def dead_letter(self, **kwargs):  # pragma: no cover - a failure here is a test failure
        raise AssertionError(f"unexpected dead letter: {kwargs}")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


NORTH = Location(id=2, code="NORTH", name="Northside")


def make_worker(schedule: dict, clock: Clock, locations: list[str] | None = None):
    target = TargetConfig(name=f"sched-{schedule.get('mode')}", platform="recorder", schedule=schedule,
                          locations=locations or [])
    runtime = MemoryRuntime()
    connector = RecordingConnector(target, runtime)
    ledger = MemoryLedger()
    worker = SinkWorker(AppConfig(), target, ledger, runtime, threading.Event(), connector=connector, clock=clock)
    return worker, connector, ledger


def stream(events, at: datetime, partition: int = 0, start: int = 0) -> list[_Record]:
    """Records as the poll loop hands them over; offsets step by 2 (transaction markers in between)."""
    ms = int(at.timestamp() * 1000)
    return [_Record(partition, start + 2 * i, encode_invoice_event(e), ms) for i, e in enumerate(events)]


def gauge(target: str) -> float:
    return REGISTRY.get_sample_value("ledgerwire_waiting_for_schedule", {"target": target})


def sample_events():
    a1 = invoice_event(1)
    a2 = next_version(a1, notes="edit 1")
    a3 = next_version(a2, notes="edit 2")
    b1 = invoice_event(2)
    c1 = invoice_event(3)
    c2 = next_version(c1, notes="paid")
    return [a1, b1, a2, c1, a3, c2]


def test_held_while_closed_then_newest_versions_delivered_once_at_the_opening():
    clock = Clock(utc(2026, 6, 10, 15, 0))  # 10:00 in Chicago
    worker, connector, ledger = make_worker(
        {"mode": "end_of_day", "at_local_time": "18:00", "timezone": "America/Chicago"}, clock)
    held = HeldInvoices()
    revoked = PartitionLease(0, None)
    records = stream(sample_events(), clock.now)

    assert worker._gate_batch(0, held, records[:3], revoked) is False
    clock.now = utc(2026, 6, 10, 22, 59, 59)
    assert worker._gate_batch(0, held, records[3:], revoked) is False
    assert worker._gate_batch(0, held, [], revoked) is False
    assert connector.posted == [] and ledger.offsets_set == {}, "nothing posted, no offset moved while held"
    assert gauge(worker.target.name) == 3  # distinct invoices, not the six versions

    clock.now = utc(2026, 6, 10, 23, 0)  # 18:00 CDT
    assert worker._gate_batch(0, held, [], revoked) is True
    assert sorted(connector.posted) == [(1, 3), (2, 1), (3, 2)], "newest version per invoice, each once"
    assert [a["version"] for a in ledger.audit] == [3, 1, 2]  # in order of first appearance
    # Offsets: each step only past records of invoices already delivered; at the end, past everything.
    assert ledger.offsets_set[0] == [2, 6, 11]
    assert gauge(worker.target.name) == 0 and not held

    # After the window: new versions wait for tomorrow's.
    b2 = next_version(invoice_event(2))
    clock.now = utc(2026, 6, 10, 23, 30)
    assert worker._gate_batch(0, held, stream([b2], clock.now, start=12), revoked) is False
    assert gauge(worker.target.name) == 1 and connector.posted[-1] == (3, 2)
    clock.now = utc(2026, 6, 11, 23, 0)
    assert worker._gate_batch(0, held, [], revoked) is True
    assert connector.posted[-1] == (2, 2) and len(connector.posted) == 4


def test_restart_while_waiting_loses_nothing_and_replays_are_noops():
    """Offsets are not advanced for held records: a new worker reads them again and posts them."""
    clock = Clock(utc(2026, 6, 10, 12, 1))
    worker, connector, ledger = make_worker({"mode": "interval", "every_minutes": 15}, clock)
    records = stream(sample_events(), clock.now)
    worker._gate_batch(0, HeldInvoices(), list(records), PartitionLease(0, None))
    assert ledger.offsets_set == {} and connector.posted == []
    # "Crash": a fresh worker on the same ledger re-reads from the stored offset (none stored: from the start).
    again, connector2, _ = make_worker({"mode": "interval", "every_minutes": 15}, clock)
    again.ledger = worker.ledger
    held = HeldInvoices()
    again._gate_batch(0, held, records[:4], PartitionLease(0, None))
    clock.now = utc(2026, 6, 10, 12, 15)
    assert again._gate_batch(0, held, records[4:], PartitionLease(0, None)) is True
    assert sorted(connector2.posted) == [(1, 3), (2, 1), (3, 2)]
    # A replay of the same stretch after a crash mid-window: the ledger makes it a no-op.
    held = HeldInvoices()
    clock.now = utc(2026, 6, 10, 12, 31)
    again._gate_batch(0, held, list(records), PartitionLease(0, None))
    assert sorted(connector2.posted) == [(1, 3), (2, 1), (3, 2)]


def test_gauge_counts_only_invoices_this_target_takes_and_sums_partitions():
    clock = Clock(utc(2026, 6, 10, 12, 1))
    worker, connector, ledger = make_worker({"mode": "interval", "every_minutes": 60}, clock, locations=["MAIN"])
    north = invoice_event(9, location=NORTH)
    worker._gate_batch(0, HeldInvoices(), stream(sample_events() + [north], clock.now), PartitionLease(0, None))
    held1 = HeldInvoices()
    worker._gate_batch(1, held1, stream([invoice_event(4), invoice_event(5)], clock.now, partition=1),
                       PartitionLease(0, None))
    assert gauge(worker.target.name) == 5  # 3 on partition 0 (NORTH not counted) + 2 on partition 1
    clock.now = utc(2026, 6, 10, 13, 0)
    worker._gate_batch(1, held1, [], PartitionLease(0, None))
    assert gauge(worker.target.name) == 3
    assert sorted(connector.posted) == [(4, 1), (5, 1)]


def test_held_offsets_never_skip_an_undelivered_record():
    """A(0) B(1) C(2) B(3) A(4): after A the safe offset is B's first (1), not B's newest (3)."""
    a1 = invoice_event(1)
    b1 = invoice_event(2)
    c1 = invoice_event(3)
    events = [a1, b1, c1, next_version(b1), next_version(a1)]
    held = HeldInvoices()
    arrived = utc(2026, 1, 1)
    for offset, e in enumerate(events):
        held.add(_Record(0, offset, b""), e, arrived)
    items = [(e.invoice_id, e.version, r.offset, nxt) for r, e, nxt in held.items()]
    assert items == [(1, 2, 4, 1), (2, 2, 3, 2), (3, 1, 2, 5)]
    assert held.coalesced == 2 and held.waiting == 3 and held.oldest == arrived


def test_scheduled_partition_loop_with_a_queue():
    """The worker thread itself: records from its queue are held (the partition counts as busy, so idle
    offsets are not advanced past them), then posted once the injected clock passes the opening."""
    clock = Clock(utc(2026, 6, 10, 12, 1))
    worker, connector, ledger = make_worker({"mode": "interval", "every_minutes": 5}, clock)
    worker._queues[0] = queue.Queue()
    worker._leases[0] = PartitionLease(0, None)
    records = list(stream(sample_events(), clock.now))
    for r in records:
        worker._queues[0].put(r)
    thread = threading.Thread(target=worker._partition_loop, args=(0,), daemon=True)
    thread.start()
    try:
        _wait(lambda: gauge(worker.target.name) == 3 and worker._queues[0].empty(), "records held")
        # taken, not done: the idle-offset advance (it reads unfinished_tasks) leaves the stored offset
        assert worker._queues[0].unfinished_tasks == len(records) and connector.posted == []
        clock.now = utc(2026, 6, 10, 12, 5)
        _wait(lambda: len(connector.posted) == 3, "window delivery")
        _wait(lambda: worker._queues[0].unfinished_tasks == 0, "partition idle again")
        assert sorted(connector.posted) == [(1, 3), (2, 1), (3, 2)] and gauge(worker.target.name) == 0
    finally:
        worker._leases[0].revoke()
        thread.join(5)
    assert not thread.is_alive()


def test_realtime_target_keeps_the_plain_path():
    worker, _, _ = make_worker({"mode": "realtime"}, Clock(utc(2026, 1, 1)))
    assert worker.window is None


def test_status_counts_only_what_the_window_will_post():
    target = TargetConfig(name="books", platform="x", locations=["MAIN"],
                          schedule={"mode": "interval", "every_minutes": 15})
    newest = {1: invoice_event(1, 3), 2: invoice_event(2, 1), 3: invoice_event(3, 2),
              4: invoice_event(4, 1, status="draft"), 5: invoice_event(5, 1, location=NORTH),
              6: invoice_event(6, 2, status="void")}
    documents = {1: (1, "posted", "R1"), 3: (2, "posted", "R3"), 6: (1, "posted", "R6")}
    # 1 (v3 > v1), 2 (new), 6 (void of a posted one); not 3 (delivered), 4 (never-posted draft), 5 (NORTH).
    assert count_waiting(newest, documents, target) == 3


def _wait(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_coalesced_versions_are_counted_once_delivered():
    clock = Clock(utc(2026, 6, 10, 12, 1))
    worker, _, _ = make_worker({"mode": "interval", "every_minutes": 15}, clock)
    worker.target = worker.target.model_copy(update={"name": "sched-coalesce"})
    before = REGISTRY.get_sample_value("ledgerwire_deliveries_total",
                                       {"target": "sched-coalesce", "platform": "recorder", "outcome": "coalesced"}) or 0
    held = HeldInvoices()
    worker._gate_batch(0, held, stream(sample_events(), clock.now), PartitionLease(0, None))
    clock.now = utc(2026, 6, 10, 12, 15)
    worker._gate_batch(0, held, [], PartitionLease(0, None))
    after = REGISTRY.get_sample_value("ledgerwire_deliveries_total",
                                      {"target": "sched-coalesce", "platform": "recorder", "outcome": "coalesced"})
    assert after - before == 3  # six versions, three invoices


def test_an_undecodable_record_is_dead_lettered_and_those_after_it_are_held():
    """Issue #19 item 8: an undecodable record no longer stalls the partition (it goes to the dead-letter
    topic, tests/test_canonical_wire.py); the records around it are held as usual, no offset moves."""
    clock = Clock(utc(2026, 6, 10, 12, 1))
    worker, _, ledger = make_worker({"mode": "interval", "every_minutes": 15}, clock)
    good = stream([invoice_event(1), invoice_event(2)], clock.now)
    records = [good[0], _Record(0, 1, b"not avro", 0), good[1]]
    held = HeldInvoices()
    assert worker._gate_batch(0, held, records, PartitionLease(0, None)) is False
    assert len(held) == 2 and records == [], "both good records held, the bad one dropped from the batch"
    assert ledger.offsets_set == {}


class _TakenThenPreempted(queue.Queue):
    """A queue whose ``get`` has removed the record but not yet returned it: the worker thread preempted between
    taking a record and marking its partition busy (on a loaded machine the poll thread runs in that gap)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()
        self.resume = threading.Event()

    def get(self, block=True, timeout=None):
        record = super().get(block, timeout)
        self.taken.set()
        self.resume.wait(20)
        return record


class _Position:
    """The consumer's position: past every record the poll loop handed over."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def position(self, partitions):
        return [type(tp)(tp.topic, tp.partition, self.offset) for tp in partitions]


def test_idle_offsets_never_pass_a_record_a_worker_took_but_has_not_delivered():
    """Issue #19/#21: the poll thread stored the consumer's position as an idle partition's offset while its
    worker had taken a record from the queue but not yet marked itself busy — a crash then would skip that
    record (an invoice version never delivered), and ``status`` read 0 remaining while nothing was delivered.
    A partition is idle only once every record handed to it is finished."""
    worker, connector, ledger = make_worker({"mode": "realtime"}, Clock(utc(2026, 1, 1)))
    ledger.offsets = lambda target, topic: {p: max(v) for p, v in ledger.offsets_set.items()}
    q = _TakenThenPreempted()
    worker._queues[0] = q
    worker._leases[0] = PartitionLease(0, None)
    (record,) = stream([invoice_event(1)], utc(2026, 1, 1), start=40)
    q.put(record)
    worker.consumer = _Position(record.offset + 2)  # the poll loop is past the record (and its commit marker)
    thread = threading.Thread(target=worker._partition_loop, args=(0,), daemon=True)
    thread.start()
    try:
        assert q.taken.wait(20), "the worker did not take the record"
        worker._advance_idle_offsets()  # the poll thread, while the worker is between take and delivery
        assert ledger.offsets_set.get(0, []) == [], "the stored offset passed a record not yet delivered"
        q.resume.set()
        _wait(lambda: connector.posted == [(1, 1)] and q.unfinished_tasks == 0, "the record delivered")
        worker._advance_idle_offsets()  # now idle: the position (past the marker) is stored
        assert max(ledger.offsets_set[0]) == record.offset + 2
    finally:
        q.resume.set()
        worker._leases[0].revoke()
        thread.join(5)
    assert not thread.is_alive()
