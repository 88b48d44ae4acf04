"""Benchmark 1: fold throughput against the practical ceiling of a Python consumer.

Writes N Debezium-shaped row events (raw envelopes with schemas, precise decimals, transaction blocks
and BEGIN/END markers — what the real connector writes) for whole invoice transactions into fresh topics
on the local stack's Kafka, then measures, in the same process setup:

* baseline: a bare confluent-kafka consumer that reads every record and decodes it (``daemon.source.decode``);
* fold: ``FoldRunner`` — decode, reassemble transactions, fold, Avro-encode, produce canonical events and
  the state changelog, and commit offsets, all inside Kafka transactions. It runs in a process of its own, its
  output counted from this one, as the peer's is (``--fold-in-thread``: in a thread of this process, beside the
  counting consumer, which takes the GIL from it — the measurement before round 6).

* peer (``--peer``): the same transaction fold written with quixstreams (``bench/fold_peer_quixstreams.py``:
  exactly-once, tuned; what it does and does not guarantee is said there), in its own process, counted on
  its output topic the same way.

Prints row events/s for each and the ratios; ``--repeat K`` alternates K rounds (baseline, fold[, peer]) on the
same workload and prints the medians (the machine's other work moves single runs by ±15 %; only ratios of the
same minutes mean anything). Usage (stack running: `ledgerwire stack up`; the peer needs the ``bench`` extra):
    python bench/fold_throughput.py --events 100000 --repeat 3 --peer
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from daemon.config import AppConfig  # noqa: E402
from daemon.source import decode as decode_module  # noqa: E402
from daemon.source.decode import decode_row_change, decode_tx_marker  # noqa: E402
from daemon.source.fold import TABLES  # noqa: E402
from daemon.source.fold_runner import FoldRunner  # noqa: E402
from daemon.kafka_util import consume_available, ensure_topics  # noqa: E402


def _dec(value: str, scale: int) -> str:
    unscaled = int(Decimal(value).scaleb(scale))
    return base64.b64encode(unscaled.to_bytes(max(1, (unscaled.bit_length() + 8) // 8), "big", signed=True)).decode()


def _field(name: str, kind: str) -> dict:
    if kind.startswith("dec"):
        return {"type": "bytes", "optional": False, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                "parameters": {"scale": kind[3:], "connect.decimal.precision": "12"}, "field": name}
    if kind == "ts":
        return {"type": "string", "optional": False, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": name}
    if kind == "date":
        return {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1, "field": name}
    return {"type": kind, "optional": True, "field": name}


COLUMNS = {
    "locations": [("id", "int64"), ("code", "string"), ("name", "string"), ("timezone", "string"), ("currency", "string")],
    "customers": [("id", "int64"), ("location_id", "int64"), ("name", "string"), ("email", "string"), ("phone", "string"),
                  ("is_fleet", "boolean"), ("payment_terms_days", "int32"), ("tax_exempt", "boolean"),
                  ("billing_address", "string"), ("updated_at", "ts")],
    "tax_rates": [("id", "int64"), ("code", "string"), ("name", "string"), ("rate", "dec5"), ("jurisdiction", "string"),
                  ("active", "boolean")],
    "jobs": [("id", "int64"), ("number", "string"), ("location_id", "int64"), ("customer_id", "int64"),
             ("vehicle_id", "int64"), ("description", "string"), ("status", "string"), ("opened_at", "ts"),
             ("closed_at", "ts")],
    "invoices": [("id", "int64"), ("number", "string"), ("job_id", "int64"), ("customer_id", "int64"),
                 ("location_id", "int64"), ("status", "string"), ("issue_date", "date"), ("due_date", "date"),
                 ("currency", "string"), ("tax_inclusive", "boolean"), ("subtotal", "dec2"), ("tax_total", "dec2"),
                 ("total", "dec2"), ("notes", "string"), ("created_at", "ts"), ("updated_at", "ts")],
    "invoice_lines": [("id", "int64"), ("invoice_id", "int64"), ("position", "int32"), ("kind", "string"),
                      ("part_number", "string"), ("description", "string"), ("quantity", "dec3"),
                      ("unit_price", "dec4"), ("created_at", "ts")],
    "line_taxes": [("id", "int64"), ("line_id", "int64"), ("invoice_id", "int64"), ("tax_rate_id", "int64"),
                   ("amount", "dec2")],
    "payments": [("id", "int64"), ("job_id", "int64"), ("invoice_id", "int64"), ("customer_id", "int64"),
                 ("amount", "dec2"), ("method", "string"), ("reference", "string"), ("received_at", "ts"),
                 ("status", "string"), ("reversed_at", "ts")],
}


class EnvelopeWriter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.schemas = {}
        for table, cols in COLUMNS.items():
            fields = [_field(n, k) for n, k in cols]
            self.schemas[table] = {"type": "struct", "optional": False, "name": f"{prefix}.public.{table}.Envelope", "fields": [
                {"type": "struct", "fields": fields, "optional": True, "field": "before"},
                {"type": "struct", "fields": fields, "optional": True, "field": "after"},
                {"type": "struct", "fields": [], "optional": False, "field": "source"},
                {"type": "struct", "fields": [], "optional": True, "field": "transaction"},
                {"type": "string", "optional": False, "field": "op"}]}

    def row(self, table: str, after: dict, xid: int, lsn: int, order: int, coll_order: int) -> bytes:
        return json.dumps({"schema": self.schemas[table], "payload": {
            "before": None, "after": after, "op": "c", "ts_ms": 1795559150014,
            "source": {"version": "3.3.1.Final", "connector": "postgresql", "name": self.prefix, "ts_ms": 1795559149827,
                       "snapshot": "false", "db": "shop", "sequence": f'[null,"{lsn}"]', "schema": "public",
                       "table": table, "txId": xid, "lsn": lsn, "xmin": None},
            "transaction": {"id": f"{xid}:{lsn}", "total_order": order, "data_collection_order": coll_order}}}).encode()

    @staticmethod
    def marker(status: str, xid: int, lsn: int, counts: dict[str, int] | None) -> bytes:
        return json.dumps({"schema": {"type": "struct", "fields": []}, "payload": {
            "status": status, "id": f"{xid}:{lsn}", "event_count": sum(counts.values()) if counts else None,
            "data_collections": [{"data_collection": f"public.{k}", "event_count": v} for k, v in counts.items()]
            if counts else None, "ts_ms": 1795559149827}}).encode()


def write_workload(bootstrap: str, prefix: str, target_events: int) -> tuple[int, int]:
    """Write whole-invoice transactions until ``target_events`` row events; return (events, invoices)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})
    w = EnvelopeWriter(prefix)
    ts = "2026-11-24T22:25:49.827947Z"

    def send(table, after, xid, lsn, order, counts):
        counts[table] = counts.get(table, 0) + 1
        producer.produce(f"{prefix}.public.{table}", key=json.dumps({"id": after["id"]}).encode(),
                         value=w.row(table, after, xid, lsn, order, counts[table]))

    xid, lsn, written = 1000, 10_000, 0
    counts: dict[str, int] = {}
    producer.produce(f"{prefix}.transaction", value=w.marker("BEGIN", xid, lsn, None))
    send("locations", {"id": 1, "code": "MAIN", "name": "Main", "timezone": "UTC", "currency": "USD"}, xid, lsn, 1, counts)
    send("customers", {"id": 1, "location_id": 1, "name": "Fleet", "email": None, "phone": None, "is_fleet": True,
                       "payment_terms_days": 30, "tax_exempt": False, "billing_address": None, "updated_at": ts},
         xid, lsn, 2, counts)
    send("tax_rates", {"id": 1, "code": "STATE", "name": "State", "rate": _dec("0.0625", 5), "jurisdiction": None,
                       "active": True}, xid, lsn, 3, counts)
    producer.produce(f"{prefix}.transaction", value=w.marker("END", xid, lsn + 5, counts))
    written += 3
    inv = line_id = tax_id = pay_id = 0
    while written < target_events:
        xid += 1
        lsn += 100
        counts = {}
        order = 0
        inv += 1
        producer.produce(f"{prefix}.transaction", value=w.marker("BEGIN", xid, lsn, None))

        def emit(table, after):
            nonlocal order
            order += 1
            send(table, after, xid, lsn + order, order, counts)

        emit("jobs", {"id": inv, "number": f"J-{inv:07d}", "location_id": 1, "customer_id": 1, "vehicle_id": None,
                      "description": "Alternator replacement", "status": "open", "opened_at": ts, "closed_at": None})
        emit("invoices", {"id": inv, "number": f"INV-{inv:07d}", "job_id": inv, "customer_id": 1, "location_id": 1,
                          "status": "issued", "issue_date": 20416, "due_date": 20446, "currency": "USD",
                          "tax_inclusive": False, "subtotal": _dec("512.45", 2), "tax_total": _dec("32.03", 2),
                          "total": _dec("544.48", 2), "notes": None, "created_at": ts, "updated_at": ts})
        for pos, (kind, qty, price) in enumerate((("labour", "1.500", "120.0000"), ("part", "1.000", "289.9500"),
                                                  ("core_charge", "1.000", "45.0000"), ("fee", "1.000", "12.5000"),
                                                  ("labour", "0.500", "120.0000")), start=1):
            line_id += 1
            emit("invoice_lines", {"id": line_id, "invoice_id": inv, "position": pos, "kind": kind, "part_number": None,
                                   "description": kind, "quantity": _dec(qty, 3), "unit_price": _dec(price, 4),
                                   "created_at": ts})
            tax_id += 1
            emit("line_taxes", {"id": tax_id, "line_id": line_id, "invoice_id": inv, "tax_rate_id": 1,
                                "amount": _dec("6.41", 2)})
        pay_id += 1
        emit("payments", {"id": pay_id, "job_id": inv, "invoice_id": inv, "customer_id": 1, "amount": _dec("100.00", 2),
                          "method": "card", "reference": None, "received_at": ts, "status": "received",
                          "reversed_at": None})
        producer.produce(f"{prefix}.transaction", value=w.marker("END", xid, lsn + 99, counts))
        written += order
        producer.poll(0)
    producer.flush(120)
    return written, inv


# The fold's garbage-collector setting (absent in trees before it: "before" runs keep Python's defaults).
GC_TUNE = getattr(importlib.import_module("daemon.source.fold_runner"), "tune_gc", None)
# The fold's own decode since round 4 (plain Change objects; absent in trees before it). The baseline keeps
# decode_row_change — the ceiling as defined since round 1 — and, where this exists, is also run with it.
FOLD_DECODE = getattr(decode_module, "decode_change", None)
# The fold releases a transaction whose rows have not all arrived after this wait (30 s by default). On a loaded
# machine the biggest topic (invoice lines) is read more than 30 s behind the small ones, and the fold then
# releases thousands of transactions without their lines and applies the lines later as stragglers: a different
# workload from the baseline's and the peer's (the peer has no such wait). The bench waits longer (round 4).
INCOMPLETE_TIMEOUT_S = 600.0


def baseline(bootstrap: str, prefix: str, expected: int, run: int = 0,
             decode=decode_row_change) -> tuple[float, float]:
    """(row events/s, CPU seconds of this process per row event)."""
    topics = [f"{prefix}.public.{t}" for t in TABLES] + [f"{prefix}.transaction"]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-baseline-{run}-{decode.__name__}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed", "fetch.wait.max.ms": 50})
    consumer.subscribe(topics)
    seen = 0
    started = None
    cpu_started = time.process_time()
    tx_topic = f"{prefix}.transaction"
    # Consumed as the fold consumes (``consume_available``). A plain consume(2000, timeout=1.0) here once
    # waited up to a second for a last batch that never filled, understating this baseline.
    while seen < expected:
        for m in consume_available(consumer, 2000, 0.1):
            if m.error():
                continue
            started = started or time.perf_counter()
            if m.topic() == tx_topic:
                decode_tx_marker(m.topic(), m.partition(), m.offset(), m.value())
            else:
                decode(m.topic(), m.partition(), m.offset(), m.value())
                seen += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    consumer.close()
    return seen / elapsed, cpu / seen


def fold(bootstrap: str, prefix: str, expected_invoices: int, events: int, profile: str | None = None,
         run: int = 0) -> tuple[float, float]:
    """(row events/s, CPU seconds of this process per row event: the fold thread, librdkafka's threads and
    the output counter)."""
    out = f"{prefix}.r{run}"
    config = _fold_config(bootstrap, prefix, run)
    ensure_topics(config)
    stop = threading.Event()
    runner = FoldRunner(config, stop, transactional_id=f"{out}-fold")
    counter = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{out}-count", "auto.offset.reset": "earliest",
                        "isolation.level": "read_committed"})
    counter.subscribe([config.kafka.canonical_topic])
    cpu: list[float] = []

    def target() -> None:
        started_cpu = time.thread_time()
        if profile:  # profile the fold's own thread (cProfile sees only the thread it runs in)
            import cProfile

            profiler = cProfile.Profile()
            profiler.runcall(runner.run)
            profiler.dump_stats(profile)
        else:
            runner.run()
        cpu.append(time.thread_time() - started_cpu)

    cpu_started = time.process_time()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    runner.ready.wait(60)  # measured from partition assignment (as the baseline is from its first record)
    started = time.perf_counter()
    produced = 0
    while produced < expected_invoices:  # a short timeout: consume waits for a full batch or the timeout
        produced += sum(1 for m in counter.consume(num_messages=5000, timeout=0.02) if not m.error())
    elapsed = time.perf_counter() - started
    process_cpu = time.process_time() - cpu_started
    stop.set()
    thread.join(30)
    counter.close()
    if cpu:
        print(f"fold thread: {cpu[0]:.1f} s CPU over {elapsed:.1f} s wall (from start-up to stop; the rest of the "
              f"wall is waiting on Kafka, librdkafka's threads, the broker and the GIL on 2 shared cores)")
    return events / elapsed, process_cpu / events


def _fold_config(bootstrap: str, prefix: str, run: int) -> AppConfig:
    out = f"{prefix}.r{run}"  # each run folds into fresh output topics, from the same source topics
    return AppConfig.model_validate({
        "kafka": {"bootstrap_servers": bootstrap, "canonical_topic": f"{out}.invoices",
                  "fold_state_topic": f"{out}.fold-state", "dead_letter_topic": f"{out}.dlq",
                  "fold_group": f"{out}-fold"},
        "source": {"topic_prefix": prefix, "incomplete_transaction_timeout_s": INCOMPLETE_TIMEOUT_S}})


def serve_fold(bootstrap: str, prefix: str, run: int, started_file: str) -> None:
    """The fold alone in this process (``fold_process``'s child): run until SIGTERM, write the wall time at which
    its partitions were assigned and its state rebuilt into ``started_file``."""
    config = _fold_config(bootstrap, prefix, run)
    ensure_topics(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = FoldRunner(config, stop, transactional_id=f"{prefix}.r{run}-fold")

    def mark_started() -> None:
        if runner.ready.wait(120):
            Path(started_file).write_text(repr(time.time()))

    threading.Thread(target=mark_started, daemon=True).start()
    runner.run()


def fold_process(bootstrap: str, prefix: str, expected_invoices: int, events: int, run: int = 0) -> tuple[float, float]:
    """The fold measured as the peer is: in its own process (what the daemon's fold is, one thread of its own), its
    output counted from this one. In ``fold`` the counting consumer shares the fold's process and its GIL.
    (row events/s from its assignment to its last invoice readable, CPU seconds of its process per row event —
    start-up included.)"""
    return _counted_process(
        "the fold", lambda started_file: [sys.executable, __file__, "--serve-fold", "--bootstrap", bootstrap,
                                          "--prefix", prefix, "--run", str(run), "--started-file", started_file],
        bootstrap, _fold_config(bootstrap, prefix, run).kafka.canonical_topic, f"{prefix}.r{run}-count",
        expected_invoices, events)


def peer(bootstrap: str, prefix: str, expected_invoices: int, events: int, run: int = 0) -> tuple[float, float]:
    """The quixstreams fold in its own process; (row events/s from its first record to its last invoice
    readable, CPU seconds of its process per row event — start-up included)."""
    out = f"{prefix}.q{run}.invoices"
    return _counted_process(
        "the quixstreams fold",
        lambda started_file: [sys.executable, str(Path(__file__).with_name("fold_peer_quixstreams.py")), "--bootstrap",
                              bootstrap, "--prefix", prefix, "--output", out, "--group", f"{prefix}-q{run}",
                              "--started-file", started_file] + (["--gc-tuned"] if GC_TUNE is not None else []),
        bootstrap, out, f"{prefix}-q{run}-count", expected_invoices, events)


def _counted_process(name: str, command: Callable[[str], list[str]], bootstrap: str, output: str, group: str,
                     expected_invoices: int, events: int) -> tuple[float, float]:
    """Run ``command`` (given the file it writes its start time into) until ``expected_invoices`` records are
    readable on ``output``; (row events/s from its start time to then, CPU seconds of the process per row event)."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_file = Path(tempfile.mkdtemp()) / "started"
    process = subprocess.Popen(command(str(started_file)),
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    counter = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                        "isolation.level": "read_committed", "topic.metadata.refresh.interval.ms": 1000})
    counter.subscribe([output])
    produced = 0
    deadline = time.monotonic() + 1800
    try:
        while produced < expected_invoices and time.monotonic() < deadline and process.poll() is None:
            produced += sum(1 for m in counter.consume(num_messages=5000, timeout=0.02) if not m.error())
        finished = time.time()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        counter.close()
    if produced < expected_invoices:
        raise RuntimeError(f"{name} emitted {produced} of {expected_invoices} invoices")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    return events / (finished - float(started_file.read_text())), cpu / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("LEDGERWIRE_BENCH_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1, help="baseline/fold pairs to run on the same workload")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the fold thread into FILE (slows the fold)")
    parser.add_argument("--peer", action="store_true", help="also run the quixstreams fold (the `bench` extra)")
    parser.add_argument("--fold-in-thread", action="store_true",
                        help="run the fold in a thread of this process, beside the consumer counting its output "
                             "(the measurement before round 6; --profile implies it); by default it runs in its own "
                             "process, counted from this one, as the peer is")
    parser.add_argument("--serve-fold", action="store_true", help=argparse.SUPPRESS)  # fold_process's child
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--started-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import structlog
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.serve_fold:
        serve_fold(args.bootstrap, args.prefix, args.run, args.started_file)
        return
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    config = AppConfig.model_validate({"kafka": {"bootstrap_servers": args.bootstrap}, "source": {"topic_prefix": prefix}})
    ensure_topics(config, [config.source.table_topic(t) for t in TABLES] + [config.source.tx_topic])
    print("load average at start (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg())
    print("the fold runs " + ("in a thread of this process, beside the consumer counting its output"
                              if args.fold_in_thread or args.profile else
                              "in its own process, its output counted from this one (as the peer's is)"))
    if GC_TUNE is not None:  # the fold's process setting, from the start: every round's baseline, fold and peer alike
        GC_TUNE()
        print("garbage collector: the fold's setting (fold_runner.tune_gc) for the baseline, the fold and the peer")
    t0 = time.perf_counter()
    written, invoices = write_workload(args.bootstrap, prefix, args.events)
    print(f"wrote {written} row events ({invoices} invoice transactions) in {time.perf_counter() - t0:.1f}s")
    rounds = []
    for run in range(args.repeat):  # alternate baseline, fold and peer, so all see the same machine minutes
        base, base_cpu = baseline(args.bootstrap, prefix, written, run)
        print(f"baseline  read+decode      : {base:>10,.0f} row events/s   {base_cpu * 1e6:6.1f} us CPU per row event",
              flush=True)
        plain = plain_cpu = None
        if FOLD_DECODE is not None:
            plain, plain_cpu = baseline(args.bootstrap, prefix, written, run, FOLD_DECODE)
            print(f"baseline  read+decode_change: {plain:>9,.0f} row events/s   {plain_cpu * 1e6:6.1f} us CPU per row "
                  f"event   (the fold's plain decode: a higher ceiling)", flush=True)
        if args.fold_in_thread or args.profile:
            folded, fold_cpu = fold(args.bootstrap, prefix, invoices, written, args.profile, run)
        else:
            folded, fold_cpu = fold_process(args.bootstrap, prefix, invoices, written, run)
        print(f"fold      with Kafka txns  : {folded:>10,.0f} row events/s   {fold_cpu * 1e6:6.1f} us CPU per row event"
              f"   ({folded / base:.0%} of baseline; CPU {base_cpu / fold_cpu:.0%} of baseline's rate; target: >= 50%)"
              + (f"   ({folded / plain:.0%} of the decode_change baseline)" if plain else ""), flush=True)
        quix, quix_cpu = peer(args.bootstrap, prefix, invoices, written, run) if args.peer else (None, None)
        if quix is not None:
            print(f"quixstreams fold (EOS)     : {quix:>10,.0f} row events/s   {quix_cpu * 1e6:6.1f} us CPU per row event"
                  f"   ({quix / base:.0%} of baseline; Ledgerwire's fold {folded / quix:.2f}x it, "
                  f"{quix_cpu / fold_cpu:.2f}x less CPU)", flush=True)
        rounds.append({"ratio": folded / base, "folded": folded, "base": base, "quix": quix,
                       "plain_ratio": None if plain is None else folded / plain,
                       "cpu_ratio": base_cpu / fold_cpu, "quix_cpu_ratio": None if quix is None else base_cpu / quix_cpu,
                       "speedup": None if quix is None else folded / quix,
                       "cpu_speedup": None if quix is None else quix_cpu / fold_cpu})
    if args.repeat > 1:
        def median(key):
            values = sorted(r[key] for r in rounds)
            return values[len(values) // 2]

        print(f"median of {args.repeat} rounds: fold at {median('ratio'):.0%} of the baseline's row events/s "
              f"(CPU per row event: baseline's is {median('cpu_ratio'):.0%} of the fold's)")
        if FOLD_DECODE is not None:
            print(f"median of {args.repeat} rounds: fold at {median('plain_ratio'):.0%} of the decode_change baseline")
        if args.peer:
            print(f"median of {args.repeat} rounds: quixstreams fold at {median('quix') / median('base'):.0%} of the "
                  f"baseline (CPU: {median('quix_cpu_ratio'):.0%}); Ledgerwire's fold {median('speedup'):.2f}x "
                  f"the quixstreams fold's row events/s, {median('cpu_speedup'):.2f}x less CPU per row event")
    print("load average at end (1, 5, 15 min): %.2f %.2f %.2f" % os.getloadavg())
    print(f"peak RSS of this process   : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    outputs = [f"{prefix}.r{run}.{name}" for run in range(args.repeat) for name in ("invoices", "fold-state", "dlq")]
    outputs += [f"{prefix}.q{run}.invoices" for run in range(args.repeat)] if args.peer else []
    AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics(
        [f"{prefix}.public.{t}" for t in TABLES] + [f"{prefix}.transaction"] + outputs)


if __name__ == "__main__":
    main()
