"""Every Prometheus metric Ledgerwire exports, in one place (the README's metric table lists them); the
connector-side ones are defined in ``connectors.metrics`` and re-exported here.

Naming follows Prometheus conventions: ``ledgerwire_`` prefix, base units in names (``_seconds``),
``_total`` for counters, histograms for latencies. Labels are bounded: target names, platform names,
error classes, partitions — never invoice ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# The series the connectors themselves record (platform calls, 429s, token refreshes, Web Connector logins)
# are defined next to them, in the framework, and exported under the same names from here.
from connectors.metrics import (  # noqa: F401 - re-exported: the daemon's one place for every metric
    API_CALLS,
    API_LATENCY,
    LATENCY_BUCKETS,
    QBWC_AUTH_REFUSALS,
    RATE_LIMITED,
    TOKEN_EXPIRY,
    TOKEN_REFRESHES,
)

# --- decode and fold --------------------------------------------------------------------------------
CDC_EVENTS = Counter(
    "ledgerwire_cdc_events_total", "Debezium row events decoded, by table and op (c/u/d/r/t).", ["table", "op"]
)
CDC_DECODE_FAILURES = Counter(
    "ledgerwire_cdc_decode_failures_total", "Malformed CDC records sent to the dead-letter topic.", ["topic"]
)
CANONICAL_DECODE_FAILURES = Counter(
    "ledgerwire_canonical_decode_failures_total",
    "Canonical records a sink could not decode (unknown writer schema, undecodable bytes), dead-lettered.",
    ["target", "reason"],
)
FOLD_TRANSACTIONS = Counter(
    "ledgerwire_fold_transactions_total", "Source transactions applied by the fold, by how they completed.",
    ["completion"],  # complete | snapshot | timed_out | no_metadata
)
FOLD_EVENTS_EMITTED = Counter(
    "ledgerwire_fold_events_emitted_total", "Canonical invoice events produced.", ["status"]
)
FOLD_UNCHANGED_SKIPPED = Counter(
    "ledgerwire_fold_unchanged_skipped_total", "Touched invoices whose content did not change (no new version)."
)
FOLD_TOTALS_MISMATCH = Counter(
    "ledgerwire_fold_totals_mismatch_total", "Emitted invoice versions whose stored totals differ from the lines."
)
FOLD_BUFFERED_TRANSACTIONS = Gauge(
    "ledgerwire_fold_buffered_transactions", "Source transactions waiting for their remaining events."
)
FOLD_BUFFERED_EVENTS = Gauge("ledgerwire_fold_buffered_events", "Row events held in incomplete transactions.")
FOLD_KAFKA_TX_SECONDS = Histogram(
    "ledgerwire_fold_kafka_transaction_seconds", "Time to commit one Kafka transaction of the fold.",
    buckets=LATENCY_BUCKETS,
)
FOLD_STATE_ROWS = Gauge("ledgerwire_fold_state_rows", "Source rows mirrored in the fold's state, by table.", ["table"])

# --- consumers ----------------------------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    "ledgerwire_consumer_lag_messages", "End offset minus committed/next offset.", ["group", "topic", "partition"]
)

# --- delivery -----------------------------------------------------------------------------------------
# A pull platform's sink commits its Kafka offset once an invoice is queued, so its consumer lag reads 0 while
# the Web Connector has not carried anything yet: this is the rest of that target's lag (queued is not done).
PULL_UNCONFIRMED = Gauge("ledgerwire_pull_unconfirmed_invoices",
                         "Invoices queued for a pull platform's client and not yet confirmed by the platform.",
                         ["target"])
DELIVERIES = Counter(
    "ledgerwire_deliveries_total", "Invoice versions handled by a sink, by outcome.",
    ["target", "platform", "outcome"],  # delivered | skipped_stale | coalesced | dead_lettered | parked | queued
)
DELIVERY_LATENCY = Histogram(
    "ledgerwire_delivery_seconds", "Time from picking an event up to the platform confirming it.",
    ["target"], buckets=LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "ledgerwire_end_to_end_latency_seconds", "Source commit to document posted at the platform.",
    ["target"], buckets=LATENCY_BUCKETS,
)
DELIVERY_FAILURES = Counter(
    "ledgerwire_delivery_failures_total", "Failed delivery attempts by error class.", ["target", "error_class"]
)
RETRIES = Counter("ledgerwire_delivery_retries_total", "Delivery attempts that were retries.", ["target"])
RATE_LIMIT_WAIT = Counter(
    "ledgerwire_rate_limit_wait_seconds_total", "Time spent waiting for the client-side rate limiter.", ["target"]
)
DLQ_SIZE = Gauge("ledgerwire_dead_letter_open", "Dead-lettered events not yet retried or dropped.", ["target"])
PARKED_INVOICES = Gauge("ledgerwire_parked_invoices", "Invoices held back behind a dead-lettered version.", ["target"])
LAST_SUCCESS = Gauge(
    "ledgerwire_last_delivery_timestamp_seconds", "Unix time of the target's last successful delivery.", ["target"]
)
TAX_DIFFERENCES = Counter(
    "ledgerwire_tax_differences_total",
    "Deliveries whose platform computed tax or total differently from the shop (recorded, never changed).",
    ["target"],
)
WAITING_FOR_WINDOW = Gauge(
    "ledgerwire_waiting_for_schedule", "Invoice versions held until the target's scheduled window.", ["target"]
)
RECONCILE_MISMATCHES = Gauge(
    "ledgerwire_reconcile_mismatches", "Open differences found by the last reconciliation.", ["target", "kind"]
)
UP = Gauge("ledgerwire_component_up", "1 while a component's loop runs and makes progress.", ["component"])
COMPONENT_RESTARTS = Counter(
    "ledgerwire_component_restarts_total",
    "A sink's partition workers restarted after they died of an unexpected error (a loop's death ends the process).",
    ["component"],
)
TARGET_PAUSED = Gauge(
    "ledgerwire_target_paused", "1 while a target's delivery is paused, by reason (reauthorization_required: a "
    "person must run `ledgerwire credentials set`; operator: an offsets reset).", ["target", "reason"]
)
PAUSE_REASONS = ("reauthorization_required", "operator")

# --- supervision and liveness (issue #13 items 3, 4; daemon/liveness.py) ------------------------------------
TRANSIENT_FAILURES = Counter(
    "ledgerwire_transient_failures_total",
    "Failures a loop retried with back-off because a dependency was away (kafka, postgresql).",
    ["component", "dependency"],
)
STALLED = Gauge(
    "ledgerwire_component_stalled_seconds",
    "Seconds since a loop last made progress, once over liveness.stall_timeout_s (0 while it progresses).",
    ["component"],
)
FOLD_POISON = Counter(
    "ledgerwire_fold_poison_total",
    "Source transactions or invoices the fold could not apply or build (e.g. an unknown line kind), dead-lettered.",
    ["stage"],  # apply | build
)


def init_fold(tables: tuple[str, ...]) -> None:
    """Export every fold series from the start (at zero), so dashboards and alerts see them before the
    first event of a kind happens."""
    for completion in ("complete", "snapshot", "timed_out", "late", "no_metadata", "incremental"):
        FOLD_TRANSACTIONS.labels(completion)
    for status in ("draft", "issued", "void", "deleted"):
        FOLD_EVENTS_EMITTED.labels(status)
    for table in tables:
        FOLD_STATE_ROWS.labels(table)
        for op in ("c", "u", "d", "r", "t"):
            CDC_EVENTS.labels(table, op)
    FOLD_BUFFERED_TRANSACTIONS.set(0)
    FOLD_BUFFERED_EVENTS.set(0)
    UP.labels("fold")


def init_target(target: str, platform: str) -> None:
    """Export every per-target series from the start, at zero."""
    for outcome in ("delivered", "queued", "skipped_stale", "coalesced", "dead_lettered", "parked"):
        DELIVERIES.labels(target, platform, outcome)
    for error_class in ("retryable", "auth", "stale", "permanent"):
        DELIVERY_FAILURES.labels(target, error_class)
    for result in ("ok", "retryable", "auth", "stale", "permanent", "rate_limited", "network"):
        API_CALLS.labels(target, platform, result)
    for result in ("ok", "retryable", "rejected", "network"):
        TOKEN_REFRESHES.labels(target, result)
    for kind in ("missing", "amount", "tax", "status", "payment"):
        RECONCILE_MISMATCHES.labels(target, kind).set(0)
    DELIVERY_LATENCY.labels(target)
    END_TO_END_LATENCY.labels(target)
    API_LATENCY.labels(target, platform)
    RETRIES.labels(target)
    RATE_LIMIT_WAIT.labels(target)
    RATE_LIMITED.labels(target)
    DLQ_SIZE.labels(target).set(0)
    PARKED_INVOICES.labels(target).set(0)
    WAITING_FOR_WINDOW.labels(target).set(0)
    TAX_DIFFERENCES.labels(target)
    TOKEN_EXPIRY.labels(target)
    LAST_SUCCESS.labels(target)
    UP.labels(f"sink:{target}")
    COMPONENT_RESTARTS.labels(f"sink:{target}")
    for reason in PAUSE_REASONS:
        TARGET_PAUSED.labels(target, reason).set(0)


# --- freshness and the source side (issue #13; daemon/source/health.py sets these) ----------------------
FRESHNESS = Gauge(
    "ledgerwire_freshness_seconds", "Age of the oldest shop change not yet posted to the target: from the shop "
    "database's commit time, through Debezium, the fold and the sink, to the platform's answer (0: nothing waits).",
    ["target"],
)
TARGET_OLDEST_UNSENT_AGE = Gauge(
    "ledgerwire_target_oldest_unsent_age_seconds", "Age (from the shop's commit time) of the oldest canonical "
    "event past the target's stored offset: the target's lag in time.", ["target"],
)
FOLD_OLDEST_UNFOLDED_AGE = Gauge(
    "ledgerwire_fold_oldest_unfolded_age_seconds", "Age of the oldest source record the fold has not committed past."
)
SOURCE_HEARTBEAT_AGE = Gauge(
    "ledgerwire_source_heartbeat_age_seconds", "Time since Debezium's last heartbeat record (NaN: none seen)."
)
SOURCE_STATE = Gauge(
    "ledgerwire_source_state", "1 for the source's current verdict: flowing, quiet (heartbeats, no changes), "
    "stalled (RUNNING, no heartbeat), failed (connector/task failed or missing), unknown.", ["state"],
)
SOURCE_SLOT_ACTIVE = Gauge("ledgerwire_source_slot_active", "1 while a walsender holds the replication slot.")
SOURCE_SLOT_LAG_BYTES = Gauge(
    "ledgerwire_source_slot_lag_bytes", "WAL between the shop database's current position and the slot's "
    "confirmed_flush_lsn (WAL the database retains for Debezium).",
)
SOURCE_SLOT_LAG_SECONDS = Gauge(
    "ledgerwire_source_slot_lag_seconds", "How long the slot's confirmed position has not advanced while WAL waits "
    "behind it.",
)
SOURCE_CONNECTOR_RESTARTS = Counter(
    "ledgerwire_source_connector_restarts_total", "Debezium connector restarts through Connect's REST API by the "
    "daemon's self-healing (task_failed, slot_held_by_dead_task, no_heartbeat).", ["connector", "reason"],
)
SOURCE_SELF_HEAL_EXHAUSTED = Gauge(
    "ledgerwire_source_self_heal_exhausted", "1 while the source is unhealthy and the restart budget is spent: "
    "a person is needed.",
)
RECONCILE_LAST_RUN = Gauge(
    "ledgerwire_reconcile_last_run_timestamp_seconds", "Unix time of the target's last in-daemon reconciliation.",
    ["target"],
)


def init_source(connector: str) -> None:
    """Export the source series from the start."""
    for reason in ("task_failed", "slot_held_by_dead_task", "no_heartbeat"):
        SOURCE_CONNECTOR_RESTARTS.labels(connector, reason)
    SOURCE_SELF_HEAL_EXHAUSTED.set(0)
