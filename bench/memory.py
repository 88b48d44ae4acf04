"""Benchmark 4: memory of the fold state against the number of open invoices.

Builds the fold's mirror in this process from synthetic whole-invoice transactions (5 lines, 5 line
taxes, a payment, a job — what the generator's typical job has), the way the fold holds them, and prints
the process's RSS at each size, beside the baseline RSS of the same process before any state (Python,
the daemon's imports).

    python bench/memory.py --invoices 100000
"""

from __future__ import annotations

import argparse
import gc
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import fold_runner  # noqa: E402,F401 - the daemon's imports, as in production
from daemon.decode import RowChange, SourceInfo  # noqa: E402
from daemon.fold import Mirror, SourceTransaction  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def change(table: str, row: dict, n: int) -> RowChange:
    return RowChange(table=table, op="c", before=None, after=row,
                     source=SourceInfo(db="shop", table=table, ts_ms=0, snapshot="false"),
                     transaction=None, topic=table, partition=0, offset=n)


def invoice_rows(i: int) -> list[tuple[str, dict]]:
    ts = datetime(2026, 11, 24, tzinfo=timezone.utc)
    rows = [("jobs", {"id": i, "number": f"J-{i:07d}", "location_id": 1, "customer_id": 1 + i % 500, "vehicle_id": None,
                      "description": "Alternator replacement", "status": "open", "opened_at": ts, "closed_at": None}),
            ("invoices", {"id": i, "number": f"INV-MAIN-{i:07d}", "job_id": i, "customer_id": 1 + i % 500,
                          "location_id": 1, "status": "issued", "issue_date": date(2026, 11, 24), "due_date": None,
                          "currency": "USD", "tax_inclusive": False, "subtotal": Decimal("512.45"),
                          "tax_total": Decimal("32.03"), "total": Decimal("544.48"), "notes": None,
                          "created_at": ts, "updated_at": ts})]
    for k in range(5):
        line_id = i * 10 + k
        rows.append(("invoice_lines", {"id": line_id, "invoice_id": i, "position": k + 1, "kind": "part",
                                       "part_number": f"ALT-{k}", "description": "Alternator, reman 140A",
                                       "quantity": Decimal("1.000"), "unit_price": Decimal("102.4900"), "created_at": ts}))
        rows.append(("line_taxes", {"id": line_id, "line_id": line_id, "invoice_id": i, "tax_rate_id": 1,
                                    "amount": Decimal("6.41")}))
    rows.append(("payments", {"id": i, "job_id": i, "invoice_id": i, "customer_id": 1, "amount": Decimal("100.00"),
                              "method": "card", "reference": None, "received_at": ts, "status": "received",
                              "reversed_at": None}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    args = parser.parse_args()
    gc.collect()
    baseline = rss_mib()
    mirror = Mirror()
    mirror.rows["locations"][1] = {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC", "currency": "USD"}
    marks = sorted({args.invoices // 10, args.invoices // 2, args.invoices})
    print(f"baseline RSS (imports, empty state): {baseline:8.0f} MiB")
    done = 0
    for mark in marks:
        while done < mark:
            done += 1
            rows = invoice_rows(done)
            mirror.apply(SourceTransaction(str(done), [change(t, r, n) for n, (t, r) in enumerate(rows)], "complete"))
            mirror.changelog()  # the runner drains the dirty set every transaction
        gc.collect()
        print(f"{done:>8,} open invoices ({sum(mirror.row_counts().values()):>9,} rows): {rss_mib():8.0f} MiB RSS "
              f"({(rss_mib() - baseline) * 1024 / done:5.1f} KiB per invoice)   target: < 300 MiB at 100,000")


if __name__ == "__main__":
    main()
