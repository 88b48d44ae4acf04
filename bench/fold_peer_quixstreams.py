"""The same transaction fold written with quixstreams — the peer ``bench/fold_throughput.py --peer`` measures.

What it does, as a competent quixstreams user would write it: one ``Application`` with
``processing_guarantee="exactly-once"`` subscribed to the eleven Debezium topics (the ten table topics and
the transaction topic), one ``StreamingDataFrame`` per topic (not ``concat``: concatenating different
topics switches on partition time alignment, which pauses partitions and only costs here). Each record is
decoded with Ledgerwire's own decoder (``daemon.source.decode``, the same work the bare read+decode ceiling does),
row events are grouped by transaction id, a transaction is released when its END marker has arrived and
every table's event count is in, its rows are mirrored, and every invoice it touched is emitted whole (header,
lines with their taxes, payments, refunds, customer, location, job, computed totals, a growing version) as
JSON on the output topic, inside quixstreams' Kafka transactions.

Tuning (what a user would tune after watching it): ``consumer_poll_timeout`` 1 s → 0.01 s (the default
stalls on every empty poll of eleven topics), ``commit_interval`` 5 s → 0.5 s (smaller Kafka transactions,
output visible sooner; throughput is the same within noise), librdkafka ``fetch.wait.max.ms`` 500 → 50 and
``queued.min.messages`` raised. Its JSON serialiser is orjson already (given ``default=str`` here for the
decimals and timestamps).

What it does NOT do (said beside the figures in bench/RESULTS.md): its fold state (buffered transactions, the
row mirror, versions) lives in process memory, not in a quixstreams state store: keyed state there is scoped
to the message key, so grouping by transaction id would need a ``group_by`` repartition hop (every record
produced and read a second time). So after a restart it starts from an empty mirror (invoice versions restart at 1 and
rows written before the restart are missing from later versions), and offsets are committed for records of
transactions still buffered, so a crash between a checkpoint and the END marker loses the part read before
the checkpoint. Its output is exactly-once per consumed record (quixstreams' transactions), nothing more.

Run by ``bench/fold_throughput.py --peer``; alone:
    python bench/fold_peer_quixstreams.py --bootstrap 127.0.0.1:19092 --prefix benchabc --output benchabc.q0 \
        --group benchabc-q0 --started-file /tmp/started
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import deque
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from quixstreams import Application, message_context  # noqa: E402
from quixstreams.models.serializers import JSONSerializer  # noqa: E402

from daemon.source import decode as decode_module  # noqa: E402
from daemon.source.decode import decode_row_change, decode_tx_marker  # noqa: E402

# The same decode the fold uses (round 4: decode_change, plain objects; before it, decode_row_change).
decode_change = getattr(decode_module, "decode_change", decode_row_change)
from daemon.source.fold import TABLES  # noqa: E402

CENT = Decimal("0.01")
CHILDREN = ("invoice_lines", "line_taxes", "payments", "refunds")


class PeerFold:
    """Group by transaction id, release on END, mirror rows, build whole invoices — plain Python, in memory."""

    def __init__(self) -> None:
        self.pending: dict[str, dict] = {}
        self.ended: deque[str] = deque()  # xids in END order (one transaction-topic partition: offset order)
        self.rows: dict[str, dict[int, dict]] = {t: {} for t in TABLES}
        self.children: dict[str, dict[int, set[int]]] = {t: {} for t in CHILDREN}
        self.versions: dict[int, int] = {}

    def _tx(self, xid: str) -> dict:
        tx = self.pending.get(xid)
        if tx is None:
            tx = self.pending[xid] = {"changes": [], "end": None, "tally": {}}
        return tx

    def on_row(self, change) -> list[dict]:
        xid = change.xid
        if xid is None:  # outside any transaction: apply at once
            return self._apply([change])
        tx = self._tx(xid)
        tx["changes"].append(change)
        key = f"{change.source.schema_ or 'public'}.{change.table}"
        tx["tally"][key] = tx["tally"].get(key, 0) + 1
        return self._release_ready() if self.ended and self.ended[0] == xid else []

    def on_marker(self, marker) -> list[dict]:
        if marker.status != "END":
            return []
        self._tx(marker.xid)["end"] = marker
        self.ended.append(marker.xid)
        return self._release_ready()

    def _release_ready(self) -> list[dict]:
        """Release complete transactions in END order; the first incomplete one holds the later ones."""
        out: list[dict] = []
        while self.ended:
            tx = self.pending[self.ended[0]]
            if tx["tally"] != tx["end"].data_collections:
                break
            xid = self.ended.popleft()
            del self.pending[xid]
            tx["changes"].sort(key=lambda c: c.transaction.total_order)
            out.extend(self._apply(tx["changes"], xid))
        return out

    def _apply(self, changes, xid: str | None = None) -> list[dict]:
        touched: set[int] = set()
        for change in changes:
            table = change.table
            image = change.before if change.op == "d" else change.after
            if image is None or table not in self.rows:
                continue
            pk = int(image["id"])
            old = self.rows[table].get(pk)
            if change.op == "d":
                self.rows[table].pop(pk, None)
            else:
                self.rows[table][pk] = change.after
            if table in self.children:
                for row in (old, None if change.op == "d" else change.after):
                    if row and row.get("invoice_id") is not None:
                        touched.add(int(row["invoice_id"]))
                if old and old.get("invoice_id") is not None:
                    self.children[table].get(int(old["invoice_id"]), set()).discard(pk)
                if change.op != "d" and change.after.get("invoice_id") is not None:
                    self.children[table].setdefault(int(change.after["invoice_id"]), set()).add(pk)
            elif table == "invoices":
                touched.add(pk)
        return [self._invoice(i, xid) for i in sorted(touched) if i in self.rows["invoices"]]

    def _invoice(self, invoice_id: int, xid: str | None) -> dict:
        rows = self.rows
        header = rows["invoices"][invoice_id]
        taxes: dict[int, list] = {}
        for tax_id in self.children["line_taxes"].get(invoice_id, ()):
            t = rows["line_taxes"][tax_id]
            rate = rows["tax_rates"].get(t["tax_rate_id"], {})
            taxes.setdefault(t["line_id"], []).append({"tax_rate_id": t["tax_rate_id"], "code": rate.get("code"),
                                                       "rate": rate.get("rate"), "amount": t["amount"]})
        lines = []
        for line_id in sorted(self.children["invoice_lines"].get(invoice_id, ())):
            ln = rows["invoice_lines"][line_id]
            amount = (ln["quantity"] * ln["unit_price"]).quantize(CENT, rounding=ROUND_HALF_UP)
            lines.append({"id": line_id, "position": ln["position"], "kind": ln["kind"],
                          "part_number": ln.get("part_number"), "description": ln["description"],
                          "quantity": ln["quantity"], "unit_price": ln["unit_price"], "amount": amount,
                          "taxes": taxes.get(line_id, [])})
        lines.sort(key=lambda ln: (ln["position"], ln["id"]))
        subtotal = sum((ln["amount"] for ln in lines), Decimal(0))
        tax_total = sum((t["amount"] for ln in lines for t in ln["taxes"]), Decimal(0))
        payments = [rows["payments"][p] for p in sorted(self.children["payments"].get(invoice_id, ()))]
        refunds = [rows["refunds"][r] for r in sorted(self.children["refunds"].get(invoice_id, ()))]
        job = rows["jobs"].get(header.get("job_id"))
        version = self.versions[invoice_id] = self.versions.get(invoice_id, 0) + 1
        return {"invoice_id": invoice_id, "version": version, "number": header["number"], "status": header["status"],
                "issue_date": header.get("issue_date"), "due_date": header.get("due_date"),
                "currency": header.get("currency"), "location": rows["locations"].get(header["location_id"]),
                "customer": rows["customers"].get(header["customer_id"]), "job": job, "lines": lines,
                "payments": [{"id": p["id"], "amount": p["amount"], "method": p["method"],
                              "received_at": p["received_at"], "status": p["status"]} for p in payments],
                "refunds": refunds, "computed": {"subtotal": subtotal, "tax_total": tax_total,
                                                 "total": subtotal + tax_total},
                "stored": {"subtotal": header["subtotal"], "tax_total": header["tax_total"], "total": header["total"]},
                "source": {"tx_id": xid}}


def _json(value) -> bytes:
    return orjson.dumps(value, default=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True, help="the source topics' prefix")
    parser.add_argument("--output", required=True, help="output topic")
    parser.add_argument("--group", required=True)
    parser.add_argument("--started-file", required=True, help="written with the wall time of the first record")
    parser.add_argument("--poll-timeout", type=float, default=0.01, help="quixstreams' default is 1.0")
    parser.add_argument("--commit-interval", type=float, default=0.5, help="quixstreams' default is 5.0")
    parser.add_argument("--gc-tuned", action="store_true",
                        help="the garbage-collector setting the Ledgerwire fold runs with (fold_runner.tune_gc)")
    args = parser.parse_args()
    if args.gc_tuned:  # the same process setting as the fold it is compared with, applied after its imports
        from daemon.source.fold_runner import tune_gc  # noqa: PLC0415

        tune_gc()
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
        processing_guarantee="exactly-once", consumer_poll_timeout=args.poll_timeout,
        commit_interval=args.commit_interval, loglevel=logging.WARNING, use_changelog_topics=False,
        state_dir=f"/tmp/quix-state-{args.group}",
        consumer_extra_config={"fetch.wait.max.ms": 50, "queued.min.messages": 100000},
        producer_extra_config={"linger.ms": 5, "compression.type": "lz4"})
    fold = PeerFold()
    output = app.topic(args.output, value_serializer=JSONSerializer(dumps=_json), key_serializer="bytes")
    tx_topic = f"{args.prefix}.transaction"
    started = []

    def process(value: bytes) -> list[dict]:
        ctx = message_context()
        if not started:
            started.append(time.time())
            Path(args.started_file).write_text(repr(started[0]))
        if ctx.topic == tx_topic:
            marker = decode_tx_marker(ctx.topic, ctx.partition, ctx.offset, value)
            return fold.on_marker(marker) if marker is not None else []
        change = decode_change(ctx.topic, ctx.partition, ctx.offset, value)
        return fold.on_row(change) if change is not None else []

    for name in [f"{args.prefix}.public.{t}" for t in TABLES] + [tx_topic]:
        sdf = app.dataframe(app.topic(name, value_deserializer="bytes", key_deserializer="bytes"))
        sdf = sdf.apply(process, expand=True)
        sdf.to_topic(output, key=lambda invoice: str(invoice["invoice_id"]).encode())
    app.run()


if __name__ == "__main__":
    main()
