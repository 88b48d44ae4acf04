"""The sync ledger in Ledgerwire's PostgreSQL: what each target holds, where each sink's offsets are,
encrypted credentials, the tamper-evident audit trail and the dead-letter index.

The sink worker commits a delivered invoice's ``DocumentState``, its audit record and the consumer
offset in ONE transaction (``Ledger.record_delivery``): after a crash either all three happened or none,
and the version check makes a replay a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import structlog
from cryptography.fernet import Fernet, InvalidToken
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from connectors.base import DocumentState, ExternalRef, RetryableError
from daemon.sink.pgretry import on_pooled_connection
from daemon.sink.shared_ratelimit import RATE_LIMIT_SCHEMA_SQL

log = structlog.get_logger(__name__)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS sink_offsets (
    target      text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, topic, partition)
);
CREATE TABLE IF NOT EXISTS documents (
    target            text NOT NULL,
    invoice_id        bigint NOT NULL,
    invoice_number    text NOT NULL,
    delivered_version bigint NOT NULL DEFAULT 0,
    status            text NOT NULL DEFAULT 'none',
    external_id       text,
    state             jsonb NOT NULL,
    issue_date        date,
    location_code     text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, invoice_id)
);
CREATE INDEX IF NOT EXISTS documents_number ON documents (invoice_number);
CREATE TABLE IF NOT EXISTS entities (
    target      text NOT NULL,
    kind        text NOT NULL,
    key         text NOT NULL,
    ref         jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, kind, key)
);
CREATE TABLE IF NOT EXISTS credentials (
    target      text PRIMARY KEY,
    ciphertext  bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS audit_log (
    id              bigserial PRIMARY KEY,
    target          text NOT NULL,
    invoice_id      bigint NOT NULL,
    invoice_number  text NOT NULL,
    version         bigint NOT NULL,
    action          text NOT NULL,
    payload_hash    text,
    request_summary jsonb NOT NULL DEFAULT '{}',
    response_status text,
    external_id     text,
    source_tx       text,
    at              timestamptz NOT NULL DEFAULT now(),
    prev_hash       text NOT NULL,
    record_hash     text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_invoice ON audit_log (invoice_number);
CREATE TABLE IF NOT EXISTS dead_letters (
    id              bigserial PRIMARY KEY,
    target          text NOT NULL,
    invoice_id      bigint NOT NULL,
    invoice_number  text NOT NULL,
    version         bigint NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    error_class     text NOT NULL,
    reason          text NOT NULL,
    detail          jsonb,
    event           bytea NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'parked', 'retried', 'dropped')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (target, invoice_id) WHERE status IN ('open', 'parked');
CREATE TABLE IF NOT EXISTS sink_owners (
    target      text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    generation  bigint NOT NULL,
    owner       text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, topic, partition)
);
CREATE TABLE IF NOT EXISTS sink_control (
    target      text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    reason      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sink_control ADD COLUMN IF NOT EXISTS auth_reason text;
ALTER TABLE sink_control ADD COLUMN IF NOT EXISTS auth_paused_at timestamptz;
"""

SCHEMA_SQL += RATE_LIMIT_SCHEMA_SQL  # shared rate limits and quotas (daemon/sink/shared_ratelimit.py)

GENESIS = "0" * 64


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...], where: str = "") -> str:
    """``INSERT`` of ``columns``; on a conflict over ``key`` the other columns (and ``updated_at``) are set from
    the new row, only ``where`` that holds (a fence against late writes)."""
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}, updated_at = now()"
            + (f" WHERE {where}" if where else ""))


OFFSET_COLUMNS, OFFSET_KEY = ("target", "topic", "partition", "next_offset"), ("target", "topic", "partition")
CREDENTIALS_UPSERT = _upsert("credentials", ("target", "ciphertext"), ("target",))


class Fence(NamedTuple):
    """A sink worker's claim on one (target, topic, partition): the generation it took on assignment. Every
    ledger write of that worker checks it in the same transaction, so a worker whose partition was revoked
    (and claimed again, here or by another process) can no longer write."""

    target: str
    topic: str
    partition: int
    generation: int


class FencedOut(Exception):
    """The partition was claimed again since this worker took it: the write was refused, nothing changed."""


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON (for jsonb columns), whatever a platform's error body held: Decimals keep their
    exact text, dates and times become ISO strings, bytes are decoded (undecodable bytes replaced), mappings
    and sequences are converted all the way down, and anything else becomes its ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if hasattr(value, "model_dump"):  # a pydantic model
        return json_safe(value.model_dump(mode="json"))
    return str(value)


def _lock_key(*parts: object) -> int:
    # pg_advisory_lock takes a signed 64-bit key.
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Ledger:
    """The pool serves short queries only. Advisory locks held across a platform call (a delivery's invoice
    lock, an entity's lock) live on a dedicated connection per thread (``_lock_connection``): a burst on
    several targets can then never take every pooled connection while each holder waits for one more."""

    def __init__(self, dsn: str, min_size: int = 2, max_size: int = 20) -> None:
        self.dsn = dsn
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, open=True,
                                   kwargs={"autocommit": True}, name="ledgerwire")
        self._thread_lock_conn = threading.local()
        self._lock_conns: set[Any] = set()
        self._lock_conns_guard = threading.Lock()

    def close(self) -> None:
        with self._lock_conns_guard:
            conns, self._lock_conns = list(self._lock_conns), set()
        for conn in conns:
            conn.close()
        self.pool.close()

    def _lock_connection(self) -> Any:
        """This thread's own connection for advisory locks (opened on first use, replaced when broken)."""
        conn = getattr(self._thread_lock_conn, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            self._thread_lock_conn.conn = conn
            with self._lock_conns_guard:
                self._lock_conns.add(conn)
        return conn

    def release_thread_connection(self) -> None:
        """Close this thread's lock connection (a worker thread that ends; its locks end with it)."""
        conn = getattr(self._thread_lock_conn, "conn", None)
        self._thread_lock_conn.conn = None
        if conn is not None:
            with self._lock_conns_guard:
                self._lock_conns.discard(conn)
            conn.close()

    @contextmanager
    def advisory_locks(self, keys: list[int]) -> Iterator[None]:
        """Session advisory locks on this thread's lock connection, taken in the order given."""
        conn = self._lock_connection()
        taken: list[int] = []
        try:
            for key in keys:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                taken.append(key)
            yield
        finally:
            if not conn.broken and not conn.closed:  # a broken session has released its locks already
                for key in reversed(taken):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def ensure_schema(self, extra_ddl: list[str] = ()) -> None:
        with self.pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("ledgerwire-schema"),))
                conn.execute(SCHEMA_SQL)
                for ddl in extra_ddl:
                    if ddl.strip():
                        conn.execute(ddl)

    # -- offsets --
    def offsets(self, target: str, topic: str) -> dict[int, int]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT partition, next_offset FROM sink_offsets WHERE target=%s AND topic=%s",
                                (target, topic)).fetchall()
        return {p: o for p, o in rows}

    def set_offset(self, target: str, topic: str, partition: int, next_offset: int, conn: Any = None,
                   fence: Fence | None = None) -> None:
        """Move a sink's stored offset forward (never backwards: a slow worker's late write cannot rewind
        it; ``reset_offsets`` is the one way back). With ``fence``, refused once the partition was claimed again."""
        sql = _upsert("sink_offsets", OFFSET_COLUMNS, OFFSET_KEY, where="sink_offsets.next_offset < EXCLUDED.next_offset")
        with self._write(conn, fence) as c:
            c.execute(sql, (target, topic, partition, next_offset))

    def reset_offsets(self, target: str, topic: str, offsets: dict[int, int]) -> None:
        """``ledgerwire offsets reset``: set offsets anywhere, backwards too, and fence out every worker that
        still holds one of these partitions (it must re-read the offsets on its next assignment)."""
        with self.pool.connection() as conn, conn.transaction():
            for partition, next_offset in offsets.items():
                conn.execute(_upsert("sink_offsets", OFFSET_COLUMNS, OFFSET_KEY), (target, topic, partition, next_offset))
                conn.execute("UPDATE sink_owners SET generation = generation + 1, owner = NULL, claimed_at = now() "
                             "WHERE target=%s AND topic=%s AND partition=%s", (target, topic, partition))

    # -- partition ownership (fencing) --
    def claim_partition(self, target: str, topic: str, partition: int, owner: str | None = None) -> Fence:
        """Take (target, topic, partition) for a new worker: a new generation, which fences out every earlier one.
        Waits for a write of an earlier generation in flight (it holds the owner row) to commit first."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO sink_owners (target, topic, partition, generation, owner) VALUES (%s,%s,%s,1,%s) "
                "ON CONFLICT (target, topic, partition) DO UPDATE SET generation = sink_owners.generation + 1, "
                "owner = EXCLUDED.owner, claimed_at = now() RETURNING generation",
                (target, topic, partition, owner)).fetchone()
        return Fence(target, topic, partition, int(row[0]))

    def fence_out(self, fence: Fence) -> None:
        """End ``fence``'s generation (a revoked worker that did not stop in time) unless a newer one exists."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE sink_owners SET generation = generation + 1, owner = NULL, claimed_at = now() "
                         "WHERE target=%s AND topic=%s AND partition=%s AND generation=%s",
                         (fence.target, fence.topic, fence.partition, fence.generation))

    @staticmethod
    def check_fence(conn: Any, fence: Fence) -> None:
        """Inside a write transaction: hold the owner row (a claim waits for this commit) and refuse a stale one."""
        row = conn.execute("SELECT generation FROM sink_owners WHERE target=%s AND topic=%s AND partition=%s "
                           "FOR SHARE", (fence.target, fence.topic, fence.partition)).fetchone()
        if row is None or int(row[0]) != fence.generation:
            raise FencedOut(f"{fence.target} partition {fence.partition}: generation {fence.generation} was "
                            f"superseded by {row[0] if row else 'none'}")

    @contextmanager
    def _write(self, conn: Any, fence: Fence | None) -> Iterator[Any]:
        """A connection for one write: the caller's (inside its transaction), or a pooled one; with ``fence``
        the write and the fence check share one transaction."""
        if conn is not None:
            if fence is not None:
                self.check_fence(conn, fence)
            yield conn
            return
        with self.pool.connection() as c:
            if fence is None:
                yield c
                return
            with c.transaction():
                self.check_fence(c, fence)
                yield c

    # -- documents --
    def document(self, target: str, invoice_id: int) -> DocumentState:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT state FROM documents WHERE target=%s AND invoice_id=%s",
                               (target, invoice_id)).fetchone()
        return DocumentState.model_validate(row[0]) if row else DocumentState()

    def save_document(self, target: str, event_number: str, invoice_id: int, doc: DocumentState,
                      conn: Any = None, issue_date: Any = None, location_code: str | None = None,
                      fence: Fence | None = None) -> bool:
        """Write ``doc`` unless the ledger already holds a newer delivered version (a late write of an older
        delivery never rolls the document back); False when it was not written. With ``fence``, refused
        (``FencedOut``) once the worker's partition was claimed again."""
        sql = ("INSERT INTO documents (target, invoice_id, invoice_number, delivered_version, status, external_id, "
               "state, issue_date, location_code) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
               "ON CONFLICT (target, invoice_id) DO UPDATE SET invoice_number=EXCLUDED.invoice_number, "
               "delivered_version=EXCLUDED.delivered_version, status=EXCLUDED.status, "
               "external_id=EXCLUDED.external_id, state=EXCLUDED.state, "
               "issue_date=COALESCE(EXCLUDED.issue_date, documents.issue_date), "
               "location_code=COALESCE(EXCLUDED.location_code, documents.location_code), updated_at=now() "
               "WHERE documents.delivered_version <= EXCLUDED.delivered_version")
        args = (target, invoice_id, event_number, doc.delivered_version, doc.status, doc.external_id,
                Jsonb(doc.model_dump(mode="json")), issue_date, location_code)
        with self._write(conn, fence) as c:
            return c.execute(sql, args).rowcount == 1

    def invoice_lock(self, target: str, invoice_id: int):
        """Held for the whole delivery of one invoice: no two processes post the same invoice at once."""
        return self.advisory_locks([_lock_key("invoice", target, invoice_id)])

    def invoice_locks(self, target: str, invoice_ids: list[int]):
        """Several invoices' delivery locks, taken in id order (no deadlock)."""
        return self.advisory_locks([_lock_key("invoice", target, i) for i in sorted(set(invoice_ids))])

    def record_delivery(self, *, target: str, invoice_id: int, invoice_number: str, doc: DocumentState,
                        topic: str, partition: int, next_offset: int, audit: dict[str, Any],
                        issue_date: Any = None, location_code: str | None = None, fence: Fence | None = None) -> bool:
        """Document state + audit record + offset, atomically; with ``fence``, only while the worker still owns
        the partition. False (offset moved, document and audit left alone) when the ledger already holds a
        newer delivered version than ``doc``."""
        with self.pool.connection() as conn:
            with conn.transaction():
                if fence is not None:
                    self.check_fence(conn, fence)
                written = self.save_document(target, invoice_number, invoice_id, doc, conn=conn,
                                             issue_date=issue_date, location_code=location_code)
                if audit and written:
                    self._append_audit(conn, target=target, invoice_id=invoice_id, invoice_number=invoice_number,
                                       **audit)
                self.set_offset(target, topic, partition, next_offset, conn=conn)
        return written

    def record_document(self, *, target: str, invoice_id: int, invoice_number: str, doc: DocumentState,
                        audit: dict[str, Any]) -> bool:
        """Document state + audit record, atomically, without touching offsets (resync, dlq retry); False
        (nothing written) when the ledger already holds a newer delivered version than ``doc``."""
        with self.pool.connection() as conn:
            with conn.transaction():
                written = self.save_document(target, invoice_number, invoice_id, doc, conn=conn)
                if written:
                    self._append_audit(conn, target=target, invoice_id=invoice_id, invoice_number=invoice_number,
                                       **audit)
        return written

    # -- audit trail (append-only, each record hashes its predecessor) --
    def _append_audit(self, conn: Any, *, target: str, invoice_id: int, invoice_number: str, version: int,
                      action: str, payload_hash: str | None, request_summary: dict[str, Any],
                      response_status: str | None, external_id: str | None, source_tx: str | None) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("audit-chain"),))
        last = conn.execute("SELECT record_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev = last[0] if last else GENESIS
        at = datetime.now(timezone.utc)
        body = {"target": target, "invoice_id": invoice_id, "invoice_number": invoice_number, "version": version,
                "action": action, "payload_hash": payload_hash, "request_summary": request_summary,
                "response_status": response_status, "external_id": external_id, "source_tx": source_tx,
                "at": at.isoformat(), "prev_hash": prev}
        record_hash = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        conn.execute(
            "INSERT INTO audit_log (target, invoice_id, invoice_number, version, action, payload_hash, "
            "request_summary, response_status, external_id, source_tx, at, prev_hash, record_hash) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (target, invoice_id, invoice_number, version, action, payload_hash, Jsonb(request_summary),
             response_status, external_id, source_tx, at, prev, record_hash))

    def verify_audit_chain(self) -> tuple[bool, int | None]:
        """Recompute every record's hash; return (ok, id of the first bad record)."""
        prev = GENESIS
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            for row in cur.execute("SELECT * FROM audit_log ORDER BY id"):
                body = {k: row[k] for k in ("target", "invoice_id", "invoice_number", "version", "action",
                                            "payload_hash", "request_summary", "response_status", "external_id",
                                            "source_tx")}
                body["at"] = row["at"].isoformat()
                body["prev_hash"] = row["prev_hash"]
                digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
                if row["prev_hash"] != prev or digest != row["record_hash"]:
                    return False, row["id"]
                prev = row["record_hash"]
        return True, None

    def audit_trail(self, invoice_number: str) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return cur.execute("SELECT * FROM audit_log WHERE invoice_number=%s ORDER BY id", (invoice_number,)).fetchall()

    # -- dead letters --
    def dead_letter(self, *, target: str, invoice_id: int, invoice_number: str, version: int, topic: str,
                    partition: int, offset: int, error_class: str, reason: str, detail: Any, event: bytes,
                    parked: bool, next_offset: int | None, fence: Fence | None = None) -> int:
        """Record a failed (or parked) event and move the offset past it, atomically (``next_offset`` None:
        a pull platform's late refusal, whose offset was committed when the version was queued)."""
        with self.pool.connection() as conn:
            with conn.transaction():
                if fence is not None:
                    self.check_fence(conn, fence)
                row = conn.execute(
                    "INSERT INTO dead_letters (target, invoice_id, invoice_number, version, topic, partition, "
                    "kafka_offset, error_class, reason, detail, event, status) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (target, invoice_id, invoice_number, version, topic, partition, offset, error_class, reason,
                     Jsonb(json_safe(detail)) if detail is not None else None, event, "parked" if parked else "open"),
                ).fetchone()
                if next_offset is not None:
                    self.set_offset(target, topic, partition, next_offset, conn=conn)
        return row[0]

    def parked(self, target: str, invoice_id: int) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM dead_letters WHERE target=%s AND invoice_id=%s AND status IN "
                                "('open','parked') LIMIT 1", (target, invoice_id)).fetchone() is not None

    def dead_letters(self, target: str | None = None, status: tuple[str, ...] = ("open", "parked")) -> list[dict]:
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            sql = ("SELECT id, target, invoice_id, invoice_number, version, error_class, reason, status, created_at "
                   "FROM dead_letters WHERE status = ANY(%s)")
            args: list[Any] = [list(status)]
            if target:
                sql += " AND target=%s"
                args.append(target)
            return cur.execute(sql + " ORDER BY id", args).fetchall()

    def dead_letter_row(self, dl_id: int) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return cur.execute("SELECT * FROM dead_letters WHERE id=%s", (dl_id,)).fetchone()

    def resolve_dead_letters(self, target: str, invoice_id: int, status: str, through_version: int | None = None
                             ) -> int:
        """Close the invoice's open/parked dead letters (only those of versions <= ``through_version`` if given)."""
        with self.pool.connection() as conn:
            cur = conn.execute("UPDATE dead_letters SET status=%s, resolved_at=now() WHERE target=%s AND "
                               "invoice_id=%s AND status IN ('open','parked') AND (%s::bigint IS NULL OR version <= %s)",
                               (status, target, invoice_id, through_version, through_version))
            return cur.rowcount

    def target_paused(self, target: str) -> bool:
        """This target's workers must stay out of their consumer group: ops asked (``ledgerwire offsets
        reset``), or its grant needs a person (``pause_for_reauthorization``)."""
        operator, reauthorization = self.pause_state(target)
        return operator or reauthorization is not None

    def pause_state(self, target: str) -> tuple[bool, str | None]:
        """(paused by an operator, why re-authorisation is needed or None). A re-authorisation pause ends by
        itself once credentials were stored after it (``ledgerwire credentials set``)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT s.paused, CASE WHEN s.auth_reason IS NOT NULL AND NOT EXISTS (SELECT 1 FROM credentials c "
                "WHERE c.target = s.target AND c.updated_at > s.auth_paused_at) THEN s.auth_reason END "
                "FROM sink_control s WHERE s.target=%s", (target,)).fetchone()
        return (bool(row[0]), row[1]) if row else (False, None)

    def pause_for_reauthorization(self, target: str, reason: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO sink_control (target, auth_reason, auth_paused_at) VALUES (%s,%s,clock_timestamp()) "
                         "ON CONFLICT (target) DO UPDATE SET auth_reason=EXCLUDED.auth_reason, "
                         "auth_paused_at=clock_timestamp(), updated_at=now()", (target, reason))

    def clear_reauthorization(self, target: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE sink_control SET auth_reason=NULL, auth_paused_at=NULL, updated_at=now() "
                         "WHERE target=%s", (target,))

    def set_paused(self, target: str, paused: bool, reason: str | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute(_upsert("sink_control", ("target", "paused", "reason"), ("target",)), (target, paused, reason))

    def count_open_dead_letters(self, target: str) -> tuple[int, int]:
        """(open dead letters, distinct parked invoices)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE status='open'), count(DISTINCT invoice_id) FROM "
                               "dead_letters WHERE target=%s AND status IN ('open','parked')", (target,)).fetchone()
        return int(row[0]), int(row[1])


class PgEntities:
    """``connectors.base.EntityStore`` on the ``entities`` table, locked with advisory locks."""

    def __init__(self, ledger: Ledger, target: str) -> None:
        self.ledger = ledger
        self.target = target

    def get(self, kind: str, key: str) -> ExternalRef | None:
        with self.ledger.pool.connection() as conn:
            row = conn.execute("SELECT ref FROM entities WHERE target=%s AND kind=%s AND key=%s",
                               (self.target, kind, key)).fetchone()
        return ExternalRef.model_validate(row[0]) if row else None

    def put(self, kind: str, key: str, ref: ExternalRef) -> None:
        with self.ledger.pool.connection() as conn:
            conn.execute(_upsert("entities", ("target", "kind", "key", "ref"), ("target", "kind", "key")),
                         (self.target, kind, key, Jsonb(ref.model_dump(mode="json"))))

    def lock(self, kind: str, key: str):
        # Held across the platform's look-up and create: on the thread's lock connection, not a pooled one.
        return self.ledger.advisory_locks([_lock_key("entity", self.target, kind, key)])


def load_secret_key(secret_key_file: Path | None) -> bytes:
    """The credential encryption key: a file (systemd LoadCredential, a container volume) or the environment.

    A key file group or others can read is refused: whoever reads it decrypts every stored credential.
    """
    from daemon.config import ConfigError

    candidates = [secret_key_file] if secret_key_file else []
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / "secret-key")
    for path in candidates:
        if path and path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigError([f"secret key file {path} is readable by group or others (mode {mode:04o}); "
                                   f"run: chmod 600 {path}"])
            try:
                return path.read_bytes().strip()
            except OSError as exc:
                raise ConfigError([f"secret key file {path}: {exc.strerror or exc}"]) from None
    key = os.environ.get("LEDGERWIRE_SECRET_KEY")
    if not key:
        raise ConfigError(["no credential encryption key: set secret_key_file (or LEDGERWIRE_SECRET_KEY); "
                           "create one with `ledgerwire secret-key --out FILE`"])
    return key.encode()


class PgCredentials:
    """``connectors.base.CredentialSource``: the target's credential document, Fernet-encrypted at rest.

    ``update`` commits at once; ``lock`` is an advisory lock, so refreshes are serialised across threads and
    processes. ``session`` is what a token refresh uses (``connectors.auth``): the advisory lock on a
    DEDICATED connection opened before the refresh is sent — not one from the shared pool, which a busy
    daemon can exhaust — and the answer is written on that same connection. A broken pooled connection (a
    database restart) is retried once on a fresh one; a database that stays unreachable is a retryable error,
    never a crash or a dead letter.
    """

    def __init__(self, ledger: Ledger, target: str, key: bytes) -> None:
        self.ledger = ledger
        self.target = target
        self._fernet = Fernet(key)
        self._local = threading.RLock()

    def _decrypt(self, row: Any) -> dict[str, Any]:
        if row is None:
            return {}
        try:
            return json.loads(self._fernet.decrypt(bytes(row[0])))
        except InvalidToken as exc:
            raise RuntimeError(f"credentials of target {self.target!r} cannot be decrypted with this key") from exc

    def _encrypt(self, document: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(document).encode())

    def _pooled(self, work: Any) -> Any:
        return on_pooled_connection(self.ledger.pool, work, "credentials")

    def get(self) -> dict[str, Any]:
        return self._decrypt(self._pooled(lambda conn: conn.execute(
            "SELECT ciphertext FROM credentials WHERE target=%s", (self.target,)).fetchone()))

    def put(self, document: dict[str, Any]) -> None:
        ciphertext = self._encrypt(document)
        self._pooled(lambda conn: conn.execute(
            CREDENTIALS_UPSERT, (self.target, ciphertext)))

    def update(self, changes: dict[str, Any]) -> None:
        self._pooled(lambda conn: self._update_on(conn, changes))

    def _update_on(self, conn: Any, changes: dict[str, Any]) -> None:
        with conn.transaction():
            row = conn.execute("SELECT ciphertext FROM credentials WHERE target=%s FOR UPDATE",
                               (self.target,)).fetchone()
            document = self._decrypt(row)
            document.update(changes)
            conn.execute(CREDENTIALS_UPSERT, (self.target, self._encrypt(document)))

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._local, self.ledger.pool.connection() as conn:
            lock_id = _lock_key("credentials", self.target)
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))

    @contextmanager
    def session(self) -> Iterator["PgCredentialSession"]:
        """The credentials' advisory lock held on a dedicated connection, for a refresh and its answer."""
        with self._local:
            try:
                conn = psycopg.connect(self.ledger.dsn, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise RetryableError(f"ledger database unreachable, token refresh not sent: {type(exc).__name__}") \
                    from exc
            lock_id = _lock_key("credentials", self.target)
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
                yield PgCredentialSession(self, conn)
            finally:
                # The lock dies with its session; closing the connection releases it in every case.
                conn.close()


class PgCredentialSession:
    """Reads and writes one target's credential document on the connection that holds its lock."""

    def __init__(self, credentials: PgCredentials, conn: Any) -> None:
        self.credentials = credentials
        self.conn = conn

    def read(self) -> dict[str, Any]:
        return self.credentials._decrypt(self.conn.execute(  # noqa: SLF001 - the same store
            "SELECT ciphertext FROM credentials WHERE target=%s", (self.credentials.target,)).fetchone())

    def save(self, changes: dict[str, Any]) -> None:
        self.credentials._update_on(self.conn, changes)  # noqa: SLF001


__all__ = ["Ledger", "PgCredentials", "PgEntities", "load_secret_key", "psycopg"]
