"""The shop workload generator: realistic auto-electrical jobs written into the shop database.

Every operation is ONE source transaction that also keeps the invoice's stored subtotal, tax total and
total equal to its lines (tax per line and component = money(amount × rate)), as shop software does.
Jobs: diagnostics, alternator or starter replacement with a core charge, batteries with a disposal fee,
wiring repairs, ECU programming; labour hours × rate, parts with part numbers, shop-supplies fee. Then
edits after issue, deposits before the invoice exists, partial and full payments, reversals, voids,
refunds and core returns. The demo, the tests and the benchmarks use it.

    ledgerwire generate --dsn postgresql://… --count 500 --rate 20 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import structlog
from pydantic import BaseModel

from daemon.canonical import money

log = structlog.get_logger(__name__)

SHOP_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "source" / "shop.sql"

LOCATIONS = [("MAIN", "Main St Auto Electric", "America/Chicago", "USD", ["STATE", "COUNTY"]),
             ("NORTH", "Northside Starters & Alternators", "America/Vancouver", "USD", ["GST", "PST"])]
TAX_RATES = [("STATE", "State sales tax 6.25%", "0.06250", "TX"), ("COUNTY", "County tax 1%", "0.01000", "TX-TRAVIS"),
             ("GST", "GST 5%", "0.05000", "CA"), ("PST", "PST 7%", "0.07000", "CA-BC")]
FIRST = ["Dana", "Luis", "Priya", "Sam", "Jordan", "Mei", "Tomasz", "Aisha", "Colin", "Rosa", "Ken", "Ivy"]
LAST = ["Whitfield", "Ortega", "Nair", "Kowalski", "Brooks", "Chen", "Dubois", "Haddad", "Murphy", "Silva"]
FLEETS = ["Lone Star Couriers", "Harbor Plumbing Co", "Cascade Towing", "Metro Taxi Fleet", "GreenLeaf Landscaping"]
VEHICLES = [(2016, "Ford", "F-150"), (2012, "Chevrolet", "Silverado"), (2019, "Toyota", "Tacoma"),
            (2015, "Honda", "Accord"), (2018, "Ram", "ProMaster"), (2011, "Nissan", "Altima"), (2020, "Ford", "Transit")]
LABOUR_RATE = Decimal("135.00")

# (job description, [(kind, part_number, description, qty, unit price)]) — prices are the shop's list.
JOBS: list[tuple[str, list[tuple[str, str | None, str, str, str]]]] = [
    ("Battery light on / no charge", [
        ("labour", None, "Charging system diagnosis", "1.0", "135.00"),
        ("part", "ALT-140R", "Alternator, remanufactured 140A", "1", "289.95"),
        ("core_charge", "ALT-CORE", "Alternator core deposit", "1", "45.00"),
        ("labour", None, "Replace alternator", "1.5", "135.00"),
        ("fee", None, "Shop supplies", "1", "12.50")]),
    ("Cranks slow / no start", [
        ("labour", None, "Starting system diagnosis", "0.8", "135.00"),
        ("part", "STR-2280", "Starter motor, new", "1", "214.40"),
        ("core_charge", "STR-CORE", "Starter core deposit", "1", "35.00"),
        ("labour", None, "Replace starter", "2.1", "135.00"),
        ("fee", None, "Shop supplies", "1", "12.50")]),
    ("Battery replacement", [
        ("part", "BAT-H6-AGM", "Battery, H6 AGM 760CCA", "1", "219.99"),
        ("fee", None, "Battery disposal fee", "1", "5.00"),
        ("labour", None, "Battery test and replace, reset BMS", "0.5", "135.00")]),
    ("Intermittent lighting fault", [
        ("labour", None, "Electrical diagnosis, wiring trace", "2.0", "135.00"),
        ("part", "WIR-16GA-25", "Wire 16ga, 25ft", "1", "18.75"),
        ("part", "CON-WP-4", "Weatherpack connector kit", "2", "9.4500"),
        ("labour", None, "Wiring harness repair", "1.25", "135.00")]),
    ("ECU programming after replacement", [
        ("labour", None, "Module programming / relearn", "1.0", "165.00"),
        ("sublet", None, "Dealer key programming (sublet)", "1", "95.00"),
        ("fee", None, "Shop supplies", "1", "12.50")]),
]


class ExpectedInvoice(BaseModel):
    number: str
    status: str
    location: str
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    paid: Decimal
    payment_count: int
    line_count: int


def apply_schema(conn: psycopg.Connection) -> None:
    conn.execute(SHOP_SCHEMA.read_text())


def seed_reference_data(conn: psycopg.Connection, rng: random.Random, customers: int = 40) -> None:
    """Locations, tax rates, customers (retail and fleet accounts) and vehicles; idempotent."""
    with conn.transaction():
        for code, name, tz, currency, _ in LOCATIONS:
            conn.execute("INSERT INTO locations (code, name, timezone, currency) VALUES (%s,%s,%s,%s) "
                         "ON CONFLICT (code) DO NOTHING", (code, name, tz, currency))
        for code, name, rate, jurisdiction in TAX_RATES:
            conn.execute("INSERT INTO tax_rates (code, name, rate, jurisdiction) VALUES (%s,%s,%s,%s) "
                         "ON CONFLICT (code) DO NOTHING", (code, name, Decimal(rate), jurisdiction))
        existing = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        location_ids = [r[0] for r in conn.execute("SELECT id FROM locations ORDER BY id")]
        for n in range(existing, customers):
            fleet = n % 6 == 0
            name = FLEETS[(n // 6) % len(FLEETS)] + ("" if n < 30 else f" #{n}") if fleet else \
                f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            slug = name.lower().replace(" ", ".").replace("#", "")
            cid = conn.execute(
                "INSERT INTO customers (location_id, name, email, phone, is_fleet, payment_terms_days) "
                "VALUES (%s,%s,%s,%s,%s,%s) RETURNING id",
                (location_ids[n % len(location_ids)], name, f"{slug}{n}@example.com" if rng.random() < 0.8 else None,
                 f"555-{rng.randint(1000, 9999)}" if rng.random() < 0.7 else None, fleet, 30 if fleet else None),
            ).fetchone()[0]
            year, make, model = rng.choice(VEHICLES)
            conn.execute("INSERT INTO vehicles (customer_id, vin, year, make, model, plate) VALUES (%s,%s,%s,%s,%s,%s)",
                         (cid, f"1FT{rng.randint(10**12, 10**13 - 1)}", year, make, model, f"{rng.randint(100, 999)}-XYZ"))


class Workload:
    """Shop operations on one connection; each method is one source transaction."""

    def __init__(self, conn: psycopg.Connection, seed: int = 1, rng: random.Random | None = None) -> None:
        self.conn = conn
        self.rng = rng or random.Random(seed)
        self.today = date(2026, 11, 2)

    # -- helpers --
    def _one(self, sql: str, args: tuple = ()) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return row[0] if row else None

    def _restate(self, invoice_id: int) -> None:
        """Keep the stored totals equal to the lines (as shop software recomputes on save)."""
        rows = self.conn.execute("SELECT quantity, unit_price FROM invoice_lines WHERE invoice_id=%s", (invoice_id,))
        subtotal = sum((money(q * p) for q, p in rows.fetchall()), Decimal("0"))
        tax = self._one("SELECT COALESCE(SUM(amount), 0) FROM line_taxes WHERE invoice_id=%s", (invoice_id,))
        self.conn.execute("UPDATE invoices SET subtotal=%s, tax_total=%s, total=%s, updated_at=now() WHERE id=%s",
                          (subtotal, tax, subtotal + tax, invoice_id))

    def _add_line(self, invoice_id: int, kind: str, part: str | None, description: str, qty: Decimal,
                  price: Decimal, tax_codes: list[str], position: int | None = None) -> int:
        if position is None:
            position = self._one("SELECT COALESCE(MAX(position), 0) + 1 FROM invoice_lines WHERE invoice_id=%s",
                                 (invoice_id,))
        line_id = self._one("INSERT INTO invoice_lines (invoice_id, position, kind, part_number, description, quantity, "
                            "unit_price) VALUES (%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                            (invoice_id, position, kind, part, description, qty, price))
        self._tax_line(invoice_id, line_id, qty * price, kind, tax_codes)
        return line_id

    def _tax_line(self, invoice_id: int, line_id: int, amount: Decimal, kind: str, tax_codes: list[str]) -> None:
        if kind in ("core_charge", "core_return"):
            return  # core deposits are not taxed
        for code in tax_codes:
            rate_id, rate = self.conn.execute("SELECT id, rate FROM tax_rates WHERE code=%s", (code,)).fetchone()
            self.conn.execute("INSERT INTO line_taxes (line_id, invoice_id, tax_rate_id, amount) VALUES (%s,%s,%s,%s)",
                              (line_id, invoice_id, rate_id, money(money(amount) * rate)))

    def _tax_codes(self, invoice_id: int) -> list[str]:
        code = self._one("SELECT l.code FROM invoices i JOIN locations l ON l.id=i.location_id WHERE i.id=%s", (invoice_id,))
        return next(loc[4] for loc in LOCATIONS if loc[0] == code) if code else ["STATE"]

    def _balance(self, invoice_id: int) -> Decimal:
        total = self._one("SELECT total FROM invoices WHERE id=%s", (invoice_id,))
        paid = self._one("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE invoice_id=%s AND status='received'",
                         (invoice_id,))
        return total - paid

    def _pick_invoice(self, where: str) -> int | None:
        ids = [r[0] for r in self.conn.execute(f"SELECT id FROM invoices WHERE {where} ORDER BY id DESC LIMIT 50")]
        return self.rng.choice(ids) if ids else None

    # -- operations --
    def new_job_invoice(self, issue: bool = True) -> int:
        """A job with its invoice (draft, then issued in the same transaction unless ``issue`` is False)."""
        rng = self.rng
        with self.conn.transaction():
            customer_id, location_id, terms = self.conn.execute(
                "SELECT id, location_id, payment_terms_days FROM customers ORDER BY random() LIMIT 1").fetchone()
            vehicle_id = self._one("SELECT id FROM vehicles WHERE customer_id=%s LIMIT 1", (customer_id,))
            seq = self._one("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs")
            description, lines = rng.choice(JOBS)
            job_id = self._one("INSERT INTO jobs (number, location_id, customer_id, vehicle_id, description) "
                               "VALUES (%s,%s,%s,%s,%s) RETURNING id",
                               (f"J-{seq:06d}-{rng.randint(100, 999)}", location_id, customer_id, vehicle_id, description))
            loc_code = self._one("SELECT code FROM locations WHERE id=%s", (location_id,))
            issued = self.today + timedelta(days=rng.randint(0, 25))
            invoice_id = self._one(
                "INSERT INTO invoices (number, job_id, customer_id, location_id, status, issue_date, due_date) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (f"INV-{loc_code}-{job_id:06d}", job_id, customer_id, location_id, "issued" if issue else "draft",
                 issued if issue else None, issued + timedelta(days=terms or 0) if issue else None))
            tax_codes = next(loc[4] for loc in LOCATIONS if loc[0] == loc_code)
            for position, (kind, part, text, qty, price) in enumerate(lines, start=1):
                quantity = Decimal(qty)
                if kind == "labour" and rng.random() < 0.3:
                    quantity += Decimal("0.5")
                self._add_line(invoice_id, kind, part, text, quantity, Decimal(price), tax_codes, position)
            self._restate(invoice_id)
            # A deposit taken on the job earlier is linked when the invoice is issued.
            if issue:
                self.conn.execute("UPDATE payments SET invoice_id=%s WHERE job_id=%s AND invoice_id IS NULL",
                                  (invoice_id, job_id))
        return invoice_id

    def take_deposit(self) -> int | None:
        """A deposit on a new job whose invoice does not exist yet; it is linked when the invoice is issued."""
        with self.conn.transaction():
            customer_id, location_id = self.conn.execute(
                "SELECT id, location_id FROM customers ORDER BY random() LIMIT 1").fetchone()
            seq = self._one("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs")
            job_id = self._one("INSERT INTO jobs (number, location_id, customer_id, description) VALUES "
                               "(%s,%s,%s,'Parts ordered: deposit taken') RETURNING id",
                               (f"J-{seq:06d}-D{self.rng.randint(10, 99)}", location_id, customer_id))
            payment_id = self._one("INSERT INTO payments (job_id, customer_id, amount, method, reference) VALUES "
                                   "(%s,%s,%s,'card',%s) RETURNING id",
                                   (job_id, customer_id, Decimal("100.00"), f"DEP-{job_id}"))
        with self.conn.transaction():
            loc_code = self._one("SELECT code FROM locations WHERE id=%s", (location_id,))
            issued = self.today + timedelta(days=self.rng.randint(0, 25))
            invoice_id = self._one(
                "INSERT INTO invoices (number, job_id, customer_id, location_id, status, issue_date, due_date) "
                "VALUES (%s,%s,%s,%s,'issued',%s,%s) RETURNING id",
                (f"INV-{loc_code}-{job_id:06d}", job_id, customer_id, location_id, issued, issued))
            self._add_line(invoice_id, "part", "BAT-H7-AGM", "Battery, H7 AGM", Decimal("1"), Decimal("249.99"),
                           next(loc[4] for loc in LOCATIONS if loc[0] == loc_code), 1)
            self._restate(invoice_id)
            self.conn.execute("UPDATE payments SET invoice_id=%s WHERE job_id=%s AND invoice_id IS NULL",
                              (invoice_id, job_id))
        return payment_id

    def edit_after_issue(self) -> int | None:
        invoice_id = self._pick_invoice("status='issued'")
        if invoice_id is None:
            return None
        with self.conn.transaction():
            lines = self.conn.execute("SELECT id, kind, quantity, unit_price FROM invoice_lines WHERE invoice_id=%s "
                                      "ORDER BY position", (invoice_id,)).fetchall()
            choice = self.rng.random()
            if choice < 0.35 or not lines:
                self._add_line(invoice_id, "part", "FUS-MINI-10", "Mini fuse assortment", Decimal("1"),
                               Decimal("7.9900"), self._tax_codes(invoice_id))
            elif choice < 0.65:
                line_id, kind, qty, price = self.rng.choice(lines)
                new_qty = qty + Decimal("0.5") if kind == "labour" else qty + 1
                self.conn.execute("UPDATE invoice_lines SET quantity=%s WHERE id=%s", (new_qty, line_id))
                self.conn.execute("DELETE FROM line_taxes WHERE line_id=%s", (line_id,))
                self._tax_line(invoice_id, line_id, new_qty * price, kind, self._tax_codes(invoice_id))
            elif choice < 0.85 and len(lines) > 1:
                self.conn.execute("DELETE FROM invoice_lines WHERE id=%s", (lines[-1][0],))
            else:
                ids = [ln[0] for ln in lines]
                self.rng.shuffle(ids)
                for position, line_id in enumerate(ids, start=1):
                    self.conn.execute("UPDATE invoice_lines SET position=%s WHERE id=%s", (position, line_id))
            self._restate(invoice_id)
            if self._balance(invoice_id) < 0:
                # Never leave an overpaid invoice behind an edit: reverse the newest payment.
                newest = self._one("SELECT id FROM payments WHERE invoice_id=%s AND status='received' ORDER BY id DESC "
                                   "LIMIT 1", (invoice_id,))
                self.conn.execute("UPDATE payments SET status='reversed', reversed_at=now() WHERE id=%s", (newest,))
        return invoice_id

    def _pay(self, invoice_id: int, amount: Decimal) -> int | None:
        if amount <= 0:
            return None
        job_id, customer_id = self.conn.execute("SELECT job_id, customer_id FROM invoices WHERE id=%s",
                                                (invoice_id,)).fetchone()
        method = self.rng.choice(["card", "card", "cash", "check", "eft"])
        return self._one("INSERT INTO payments (job_id, invoice_id, customer_id, amount, method, reference) VALUES "
                         "(%s,%s,%s,%s,%s,%s) RETURNING id",
                         (job_id, invoice_id, customer_id, amount, method, f"R{self.rng.randint(10000, 99999)}"))

    def partial_payment(self) -> int | None:
        invoice_id = self._pick_invoice("status='issued'")
        if invoice_id is None:
            return None
        with self.conn.transaction():
            balance = self._balance(invoice_id)
            return self._pay(invoice_id, money(balance * Decimal(self.rng.choice(["0.25", "0.4", "0.5"]))))

    def full_payment(self) -> int | None:
        invoice_id = self._pick_invoice("status='issued'")
        if invoice_id is None:
            return None
        with self.conn.transaction():
            return self._pay(invoice_id, self._balance(invoice_id))

    def reverse_payment(self) -> int | None:
        with self.conn.transaction():
            payment_id = self._one("SELECT p.id FROM payments p JOIN invoices i ON i.id=p.invoice_id WHERE "
                                   "p.status='received' AND i.status='issued' ORDER BY random() LIMIT 1")
            if payment_id is not None:
                self.conn.execute("UPDATE payments SET status='reversed', reversed_at=now() WHERE id=%s", (payment_id,))
        return payment_id

    def void_invoice(self) -> int | None:
        invoice_id = self._pick_invoice("status='issued'")
        if invoice_id is None:
            return None
        with self.conn.transaction():
            self.conn.execute("UPDATE payments SET status='reversed', reversed_at=now() WHERE invoice_id=%s AND "
                              "status='received'", (invoice_id,))
            self.conn.execute("UPDATE invoices SET status='void', updated_at=now() WHERE id=%s", (invoice_id,))
        return invoice_id

    def refund(self) -> int | None:
        """A returned part refunded: a refunds row linked to the invoice (credit note at the platform)."""
        invoice_id = self._pick_invoice("status='issued'")
        if invoice_id is None:
            return None
        with self.conn.transaction():
            line = self.conn.execute("SELECT l.id, l.quantity, l.unit_price, COALESCE(SUM(t.amount), 0) FROM "
                                     "invoice_lines l LEFT JOIN line_taxes t ON t.line_id=l.id WHERE l.invoice_id=%s AND "
                                     "l.kind='part' GROUP BY l.id LIMIT 1", (invoice_id,)).fetchone()
            if line is None:
                return None
            line_id, qty, price, tax = line
            return self._one("INSERT INTO refunds (invoice_id, line_id, kind, amount, tax_amount, reason) VALUES "
                             "(%s,%s,'return',%s,%s,'Part returned unused') RETURNING id",
                             (invoice_id, line_id, money(qty * price), tax))

    def customer_change(self) -> int | None:
        with self.conn.transaction():
            customer_id = self._one("SELECT id FROM customers ORDER BY random() LIMIT 1")
            self.conn.execute("UPDATE customers SET phone=%s, updated_at=now() WHERE id=%s",
                              (f"555-{self.rng.randint(1000, 9999)}", customer_id))
        return customer_id

    OPERATIONS = {"new": "new_job_invoice", "edit": "edit_after_issue", "deposit": "take_deposit",
                  "partial": "partial_payment", "pay": "full_payment", "reverse": "reverse_payment",
                  "void": "void_invoice", "refund": "refund", "customer": "customer_change"}
    DEFAULT_MIX = {"new": 10, "edit": 3, "deposit": 1, "partial": 3, "pay": 4, "reverse": 1, "void": 1, "refund": 1,
                   "customer": 1}

    def run(self, count: int, rate_per_s: float | None = None, mix: dict[str, int] | None = None,
            stop_after_s: float | None = None) -> dict[str, int]:
        mix = mix or self.DEFAULT_MIX
        names, weights = zip(*mix.items())
        done: Counter[str] = Counter()
        started = time.monotonic()
        for n in range(count):
            if stop_after_s is not None and time.monotonic() - started > stop_after_s:
                break
            name = self.rng.choices(names, weights)[0] if n > 0 else "new"
            result = getattr(self, self.OPERATIONS[name])()
            done[name if result is not None else f"{name}_skipped"] += 1
            if rate_per_s:
                delay = started + (n + 1) / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        return dict(done)


_HISTORY_COLUMNS = {
    "jobs": ("id", "number", "location_id", "customer_id", "vehicle_id", "description", "status", "opened_at",
             "closed_at"),
    "invoices": ("id", "number", "job_id", "customer_id", "location_id", "status", "issue_date", "due_date",
                 "subtotal", "tax_total", "total", "created_at", "updated_at"),
    "invoice_lines": ("id", "invoice_id", "position", "kind", "part_number", "description", "quantity", "unit_price",
                      "created_at"),
    "line_taxes": ("id", "line_id", "invoice_id", "tax_rate_id", "amount"),
    "payments": ("id", "job_id", "invoice_id", "customer_id", "amount", "method", "reference", "received_at", "status",
                 "reversed_at"),
}


def generate_history(conn: psycopg.Connection, invoices: int, years: int = 5, seed: int = 1,
                     batch: int = 10_000, progress: Any = None) -> dict[str, int]:
    """Years of closed history for a shop switching Ledgerwire on: ``invoices`` issued invoices spread over the
    last ``years`` years (the JOBS templates, taxed per location as the live workload does), ~85 % paid in full
    (a tenth of those in two payments), ~10 % still open, ~5 % void; stored totals equal the lines.

    Written with COPY in batches of ``batch`` invoices (one transaction each) with ids taken after the tables'
    current maximum, then the sequences are moved past them, so the live workload can go on afterwards. A
    row-per-statement workload writes ~20 invoices a second; this writes thousands (bench/RESULTS.md §6)."""
    rng = random.Random(seed)
    seed_reference_data(conn, rng)
    customers = conn.execute("SELECT c.id, c.location_id, c.payment_terms_days, l.code, "
                             "(SELECT min(v.id) FROM vehicles v WHERE v.customer_id = c.id) "
                             "FROM customers c JOIN locations l ON l.id = c.location_id ORDER BY c.id").fetchall()
    rates = {code: (rate_id, rate) for rate_id, code, rate in conn.execute("SELECT id, code, rate FROM tax_rates")}
    taxes_of = {code: [rates[c] for c in codes] for code, _, _, _, codes in LOCATIONS}
    next_id = {table: conn.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0]
               for table in _HISTORY_COLUMNS}
    start = date.today() - timedelta(days=365 * years)
    span_days = 365 * years
    counts: Counter[str] = Counter()
    done = 0
    while done < invoices:
        size = min(batch, invoices - done)
        rows: dict[str, list[tuple]] = {table: [] for table in _HISTORY_COLUMNS}
        for n in range(done, done + size):
            customer_id, location_id, terms, loc_code, vehicle_id = customers[rng.randrange(len(customers))]
            issued = start + timedelta(days=n * span_days // invoices)
            opened = datetime.combine(issued, datetime.min.time(), timezone.utc) + timedelta(hours=8)
            job_id, invoice_id = next_id["jobs"], next_id["invoices"]
            next_id["jobs"] += 1
            next_id["invoices"] += 1
            description, template = JOBS[rng.randrange(len(JOBS))]
            rows["jobs"].append((job_id, f"J-H{job_id:07d}", location_id, customer_id, vehicle_id, description,
                                 "closed", opened, opened + timedelta(hours=4)))
            subtotal = tax_total = Decimal("0")
            for position, (kind, part, text, qty, price) in enumerate(template, start=1):
                quantity = Decimal(qty) + (Decimal("0.5") if kind == "labour" and rng.random() < 0.3 else 0)
                unit_price = Decimal(price)
                line_id = next_id["invoice_lines"]
                next_id["invoice_lines"] += 1
                rows["invoice_lines"].append((line_id, invoice_id, position, kind, part, text, quantity, unit_price,
                                              opened))
                amount = money(quantity * unit_price)
                subtotal += amount
                if kind in ("core_charge", "core_return"):
                    continue  # core deposits are not taxed
                for rate_id, rate in taxes_of[loc_code]:
                    tax = money(amount * rate)
                    tax_total += tax
                    rows["line_taxes"].append((next_id["line_taxes"], line_id, invoice_id, rate_id, tax))
                    next_id["line_taxes"] += 1
            total = subtotal + tax_total
            fate = rng.random()
            status = "void" if fate < 0.05 else "issued"
            rows["invoices"].append((invoice_id, f"INV-{loc_code}-H{invoice_id:07d}", job_id, customer_id,
                                     location_id, status, issued, issued + timedelta(days=terms or 0), subtotal,
                                     tax_total, total, opened, opened))
            if status == "issued" and fate >= 0.15:  # paid: in full, a tenth of them in two payments
                parts = [total] if rng.random() >= 0.1 else [money(total * Decimal("0.4")), total - money(total * Decimal("0.4"))]
                for k, amount in enumerate(parts):
                    paid_at = opened + timedelta(days=k * 14 + rng.randint(0, 20))
                    rows["payments"].append((next_id["payments"], job_id, invoice_id, customer_id, amount,
                                             rng.choice(["card", "card", "cash", "check", "eft"]),
                                             f"R{next_id['payments']}", paid_at, "received", None))
                    next_id["payments"] += 1
            counts[status] += 1
        with conn.transaction():
            for table, columns in _HISTORY_COLUMNS.items():
                with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
                counts[f"{table}_rows"] += len(rows[table])
        done += size
        if progress is not None:
            progress(done)
    for table in _HISTORY_COLUMNS:  # the live workload's inserts continue after the history's ids
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    return dict(counts)


def expected_books(conn: psycopg.Connection, invoice_ids: list[int] | None = None) -> dict[str, ExpectedInvoice]:
    rows = conn.execute("""
        SELECT i.number, i.status, l.code, i.subtotal, i.tax_total, i.total,
               COALESCE((SELECT SUM(amount) FROM payments p WHERE p.invoice_id=i.id AND p.status='received'), 0),
               (SELECT count(*) FROM payments p WHERE p.invoice_id=i.id AND p.status='received'),
               (SELECT count(*) FROM invoice_lines x WHERE x.invoice_id=i.id)
        FROM invoices i JOIN locations l ON l.id=i.location_id
        WHERE %s::bigint[] IS NULL OR i.id = ANY(%s::bigint[]) ORDER BY i.id""", (invoice_ids, invoice_ids)).fetchall()
    return {r[0]: ExpectedInvoice(number=r[0], status=r[1], location=r[2], subtotal=r[3], tax_total=r[4], total=r[5],
                                  paid=r[6], payment_count=r[7], line_count=r[8]) for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ledgerwire generate", description="Write a generated shop workload.")
    parser.add_argument("--dsn", required=True, help="the shop database")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=None, help="operations per second (default: as fast as possible)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", default=None, help="weights, e.g. new=5,pay=3,edit=1")
    parser.add_argument("--schema", action="store_true", help="apply the reference schema first")
    parser.add_argument("--history", type=int, metavar="INVOICES", default=None,
                        help="instead of live operations: INVOICES closed invoices with payments over --years, by COPY")
    parser.add_argument("--years", type=int, default=5)
    args = parser.parse_args(argv)
    mix = None
    if args.mix:
        mix = {k: int(v) for k, v in (item.split("=") for item in args.mix.split(","))}
        unknown = set(mix) - set(Workload.OPERATIONS)
        if unknown:
            parser.error(f"unknown operations {sorted(unknown)}; known: {sorted(Workload.OPERATIONS)}")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        if args.schema:
            apply_schema(conn)
        if args.history is not None:
            started = time.monotonic()
            counts = generate_history(conn, args.history, years=args.years, seed=args.seed)
            print(json.dumps({"history": counts, "seconds": round(time.monotonic() - started, 1)}))
            return 0
        seed_reference_data(conn, random.Random(args.seed))
        counts = Workload(conn, seed=args.seed).run(args.count, rate_per_s=args.rate, mix=mix)
    print(json.dumps({"operations": counts}))
    return 0
