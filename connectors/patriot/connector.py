"""Patriot Accounting: an export connector (Patriot has no API and imports no invoices or payments).

Exactly once, for files: ``deliver`` only *records* an invoice version in the export ledger's pending set (the
rows that take each of its streams from what sealed files already hold to what the shop has now; recording
the same version again changes nothing) and returns the document as ``queued``; the sink then commits it
with its offset. On the target's schedule (``schedule:``: every N minutes or end of day; a realtime target
exports daily at 00:00 UTC) the exporter seals everything pending into one numbered export per period — once,
the ledger refuses a second export for a period — and writes its files atomically from the sealed rows.
A crash before the seal leaves the rows pending (next period); after the seal and before the files are marked
written, the next run writes the same bytes under the same names. Nothing is ever written twice or lost.

This connector does not run on the delivery engine: the engine's lifecycle (create, update, void, payments,
credit notes, look-ups before re-creating) is for platforms that receive documents; Patriot receives none.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import structlog
from prometheus_client import Counter

from connectors.base import Connector, DeliveryContext, DocumentState, RemoteInvoice, delivered
from connectors.patriot.client import write_export
from connectors.patriot.mapping import Row, Sealed, desired_states, plan
from connectors.patriot.settings import PatriotSettings
from connectors.patriot.store import DDL, MemoryStore, PgStore
from daemon.canonical import InvoiceEvent
from daemon.config import Schedule
from daemon.sink.schedule import DeliveryWindow

log = structlog.get_logger(__name__)

EXPORTS_WRITTEN = Counter("ledgerwire_patriot_exports_written_total",
                          "Patriot exports (numbered file sets) written to the export directory", ["target"])
EXPORT_FAILURES = Counter("ledgerwire_patriot_export_failures_total",
                          "Patriot export attempts that failed (retried at the next poll)", ["target"])
DAILY_AT_MIDNIGHT_UTC = Schedule(mode="end_of_day", at_local_time="00:00", timezone="UTC")


class PatriotExportConnector(Connector):
    platform = "patriot"
    settings_model = PatriotSettings
    conformance_skip = ("patriot is an export connector: Patriot has no API, so there is no platform to push to, "
                        "fail, time out or refuse; its exactly-once rules are tested in tests/connectors/test_patriot.py "
                        "and by the end-to-end spine")

    def __init__(self, target: Any, runtime: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(target, runtime)
        self.settings: PatriotSettings
        self.store = PgStore(runtime.pg_pool) if getattr(runtime, "pg_pool", None) is not None else MemoryStore()
        self.directory = self.settings.export_dir / target.name
        self.window = DeliveryWindow(target.schedule if target.schedule.mode != "realtime" else DAILY_AT_MIDNIGHT_UTC)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.log = log.bind(target=target.name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if getattr(runtime, "pg_pool", None) is not None:  # the daemon: export on the schedule in the background
            self._thread = threading.Thread(target=self._export_loop, name=f"patriot-export:{target.name}",
                                            daemon=True)
            self._thread.start()

    @classmethod
    def ledger_ddl(cls) -> str:
        return DDL

    # -- recording (the sink's delivery) --
    def _rows(self, event: InvoiceEvent, dry_run: bool) -> list[Row]:
        desired = desired_states(event, self.settings.max_field_chars)
        invoice_stream = f"inv:{event.invoice_id}"
        today = self.window.local(self.clock()).date()

        def planner(sealed: dict[str, Sealed | None]) -> list[Row]:
            # Money goes out only for an invoice that is (or already was) in Patriot's books.
            exported = desired[invoice_stream].state not in (None, "void") or sealed.get(invoice_stream) is not None
            return [row for stream, before in sealed.items()
                    for row in plan(stream, desired.get(stream), before, exported, today)]

        return self.store.record(self.target.name, event.invoice_id, list(desired), planner, dry_run=dry_run)

    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        rows = self._rows(event, dry_run=False)
        self.log.info("patriot_recorded", invoice_id=event.invoice_id, version=event.version, rows=len(rows),
                      actions=sorted({r.facts["action"] for r in rows}))
        doc.external_id = f"inv:{event.invoice_id}"
        doc.customer_id = f"cust:{event.customer.id}"
        doc.status = "queued"  # in the pending set; the worksheet and bank files carry it at the period's end
        return delivered(event, doc)

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        return [{"method": "EXPORT", "path": row.file or "worksheet", "body": row.facts}
                for row in self._rows(event, dry_run=True)]

    # -- exporting (the schedule) --
    def period_due(self, now: datetime) -> str:
        """The last period whose window opened at least ``settle_seconds`` before ``now``, named by its end."""
        opening = self.window.previous_open(now - timedelta(seconds=self.settings.settle_seconds))
        assert opening is not None  # the window is never realtime here
        return self.window.local(opening).strftime("%Y%m%dT%H%M")

    def export_due(self, now: datetime | None = None) -> list[int]:
        """Seal the due period (once) and write every sealed export whose files are not written yet."""
        now = now or self.clock()
        sealed = self.store.seal(self.target.name, self.period_due(now), now)
        if sealed is not None:
            self.log.info("patriot_export_sealed", number=sealed)
        written = []
        for export in self.store.unwritten(self.target.name):
            files = write_export(self.directory, export, self.settings.rows_per_file)
            self.store.mark_written(self.target.name, export.number, files)
            EXPORTS_WRITTEN.labels(self.target.name).inc()
            self.log.info("patriot_export_written", number=export.number, period=export.period, files=len(files),
                          rows=len(export.rows))
            written.append(export.number)
        return written

    def _export_loop(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.export_due()
            except Exception as exc:  # an unwritable directory or the ledger away: retried at the next poll
                EXPORT_FAILURES.labels(self.target.name).inc()
                self.log.error("patriot_export_failed", error=type(exc).__name__, reason=str(exc)[:300])

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    # -- read-back (reconciliation): what the export ledger says about the invoice --
    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        latest = self.store.latest(self.target.name, external_id)
        if latest is None:
            return None
        row, number = latest
        return RemoteInvoice(external_id=external_id, number=row.facts.get("invoice"), total=_decimal(row.facts),
                             tax_total=_decimal(row.facts, "tax"),
                             status=f"{row.facts['status']}, {'export ' + str(number) if number else 'pending'}",
                             raw=row.facts)

    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        return self.fetch_invoice(f"inv:{event.invoice_id}")


def _decimal(facts: dict[str, str], key: str = "total") -> Decimal | None:
    return Decimal(facts[key]) if facts.get(key) else None

