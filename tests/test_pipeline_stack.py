"""The decode → fold → deliver framework on the real stack (PostgreSQL + Debezium + Kafka), with a
recording connector standing in for a platform: exactly-once across sink restarts, offsets in the
ledger, dead-lettering with parking of later versions, retry from the dead-letter table, and
classification of retryable vs permanent errors. Platform behaviour itself is tested per connector.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal

import psycopg
import pytest

from connectors.base import Connector, PermanentError, RemoteInvoice, RetryableError
from daemon.canonical import InvoiceEvent
from daemon.config import TargetConfig
from daemon.sink.deliver import DaemonRuntime, SinkWorker, deliver_event_now
from daemon.source.fold_runner import FoldRunner
from daemon.sink.ledger import Ledger, load_secret_key
from pydantic import BaseModel

pytestmark = pytest.mark.stack


class _Settings(BaseModel):
    pass


class RecordingBooks:
    def __init__(self) -> None:
        self.deliveries: Counter[tuple[int, int]] = Counter()  # (invoice, version) -> times posted
        self.latest: dict[int, InvoiceEvent] = {}
        self.fail_permanently: set[tuple[str, int]] = set()  # (number, version)
        self.fail_transient: dict[str, int] = defaultdict(int)  # number -> failures left
        self.lock = threading.Lock()


class RecordingConnector(Connector):
    platform = "recorder"
    settings_model = _Settings

    def __init__(self, target: TargetConfig, runtime, books: RecordingBooks) -> None:
        super().__init__(target, runtime)
        self.books = books

    def deliver(self, event, doc, ctx):
        with self.books.lock:
            if (event.number, event.version) in self.books.fail_permanently:
                raise PermanentError("validation: CustomerRef is required", status=400, platform_code="2020")
            if self.books.fail_transient[event.number] > 0:
                self.books.fail_transient[event.number] -= 1
                raise RetryableError("server error 503", status=503)
            self.books.deliveries[(event.invoice_id, event.version)] += 1
            self.books.latest[event.invoice_id] = event
        return doc.model_copy(update={"external_id": f"R{event.invoice_id}", "status": "posted",
                                      "delivered_version": event.version, "payload_hash": event.content_hash()})

    def find_invoice(self, event):
        return None

    def fetch_invoice(self, external_id):
        return RemoteInvoice(external_id=external_id)


def seed(conn) -> None:
    conn.execute("INSERT INTO locations (id, code, name) VALUES (1, 'MAIN', 'Main St')")
    conn.execute("INSERT INTO customers (id, location_id, name, email) VALUES (1, 1, 'Dana', 'd@example.com')")
    conn.execute("INSERT INTO tax_rates (id, code, name, rate) VALUES (1, 'STATE', 'State', 0.0625)")
    conn.execute("SELECT setval('locations_id_seq', 10), setval('customers_id_seq', 10), setval('tax_rates_id_seq', 10)")


def new_invoice(conn, n: int, price: str) -> int:
    with conn.transaction():
        job = conn.execute("INSERT INTO jobs (number, location_id, customer_id, description) VALUES (%s,1,1,'Starter')"
                           " RETURNING id", (f"J-{n}",)).fetchone()[0]
        inv = conn.execute("INSERT INTO invoices (number, job_id, customer_id, location_id, status, issue_date) "
                           "VALUES (%s,%s,1,1,'issued',current_date) RETURNING id", (f"INV-{n:04d}", job)).fetchone()[0]
        line = conn.execute("INSERT INTO invoice_lines (invoice_id, position, kind, description, quantity, unit_price) "
                            "VALUES (%s,1,'part','Starter motor',1,%s) RETURNING id", (inv, price)).fetchone()[0]
        tax = (Decimal(price) * Decimal("0.0625")).quantize(Decimal("0.01"))
        conn.execute("INSERT INTO line_taxes (line_id, invoice_id, tax_rate_id, amount) VALUES (%s,%s,1,%s)", (line, inv, tax))
        conn.execute("UPDATE invoices SET subtotal=%s, tax_total=%s, total=%s WHERE id=%s",
                     (price, tax, Decimal(price) + tax, inv))
    return inv


def edit_price(conn, inv: int, price: str) -> None:
    with conn.transaction():
        conn.execute("UPDATE invoice_lines SET unit_price=%s WHERE invoice_id=%s", (price, inv))
        tax = (Decimal(price) * Decimal("0.0625")).quantize(Decimal("0.01"))
        conn.execute("UPDATE line_taxes SET amount=%s WHERE invoice_id=%s", (tax, inv))
        conn.execute("UPDATE invoices SET subtotal=%s, tax_total=%s, total=%s WHERE id=%s",
                     (price, tax, Decimal(price) + tax, inv))


def wait_until(check, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_exactly_once_dead_letters_parking_and_retry(shop):
    target = TargetConfig(name="rec", platform="quickbooks-online", max_attempts=3)
    config = shop.app_config()
    ledger = Ledger(shop.ledger_dsn)
    ledger.ensure_schema()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    books = RecordingBooks()
    stop_fold = threading.Event()
    fold = FoldRunner(config, stop_fold, transactional_id=f"{shop.name}-fold-1")
    threading.Thread(target=fold.run, daemon=True).start()

    def start_sink():
        stop = threading.Event()
        sink = SinkWorker(config, target, ledger, runtime, stop, connector=RecordingConnector(target, runtime, books))
        thread = threading.Thread(target=sink.run, daemon=True)
        thread.start()
        return sink, stop, thread

    sink, stop_sink, sink_thread = start_sink()
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        seed(conn)
        ids = [new_invoice(conn, n, f"{100 + n}.50") for n in range(1, 21)]
        bad = ids[4]
        books.fail_permanently.add(("INV-0005", 2))
        books.fail_transient["INV-0007"] = 2
        wait_until(lambda: len(books.latest) == 20, 90, "first versions delivered")
        edit_price(conn, bad, "999.99")  # v2 of INV-0005 fails permanently
        wait_until(lambda: ledger.dead_letters("rec"), 60, "dead letter")
        # Restart the sink mid-stream (a crash between polls): nothing is delivered twice.
        stop_sink.set()
        sink_thread.join(30)
        sink, stop_sink, sink_thread = start_sink()
        for n, inv in enumerate(ids[:10], start=1):
            if inv != bad:
                edit_price(conn, inv, f"{200 + n}.25")
        edit_price(conn, bad, "555.55")  # v3 of the dead-lettered invoice: parked, not posted out of order
        wait_until(lambda: all(books.latest[i].version == 2 for n, i in enumerate(ids[:10]) if i != bad), 90,
                   "edits delivered")
        wait_until(lambda: len(ledger.dead_letters("rec")) >= 2, 60, "later version parked")

    dead = ledger.dead_letters("rec")
    assert [(d["invoice_number"], d["version"], d["status"]) for d in dead] == [
        ("INV-0005", 2, "open"), ("INV-0005", 3, "parked")]
    assert dead[0]["error_class"] == "permanent" and "CustomerRef" in dead[0]["reason"]
    assert books.latest[bad].version == 1, "the parked invoice stays at its last good version"
    assert all(times == 1 for times in books.deliveries.values()), f"double postings: {books.deliveries}"
    assert books.deliveries[(ids[6], 1)] == 1  # INV-0007 v1 got through after two 503s, once
    # Offsets live in the ledger and cover everything consumed.
    offsets = ledger.offsets("rec", config.kafka.canonical_topic)
    assert sum(offsets.values()) > 0

    # dlq retry: the newest dead-lettered version is delivered and the invoice unparked.
    books.fail_permanently.clear()
    from daemon.canonical import decode_invoice_event

    newest = decode_invoice_event(bytes(ledger.dead_letter_row(dead[-1]["id"])["event"]))
    outcome = deliver_event_now(sink, newest)
    assert isinstance(outcome, tuple)
    ledger.save_document("rec", newest.number, newest.invoice_id, outcome[0])
    assert ledger.resolve_dead_letters("rec", bad, "retried") == 2
    assert books.latest[bad].version == 3 and books.latest[bad].computed.total == Decimal("590.27")

    stop_sink.set()
    stop_fold.set()
    sink_thread.join(30)
    ledger.close()


def test_each_location_routes_to_its_own_target(shop):
    """Multi-location: every event carries its location, and a target with ``locations`` only gets those."""
    main = TargetConfig(name="main-books", platform="quickbooks-online", locations=["MAIN"])
    north = TargetConfig(name="north-books", platform="quickbooks-online", locations=["NORTH"])
    config = shop.app_config()
    ledger = Ledger(shop.ledger_dsn)
    ledger.ensure_schema()
    runtime = DaemonRuntime(ledger, load_secret_key(None))
    books = {"main-books": RecordingBooks(), "north-books": RecordingBooks()}
    stop = threading.Event()
    threads = [threading.Thread(target=FoldRunner(config, stop, transactional_id=f"{shop.name}-fold").run, daemon=True)]
    for target in (main, north):
        connector = RecordingConnector(target, runtime, books[target.name])
        threads.append(threading.Thread(target=SinkWorker(config, target, ledger, runtime, stop, connector=connector).run,
                                        daemon=True))
    for t in threads:
        t.start()
    with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        seed(conn)
        conn.execute("INSERT INTO locations (id, code, name) VALUES (2, 'NORTH', 'Northside')")
        ids = [new_invoice(conn, n, "10.00") for n in range(1, 9)]
        north_ids = ids[::2]
        conn.execute("UPDATE invoices SET location_id=2 WHERE id = ANY(%s)", (north_ids,))
    main_ids = [i for i in ids if i not in north_ids]
    wait_until(lambda: set(books["north-books"].latest) == set(north_ids)
               and set(main_ids) <= set(books["main-books"].latest), 90, "both targets fed")
    stop.set()
    for t in threads:
        t.join(30)
    assert set(books["north-books"].latest) == set(north_ids)
    assert all(e.location.code == "NORTH" for e in books["north-books"].latest.values())
    # The MAIN target never receives an event located at NORTH (it may have posted a moved invoice's
    # first version while it was still at MAIN).
    assert all(e.location.code == "MAIN" for e in books["main-books"].latest.values())
    ledger.close()
