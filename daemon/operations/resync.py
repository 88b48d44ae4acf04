"""Resync a period: re-deliver every invoice issued in it, checked against what the platform holds.

The invoices come from the fold's compacted state topic (complete, whatever Kafka's retention kept of
the canonical topic), rebuilt at their current version. Each is compared with the platform's document —
create (missing there, e.g. deleted by hand), update (amounts, tax or status differ), no change, or
conflict (the platform holds a document under that number the ledger does not know) — and, unless it is
a dry run, delivered again under the per-invoice lock with attempt > 1, so the connector looks the
document up before writing and nothing is duplicated. Under that lock the ledger's document is read again:
when the sink delivered a newer version meanwhile, the invoice is skipped (the plan's state is older than the
books); the connector's own state (re-dating, credit applications, adjustments) is kept — only its "already
sent this content" marker is dropped, so the document is written again. A permanent error on one invoice (a
document voided by hand at the platform) is reported for that invoice and the resync goes on. A void that
the platform does not hold (voided before it was ever posted, or deleted there) is nothing to do. ``--from-source`` additionally asks Debezium for
an incremental snapshot of the period, for when the fold's state itself is suspected wrong.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from connectors.base import Connector, DeliveryError, DocumentState, RemoteInvoice
from daemon.canonical import InvoiceEvent
from daemon.config import AppConfig, TargetConfig
from daemon.sink.deliver import PgDeliveryContext
from daemon.source.fold import Mirror
from daemon.kafka_util import kafka_conf
from daemon.operations.patience import Patience
from daemon.sink.ledger import Ledger, PgEntities

log = structlog.get_logger(__name__)


@dataclass
class ResyncItem:
    event: InvoiceEvent
    action: str  # create | update | no change | conflict
    detail: str
    # The platform's copy of the ledger's document as the plan read it (None when the ledger has none): what
    # reconcile compares balances with, so it does not read each document a second time.
    held: RemoteInvoice | None = None


def load_state(config: AppConfig) -> Mirror:
    mirror = Mirror()
    reader = Consumer(kafka_conf(config.kafka, {"group.id": f"ledgerwire-resync-{uuid.uuid4().hex[:8]}",
                                                "isolation.level": "read_committed", "enable.auto.commit": False,
                                                "enable.partition.eof": True}))
    topic = config.kafka.fold_state_topic
    partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in reader.list_topics(topic, timeout=10).topics[topic].partitions]
    reader.assign(partitions)
    remaining = {p.partition for p in partitions if reader.get_watermark_offsets(p, timeout=10)[1] > 0}
    while remaining:
        for m in reader.consume(5000, 1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(m.partition())
                continue
            key = m.key().decode()
            if not key.startswith("m:"):
                mirror.restore(key, m.value())
    reader.close()
    return mirror


def invoices_in_period(mirror: Mirror, since: date, until: date, location: str | None = None) -> list[InvoiceEvent]:
    events = []
    for invoice_id, row in sorted(mirror.rows["invoices"].items()):
        issued = row.get("issue_date")
        if issued is None or not (since <= issued <= until) or row.get("status") == "draft":
            continue
        event = mirror.current_event(invoice_id)
        if event is not None and (location is None or event.location.code == location):
            events.append(event)
    return events


# Connector state that only says "this content was already sent": dropped by a resync so the document is
# written again. Everything else in ``DocumentState.extra`` is real state at the platform and is kept.
SENT_CONTENT_MARKERS = ("invoice_hash",)


@dataclass
class ResyncResult:
    counts: dict[str, int] = field(default_factory=dict)  # action -> invoices resynced
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (invoice number, why)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (invoice number, error)


def classify(event: InvoiceEvent, doc: DocumentState, remote: RemoteInvoice | None, by_number: RemoteInvoice | None
             ) -> tuple[str, str]:
    want_void = event.status.value in ("void", "deleted")
    if want_void and remote is None and by_number is None:
        # Voided in the shop and not at the platform: the books hold nothing to undo.
        return "no change", ("voided before it was ever posted: nothing to do" if doc.external_id is None
                             else "void: the platform no longer holds it; nothing to do")
    if remote is None and by_number is None:
        return "create", "not at the platform" + (" (was posted; deleted there?)" if doc.external_id else "")
    if remote is None and by_number is not None:
        return "conflict", f"platform holds {by_number.external_id} under this number; the ledger does not know it"
    assert remote is not None
    differences = []
    # A platform whose void is a delete (FreshBooks, Wave) reads back "deleted"; Patriot's read-back names the export
    # that carried the void ("void, export 3"): all of them are the void the shop asked for.
    remote_void = (remote.status or "") == "deleted" or (remote.status or "").split(",")[0] == "void"
    if want_void != remote_void:
        differences.append(f"status {remote.status} -> {event.status.value}")
    if not want_void and remote.total is not None and remote.total != event.computed.total:
        differences.append(f"total {remote.total} -> {event.computed.total}")
    if not want_void and remote.tax_total is not None and remote.tax_total != event.computed.tax_total:
        differences.append(f"tax {remote.tax_total} -> {event.computed.tax_total}")
    return ("update", ", ".join(differences)) if differences else ("no change", "")


def plan(config: AppConfig, ledger: Ledger, connector: Connector, target: TargetConfig, since: date, until: date,
         location: str | None = None, patience: Patience | None = None) -> list[ResyncItem]:
    patience = patience or Patience(uncertain_wait_s=target.request_timeout_s)
    items = []
    for event in invoices_in_period(load_state(config), since, until, location):
        if not target.routes(event.location.code):
            continue
        doc = ledger.document(target.name, event.invoice_id)
        held = remote = patience.call(f"reading {event.number}", lambda: connector.fetch_invoice(doc.external_id)) \
            if doc.external_id else None
        by_number = patience.call(f"looking up {event.number}", lambda: connector.find_invoice(event)) \
            if remote is None else None
        if remote is None and by_number is not None and doc.external_id is None:
            remote, by_number = by_number, None  # posted, answer lost before the ledger knew: adopt it
        action, detail = classify(event, doc, remote, by_number)
        items.append(ResyncItem(event, action, detail, held))
    return items


def apply(ledger: Ledger, connector: Connector, target: TargetConfig, items: list[ResyncItem],
          patience: Patience | None = None) -> ResyncResult:
    patience = patience or Patience(uncertain_wait_s=target.request_timeout_s)
    result = ResyncResult()
    entities = PgEntities(ledger, target.name)
    for item in items:
        event = item.event
        bound = log.bind(target=target.name, invoice_id=event.invoice_id, invoice_number=event.number,
                         version=event.version)
        if item.action == "no change":
            result.counts["no change"] = result.counts.get("no change", 0) + 1
            continue
        # One salt for every attempt at this invoice: a fresh one per resync (QuickBooks replays the answer to a
        # reused requestid, which would "create" nothing), the same across retries (a write that landed is replayed).
        attempt = _Attempt(item, salt=f"resync-{uuid.uuid4().hex}")
        try:
            # A transient refusal is waited out with the invoice's lock released (the sink may deliver it
            # meanwhile), and the next try reads the ledger again under the lock.
            outcome, detail = patience.call(f"resyncing {event.number}",
                                            lambda: _apply_one(ledger, connector, target, entities, attempt, bound))
        except DeliveryError as exc:
            result.errors.append((event.number, f"{exc.error_class.value}: {exc.reason}"))
            bound.warning("resync_failed", error_class=exc.error_class.value, reason=exc.reason)
            continue
        except Exception as exc:  # noqa: BLE001 - a connector bug on one invoice must not stop the others
            result.errors.append((event.number, f"connector error: {type(exc).__name__}: {exc}"))
            bound.exception("resync_connector_raised_unexpected")
            continue
        if outcome == "skipped":
            result.skipped.append((event.number, detail))
            continue
        if outcome == "no change":
            result.counts["no change"] = result.counts.get("no change", 0) + 1
            continue
        # Dead letters of this version or older are settled by what was just posted; left open, they would
        # park every later version of the invoice behind them.
        resolved = ledger.resolve_dead_letters(target.name, event.invoice_id, "retried", through_version=event.version)
        result.counts[outcome] = result.counts.get(outcome, 0) + 1
        bound.info("resynced", action=outcome, dead_letters_resolved=resolved)
    return result


@dataclass
class _Attempt:
    """One invoice's resync across its tries: the plan (re-planned when the sink posted it meanwhile), the salt
    of its request ids, and the ledger's document as the first try read it."""

    item: ResyncItem
    salt: str
    first_read: DocumentState | None = None


def _apply_one(ledger: Ledger, connector: Connector, target: TargetConfig, entities: PgEntities, attempt: _Attempt,
               bound) -> tuple[str, str]:
    """One try under the invoice's lock: ("skipped", why), ("no change", "") or (the action done, "")."""
    event = attempt.item.event
    with ledger.invoice_lock(target.name, event.invoice_id):
        current = ledger.document(target.name, event.invoice_id)
        if current.delivered_version > event.version:
            # The sink delivered a newer version since the plan read the state: posting the plan's
            # state now would revert the books, and no later version would repair it.
            bound.info("resync_skipped_newer_delivered", delivered_version=current.delivered_version)
            return "skipped", (f"newer version v{current.delivered_version} delivered meanwhile "
                               f"(resync had v{event.version})")
        if attempt.first_read is not None and current != attempt.first_read:
            # An earlier try checkpointed its progress (an intent, a document made): go on from it, never
            # from the plan's start again (a create would be posted twice).
            doc = current
        else:
            attempt.first_read = current
            if attempt.item.action == "create" and current.external_id:
                # The plan saw no document at the platform, but the ledger knows one now: the sink posted the
                # invoice after the plan read the ledger. Creating it would post it twice (a platform without
                # unique numbers keeps both): plan it again from what the ledger knows.
                action, detail = classify(event, current, connector.fetch_invoice(current.external_id), None)
                attempt.item = ResyncItem(event, action, detail)
                bound.info("resync_replanned_posted_meanwhile", action=action)
                if action == "no change":
                    return "no change", ""
            doc = _resync_doc(current, attempt.item)
        # attempt > 1: the connector looks each document up before writing it.
        ctx = PgDeliveryContext(ledger, target, event, attempt=2, entities=entities, salt=attempt.salt)
        new_doc = connector.deliver(event, doc, ctx)
        item = attempt.item
        written = ledger.record_document(
            target=target.name, invoice_id=event.invoice_id, invoice_number=event.number, doc=new_doc,
            audit={"version": event.version, "action": f"resync-{item.action}", "payload_hash": new_doc.payload_hash,
                   "request_summary": {"detail": item.detail, "total": str(event.computed.total)},
                   "response_status": new_doc.status, "external_id": new_doc.external_id, "source_tx": None})
    if not written:  # cannot happen under the lock, unless something writes the ledger without it
        return "skipped", "newer version delivered meanwhile (ledger kept it)"
    return item.action, ""


def _resync_doc(doc: DocumentState, item: ResyncItem) -> DocumentState:
    if item.action == "create":
        return DocumentState()  # the platform no longer has it: post it afresh (its old ids are gone)
    # Written again in full: drop only the "already sent this content" markers (the engine's invoice digest
    # among them), keep the delivered version and the connector's state (re-dating, credit applications,
    # adjustments).
    extra = {k: v for k, v in doc.extra.items() if k not in SENT_CONTENT_MARKERS}
    engine = doc.engine.model_copy(update={"invoice_digest": None}) if doc.engine else None
    return doc.model_copy(update={"payload_hash": None, "extra": extra, "engine": engine})


def preview(ledger: Ledger, connector: Connector, target: TargetConfig, items: list[ResyncItem]
            ) -> list[tuple[InvoiceEvent, list[dict]]]:
    """``resync --preview``: what ``apply`` would send per invoice (``Connector.preview``), sending nothing."""
    return [(item.event, connector.preview(item.event, _resync_doc(ledger.document(target.name,
                                                                                   item.event.invoice_id), item)))
            for item in items if item.action != "no change"]


def expected_balance(event: InvoiceEvent) -> Decimal:
    """What the platform's open balance should be: the total less received payments and less the refunds'
    credit (amount and tax), which the connectors apply to the invoice up to what is left unpaid."""
    refunded = sum((r.amount + r.tax_amount for r in event.refunds), Decimal("0"))
    return max(Decimal("0"), event.balance - refunded)


def signal_incremental_snapshot(shop_dsn: str, since: date, until: date) -> str:
    """Ask Debezium to re-read the period's invoices (and their lines, taxes, payments) from the source."""
    signal_id = uuid.uuid4().hex
    data = {"type": "incremental", "data-collections": ["public.invoices", "public.invoice_lines",
                                                         "public.line_taxes", "public.payments"],
            "additional-conditions": [
                {"data-collection": "public.invoices", "filter": f"issue_date BETWEEN '{since}' AND '{until}'"},
                *({"data-collection": f"public.{t}", "filter": "invoice_id IN (SELECT id FROM invoices WHERE "
                   f"issue_date BETWEEN '{since}' AND '{until}')"} for t in ("invoice_lines", "line_taxes", "payments"))]}
    with psycopg.connect(shop_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO debezium_signal (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
                     (signal_id, json.dumps(data)))
    return signal_id
