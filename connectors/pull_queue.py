"""The durable queue of a pull platform (QuickBooks Desktop's Web Connector): framework, not one connector's.

A pull platform fetches its work: ``deliver`` only queues the newest version of an invoice; the platform's
client fetches requests later (maybe through another daemon process) and the engine's pull driver
(``connectors/engine_pull.py``) turns the queue into requests one at a time. Everything both sides need lives
behind ``PullQueue``: ``PgQueue`` (tables in Ledgerwire's PostgreSQL, row leases so several processes can
answer the platform) and ``MemoryQueue`` (unit tests, ``runtime.pg_pool is None``).

Per invoice: the newest queued event, the version finished at the platform, and a JSON ``state`` the driver
owns (the engine's document state, the answers of the run in progress, the request in flight).
Target-wide: shared entities, short references (a platform's own numbering), client sessions.
Tables are ``<tables>_invoices`` … (QuickBooks Desktop keeps the ``pull_`` names it always had).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

_DDL = """
CREATE TABLE IF NOT EXISTS pull_invoices (
    target text NOT NULL,
    invoice_id bigint NOT NULL,
    queued_version integer NOT NULL,
    event jsonb NOT NULL,
    done_version integer NOT NULL DEFAULT 0,
    failed_version integer NOT NULL DEFAULT 0,
    failed_reason text,
    state jsonb NOT NULL DEFAULT '{}'::jsonb,
    lease_ticket text,
    lease_until double precision NOT NULL DEFAULT 0,
    enqueued_at double precision NOT NULL,
    PRIMARY KEY (target, invoice_id)
);
CREATE TABLE IF NOT EXISTS pull_entities (
    target text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    list_id text NOT NULL,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (target, kind, key)
);
CREATE TABLE IF NOT EXISTS pull_refnumbers (
    target text NOT NULL,
    ref_number text NOT NULL,
    invoice_number text NOT NULL,
    PRIMARY KEY (target, ref_number),
    UNIQUE (target, invoice_number)
);
CREATE TABLE IF NOT EXISTS pull_sessions (
    target text NOT NULL,
    ticket text NOT NULL,
    data jsonb NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (target, ticket)
);
"""


def ddl(tables: str) -> str:
    return _DDL.replace("pull_", f"{tables}_")


@dataclass
class Work:
    invoice_id: int
    queued_version: int
    event: str  # InvoiceEvent JSON
    done_version: int
    state: dict[str, Any] = field(default_factory=dict)
    failed_version: int = 0
    failed_reason: str | None = None


class PullQueue(Protocol):
    def enqueue(self, invoice_id: int, version: int, event_json: str) -> None: ...
    def claim(self, ticket: str, lease_s: float) -> int | None: ...
    def renew(self, ticket: str, invoice_id: int, lease_s: float) -> bool: ...
    def load(self, invoice_id: int) -> Work | None: ...
    def save_state(self, invoice_id: int, state: dict[str, Any]) -> None: ...
    def complete(self, invoice_id: int, version: int, state: dict[str, Any]) -> None: ...
    def fail(self, invoice_id: int, version: int, reason: str, state: dict[str, Any]) -> None: ...
    def release(self, ticket: str) -> None: ...
    def release_all(self) -> None: ...
    def pending(self) -> int: ...
    def entity(self, kind: str, key: str) -> dict[str, Any] | None: ...
    def put_entity(self, kind: str, key: str, list_id: str, extra: dict[str, Any] | None = None) -> None: ...
    def ref_number(self, invoice_number: str, candidates: Iterable[str]) -> str: ...
    def session(self, ticket: str) -> dict[str, Any] | None: ...
    def put_session(self, ticket: str, data: dict[str, Any]) -> None: ...
    def drop_session(self, ticket: str) -> None: ...
    def by_txn(self, txn_id: str) -> Work | None: ...


def _open(row_done: int, queued: int, failed: int) -> bool:
    return queued > row_done and queued > failed


class MemoryQueue:
    """The same contract in memory (one process)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.invoices: dict[int, dict[str, Any]] = {}
        self.entities: dict[tuple[str, str], dict[str, Any]] = {}
        self.refs: dict[str, str] = {}  # ref number -> invoice number
        self.sessions: dict[str, dict[str, Any]] = {}

    def enqueue(self, invoice_id: int, version: int, event_json: str) -> None:
        with self._lock:
            row = self.invoices.get(invoice_id)
            if row is None:
                self.invoices[invoice_id] = {"queued": version, "event": event_json, "done": 0, "failed": 0,
                                             "reason": None, "state": {}, "ticket": None, "until": 0.0,
                                             "at": time.time()}
            elif version > row["queued"]:
                row.update(queued=version, event=event_json, at=time.time())
            elif version == row["queued"] and row["failed"] >= version:
                # Queued again explicitly (`dlq retry`, resync) after QuickBooks refused it: try once more.
                row.update(failed=version - 1, reason=None, at=time.time())

    def claim(self, ticket: str, lease_s: float) -> int | None:
        now = time.time()
        with self._lock:
            for invoice_id, row in sorted(self.invoices.items(), key=lambda kv: kv[1]["at"]):
                if _open(row["done"], row["queued"], row["failed"]) and (row["until"] < now or row["ticket"] == ticket):
                    row.update(ticket=ticket, until=now + lease_s)
                    return invoice_id
        return None

    def renew(self, ticket: str, invoice_id: int, lease_s: float) -> bool:
        now = time.time()
        with self._lock:
            row = self.invoices.get(invoice_id)
            if row is None or (row["ticket"] != ticket and row["until"] >= now):
                return False
            row.update(ticket=ticket, until=now + lease_s)
            return True

    def load(self, invoice_id: int) -> Work | None:
        with self._lock:
            row = self.invoices.get(invoice_id)
            if row is None:
                return None
            return Work(invoice_id, row["queued"], row["event"], row["done"], json.loads(json.dumps(row["state"])),
                        row["failed"], row["reason"])

    def save_state(self, invoice_id: int, state: dict[str, Any]) -> None:
        with self._lock:
            self.invoices[invoice_id]["state"] = json.loads(json.dumps(state))

    def complete(self, invoice_id: int, version: int, state: dict[str, Any]) -> None:
        with self._lock:
            row = self.invoices[invoice_id]
            row.update(done=max(row["done"], version), state=json.loads(json.dumps(state)))
            if row["queued"] <= row["done"]:
                row.update(ticket=None, until=0.0)

    def fail(self, invoice_id: int, version: int, reason: str, state: dict[str, Any]) -> None:
        with self._lock:
            row = self.invoices[invoice_id]
            row.update(failed=max(row["failed"], version), reason=reason, state=json.loads(json.dumps(state)),
                       ticket=None, until=0.0)

    def release(self, ticket: str) -> None:
        with self._lock:
            for row in self.invoices.values():
                if row["ticket"] == ticket:
                    row.update(ticket=None, until=0.0)

    def release_all(self) -> None:
        with self._lock:
            for row in self.invoices.values():
                row.update(ticket=None, until=0.0)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for r in self.invoices.values() if _open(r["done"], r["queued"], r["failed"]))

    def entity(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.entities.get((kind, key))
            return dict(found) if found else None

    def put_entity(self, kind: str, key: str, list_id: str, extra: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.entities[(kind, key)] = {"list_id": list_id, **(extra or {})}

    def ref_number(self, invoice_number: str, candidates: Iterable[str]) -> str:
        with self._lock:
            for ref, number in self.refs.items():
                if number == invoice_number:
                    return ref
            for ref in candidates:
                if ref not in self.refs:
                    self.refs[ref] = invoice_number
                    return ref
        raise RuntimeError("no free RefNumber")

    def session(self, ticket: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.sessions.get(ticket)
            return json.loads(json.dumps(found)) if found is not None else None

    def put_session(self, ticket: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.sessions[ticket] = json.loads(json.dumps(data))

    def drop_session(self, ticket: str) -> None:
        with self._lock:
            self.sessions.pop(ticket, None)

    def by_txn(self, txn_id: str) -> Work | None:
        with self._lock:
            for invoice_id, row in self.invoices.items():
                if (row["state"].get("doc") or {}).get("external_id") == txn_id:
                    return self.load(invoice_id)
        return None


class PgQueue:
    """``PullQueue`` on the connector's tables; ``pool`` is a psycopg_pool.ConnectionPool."""

    def __init__(self, pool: Any, target: str, tables: str) -> None:
        self.pool = pool
        self.target = target
        self.tables = tables

    def _sql(self, sql: str) -> str:
        return sql.replace("pull_", f"{self.tables}_")

    def _exec(self, sql: str, params: tuple = (), fetch: str | None = None) -> Any:
        with self.pool.connection() as conn:
            with conn.transaction():
                cur = conn.execute(self._sql(sql), params)
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return None

    def enqueue(self, invoice_id: int, version: int, event_json: str) -> None:
        self._exec(
            "INSERT INTO pull_invoices (target, invoice_id, queued_version, event, enqueued_at) "
            "VALUES (%s, %s, %s, %s::jsonb, extract(epoch from clock_timestamp())) "
            "ON CONFLICT (target, invoice_id) DO UPDATE SET queued_version = EXCLUDED.queued_version, "
            "event = EXCLUDED.event, enqueued_at = EXCLUDED.enqueued_at, "
            # Queued again explicitly (`dlq retry`, resync) after QuickBooks refused it: try once more.
            "failed_version = LEAST(pull_invoices.failed_version, EXCLUDED.queued_version - 1) "
            "WHERE pull_invoices.queued_version < EXCLUDED.queued_version OR (pull_invoices.queued_version = "
            "EXCLUDED.queued_version AND pull_invoices.failed_version >= EXCLUDED.queued_version)",
            (self.target, invoice_id, version, event_json))

    def claim(self, ticket: str, lease_s: float) -> int | None:
        # SKIP LOCKED + a lease: two daemon processes answering QBWC never work on one invoice at once.
        row = self._exec(
            "UPDATE pull_invoices SET lease_ticket = %s, lease_until = %s WHERE (target, invoice_id) = ("
            " SELECT target, invoice_id FROM pull_invoices WHERE target = %s AND queued_version > done_version"
            " AND queued_version > failed_version AND (lease_until < %s OR lease_ticket = %s)"
            " ORDER BY enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING invoice_id",
            (ticket, time.time() + lease_s, self.target, time.time(), ticket), fetch="one")
        return int(row[0]) if row else None

    def renew(self, ticket: str, invoice_id: int, lease_s: float) -> bool:
        row = self._exec(
            "UPDATE pull_invoices SET lease_ticket = %s, lease_until = %s WHERE target = %s AND invoice_id = %s "
            "AND (lease_ticket = %s OR lease_until < %s) RETURNING invoice_id",
            (ticket, time.time() + lease_s, self.target, invoice_id, ticket, time.time()), fetch="one")
        return row is not None

    def load(self, invoice_id: int) -> Work | None:
        row = self._exec(
            "SELECT queued_version, event::text, done_version, state, failed_version, failed_reason "
            "FROM pull_invoices WHERE target = %s AND invoice_id = %s", (self.target, invoice_id), fetch="one")
        if row is None:
            return None
        return Work(invoice_id, row[0], row[1], row[2], row[3] or {}, row[4], row[5])

    def save_state(self, invoice_id: int, state: dict[str, Any]) -> None:
        self._exec("UPDATE pull_invoices SET state = %s::jsonb WHERE target = %s AND invoice_id = %s",
                   (json.dumps(state), self.target, invoice_id))

    def complete(self, invoice_id: int, version: int, state: dict[str, Any]) -> None:
        self._exec(
            "UPDATE pull_invoices SET done_version = GREATEST(done_version, %s), state = %s::jsonb, "
            "lease_ticket = CASE WHEN queued_version <= GREATEST(done_version, %s) THEN NULL ELSE lease_ticket END, "
            "lease_until = CASE WHEN queued_version <= GREATEST(done_version, %s) THEN 0 ELSE lease_until END "
            "WHERE target = %s AND invoice_id = %s",
            (version, json.dumps(state), version, version, self.target, invoice_id))

    def fail(self, invoice_id: int, version: int, reason: str, state: dict[str, Any]) -> None:
        self._exec(
            "UPDATE pull_invoices SET failed_version = GREATEST(failed_version, %s), failed_reason = %s, "
            "state = %s::jsonb, lease_ticket = NULL, lease_until = 0 WHERE target = %s AND invoice_id = %s",
            (version, reason, json.dumps(state), self.target, invoice_id))

    def release(self, ticket: str) -> None:
        self._exec("UPDATE pull_invoices SET lease_ticket = NULL, lease_until = 0 WHERE target = %s AND lease_ticket = %s",
                   (self.target, ticket))

    def release_all(self) -> None:
        self._exec("UPDATE pull_invoices SET lease_ticket = NULL, lease_until = 0 WHERE target = %s "
                   "AND lease_ticket IS NOT NULL", (self.target,))

    def pending(self) -> int:
        row = self._exec("SELECT count(*) FROM pull_invoices WHERE target = %s AND queued_version > done_version "
                         "AND queued_version > failed_version", (self.target,), fetch="one")
        return int(row[0])

    def entity(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._exec("SELECT list_id, extra FROM pull_entities WHERE target = %s AND kind = %s AND key = %s",
                         (self.target, kind, key), fetch="one")
        return {"list_id": row[0], **(row[1] or {})} if row else None

    def put_entity(self, kind: str, key: str, list_id: str, extra: dict[str, Any] | None = None) -> None:
        self._exec("INSERT INTO pull_entities (target, kind, key, list_id, extra) VALUES (%s, %s, %s, %s, %s::jsonb) "
                   "ON CONFLICT (target, kind, key) DO UPDATE SET list_id = EXCLUDED.list_id, extra = EXCLUDED.extra",
                   (self.target, kind, key, list_id, json.dumps(extra or {})))

    def ref_number(self, invoice_number: str, candidates: Iterable[str]) -> str:
        with self.pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.tables}-ref:{self.target}",))
                row = conn.execute(self._sql("SELECT ref_number FROM pull_refnumbers WHERE target = %s AND invoice_number = %s"),
                                   (self.target, invoice_number)).fetchone()
                if row:
                    return row[0]
                for ref in candidates:
                    taken = conn.execute(self._sql("SELECT 1 FROM pull_refnumbers WHERE target = %s AND ref_number = %s"),
                                         (self.target, ref)).fetchone()
                    if not taken:
                        conn.execute(self._sql("INSERT INTO pull_refnumbers (target, ref_number, invoice_number) "
                                              "VALUES (%s, %s, %s)"),
                                     (self.target, ref, invoice_number))
                        return ref
        raise RuntimeError("no free RefNumber")

    def session(self, ticket: str) -> dict[str, Any] | None:
        row = self._exec("SELECT data FROM pull_sessions WHERE target = %s AND ticket = %s", (self.target, ticket),
                         fetch="one")
        return row[0] if row else None

    def put_session(self, ticket: str, data: dict[str, Any]) -> None:
        self._exec("INSERT INTO pull_sessions (target, ticket, data, updated_at) VALUES (%s, %s, %s::jsonb, %s) "
                   "ON CONFLICT (target, ticket) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at",
                   (self.target, ticket, json.dumps(data), time.time()))

    def drop_session(self, ticket: str) -> None:
        self._exec("DELETE FROM pull_sessions WHERE target = %s AND (ticket = %s OR updated_at < %s)",
                   (self.target, ticket, time.time() - 86400))

    def by_txn(self, txn_id: str) -> Work | None:
        row = self._exec("SELECT invoice_id FROM pull_invoices WHERE target = %s AND state->'doc'->>'external_id' = %s",
                         (self.target, txn_id), fetch="one")
        return self.load(int(row[0])) if row else None
