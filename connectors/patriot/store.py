"""The export ledger: what is pending for the next period, what each numbered export holds, what is written.

Rows are appended per stream (``connectors/patriot/mapping.py``). Recording a delivery replaces the stream's
rows not yet sealed with the rows that take it from its sealed state to the shop's — so recording the same
version twice (a redelivery, a crash before the sink's commit) changes nothing, and several versions in one
period leave only the newest. Sealing a period moves every pending row into one numbered export, once per
period (unique in the ledger); the files are then written from the sealed rows alone, so writing them again
after a crash gives the same bytes under the same names.

``PgStore`` keeps it in Ledgerwire's PostgreSQL (the daemon); ``MemoryStore`` in memory (unit tests and the
conformance suite, whose runtime has no database).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.patriot.mapping import Row, Sealed

DDL = """
CREATE TABLE IF NOT EXISTS patriot_exports (
    target      text        NOT NULL,
    number      integer     NOT NULL,
    period      text        NOT NULL,
    sealed_at   timestamptz NOT NULL,
    written_at  timestamptz,
    files       jsonb,
    PRIMARY KEY (target, number),
    UNIQUE (target, period)
);
CREATE TABLE IF NOT EXISTS patriot_rows (
    target        text        NOT NULL,
    stream        text        NOT NULL,
    seq           integer     NOT NULL,
    invoice_id    bigint,
    file          text        NOT NULL,
    state         text,
    facts         jsonb       NOT NULL,
    export_number integer,
    PRIMARY KEY (target, stream, seq)
);
CREATE INDEX IF NOT EXISTS patriot_rows_pending ON patriot_rows (target, invoice_id) WHERE export_number IS NULL;
CREATE INDEX IF NOT EXISTS patriot_rows_export ON patriot_rows (target, export_number);
"""

Planner = Callable[[dict[str, Sealed | None]], list[Row]]


@dataclass(frozen=True)
class Export:
    number: int
    period: str
    sealed_at: datetime
    rows: list[Row]


def _invoice_of(stream: str) -> int | None:
    kind, _, rest = stream.partition(":")
    return None if kind == "cust" else int(rest.split(":")[0])


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.rows: dict[tuple[str, str], list[tuple[Row, int | None]]] = {}  # (target, stream) -> rows, export
        self.exports: dict[str, dict[int, tuple[str, datetime, bool]]] = {}  # target -> number -> (period, at, written)

    def record(self, target: str, invoice_id: int, streams: list[str], planner: Planner,
               dry_run: bool = False) -> list[Row]:
        with self._lock:
            known = {s for (t, s) in self.rows if t == target and _invoice_of(s) == invoice_id}
            sealed: dict[str, Sealed | None] = {}
            for stream in sorted(known | set(streams)):
                done = [r for r, n in self.rows.get((target, stream), []) if n is not None]
                sealed[stream] = Sealed(done[-1].state, done[-1].facts) if done else None
            rows = planner(sealed)
            if dry_run:
                return rows
            for stream in sealed:
                kept = [(r, n) for r, n in self.rows.get((target, stream), []) if n is not None]
                self.rows[(target, stream)] = kept + [(r, None) for r in rows if r.stream == stream]
            return rows

    def seal(self, target: str, period: str, at: datetime) -> int | None:
        with self._lock:
            exports = self.exports.setdefault(target, {})
            if any(p == period for p, _, _ in exports.values()):
                return None
            number = max(exports, default=0) + 1
            exports[number] = (period, at, False)
            for (t, stream), rows in self.rows.items():
                if t == target:
                    self.rows[(t, stream)] = [(r, number if n is None else n) for r, n in rows]
            return number

    def unwritten(self, target: str) -> list[Export]:
        with self._lock:
            out = []
            for number, (period, at, written) in sorted(self.exports.get(target, {}).items()):
                if not written:
                    rows = [r for (t, s), rs in sorted(self.rows.items()) if t == target for r, n in rs if n == number]
                    out.append(Export(number, period, at, rows))
            return out

    def mark_written(self, target: str, number: int, files: list[str]) -> None:
        with self._lock:
            period, at, _ = self.exports[target][number]
            self.exports[target][number] = (period, at, True)

    def latest(self, target: str, stream: str) -> tuple[Row, int | None] | None:
        with self._lock:
            rows = self.rows.get((target, stream))
            return rows[-1] if rows else None


class PgStore:
    """The same in PostgreSQL. A delivery takes the target's advisory lock shared and each stream's exclusively;
    sealing takes the target's exclusively, so a seal never splits one delivery's rows between two periods."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @staticmethod
    def _target_lock(conn: Any, target: str, shared: bool) -> None:
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(f"SELECT {fn}(hashtext(%s))", (f"patriot:{target}",))

    def record(self, target: str, invoice_id: int, streams: list[str], planner: Planner,
               dry_run: bool = False) -> list[Row]:
        with self.pool.connection() as conn, conn.transaction():
            self._target_lock(conn, target, shared=True)
            known = {r[0] for r in conn.execute(
                "SELECT DISTINCT stream FROM patriot_rows WHERE target=%s AND invoice_id=%s", (target, invoice_id))}
            sealed: dict[str, Sealed | None] = {}
            for stream in sorted(known | set(streams)):  # sorted: two deliveries lock shared streams in one order
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"patriot:{target}:{stream}",))
                row = conn.execute("SELECT state, facts FROM patriot_rows WHERE target=%s AND stream=%s AND "
                                   "export_number IS NOT NULL ORDER BY seq DESC LIMIT 1", (target, stream)).fetchone()
                sealed[stream] = Sealed(row[0], row[1]) if row else None
            rows = planner(sealed)
            if dry_run:
                return rows  # the transaction ends with nothing written
            for stream in sealed:
                conn.execute("DELETE FROM patriot_rows WHERE target=%s AND stream=%s AND export_number IS NULL",
                             (target, stream))
                seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM patriot_rows WHERE target=%s AND stream=%s",
                                   (target, stream)).fetchone()[0]
                for row in (r for r in rows if r.stream == stream):
                    seq += 1
                    conn.execute("INSERT INTO patriot_rows (target, stream, seq, invoice_id, file, state, facts) "
                                 "VALUES (%s,%s,%s,%s,%s,%s,%s)", (target, stream, seq, _invoice_of(stream),
                                                                    row.file, row.state, json.dumps(row.facts)))
            return rows

    def seal(self, target: str, period: str, at: datetime) -> int | None:
        with self.pool.connection() as conn, conn.transaction():
            self._target_lock(conn, target, shared=False)
            if conn.execute("SELECT 1 FROM patriot_exports WHERE target=%s AND period=%s", (target, period)).fetchone():
                return None
            number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM patriot_exports WHERE target=%s",
                                  (target,)).fetchone()[0]
            conn.execute("INSERT INTO patriot_exports (target, number, period, sealed_at) VALUES (%s,%s,%s,%s)",
                         (target, number, period, at))
            conn.execute("UPDATE patriot_rows SET export_number=%s WHERE target=%s AND export_number IS NULL",
                         (number, target))
            return number

    def unwritten(self, target: str) -> list[Export]:
        with self.pool.connection() as conn:
            exports = conn.execute("SELECT number, period, sealed_at FROM patriot_exports WHERE target=%s AND "
                                   "written_at IS NULL ORDER BY number", (target,)).fetchall()
            out = []
            for number, period, at in exports:
                rows = conn.execute("SELECT stream, file, state, facts FROM patriot_rows WHERE target=%s AND "
                                    "export_number=%s ORDER BY stream, seq", (target, number)).fetchall()
                out.append(Export(number, period, at, [Row(s, f, st, facts) for s, f, st, facts in rows]))
            return out

    def mark_written(self, target: str, number: int, files: list[str]) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE patriot_exports SET written_at=now(), files=%s WHERE target=%s AND number=%s",
                         (json.dumps(files), target, number))

    def latest(self, target: str, stream: str) -> tuple[Row, int | None] | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT stream, file, state, facts, export_number FROM patriot_rows WHERE target=%s "
                               "AND stream=%s ORDER BY seq DESC LIMIT 1", (target, stream)).fetchone()
            return (Row(row[0], row[1], row[2], row[3]), row[4]) if row else None
