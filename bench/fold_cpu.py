"""Fold CPU per row event, by phase, in this process (no Kafka): where benchmark 1's fold time goes.

Runs the fold's own code on Debezium JSON envelopes (schemas included) of whole-invoice transactions
(a job, an invoice, 5 lines, 5 line taxes, a payment — 13 row events — plus BEGIN/END markers), exactly as
``FoldRunner`` calls it, and prints the process CPU time of each phase per row event. Kafka's own work
(consume, produce, transactions) is what ``bench/fold_throughput.py`` adds on top.

    python bench/fold_cpu.py --invoices 3000 [--profile FILE]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402

from daemon.source import decode as decode_module  # noqa: E402
from daemon.source.decode import decode_row_change, decode_tx_marker  # noqa: E402
from daemon.source.fold import Mirror, TransactionAssembler  # noqa: E402

from fold_throughput import EnvelopeWriter  # noqa: E402
from memory import in_flight_envelopes  # noqa: E402


def records(invoices: int) -> list[tuple[str, bytes]]:
    writer = EnvelopeWriter("shop")
    rows = in_flight_envelopes(1, invoices)
    out = []
    for i in range(invoices):
        xid, lsn = 10_000_001 + i, 1_000_000_000 + (1 + i) * 100
        out.append(("shop.transaction", writer.marker("BEGIN", xid, lsn, None)))
        counts: dict[str, int] = {}
        for table, value in rows[i * 13:(i + 1) * 13]:
            out.append((f"shop.public.{table}", value))
            counts[table] = counts.get(table, 0) + 1
        out.append(("shop.transaction", writer.marker("END", xid, lsn + 99, counts)))
    return out


def run(recs: list[tuple[str, bytes]], phases: dict[str, float]) -> None:
    clock = time.process_time
    mirror = Mirror()
    mirror.rows["locations"][1] = {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC"}
    mirror.rows["customers"][1] = {"id": 1, "name": "Fleet", "is_fleet": True, "payment_terms_days": 30}
    mirror.rows["tax_rates"][1] = {"id": 1, "code": "STATE", "name": "State", "rate": "0.06250"}
    assembler = TransactionAssembler()
    positions: dict[tuple[str, int], int] = {}
    offsets: dict[str, int] = {}
    for n, (topic, value) in enumerate(recs):
        t0 = clock()
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        positions[(topic, 0)] = offset + 1
        if topic == "shop.transaction":
            assembler.add_marker(decode_tx_marker(topic, 0, offset, value))
        else:
            assembler.add_change(DECODE(topic, 0, offset, value))
        phases["decode + buffer"] += clock() - t0
        if n % 2000 != 1999 and n != len(recs) - 1:
            continue  # the runner folds once per consumed batch (up to 2,000 records)
        t0 = clock()
        ready = assembler.ready(positions)
        phases["assemble (ready)"] += clock() - t0
        for tx in ready:
            t0 = clock()
            touched = mirror.apply(tx)
            t1 = clock()
            for built in (mirror.build_encoded(i, tx) for i in sorted(touched)):
                if built is not None:
                    built.key
            t2 = clock()
            mirror.end_batch()
            phases["apply rows"] += t1 - t0
            phases["build event (validate, Avro encode, content hash)"] += t2 - t1
        t0 = clock()
        for key, _ in mirror.changelog():
            key.encode()
        assembler.committable(positions)
        phases["changelog + committable"] += clock() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=3000)
    parser.add_argument("--profile", metavar="FILE", help="also cProfile one run into FILE")
    parser.add_argument("--gc-default", action="store_true",
                        help="keep Python's garbage-collector setting (the fold runs with fold_runner.tune_gc)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    recs = records(args.invoices)
    events = args.invoices * 13
    run(recs[: 13 * 15], {k: 0.0 for k in PHASES})  # warm-up: codecs, caches
    tune_gc = getattr(importlib.import_module("daemon.source.fold_runner"), "tune_gc", None)
    if tune_gc is not None and not args.gc_default:  # as FoldRunner.run does (absent in trees before it)
        tune_gc()
    phases = {k: 0.0 for k in PHASES}
    run(recs, phases)
    total = sum(phases.values())
    for name, seconds in phases.items():
        print(f"{name:<40} {seconds / events * 1e6:6.1f} us per row event  ({seconds / total:4.0%})")
    print(f"{'total':<40} {total / events * 1e6:6.1f} us per row event  "
          f"(= {events / total:,.0f} row events/s of fold CPU, before any Kafka work)")
    if args.profile:
        import cProfile

        cProfile.runctx("run(recs, {k: 0.0 for k in PHASES})", globals(), {"recs": recs, "run": run,
                                                                         "PHASES": PHASES}, args.profile)


DECODE = getattr(decode_module, "decode_change", decode_row_change)  # the runner's decode (plain since round 4)
PHASES = ("decode + buffer", "assemble (ready)", "apply rows", "build event (validate, Avro encode, content hash)",
          "changelog + committable")

if __name__ == "__main__":
    main()
