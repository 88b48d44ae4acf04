"""Benchmark 4: memory of the fold state against the number of open invoices and transactions in flight.

Builds the fold's mirror in this process from synthetic whole-invoice transactions (5 lines, 5 line
taxes, a payment, a job — what the generator's typical job has), the way the fold holds them (rows applied,
the canonical event built so the last version and hash are kept, the state changelog drained), and prints
the process's RSS at each size, beside the baseline RSS of the same process before any state (Python,
the daemon's imports). Then, with that state held, it buffers source transactions in flight — decoded
from Debezium JSON envelopes, whose END marker has not arrived yet, so the assembler holds them — and
prints the RSS again at each count.

    python bench/memory.py --invoices 100000 --in-flight 1000,10000

``--daemon-idle`` instead measures a real daemon process (``ledgerwire run``) with five targets (``--platforms``:
QuickBooks Online, Xero, Zoho Books, Odoo, QuickBooks Desktop — the five of round 3, so rounds compare; ``all``
for one per registered connector), each against its sandbox (served from this process), on the running stack:
its RSS once /readyz answers 200 and after it has idled for ``--idle-s`` seconds.

    ledgerwire stack up && python bench/memory.py --daemon-idle
    python bench/memory.py --daemon-idle --platforms all
"""

from __future__ import annotations

import argparse
import gc
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.source import fold_runner  # noqa: E402,F401 - the daemon's imports, as in production
from daemon.source.decode import RowChange, SourceInfo, decode_row_change  # noqa: E402
from daemon.source.fold import Mirror, SourceTransaction, TransactionAssembler  # noqa: E402

from fold_throughput import EnvelopeWriter, _dec  # noqa: E402  (bench/ is on sys.path as the script's dir)


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


def in_flight_envelopes(first_invoice: int, count: int) -> list[tuple[str, bytes]]:
    """Debezium JSON envelopes (with schemas) of ``count`` whole-invoice transactions, as the fold reads them."""
    w = EnvelopeWriter("shop")
    ts = "2026-11-24T22:25:49.827947Z"
    out = []
    for n in range(count):
        inv = first_invoice + n
        xid, lsn = 10_000_000 + inv, 1_000_000_000 + inv * 100
        order = 0

        def emit(table: str, after: dict) -> None:
            nonlocal order
            order += 1
            out.append((table, w.row(table, after, xid, lsn + order, order, order)))

        emit("jobs", {"id": inv, "number": f"J-{inv:07d}", "location_id": 1, "customer_id": 1, "vehicle_id": None,
                      "description": "Alternator replacement", "status": "open", "opened_at": ts, "closed_at": None})
        emit("invoices", {"id": inv, "number": f"INV-{inv:07d}", "job_id": inv, "customer_id": 1, "location_id": 1,
                          "status": "issued", "issue_date": 20416, "due_date": 20446, "currency": "USD",
                          "tax_inclusive": False, "subtotal": _dec("512.45", 2), "tax_total": _dec("32.03", 2),
                          "total": _dec("544.48", 2), "notes": None, "created_at": ts, "updated_at": ts})
        for k in range(5):
            emit("invoice_lines", {"id": inv * 10 + k, "invoice_id": inv, "position": k + 1, "kind": "part",
                                   "part_number": None, "description": "part", "quantity": _dec("1.000", 3),
                                   "unit_price": _dec("102.4900", 4), "created_at": ts})
            emit("line_taxes", {"id": inv * 10 + k, "line_id": inv * 10 + k, "invoice_id": inv, "tax_rate_id": 1,
                                "amount": _dec("6.41", 2)})
        emit("payments", {"id": inv, "job_id": inv, "invoice_id": inv, "customer_id": 1, "amount": _dec("100.00", 2),
                          "method": "card", "reference": None, "received_at": ts, "status": "received",
                          "reversed_at": None})
    return out


def process_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


FIVE_TARGETS = "quickbooks-online,xero,zoho-books,odoo,quickbooks-desktop"


def serve_targets(platforms: list[str], workdir: Path, relaxations: tuple[str, ...] = ()) -> tuple[list[dict], list]:
    """One target per platform, each against its sandbox served from this process (credentials seeded into
    ``workdir``); settings named in ``relaxations`` (a sandbox's relaxed test limits) are dropped."""
    import importlib
    import json

    from connectors.registry import PLATFORM_PACKAGES

    targets, servers = [], []
    for platform in platforms:
        sandbox = importlib.import_module(PLATFORM_PACKAGES[platform]).Sandbox()
        server = sandbox.serve()
        servers.append(server)
        credentials = workdir / f"{platform}.json"
        credentials.write_text(json.dumps(sandbox.seed_credentials()))
        target = sandbox.target_config(platform.replace("-", "_"), server.url) | {"credentials_file": str(credentials)}
        if relaxations:
            target["settings"] = {k: v for k, v in target.get("settings", {}).items() if k not in relaxations}
            target.pop("rate_limit", None)
        targets.append(target)
    return targets, servers


def daemon_idle(idle_s: float, platforms: str = FIVE_TARGETS) -> None:
    """RSS of one daemon process with a target per platform named (``all``: per registered connector), ready
    and idle."""
    import os
    import subprocess
    import tempfile
    import time
    import uuid

    import httpx
    import psycopg
    import yaml
    from cryptography.fernet import Fernet

    from connectors.registry import known_platforms
    from connectors.sandbox_kit import free_port
    from daemon.localstack import stack

    cfg = stack.StackConfig()
    name = f"mem{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_ledger"')
    workdir = Path(tempfile.mkdtemp())
    chosen = known_platforms() if platforms == "all" else [p for p in platforms.split(",") if p]
    targets, servers = serve_targets(chosen, workdir)
    http_port = free_port()
    (workdir / "secret.key").write_bytes(Fernet.generate_key())
    (workdir / "secret.key").chmod(0o600)  # the daemon refuses a key others can read (exit 2)
    config = {"kafka": {"bootstrap_servers": cfg.bootstrap, "canonical_topic": f"{name}.invoices",
                        "fold_state_topic": f"{name}.fold-state", "dead_letter_topic": f"{name}.dlq",
                        "fold_group": f"{name}-fold", "sink_group_prefix": f"{name}-sink-"},
              "postgres": {"dsn": cfg.dsn(f"{name}_ledger")}, "source": {"topic_prefix": name},
              "http": {"port": http_port}, "secret_key_file": str(workdir / "secret.key"), "targets": targets}
    (workdir / "ledgerwire.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(workdir / "ledgerwire.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}")
            time.sleep(0.5)  # polling /readyz with a deadline
        else:
            raise RuntimeError("the daemon never became ready")
        ready = process_rss_mib(process.pid)
        time.sleep(idle_s)  # the measurement itself: what an idle daemon holds after a while
        idle = process_rss_mib(process.pid)
        threads = len(os.listdir(f"/proc/{process.pid}/task"))
        print(f"daemon with {len(targets)} targets ({', '.join(chosen)}): RSS {ready:,.0f} MiB when ready, "
              f"{idle:,.0f} MiB after {idle_s:.0f} s idle; {threads} threads")
    finally:
        process.terminate()
        process.wait(60)
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon-idle", action="store_true", help="measure an idle daemon with five targets instead")
    parser.add_argument("--platforms", default=FIVE_TARGETS, help="--daemon-idle's targets, comma-separated, or all")
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--in-flight", default="1000,10000",
                        help="comma-separated counts of source transactions buffered in flight (13 row events each)")
    args = parser.parse_args()
    if args.daemon_idle:
        daemon_idle(args.idle_s, args.platforms)
        return
    gc.collect()
    baseline = rss_mib()
    mirror = Mirror()
    mirror.rows["locations"][1] = {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC", "currency": "USD"}
    mirror.rows["tax_rates"][1] = {"id": 1, "code": "STATE", "name": "State", "rate": Decimal("0.06250")}
    for c in range(1, 501):
        mirror.rows["customers"][c] = {"id": c, "name": f"Customer {c}", "email": None, "phone": None,
                                       "is_fleet": True, "payment_terms_days": 30, "tax_exempt": False,
                                       "billing_address": None}
    marks = sorted({args.invoices // 10, args.invoices // 2, args.invoices})
    print(f"baseline RSS (imports, empty state): {baseline:8.0f} MiB")
    done = 0
    for mark in marks:
        while done < mark:
            done += 1
            rows = invoice_rows(done)
            tx = SourceTransaction(str(done), [change(t, r, n) for n, (t, r) in enumerate(rows)], "complete")
            for invoice_id in mirror.apply(tx):
                mirror.build_event(invoice_id, tx)  # keeps the last version and content hash, as the fold does
            mirror.end_batch()
            for _ in mirror.changelog():  # the runner drains the dirty set every transaction
                pass
        gc.collect()
        print(f"{done:>8,} open invoices ({sum(mirror.row_counts().values()):>9,} rows): {rss_mib():8.0f} MiB RSS "
              f"({(rss_mib() - baseline) * 1024 / done:5.1f} KiB per invoice)   target: < 300 MiB at 100,000")
    state_rss = rss_mib()
    assembler = TransactionAssembler(max_buffered_events=10**9)
    held = 0
    for mark in sorted(int(x) for x in args.in_flight.split(",") if x):
        for first in range(done + 1 + held, done + 1 + mark, 100):  # a few envelopes at a time: only what is held counts
            envelopes = in_flight_envelopes(first, min(100, done + 1 + mark - first))
            for n, (table, value) in enumerate(envelopes):
                assembler.add_change(decode_row_change(f"shop.public.{table}", 0, first * 100 + n, value))
        held = mark
        gc.collect()
        print(f"{done:>8,} open invoices + {held:>6,} transactions in flight ({assembler.buffered_events:>7,} row "
              f"events buffered): {rss_mib():8.0f} MiB RSS ({(rss_mib() - state_rss) * 1024 / held:5.1f} KiB per "
              f"transaction in flight)")


if __name__ == "__main__":
    main()
