"""Patriot has no API: its "client" is the export directory. One sealed export becomes its files here.

Rendering is a pure function of the sealed export (no clock, no state), so writing an export again after a
crash produces the same bytes under the same names. Each file is written atomically: a temporary file in the
same directory, fsync, rename over the final name, fsync of the directory.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path

from connectors.patriot.mapping import BANK_COLUMNS, CUSTOMER_COLUMNS, WORKSHEET_COLUMNS, Row
from connectors.patriot.store import Export

# What the worksheet asks the bookkeeper to do, per action (keyed in Patriot's UI: Accounting > Receivables).
INSTRUCTIONS = {
    "new invoice": "Create the invoice (Receivables > Invoices) with these lines and totals",
    "changed invoice": "Edit the invoice to these lines and totals",
    "void invoice": "Void the invoice",
    "deposit": "Record the payment on the invoice; match the bank-file deposit to it",
    "reversal": "Remove the payment from the invoice; match the bank-file withdrawal to it",
    "refund": "Record the refund (credit) against the invoice; match the bank-file withdrawal to it",
    "refund cancelled": "Remove the refund from the invoice; match the bank-file deposit to it",
    "add customer": "Import the customer file (Customer List > Import Customers)",
    "update customer": "Edit the customer's details by hand (an import would add a second customer)",
}


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _parts(rows: list[list[str]], size: int) -> list[list[list[str]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _worksheet_row(export: Export, row: Row) -> list[str]:
    f = row.facts
    customer = f.get("_name") or f.get("customer", "")
    action = f["action"]
    return [str(export.number), export.period, action, f.get("invoice", ""), f.get("invoice_id", ""), f.get("date", ""),
            customer, f.get("status", ""), f.get("subtotal", ""), f.get("tax", ""), f.get("total", ""),
            f.get("amount", ""), " ".join(x for x in (f.get("id", ""), f.get("method", ""), f.get("reference", "")) if x),
            f.get("line_count", ""), f.get("lines", "") or f.get("Notes", ""), f.get("flags") or f.get("_flags", "")]


def render(export: Export, rows_per_file: int) -> dict[str, bytes]:
    """File name → content for one sealed export."""
    stem = f"{export.number:05d}-{export.period}"
    files: dict[str, bytes] = {}
    customers = [[r.facts[c] for c in CUSTOMER_COLUMNS] for r in export.rows if r.file == "customers"]
    for part, chunk in enumerate(_parts(customers, rows_per_file), 1):
        files[f"{stem}-customers-{part:02d}.csv"] = _csv(CUSTOMER_COLUMNS, chunk)
    bank = [[r.facts["date"], r.facts["description"], r.facts["amount"]] for r in export.rows if r.file == "bank"]
    for part, chunk in enumerate(_parts(bank, rows_per_file), 1):
        files[f"{stem}-bank-{part:02d}.csv"] = _csv(BANK_COLUMNS, chunk)
    sheet = [_worksheet_row(export, r) for r in export.rows]
    files[f"{stem}-worksheet.csv"] = _csv(WORKSHEET_COLUMNS, sheet)
    files[f"{stem}-worksheet.html"] = _html(export, sheet, sorted(n for n in files if not n.endswith("worksheet.csv")))
    return files


def _html(export: Export, sheet: list[list[str]], imports: list[str]) -> bytes:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in ("What to do", *WORKSHEET_COLUMNS[2:]))
    body = "".join("<tr>" + f"<td>{e(INSTRUCTIONS[r[2]])}</td>" + "".join(f"<td>{e(c)}</td>" for c in r[2:]) + "</tr>"
                   for r in sheet) or f"<tr><td colspan='{len(WORKSHEET_COLUMNS) - 1}'>Nothing to key in.</td></tr>"
    files = "".join(f"<li>{e(n)}</li>" for n in imports if "-worksheet" not in n) or "<li>none</li>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Patriot worksheet {export.number}</title>"
            "<style>body{font:11px sans-serif}table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;"
            "padding:3px;vertical-align:top}@media print{@page{size:landscape}}</style></head><body>"
            f"<h1>Accounts receivable worksheet no. {export.number}, period {e(export.period)}</h1>"
            f"<p>Sealed {e(export.sealed_at.isoformat())}. Import these files first:</p><ul>{files}</ul>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>").encode("utf-8")


def write_atomically(directory: Path, name: str, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    temporary = directory / f".{name}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def write_export(directory: Path, export: Export, rows_per_file: int) -> list[str]:
    files = render(export, rows_per_file)
    for name, data in files.items():
        write_atomically(directory, name, data)
    return sorted(files)
