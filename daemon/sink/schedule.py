"""Per-target delivery schedules: real time (default), every N minutes, or an end-of-day batch.

``DeliveryWindow`` is pure and clock-injected: every answer is a function of the schedule and the
instants passed in, never of when the process started, so several processes (or a restarted one)
agree on when a window opens.

* ``realtime``: always open.
* ``interval``: opens every ``every_minutes`` minutes counted from a fixed epoch (1970-01-01T00:00Z),
  so two daemons — or a daemon before and after a restart — open at the same instants.
* ``end_of_day``: opens once per local day at ``at_local_time`` in the target's IANA ``timezone``.
  Daylight saving time: a local time that does not exist that day (the clocks jump over it) opens at
  the first local minute after the jump; a local time that happens twice (the clocks fall back) opens
  once, at its first occurrence.

A record that reached the sink at instant ``t`` is due at ``next_open(t)``; the window is open for a
held backlog once an opening instant has passed since its oldest record arrived
(``is_open(now, since=oldest)``). A daemon that was down at the opening instant therefore posts the
backlog as soon as it is back, instead of waiting for the next window. How long an open window stays
open is the sink's decision: it delivers the backlog it found, then holds again.

``HeldInvoices`` is the sink's waiting room for one partition: the newest version per invoice, the
first offset each invoice appeared at (for offsets that never skip an undelivered record) and the
oldest arrival instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from daemon.config import Schedule

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("DeliveryWindow needs timezone-aware instants")
    return instant


class DeliveryWindow:
    """When a target's scheduled window opens. Instants are timezone-aware datetimes."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.mode = schedule.mode
        if self.mode == "interval":
            assert schedule.every_minutes is not None  # enforced by the Schedule model
            self._step_us = schedule.every_minutes * 60 * 1_000_000
        elif self.mode == "end_of_day":
            assert schedule.at_local_time is not None
            hours, minutes = schedule.at_local_time.split(":")
            self._at = time(int(hours), int(minutes))
            self._tz = ZoneInfo(schedule.timezone)

    @property
    def realtime(self) -> bool:
        return self.mode == "realtime"

    def next_open(self, now: datetime) -> datetime:
        """The first opening instant strictly after ``now`` (``now`` itself for realtime), in UTC."""
        now = _aware(now).astimezone(timezone.utc)
        if self.mode == "realtime":
            return now
        if self.mode == "interval":
            elapsed_us = (now - EPOCH) // _US
            return EPOCH + timedelta(microseconds=(elapsed_us // self._step_us + 1) * self._step_us)
        local_day = now.astimezone(self._tz).date()
        for offset in range(0, 3):
            opening = self.opening_on(local_day + timedelta(days=offset))
            if opening > now:
                return opening
        raise AssertionError("unreachable: a local day always has an opening after the previous one")

    def previous_open(self, now: datetime) -> datetime | None:
        """The last opening instant at or before ``now`` (None for realtime)."""
        now = _aware(now).astimezone(timezone.utc)
        if self.mode == "realtime":
            return None
        if self.mode == "interval":
            elapsed_us = (now - EPOCH) // _US
            return EPOCH + timedelta(microseconds=(elapsed_us // self._step_us) * self._step_us)
        local_day = now.astimezone(self._tz).date()
        for offset in range(0, 3):
            opening = self.opening_on(local_day - timedelta(days=offset))
            if opening <= now:
                return opening
        raise AssertionError("unreachable")

    def is_open(self, now: datetime, since: datetime | None = None) -> bool:
        """Open for records that arrived at ``since``: an opening instant lies in ``(since, now]``.

        Realtime is always open. Without ``since`` the question is whether ``now`` is an opening instant.
        """
        if self.mode == "realtime":
            return True
        now = _aware(now)
        if since is None:
            return self.previous_open(now) == now.astimezone(timezone.utc)
        return self.next_open(since) <= now

    def opening_on(self, local_day: date) -> datetime:
        """The end-of-day opening instant of one local calendar day, in UTC."""
        if self.mode != "end_of_day":
            raise ValueError("only end_of_day windows open on a local day")
        wall = datetime.combine(local_day, self._at)
        first = wall.replace(tzinfo=self._tz, fold=0)
        if _exists(first):
            return first.astimezone(timezone.utc)  # fold=0: the first of two occurrences when ambiguous
        # The clocks jump over this wall time today: open at the first local minute after the jump.
        for minutes in range(1, 24 * 60):
            later = (wall + timedelta(minutes=minutes)).replace(tzinfo=self._tz, fold=0)
            if _exists(later):
                return later.astimezone(timezone.utc)
        raise ValueError(f"no local time after {wall} exists in {self._tz}")  # pragma: no cover

    def local(self, instant: datetime) -> datetime:
        """``instant`` in the schedule's own time zone (end of day) or UTC, for people to read."""
        tz = self._tz if self.mode == "end_of_day" else timezone.utc
        return _aware(instant).astimezone(tz)

    def describe(self) -> str:
        s = self.schedule
        if s.mode == "interval":
            return f"every {s.every_minutes} min"
        if s.mode == "end_of_day":
            return f"end of day at {s.at_local_time} {s.timezone}"
        return "realtime"


def _exists(local: datetime) -> bool:
    """Whether an aware local wall time really occurs (it round-trips through UTC unchanged)."""
    back = local.astimezone(timezone.utc).astimezone(local.tzinfo)
    return back.replace(tzinfo=None, fold=0) == local.replace(tzinfo=None, fold=0)


@dataclass
class HeldInvoice:
    first_offset: int  # where this invoice first appeared in the held stretch of the partition
    record: Any  # the newest version's record (deliver._Record)
    event: Any  # the newest version (canonical.InvoiceEvent)
    versions: int = 1  # how many versions were held (all but the newest are coalesced away)
    routed: bool = True  # whether this target takes the invoice's location at all


@dataclass
class HeldInvoices:
    """The records one partition holds while its target's window is closed, coalesced per invoice.

    Memory is bounded by the number of distinct invoices, not versions. Offsets are never advanced
    while records are held, so a restart re-reads and holds them again.
    """

    invoices: dict[int, HeldInvoice] = field(default_factory=dict)  # insertion order = first appearance
    oldest: datetime | None = None  # arrival instant of the oldest held record
    last_offset: int = -1

    def add(self, record: Any, event: Any, arrived: datetime, routed: bool = True) -> None:
        if self.oldest is None or arrived < self.oldest:
            self.oldest = arrived
        self.last_offset = max(self.last_offset, record.offset)
        held = self.invoices.get(event.invoice_id)
        if held is None:
            self.invoices[event.invoice_id] = HeldInvoice(record.offset, record, event, 1, routed)
            return
        held.versions += 1
        held.routed = routed
        if event.version >= held.event.version:
            held.record, held.event = record, event

    def __len__(self) -> int:
        return len(self.invoices)

    def __bool__(self) -> bool:
        return bool(self.invoices)

    @property
    def waiting(self) -> int:
        """Distinct invoices waiting for the window (only those this target takes)."""
        return sum(1 for h in self.invoices.values() if h.routed)

    @property
    def coalesced(self) -> int:
        return sum(h.versions - 1 for h in self.invoices.values())

    def items(self) -> list[tuple[Any, Any, int]]:
        """``(newest record, newest event, safe next offset)`` per invoice, in order of first appearance.

        The safe offset after an invoice is where the next invoice first appeared: every record before
        it belongs to an invoice already handled. After the last one it is past everything held.
        """
        held = list(self.invoices.values())
        out = []
        for index, h in enumerate(held):
            next_offset = held[index + 1].first_offset if index + 1 < len(held) else self.last_offset + 1
            out.append((h.record, h.event, next_offset))
        return out

    def clear(self) -> None:
        self.invoices.clear()
        self.oldest = None
        self.last_offset = -1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


Clock = Callable[[], datetime]
