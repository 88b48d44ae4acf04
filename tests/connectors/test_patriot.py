"""Patriot export connector: the files read back by a parser written here from SOURCE.md's layouts (it imports
neither the connector's writer nor its sandbox), exactly-once files across crashes and redeliveries, the
200-row and 50-character limits, and the same in PostgreSQL (the daemon's store)."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import DocumentState
from connectors.patriot import CONNECTOR, Sandbox
from connectors.patriot.sandbox import ImportRefused, Layouts, specs_dir
from connectors.testing import MemoryEntities, MemoryRuntime, deliver, invoice_event, line, next_version, payment
from daemon.canonical import Customer, Refund
from daemon.config import TargetConfig
from tests.pg_only import pg_cluster  # noqa: F401  (fixture)

T0 = datetime(2026, 11, 29, 18, 0, 30, tzinfo=timezone.utc)  # 30 s after an interval window opened


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def build(tmp_path: Path, runtime=None, clock=None, **settings):
    target = TargetConfig(name="books", platform="patriot", schedule={"mode": "interval", "every_minutes": 60},
                          settings={"export_dir": str(tmp_path), "settle_seconds": 10, **settings})
    return CONNECTOR(target, runtime or MemoryRuntime(), clock=clock or Clock(T0))


# --- an independent reader of the files (from SOURCE.md's layouts, not the writer) -----------------------------

def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def documented_fields(import_name: str) -> list[str]:
    for line in (specs_dir() / "patriot" / "SOURCE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == import_name:
            return [re.sub(r"\s*\(.*\)$", "", f).strip() for f in cells[2].split(",")]
    raise AssertionError(f"{import_name} not in SOURCE.md")


class Books:
    """What the bookkeeper ends up with after importing every file and keying in every worksheet row."""

    def __init__(self, directory: Path) -> None:
        self.files = sorted(p.name for p in directory.glob("*") if not p.name.startswith("."))
        self.invoices: dict[str, dict[str, str]] = {}
        self.bank: list[tuple[str, str, Decimal]] = []
        self.customers: list[dict[str, str]] = []
        self.worksheet: list[dict[str, str]] = []
        bank_fields, customer_fields = documented_fields("Bank / credit-card transactions"), documented_fields("Customers")
        for name in self.files:
            path = directory / name
            if "-bank-" in name:
                header, rows = read_csv(path)
                assert set(header) <= set(bank_fields) and {"Post Date", "Description", "Amount"} <= set(header)
                assert 0 < len(rows) <= 200
                self.bank += [(r[header.index("Post Date")], r[header.index("Description")],
                               Decimal(r[header.index("Amount")])) for r in rows]
            elif "-customers-" in name:
                header, rows = read_csv(path)
                assert set(header) <= set(customer_fields) and 0 < len(rows) <= 200
                self.customers += [dict(zip(header, r)) for r in rows]
            elif name.endswith("-worksheet.csv"):
                header, rows = read_csv(path)
                for r in rows:
                    row = dict(zip(header, r))
                    self.worksheet.append(row)
                    if row["Action"].endswith(" invoice"):
                        self.invoices[row["Invoice"]] = row

    def net_by_payment(self) -> dict[str, Decimal]:
        net: dict[str, Decimal] = defaultdict(Decimal)
        for _, description, amount in self.bank:
            match = re.match(r"(?:Payment|Reversal of payment) (P\d+) ", description)
            if match:
                net[match.group(1)] += amount
        return dict(net)


# --- the scenario ------------------------------------------------------------------------------------------

def test_a_day_of_changes_reads_back_and_adds_up(tmp_path):
    connector, entities, clock = build(tmp_path), MemoryEntities(), Clock(T0)
    connector.clock = clock
    first = invoice_event(1001, payments=[payment(1, "100.00")])
    deliver(connector, entities, first)
    deliver(connector, entities, invoice_event(1002, status="draft"))  # a draft: nothing goes out
    assert connector.export_due(T0) == [1]
    # Next period: edited, a second payment, the first reversed, a refund; another invoice voided after export.
    deliver(connector, entities, invoice_event(1003, payments=[payment(3, "50.00")]))
    clock.now = T0 + timedelta(hours=1)
    assert connector.export_due(clock.now) == [2]
    edited = next_version(first, lines=[line(1, "part", "Starter, new", "1", "310.00", part_number="STR-1")],
                          payments=[payment(1, "100.00", status="reversed"), payment(2, "250.00")],
                          refunds=[Refund(id=9, kind="refund", amount=Decimal("20.00"), created_at=T0)])
    deliver(connector, entities, edited)
    deliver(connector, entities, next_version(invoice_event(1003, payments=[payment(3, "50.00")]), status="void"))
    clock.now = T0 + timedelta(hours=2)
    assert connector.export_due(clock.now) == [3]

    books = Books(tmp_path / "books")
    assert books.invoices["INV-001001"]["Action"] == "changed invoice"
    assert Decimal(books.invoices["INV-001001"]["Total"]) == edited.stored.total
    assert books.invoices["INV-001003"]["Action"] == "void invoice"
    assert "INV-001002" not in books.invoices
    assert books.net_by_payment() == {"P1": Decimal("0.00"), "P2": Decimal("250.00"), "P3": Decimal("50.00")}
    refunds = [a for _, d, a in books.bank if d.startswith("Refund R9 ")]
    assert refunds == [Decimal("-20.00")]
    # Every money movement is on the worksheet once, with the same amount as in the bank file.
    assert sorted(Decimal(r["Amount"]) for r in books.worksheet if r["Amount"]) == sorted(a for _, _, a in books.bank)
    assert [c["First Name"] for c in books.customers] == ["Dana"]  # one customer import row, ever
    assert all(name.startswith(("00001-", "00002-", "00003-")) for name in books.files)
    assert any(name.endswith("-worksheet.html") for name in books.files)
    # Every file the connector wrote passes Patriot's documented import layout (SOURCE.md, read by the sandbox).
    layouts = Layouts()
    assert [len(layouts.bank(p)) for p in sorted((tmp_path / "books").glob("*-bank-*.csv"))] == [1, 1, 3]
    assert [len(layouts.customers(p)) for p in (tmp_path / "books").glob("*-customers-*.csv")] == [1]


def test_redelivery_and_a_crash_before_the_sinks_commit_write_nothing_twice(tmp_path):
    connector, entities = build(tmp_path), MemoryEntities()
    event = invoice_event(2001, payments=[payment(5, "75.00")])
    doc = deliver(connector, entities, event)
    # The sink crashed before committing: the same version again, with the old document state.
    deliver(connector, entities, event, DocumentState(), attempt=2)
    assert connector.export_due(T0) == [1]
    # Redelivered after the export was sealed and written (a rewind): nothing new is recorded.
    deliver(connector, entities, event, doc, attempt=2)
    assert connector.export_due(T0 + timedelta(hours=1)) == [2]
    books = Books(tmp_path / "books")
    assert books.net_by_payment() == {"P5": Decimal("75.00")}
    assert [r["Action"] for r in books.worksheet if r["Invoice"] == "INV-002001"] == [
        "new invoice", "deposit"]


def test_a_crash_after_the_seal_rewrites_the_same_files_and_the_period_is_never_exported_again(tmp_path):
    connector = build(tmp_path)
    deliver(connector, MemoryEntities(), invoice_event(3001, payments=[payment(6, "10.00")]))
    period = connector.period_due(T0)
    number = connector.store.seal("books", period, T0)  # sealed, then the process died before writing
    assert number == 1
    again = build(tmp_path, clock=Clock(T0))
    again.store = connector.store  # the same ledger after the restart
    assert again.export_due(T0) == [1]
    first = {p.name: p.read_bytes() for p in (tmp_path / "books").iterdir()}
    # Died after the renames, before the ledger said "written": the next run writes the same bytes, same names.
    again.store.exports["books"][1] = (period, T0, False)
    assert again.export_due(T0 + timedelta(seconds=5)) == [1]
    assert {p.name: p.read_bytes() for p in (tmp_path / "books").iterdir()} == first
    assert again.store.seal("books", period, T0) is None  # the ledger refuses a second export of the period


def test_changes_recorded_after_the_seal_go_to_the_next_period_never_lost(tmp_path):
    connector, entities = build(tmp_path), MemoryEntities()
    event = invoice_event(4001)
    deliver(connector, entities, event)
    connector.export_due(T0)
    deliver(connector, entities, next_version(event, payments=[payment(7, "30.00")]))
    assert connector.export_due(T0 + timedelta(seconds=30)) == []  # same period: already exported
    assert connector.export_due(T0 + timedelta(hours=1)) == [2]
    assert Books(tmp_path / "books").net_by_payment() == {"P7": Decimal("30.00")}


def test_two_hundred_rows_per_file_split_into_numbered_parts(tmp_path):
    connector, entities = build(tmp_path), MemoryEntities()
    for n in range(230):
        deliver(connector, entities, invoice_event(5000 + n, customer=Customer(id=n, name=f"Fleet {n}", is_fleet=True),
                                                   payments=[payment(10_000 + n, "1.00")]))
    connector.export_due(T0)
    directory = tmp_path / "books"
    parts = sorted(p.name for p in directory.glob("00001-*-bank-*.csv"))
    assert [len(read_csv(directory / p)[1]) for p in parts] == [200, 30]
    assert [len(read_csv(p)[1]) for p in sorted(directory.glob("00001-*-customers-*.csv"))] == [200, 30]
    assert len(Books(directory).bank) == 230


def test_long_names_and_foreign_addresses_are_flagged_never_silently_cut(tmp_path):
    name = "Tri-County Municipal Fleet Services and Heavy Equipment Maintenance Division"
    long_street = "Building 7, 12345 North Industrial Parkway Extension Road"
    customers = [Customer(id=1, name=name, is_fleet=True, billing_address=f"{long_street}\nSpringfield, IL 62701"),
                 Customer(id=2, name="Marie Tremblay", billing_address="55 Rue Principale\nMontréal, QC H2X 1Y4",
                          phone="555-0199 ext 12", email="marie@example.ca; m.t@example.ca")]
    connector = build(tmp_path)
    for n, customer in enumerate(customers):
        deliver(connector, MemoryEntities(), invoice_event(6000 + n, customer=customer))
    connector.export_due(T0)
    books = Books(tmp_path / "books")
    fleet, marie = books.customers
    assert len(fleet["Business Name"]) == 50 and f"Full business name: {name}" in fleet["Notes"]
    assert len(fleet["Address 1"]) == 50 and long_street in fleet["Notes"]
    assert (fleet["City"], fleet["State"], fleet["Zip"]) == ("Springfield", "IL", "62701")
    assert marie["Address 1"] == marie["State"] == "" and "Montréal, QC H2X 1Y4" in marie["Notes"]
    assert marie["Phone"] == "555-0199" and "Phone extension: 12" in marie["Notes"]
    assert marie["Email"] == "marie@example.ca" and "m.t@example.ca" in marie["Notes"]
    flags = {r["Customer"]: r["Flags"] for r in books.worksheet if r["Action"] == "add customer"}
    assert "Business Name over 50 characters" in flags[name] and "not a US address" in flags["Marie Tremblay"]
    Sandbox(tmp_path).layouts.customers(next((tmp_path / "books").glob("*-customers-01.csv")))  # Patriot takes it


def test_a_changed_customer_is_a_worksheet_row_not_a_second_import(tmp_path):
    connector, entities = build(tmp_path), MemoryEntities()
    deliver(connector, entities, invoice_event(7001))
    connector.export_due(T0)
    moved = Customer(id=77, name="Dana Whitfield", email="dana@example.com", phone="555-0102")
    deliver(connector, entities, invoice_event(7002, customer=moved))
    connector.export_due(T0 + timedelta(hours=1))
    books = Books(tmp_path / "books")
    assert len(books.customers) == 1
    assert [r["Action"] for r in books.worksheet if r["Customer"] == "Dana Whitfield" and "customer" in r["Action"]] == [
        "add customer", "update customer"]


def test_preview_shows_the_rows_and_records_nothing(tmp_path):
    connector = build(tmp_path)
    event = invoice_event(8001, payments=[payment(8, "5.00")])
    preview = connector.preview(event, DocumentState())
    assert [p["body"]["action"] for p in preview] == ["add customer", "new invoice", "deposit"]
    assert connector.export_due(T0) == [1]
    assert Books(tmp_path / "books").worksheet == []  # the preview left nothing pending


# --- the sandbox's checks: bad files are refused as Patriot's import wizard would ------------------------------

@pytest.mark.parametrize("header,row,reason", [
    (["Business Name", "Shoe Size"], ["Acme", "9"], "columns not in"),
    (["First Name", "Email"], ["Dana", "dana@example.com"], "Business Name or First Name"),
    (["Business Name"], ["x" * 51], "over 50"),
    (["Business Name", "Address 1"], ["Acme", "y" * 51], "Address 1 over 50"),
    (["Business Name", "City", "State", "Zip"], ["Acme", "Toronto", "ON", "M5V 2T6"], "USA-based"),
    (["Business Name", "Email"], ["Acme", "a@example.com, b@example.com"], "one e-mail"),
    (["Business Name", "Phone"], ["Acme", "555-0101 x23"], "extensions"),
])
def test_customer_files_breaking_the_documented_layout_are_refused(tmp_path, header, row, reason):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, row])
    with pytest.raises(ImportRefused, match=reason):
        Layouts().customers(path)


@pytest.mark.parametrize("rows,reason", [
    ([["Post Date", "Description", "Amount"]] + [["11/29/2026", "x", "1.00"]] * 201, "at most 200"),
    ([["Post Date", "Amount"], ["11/29/2026", "1.00"]], "Description"),
    ([["Post Date", "Description", "Amount"], ["2026-11-29", "x", "1.00"]], "required"),
    ([["Post Date", "Description", "Amount"], ["11/29/2026", "x", "1.005"]], "cents"),
])
def test_bank_files_breaking_the_documented_layout_are_refused(tmp_path, rows, reason):
    path = tmp_path / "b.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(ImportRefused, match=reason):
        Layouts().bank(path)


def test_the_sandbox_reads_the_exports_as_booked_invoices(tmp_path):
    sandbox = Sandbox(tmp_path)
    connector = build(tmp_path)
    deliver(connector, MemoryEntities(), invoice_event(9001, payments=[payment(11, "40.00"), payment(12, "2.50")]))
    connector.export_due(T0)
    [booked] = sandbox.booked_invoices()
    assert (booked.number, booked.voided, booked.payments_applied, booked.payment_count) == (
        "INV-009001", False, Decimal("42.50"), 2)
    assert sandbox.problems("books") == []
    # A bank file written twice under another number is caught: the deposits count twice, the period repeats.
    for path in list((tmp_path / "books").glob("00001-*")):
        (path.parent / path.name.replace("00001-", "00002-")).write_bytes(path.read_bytes())
    assert sandbox.booked_invoices()[0].payments_applied == Decimal("85.00")
    assert any("exported 2 times" in p for p in sandbox.problems("books"))


# --- the daemon's store: PostgreSQL ------------------------------------------------------------------------------

@pytest.fixture
def pg_runtime(pg_cluster):  # noqa: F811
    import uuid

    import psycopg
    from psycopg_pool import ConnectionPool

    name = f"patriot_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    pool = ConnectionPool(pg_cluster.dsn(name), min_size=1, max_size=4, open=True)
    with pool.connection() as conn:
        conn.execute(CONNECTOR.ledger_ddl())

    class Runtime(MemoryRuntime):
        pg_pool = pool

    yield Runtime()
    pool.close()


def test_postgres_store_exports_once_per_period_across_connectors(tmp_path, pg_runtime):
    # Two daemon processes (two connectors on one ledger), each with its background exporter slowed right down.
    first = build(tmp_path, runtime=pg_runtime, poll_seconds=3600)
    second = build(tmp_path, runtime=pg_runtime, poll_seconds=3600)
    try:
        entities = MemoryEntities()
        event = invoice_event(10_001, payments=[payment(20, "60.00")])
        deliver(first, entities, event)
        deliver(second, entities, event, attempt=2)  # redelivered to the other process
        numbers = first.export_due(T0 + timedelta(hours=1)) + second.export_due(T0 + timedelta(hours=1))
        assert numbers == [1]
        deliver(second, entities, next_version(event, payments=[payment(20, "60.00", status="reversed")]))
        assert second.export_due(T0 + timedelta(hours=2)) == [2]
        books = Books(tmp_path / "books")
        assert books.net_by_payment() == {"P20": Decimal("0.00")}
        assert [r["Action"] for r in books.worksheet if r["Action"] in ("deposit", "reversal")] == ["deposit", "reversal"]
        remote = first.find_invoice(event)
        assert remote is not None and remote.total == event.stored.total and "export 1" in remote.status
    finally:
        first.close()
        second.close()
