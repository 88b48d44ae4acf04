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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import structlog
from cryptography.fernet import Fernet, InvalidToken
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from connectors.base import DocumentState, ExternalRef

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
CREATE TABLE IF NOT EXISTS sink_control (
    target      text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    reason      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"""

GENESIS = "0" * 64


def _lock_key(*parts: object) -> int:
    # pg_advisory_lock takes a signed 64-bit key.
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Ledger:
    def __init__(self, dsn: str, min_size: int = 2, max_size: int = 20) -> None:
        self.dsn = dsn
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, open=True,
                                   kwargs={"autocommit": True}, name="ledgerwire")

    def close(self) -> None:
        self.pool.close()

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

    def set_offset(self, target: str, topic: str, partition: int, next_offset: int, conn: Any = None) -> None:
        sql = ("INSERT INTO sink_offsets (target, topic, partition, next_offset) VALUES (%s,%s,%s,%s) "
               "ON CONFLICT (target, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
               "updated_at = now()")
        if conn is not None:
            conn.execute(sql, (target, topic, partition, next_offset))
            return
        with self.pool.connection() as c:
            c.execute(sql, (target, topic, partition, next_offset))

    # -- documents --
    def document(self, target: str, invoice_id: int) -> DocumentState:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT state FROM documents WHERE target=%s AND invoice_id=%s",
                               (target, invoice_id)).fetchone()
        return DocumentState.model_validate(row[0]) if row else DocumentState()

    def save_document(self, target: str, event_number: str, invoice_id: int, doc: DocumentState,
                      conn: Any = None, issue_date: Any = None, location_code: str | None = None) -> None:
        sql = ("INSERT INTO documents (target, invoice_id, invoice_number, delivered_version, status, external_id, "
               "state, issue_date, location_code) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
               "ON CONFLICT (target, invoice_id) DO UPDATE SET invoice_number=EXCLUDED.invoice_number, "
               "delivered_version=EXCLUDED.delivered_version, status=EXCLUDED.status, "
               "external_id=EXCLUDED.external_id, state=EXCLUDED.state, "
               "issue_date=COALESCE(EXCLUDED.issue_date, documents.issue_date), "
               "location_code=COALESCE(EXCLUDED.location_code, documents.location_code), updated_at=now()")
        args = (target, invoice_id, event_number, doc.delivered_version, doc.status, doc.external_id,
                Jsonb(doc.model_dump(mode="json")), issue_date, location_code)
        if conn is not None:
            conn.execute(sql, args)
            return
        with self.pool.connection() as c:
            c.execute(sql, args)

    @contextmanager
    def invoice_lock(self, target: str, invoice_id: int) -> Iterator[None]:
        """Held for the whole delivery of one invoice: no two processes post the same invoice at once."""
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key("invoice", target, invoice_id),))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key("invoice", target, invoice_id),))

    @contextmanager
    def invoice_locks(self, target: str, invoice_ids: list[int]) -> Iterator[None]:
        """Several invoices' delivery locks on one connection, taken in id order (no deadlock)."""
        keys = [_lock_key("invoice", target, i) for i in sorted(set(invoice_ids))]
        with self.pool.connection() as conn:
            for key in keys:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                for key in reversed(keys):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def record_delivery(self, *, target: str, invoice_id: int, invoice_number: str, doc: DocumentState,
                        topic: str, partition: int, next_offset: int, audit: dict[str, Any],
                        issue_date: Any = None, location_code: str | None = None) -> None:
        """Document state + audit record + offset, atomically."""
        with self.pool.connection() as conn:
            with conn.transaction():
                self.save_document(target, invoice_number, invoice_id, doc, conn=conn, issue_date=issue_date,
                                   location_code=location_code)
                if audit:
                    self._append_audit(conn, target=target, invoice_id=invoice_id, invoice_number=invoice_number,
                                       **audit)
                self.set_offset(target, topic, partition, next_offset, conn=conn)

    def record_document(self, *, target: str, invoice_id: int, invoice_number: str, doc: DocumentState,
                        audit: dict[str, Any]) -> None:
        """Document state + audit record, atomically, without touching offsets (resync, dlq retry)."""
        with self.pool.connection() as conn:
            with conn.transaction():
                self.save_document(target, invoice_number, invoice_id, doc, conn=conn)
                self._append_audit(conn, target=target, invoice_id=invoice_id, invoice_number=invoice_number, **audit)

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
                    parked: bool, next_offset: int | None) -> int:
        """Record a failed (or parked) event and move the offset past it, atomically (``next_offset`` None:
        a pull platform's late refusal, whose offset was committed when the version was queued)."""
        with self.pool.connection() as conn:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO dead_letters (target, invoice_id, invoice_number, version, topic, partition, "
                    "kafka_offset, error_class, reason, detail, event, status) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (target, invoice_id, invoice_number, version, topic, partition, offset, error_class, reason,
                     Jsonb(detail) if detail is not None else None, event, "parked" if parked else "open"),
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

    def resolve_dead_letters(self, target: str, invoice_id: int, status: str) -> int:
        with self.pool.connection() as conn:
            cur = conn.execute("UPDATE dead_letters SET status=%s, resolved_at=now() WHERE target=%s AND "
                               "invoice_id=%s AND status IN ('open','parked')", (status, target, invoice_id))
            return cur.rowcount

    def target_paused(self, target: str) -> bool:
        """Ops asked this target's workers to leave their consumer group (``ledgerwire offsets reset``)."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT paused FROM sink_control WHERE target=%s", (target,)).fetchone()
        return bool(row and row[0])

    def set_paused(self, target: str, paused: bool, reason: str | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO sink_control (target, paused, reason) VALUES (%s,%s,%s) ON CONFLICT (target) "
                         "DO UPDATE SET paused=EXCLUDED.paused, reason=EXCLUDED.reason, updated_at=now()",
                         (target, paused, reason))

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
            conn.execute("INSERT INTO entities (target, kind, key, ref) VALUES (%s,%s,%s,%s) ON CONFLICT "
                         "(target, kind, key) DO UPDATE SET ref=EXCLUDED.ref, updated_at=now()",
                         (self.target, kind, key, Jsonb(ref.model_dump(mode="json"))))

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        with self.ledger.pool.connection() as conn:
            lock_id = _lock_key("entity", self.target, kind, key)
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))


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

    ``update`` commits at once, so a rotated refresh token is durable before the new access token is
    used; ``lock`` is an advisory lock, so refreshes are serialised across threads and processes.
    """

    def __init__(self, ledger: Ledger, target: str, key: bytes) -> None:
        self.ledger = ledger
        self.target = target
        self._fernet = Fernet(key)
        self._local = threading.RLock()

    def get(self) -> dict[str, Any]:
        with self.ledger.pool.connection() as conn:
            row = conn.execute("SELECT ciphertext FROM credentials WHERE target=%s", (self.target,)).fetchone()
        if row is None:
            return {}
        try:
            return json.loads(self._fernet.decrypt(bytes(row[0])))
        except InvalidToken as exc:
            raise RuntimeError(f"credentials of target {self.target!r} cannot be decrypted with this key") from exc

    def put(self, document: dict[str, Any]) -> None:
        ciphertext = self._fernet.encrypt(json.dumps(document).encode())
        with self.ledger.pool.connection() as conn:
            conn.execute("INSERT INTO credentials (target, ciphertext) VALUES (%s,%s) ON CONFLICT (target) DO "
                         "UPDATE SET ciphertext=EXCLUDED.ciphertext, updated_at=now()", (self.target, ciphertext))

    def update(self, changes: dict[str, Any]) -> None:
        with self.ledger.pool.connection() as conn:
            with conn.transaction():
                row = conn.execute("SELECT ciphertext FROM credentials WHERE target=%s FOR UPDATE",
                                   (self.target,)).fetchone()
                document = json.loads(self._fernet.decrypt(bytes(row[0]))) if row else {}
                document.update(changes)
                conn.execute("INSERT INTO credentials (target, ciphertext) VALUES (%s,%s) ON CONFLICT (target) DO "
                             "UPDATE SET ciphertext=EXCLUDED.ciphertext, updated_at=now()",
                             (self.target, self._fernet.encrypt(json.dumps(document).encode())))

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._local, self.ledger.pool.connection() as conn:
            lock_id = _lock_key("credentials", self.target)
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))


__all__ = ["Ledger", "PgCredentials", "PgEntities", "load_secret_key", "psycopg"]
