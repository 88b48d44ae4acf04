"""A scheduled target on the real stack (PostgreSQL + Debezium + Kafka): an interval target holds the
shop's invoices while its window is closed — through a sink restart, offsets untouched — shows them as
waiting (metric and `ledgerwire status`'s count), then posts the newest version of each, once, when the
window opens. The sink's clock is injected, so the test does not wait for a real window."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from prometheus_client import REGISTRY

from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime, SinkWorker
from daemon.source.fold_runner import FoldRunner
from daemon.sink.ledger import Ledger, load_secret_key
from daemon.operations.offsets import schedule_status, waiting_for_window
from tests.test_pipeline_stack import RecordingBooks, RecordingConnector, edit_price, new_invoice, seed, wait_until

pytestmark = pytest.mark.stack


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def waiting_gauge(target: str) -> float | None:
    return REGISTRY.get_sample_value("ledgerwire_waiting_for_schedule", {"target": target})


def test_interval_target_holds_invoices_until_its_window_opens(shop):
    target = TargetConfig(name="hourly", platform="quickbooks-online",
                          schedule={"mode": "interval", "every_minutes": 60})
    config = shop.app_config()
    ledger = Ledger(shop.ledger_dsn)
    ledger.ensure_schema()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    books = RecordingBooks()
    clock = Clock(datetime.now(timezone.utc))  # frozen before any record exists: every record waits
    stop_fold = threading.Event()
    threading.Thread(target=FoldRunner(config, stop_fold, transactional_id=f"{shop.name}-fold").run,
                     daemon=True).start()

    def start_sink():
        stop = threading.Event()
        sink = SinkWorker(config, target, ledger, runtime, stop, connector=RecordingConnector(target, runtime, books),
                          clock=clock)
        thread = threading.Thread(target=sink.run, daemon=True)
        thread.start()
        return stop, thread

    stop_sink, sink_thread = start_sink()
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            seed(conn)
            ids = [new_invoice(conn, n, f"{100 + n}.00") for n in range(1, 6)]
            edit_price(conn, ids[0], "250.00")
            edit_price(conn, ids[1], "260.00")
        wait_until(lambda: waiting_gauge("hourly") == 5, 40, "five invoices waiting for the window")
        assert books.deliveries == {}, "nothing may be posted while the window is closed"
        assert waiting_for_window(config, ledger, target) == (5, True)

        # A restart while waiting: the held records were never committed, so they are read and held again.
        stop_sink.set()
        sink_thread.join(30)
        stop_sink, sink_thread = start_sink()
        wait_until(lambda: waiting_gauge("hourly") == 5, 30, "held again after the restart")
        assert books.deliveries == {}
        status = schedule_status(config, ledger, target, now=clock.now)
        assert status["schedule"] == "every 60 min" and status["waiting"] == 5
        assert datetime.fromisoformat(status["next_window"]) > clock.now

        clock.now = clock.now + timedelta(hours=2)  # past the next opening of every held record
        wait_until(lambda: len(books.latest) == 5, 30, "all posted when the window opened")
        wait_until(lambda: waiting_gauge("hourly") == 0, 10, "nothing waiting")
        # Newest version per invoice only, each once: the edited invoices' first versions never went out.
        assert sorted(books.deliveries) == sorted([(ids[0], 2), (ids[1], 2), (ids[2], 1), (ids[3], 1), (ids[4], 1)])
        assert all(times == 1 for times in books.deliveries.values()), books.deliveries
        wait_until(lambda: waiting_for_window(config, ledger, target) == (0, True), 10, "status shows none waiting")
    finally:
        stop_sink.set()
        stop_fold.set()
        sink_thread.join(30)
        ledger.close()
