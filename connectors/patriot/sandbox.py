"""Patriot's side of the export, for the demo and the tests: it reads the export directory as Patriot's import
wizards and the bookkeeper would, independently of the writer (nothing here imports ``mapping`` or ``client``).

* The import layouts and limits are read at run time from the official notes, ``$LEDGERWIRE_SPECS_DIR/patriot/
  SOURCE.md`` (its import table, the rows-per-file and field-length limits, US addresses only): a customer or
  bank file that breaks them is an ``ImportRefused``, as Patriot's wizard would refuse it.
* ``booked_invoices()`` replays the numbered exports in order: each invoice's last worksheet state (what the
  bookkeeper keyed in), and the payments the bank files deposited net of their reversals, matched to the
  invoice named in each transaction's description. A deposit written twice shows as a payment counted twice.
* ``problems()`` lists what a bookkeeper would trip over: an export number missing or used twice, a period
  exported twice, a worksheet whose money rows differ from its bank files.

There is no Patriot API to emulate; ``serve()`` serves a read-only JSON listing of the export directory.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.sandbox_kit import BookedInvoice, RunningServer

US_STATES = set("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
                "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP".split())
_FILE = re.compile(r"^(?P<number>\d{5})-(?P<period>[0-9T]+)-(?P<kind>customers|bank|worksheet)(?:-(?P<part>\d{2}))?"
                   r"\.(?P<ext>csv|html)$")
_PAYMENT = re.compile(r"^(?P<what>Payment|Reversal of payment) P(?P<id>\d+) for invoice (?P<number>.+)$")
_REFUND = re.compile(r"^Refund R(?P<id>\d+)(?P<cancelled> cancelled)? for invoice (?P<number>.+)$")


class ImportRefused(ValueError):
    """What Patriot's import wizard would refuse in a file."""


def specs_dir() -> Path:
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs"))


class Layouts:
    """Patriot's import layouts as SOURCE.md documents them (parsed from its table and its limit sentences)."""

    def __init__(self, source: Path | None = None) -> None:
        text = (source or specs_dir() / "patriot" / "SOURCE.md").read_text()
        self.fields: dict[str, list[str]] = {}
        self.required_bank: list[str] = []
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and cells[0] in ("Customers", "Bank / credit-card transactions"):
                self.fields[cells[0]] = [re.sub(r"\s*\(.*\)$", "", f).strip() for f in cells[2].split(",")]
                if cells[0].startswith("Bank"):
                    self.required_bank = [f.strip() for f in cells[3].split(",")]
        self.max_rows = int(re.search(r"max (\d+) rows\s+per\s+file", text).group(1))
        self.max_name = int(re.search(r"business name ≤ (\d+) characters", text).group(1))
        self.max_address_line = int(re.search(r"≤ (\d+) characters per address\s+line", text).group(1))
        self.us_only = "Only USA-based addresses" in text
        if set(self.fields) != {"Customers", "Bank / credit-card transactions"}:
            raise ValueError(f"SOURCE.md's import table not understood: {sorted(self.fields)}")

    def _read(self, path: Path, kind: str) -> list[dict[str, str]]:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            raise ImportRefused(f"{path.name}: empty file (the first row must be the headers)")
        header, body = rows[0], rows[1:]
        unknown = [h for h in header if h not in self.fields[kind]]
        if unknown:
            raise ImportRefused(f"{path.name}: columns not in Patriot's {kind} import: {unknown}")
        if len(body) > self.max_rows:
            raise ImportRefused(f"{path.name}: {len(body)} rows, Patriot imports at most {self.max_rows} per file")
        return [dict(zip(header, row, strict=True)) for row in body]

    def customers(self, path: Path) -> list[dict[str, str]]:
        rows = self._read(path, "Customers")
        for n, row in enumerate(rows, 2):
            where = f"{path.name} row {n}"
            if not (row.get("Business Name") or (row.get("First Name") and row.get("Last Name"))):
                raise ImportRefused(f"{where}: Business Name or First Name + Last Name required")
            if len(row.get("Business Name", "")) > self.max_name:
                raise ImportRefused(f"{where}: Business Name over {self.max_name} characters")
            for column in ("Address 1", "Address 2"):
                if len(row.get(column, "")) > self.max_address_line:
                    raise ImportRefused(f"{where}: {column} over {self.max_address_line} characters")
            if self.us_only and row.get("State") and (row["State"] not in US_STATES
                                                      or not re.fullmatch(r"\d{5}(-\d{4})?", row.get("Zip", ""))):
                raise ImportRefused(f"{where}: only USA-based addresses are accepted")
            if re.search(r"[,;\s]", row.get("Email", "")):
                raise ImportRefused(f"{where}: one e-mail address per row")
            if re.search(r"(?i)(x|ext)\.?\s*\d+\s*$", row.get("Phone", "")):
                raise ImportRefused(f"{where}: phone numbers without extensions")
        return rows

    def bank(self, path: Path) -> list[tuple[datetime, str, Decimal]]:
        rows = self._read(path, "Bank / credit-card transactions")
        missing = [c for c in self.required_bank if rows and c not in rows[0]]
        if missing:
            raise ImportRefused(f"{path.name}: required columns missing: {missing}")
        out = []
        for n, row in enumerate(rows, 2):
            try:
                amount = Decimal(row["Amount"])
                posted = datetime.strptime(row["Post Date"], "%m/%d/%Y")
            except (KeyError, InvalidOperation, ValueError) as exc:
                raise ImportRefused(f"{path.name} row {n}: Post Date, Description and Amount required ({exc})") from exc
            if not row.get("Description") or amount.as_tuple().exponent < -2:
                raise ImportRefused(f"{path.name} row {n}: a description and an amount in cents are required")
            out.append((posted, row["Description"], amount))
        return out


class Sandbox:
    """An export directory and Patriot's reading of it."""

    def __init__(self, directory: Path | None = None, period_minutes: int = 1, settle_seconds: float = 2.0) -> None:
        self._owned = directory is None
        self.root = Path(directory or tempfile.mkdtemp(prefix="patriot-export-"))
        self.period_minutes, self.settle_seconds = period_minutes, settle_seconds
        self.targets: list[str] = []
        self.layouts = Layouts()
        self.app = Starlette(routes=[Route("/", self._listing, methods=["GET"])])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port, name="patriot-export").start()

    def seed_credentials(self) -> dict[str, Any]:
        # Nothing to authenticate (the files go to a directory); the sink pauses a target with an empty document.
        return {"kind": "file export", "secret": None}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        self.targets.append(name)
        return {"name": name, "platform": "patriot",
                "settings": {"export_dir": str(self.root), "settle_seconds": self.settle_seconds, "poll_seconds": 1},
                "schedule": {"mode": "interval", "every_minutes": self.period_minutes}}

    def rate_limit_breaches(self) -> int:
        return 0  # no API, no limits

    def remove(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    async def _listing(self, request: Any) -> JSONResponse:
        return JSONResponse({"exports": {t: sorted(p.name for p in (self.root / t).glob("*.*")) for t in self._dirs()},
                             "books": [b.model_dump(mode="json") for b in self.booked_invoices()]})

    # -- reading the exports --
    def _dirs(self) -> list[str]:
        return sorted({*self.targets, *(p.name for p in self.root.iterdir() if p.is_dir())})

    def exports(self, target: str) -> dict[int, dict[str, Any]]:
        """Export number → its period and files (by kind), read from the directory's file names."""
        out: dict[int, dict[str, Any]] = {}
        for path in sorted((self.root / target).glob("*.*")) if (self.root / target).is_dir() else []:
            match = _FILE.match(path.name)
            if match is None:
                continue  # a temporary file the writer has not renamed yet
            entry = out.setdefault(int(match["number"]), {"periods": set(), "files": defaultdict(list)})
            entry["periods"].add(match["period"])
            entry["files"][f"{match['kind']}.{match['ext']}"].append(path)
        return out

    def problems(self, target: str) -> list[str]:
        exports, found = self.exports(target), []
        periods: dict[str, list[int]] = defaultdict(list)
        for number, entry in exports.items():
            for period in entry["periods"]:
                periods[period].append(number)
            if len(entry["periods"]) != 1:
                found.append(f"export {number} holds several periods: {sorted(entry['periods'])}")
            if not entry["files"]["worksheet.csv"] or not entry["files"]["worksheet.html"]:
                found.append(f"export {number} has no worksheet")
            sheet_money = sorted((r["Amount"], r["Action"]) for r in self._worksheet(entry) if r["Amount"])
            bank = sorted((f"{a:.2f}", d) for p in entry["files"]["bank.csv"] for _, d, a in self.layouts.bank(p))
            if [a for a, _ in sheet_money] != [a for a, _ in bank]:
                found.append(f"export {number}: worksheet money rows differ from its bank files")
        found += [f"period {p} exported {len(ns)} times: {ns}" for p, ns in periods.items() if len(ns) > 1]
        if exports and sorted(exports) != list(range(1, max(exports) + 1)):
            found.append(f"export numbers not consecutive: {sorted(exports)}")
        return found

    @staticmethod
    def _worksheet(entry: dict[str, Any]) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for path in entry["files"]["worksheet.csv"]:
            with open(path, newline="", encoding="utf-8") as handle:
                rows += list(csv.DictReader(handle))
        return rows

    def customers(self, target: str) -> list[dict[str, str]]:
        return [row for _, entry in sorted(self.exports(target).items())
                for path in entry["files"]["customers.csv"] for row in self.layouts.customers(path)]

    def bank_transactions(self, target: str) -> list[tuple[datetime, str, Decimal]]:
        return [row for _, entry in sorted(self.exports(target).items())
                for path in entry["files"]["bank.csv"] for row in self.layouts.bank(path)]

    def booked_invoices(self) -> list[BookedInvoice]:
        out: list[BookedInvoice] = []
        for target in self._dirs():
            invoices: dict[str, dict[str, str]] = {}
            for _, entry in sorted(self.exports(target).items()):
                for row in self._worksheet(entry):
                    if row["Action"] in ("new invoice", "changed invoice", "void invoice"):
                        invoices[row["Shop invoice id"]] = row
            deposited: dict[str, Decimal] = defaultdict(Decimal)  # payment id -> net amount in the bank
            payment_invoice: dict[str, str] = {}
            for _, description, amount in self.bank_transactions(target):
                match = _PAYMENT.match(description)
                if match:
                    deposited[match["id"]] += amount
                    payment_invoice[match["id"]] = match["number"]
                elif not _REFUND.match(description):
                    raise ImportRefused(f"bank transaction not understood: {description!r}")
            for invoice_id, row in invoices.items():
                paid = [amount for pid, amount in deposited.items() if payment_invoice[pid] == row["Invoice"] and amount]
                out.append(BookedInvoice(
                    number=row["Invoice"], external_id=f"{target}:{invoice_id}", voided=row["Action"] == "void invoice",
                    total=Decimal(row["Total"]), tax_total=Decimal(row["Tax"]), line_count=int(row["Line count"] or 0),
                    payments_applied=sum(paid, Decimal(0)), payment_count=len(paid)))
        return out
