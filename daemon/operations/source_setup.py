"""Onboarding a shop's own PostgreSQL database: what Debezium (pgoutput) needs there, and a check of it.

``ledgerwire source init --dsn ADMIN_DSN`` (run once by someone allowed to create roles and publications)
sets up, idempotently:

* the replication role Debezium logs in as (default ``ledgerwire_cdc``): ``LOGIN REPLICATION``, not a
  superuser, no CREATEDB/CREATEROLE; ``CONNECT`` on the database, ``USAGE`` on the schema, ``SELECT`` on
  the captured tables (the initial and incremental snapshots read them). With the publication created
  here and ``publication.autocreate.mode=disabled`` in the connector, Debezium never needs to own the
  tables or to create the publication (Debezium's PostgreSQL connector documentation, "Setting up
  permissions" / "Setting privileges to enable Debezium to create PostgreSQL publications");
* ``REPLICA IDENTITY FULL`` on every captured table: an UPDATE or DELETE must carry the whole old row
  (the fold needs the old ``invoice_id`` of a payment moved to another invoice or of a deleted line);
* the signal table (``debezium_signal``: ``resync --from-source`` asks for incremental snapshots there;
  Debezium writes its snapshot-window watermarks into it, hence ``INSERT``) and the heartbeat table
  (``ledgerwire_heartbeat``: the connector's ``heartbeat.action.query`` updates it, so the replication slot
  advances while the captured tables are quiet but the rest of the database is busy);
* the publication ``ledgerwire`` for exactly the captured tables plus those two.

``ledgerwire source check --dsn DSN`` reports what is missing, one line per problem (exit 1), and can be
run with any login that can read the catalogs. ``source init --print-sql`` prints the statements instead
of running them, for a DBA to review.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

CAPTURED_TABLES = ("locations", "customers", "vehicles", "jobs", "tax_rates", "invoices", "invoice_lines",
                   "line_taxes", "payments", "refunds")
SIGNAL_TABLE = "debezium_signal"
HEARTBEAT_TABLE = "ledgerwire_heartbeat"
PUBLICATION = "ledgerwire"
DEFAULT_ROLE = "ledgerwire_cdc"
# The connector's heartbeat.action.query (compose/debezium-connector.json, the runbook).
HEARTBEAT_QUERY = (f"INSERT INTO public.{HEARTBEAT_TABLE} (id, beat_at) VALUES (1, now()) "
                   "ON CONFLICT (id) DO UPDATE SET beat_at = EXCLUDED.beat_at")


@dataclass(frozen=True)
class SourceSpec:
    """What one shop database must have; names overridable for a shop that already uses them."""

    role: str = DEFAULT_ROLE
    schema: str = "public"
    publication: str = PUBLICATION

    @property
    def published_tables(self) -> tuple[str, ...]:
        return (*CAPTURED_TABLES, SIGNAL_TABLE, HEARTBEAT_TABLE)


def debezium_connector_config(*, host: str, port: int | str, dbname: str, topic_prefix: str, slot: str = "ledgerwire",
                              spec: SourceSpec = SourceSpec(), password: str = "${env:LEDGERWIRE_CDC_PASSWORD}",
                              heartbeat: bool = True) -> dict[str, str]:
    """Debezium's PostgreSQL connector for one shop database, logging in as the replication role.

    The password is a Kafka Connect config-provider reference by default (the worker resolves it from its
    environment), so it is never stored in Connect's config topic or in this repository."""
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": host,
        "database.port": str(port),
        "database.user": spec.role,
        "database.password": password,
        "database.dbname": dbname,
        "topic.prefix": topic_prefix,
        "publication.name": spec.publication,
        "publication.autocreate.mode": "disabled",  # created by `source init`: no table ownership needed
        "slot.name": slot,
        # After a broker or worker restart the old task may still hold the replication slot for a while:
        # keep retrying instead of failing the task after Debezium's default six tries.
        "slot.max.retries": "60",
        "slot.retry.delay.ms": "5000",
        "table.include.list": ",".join(f"{spec.schema}.{t}" for t in (*CAPTURED_TABLES, SIGNAL_TABLE)),
        "provide.transaction.metadata": "true",
        "decimal.handling.mode": "precise",
        "snapshot.mode": "initial",
        "tombstones.on.delete": "true",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        "signal.data.collection": f"{spec.schema}.{SIGNAL_TABLE}",
        "signal.enabled.channels": "source",
    }
    if heartbeat:
        # Keeps the slot advancing while the captured tables are quiet but the rest of the database is busy.
        config["heartbeat.interval.ms"] = "10000"
        config["heartbeat.action.query"] = HEARTBEAT_QUERY
    return config


def register_connector(connect_url: str, name: str, config: dict[str, str]) -> None:
    """PUT …/connectors/<name>/config: creates the connector or updates its configuration (idempotent)."""
    import httpx

    response = httpx.put(f"{connect_url.rstrip('/')}/connectors/{name}/config", json=config, timeout=30)
    if response.status_code >= 300:
        raise RuntimeError(f"Kafka Connect refused the connector: {response.status_code} {response.text[:300]}")


def init_statements(spec: SourceSpec, database: str, password: str | None) -> list[sql.Composable]:
    """The idempotent set-up, in order (run as an admin: creates a role, tables and the publication)."""
    schema = sql.Identifier(spec.schema)
    role = sql.Identifier(spec.role)

    def table(name: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(schema, sql.Identifier(name))

    password_clause = sql.SQL(" PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("")
    statements: list[sql.Composable] = [
        sql.SQL("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN "
                "CREATE ROLE {role}; END IF; END $$").format(name=sql.Literal(spec.role), role=role),
        sql.SQL("ALTER ROLE {} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS{}")
        .format(role, password_clause),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, type text NOT NULL, data text)")
        .format(table(SIGNAL_TABLE)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY, beat_at timestamptz NOT NULL)")
        .format(table(HEARTBEAT_TABLE)),
    ]
    for name in CAPTURED_TABLES:
        statements.append(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(table(name)))
        statements.append(sql.SQL("GRANT SELECT ON {} TO {}").format(table(name), role))
    statements += [
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(table(SIGNAL_TABLE), role),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(table(HEARTBEAT_TABLE), role),
    ]
    tables = sql.SQL(", ").join(table(name) for name in spec.published_tables)
    publication = sql.Identifier(spec.publication)
    statements.append(sql.SQL(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {name}) THEN "
        "ALTER PUBLICATION {pub} SET TABLE {tables}; "
        "ALTER PUBLICATION {pub} SET (publish = 'insert, update, delete, truncate'); "
        "ELSE CREATE PUBLICATION {pub} FOR TABLE {tables}; END IF; END $$")
        .format(name=sql.Literal(spec.publication), pub=publication, tables=tables))
    return statements


def render_init_sql(spec: SourceSpec, dsn: str, password: str | None) -> str:
    with psycopg.connect(dsn) as conn:
        database = conn.info.dbname
        return "\n".join(stmt.as_string(conn) + ";" for stmt in init_statements(spec, database, password))


def init_source(dsn: str, spec: SourceSpec = SourceSpec(), password: str | None = None) -> None:
    """Run the set-up on the shop database (one transaction: all of it or nothing)."""
    with psycopg.connect(dsn) as conn:
        for statement in init_statements(spec, conn.info.dbname, password):
            conn.execute(statement)


def check_source(dsn: str, spec: SourceSpec = SourceSpec()) -> list[str]:
    """What is missing for Debezium on this database; one human-readable line per problem."""
    problems: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_replication_slots', 'max_wal_senders')").fetchall())
        if settings.get("wal_level") != "logical":
            problems.append(f"wal_level is {settings.get('wal_level')!r}; set wal_level = logical in "
                            "postgresql.conf and restart PostgreSQL")
        for name in ("max_replication_slots", "max_wal_senders"):
            if int(settings.get(name, "0")) < 1:
                problems.append(f"{name} is {settings.get(name)}; set it to at least 1 (and restart)")

        existing = {row[0]: row[1] for row in conn.execute(
            "SELECT c.relname, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", (spec.schema,)).fetchall()}
        for name in spec.published_tables:
            if name not in existing:
                fix = "the shop software's table" if name in CAPTURED_TABLES else "run `ledgerwire source init`"
                problems.append(f"table {spec.schema}.{name} does not exist ({fix})")
        for name in CAPTURED_TABLES:
            if name in existing and existing[name] != "f":
                problems.append(f"table {spec.schema}.{name}: REPLICA IDENTITY is not FULL "
                                f"(ALTER TABLE {spec.schema}.{name} REPLICA IDENTITY FULL)")

        publication = conn.execute("SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = %s",
                                   (spec.publication,)).fetchone()
        if publication is None:
            problems.append(f"publication {spec.publication} does not exist")
        else:
            if not all(publication):
                problems.append(f"publication {spec.publication} does not publish inserts, updates and deletes")
            published = {row[0] for row in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
                (spec.publication, spec.schema)).fetchall()}
            others = conn.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = %s AND schemaname <> %s",
                                  (spec.publication, spec.schema)).fetchone()[0]
            for name in spec.published_tables:
                if name not in published:
                    problems.append(f"publication {spec.publication} does not include {spec.schema}.{name}")
            for name in sorted(published - set(spec.published_tables)):
                problems.append(f"publication {spec.publication} also includes {spec.schema}.{name}, "
                                "which Ledgerwire does not capture")
            if others:
                problems.append(f"publication {spec.publication} also includes {others} table(s) of other schemas")

        role = conn.execute("SELECT rolcanlogin, rolreplication, rolsuper FROM pg_roles WHERE rolname = %s",
                            (spec.role,)).fetchone()
        if role is None:
            problems.append(f"role {spec.role} does not exist (run `ledgerwire source init`)")
            return problems
        can_login, replication, superuser = role
        if not can_login:
            problems.append(f"role {spec.role} cannot log in (ALTER ROLE {spec.role} LOGIN)")
        if not replication:
            problems.append(f"role {spec.role} lacks REPLICATION (ALTER ROLE {spec.role} REPLICATION)")
        if superuser:
            problems.append(f"role {spec.role} is a superuser; Debezium needs only LOGIN REPLICATION and SELECT")
        if not conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT')",
                            (spec.role,)).fetchone()[0]:
            problems.append(f"role {spec.role} lacks CONNECT on database {conn.info.dbname}")
        if not conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (spec.role, spec.schema)).fetchone()[0]:
            problems.append(f"role {spec.role} lacks USAGE on schema {spec.schema}")
        wanted = [(name, "SELECT") for name in CAPTURED_TABLES]
        wanted += [(SIGNAL_TABLE, "SELECT"), (SIGNAL_TABLE, "INSERT"),
                   (HEARTBEAT_TABLE, "SELECT"), (HEARTBEAT_TABLE, "INSERT"), (HEARTBEAT_TABLE, "UPDATE")]
        for name, privilege in wanted:
            if name not in existing:
                continue
            granted = conn.execute("SELECT has_table_privilege(%s, %s, %s)",
                                   (spec.role, f"{spec.schema}.{name}", privilege)).fetchone()[0]
            if not granted:
                problems.append(f"role {spec.role} lacks {privilege} on {spec.schema}.{name}")
    return problems


__all__ = ["CAPTURED_TABLES", "HEARTBEAT_QUERY", "SourceSpec", "check_source", "debezium_connector_config",
           "init_source", "register_connector", "render_init_sql"]
