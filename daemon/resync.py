"""Resync a period: re-deliver every invoice issued in it, checked against what the platform holds.

The invoices come from the fold's compacted state topic (complete, whatever Kafka's retention kept of
the canonical topic), rebuilt at their current version. Each is compared with the platform's document —
create (missing there, e.g. deleted by hand), update (amounts, tax or status differ), no change, or
conflict (the platform holds a document under that number the ledger does not know) — and, unless it is
a dry run, delivered again under the per-invoice lock with attempt > 1, so the connector looks the
document up before writing and nothing is duplicated. ``--from-source`` additionally asks Debezium for
an incremental snapshot of the period, for when the fold's state itself is suspected wrong.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from connectors.base import Connector, DocumentState, RemoteInvoice
from daemon.canonical import InvoiceEvent
from daemon.config import AppConfig, TargetConfig
from daemon.deliver import PgDeliveryContext
from daemon.fold import Mirror
from daemon.kafka_util import kafka_conf
from daemon.ledger import Ledger, PgEntities

log = structlog.get_logger(__name__)


@dataclass
class ResyncItem:
    event: InvoiceEvent
    action: str  # create | update | no change | conflict
    detail: str


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


def classify(event: InvoiceEvent, doc: DocumentState, remote: RemoteInvoice | None, by_number: RemoteInvoice | None
             ) -> tuple[str, str]:
    if remote is None and by_number is None:
        return "create", "not at the platform" + (" (was posted; deleted there?)" if doc.external_id else "")
    if remote is None and by_number is not None:
        return "conflict", f"platform holds {by_number.external_id} under this number; the ledger does not know it"
    assert remote is not None
    want_void = event.status.value in ("void", "deleted")
    differences = []
    if want_void != (remote.status == "void"):
        differences.append(f"status {remote.status} -> {event.status.value}")
    if not want_void and remote.total is not None and remote.total != event.computed.total:
        differences.append(f"total {remote.total} -> {event.computed.total}")
    if not want_void and remote.tax_total is not None and remote.tax_total != event.computed.tax_total:
        differences.append(f"tax {remote.tax_total} -> {event.computed.tax_total}")
    return ("update", ", ".join(differences)) if differences else ("no change", "")


def plan(config: AppConfig, ledger: Ledger, connector: Connector, target: TargetConfig, since: date, until: date,
         location: str | None = None) -> list[ResyncItem]:
    items = []
    for event in invoices_in_period(load_state(config), since, until, location):
        if not target.routes(event.location.code):
            continue
        doc = ledger.document(target.name, event.invoice_id)
        remote = connector.fetch_invoice(doc.external_id) if doc.external_id else None
        by_number = connector.find_invoice(event) if remote is None else None
        if remote is None and by_number is not None and doc.external_id is None:
            remote, by_number = by_number, None  # posted, answer lost before the ledger knew: adopt it
        action, detail = classify(event, doc, remote, by_number)
        items.append(ResyncItem(event, action, detail))
    return items


def apply(ledger: Ledger, connector: Connector, target: TargetConfig, items: list[ResyncItem]) -> dict[str, int]:
    done: dict[str, int] = {}
    entities = PgEntities(ledger, target.name)
    for item in items:
        event = item.event
        if item.action == "no change":
            done["no change"] = done.get("no change", 0) + 1
            continue
        with ledger.invoice_lock(target.name, event.invoice_id):
            doc = _resync_doc(ledger, target, item)
            # A fresh salt: QuickBooks replays the answer to a reused requestid, which would "create" nothing.
            ctx = PgDeliveryContext(ledger, target, event, attempt=2, entities=entities,
                                    salt=f"resync-{uuid.uuid4().hex}")
            new_doc = connector.deliver(event, doc, ctx)
            ledger.record_document(target=target.name, invoice_id=event.invoice_id, invoice_number=event.number,
                                   doc=new_doc, audit={"version": event.version, "action": f"resync-{item.action}",
                                                       "payload_hash": new_doc.payload_hash,
                                                       "request_summary": {"detail": item.detail,
                                                                           "total": str(event.computed.total)},
                                                       "response_status": new_doc.status,
                                                       "external_id": new_doc.external_id, "source_tx": None})
        done[item.action] = done.get(item.action, 0) + 1
        log.info("resynced", target=target.name, invoice_id=event.invoice_id, action=item.action)
    return done


def _resync_doc(ledger: Ledger, target: TargetConfig, item: ResyncItem) -> DocumentState:
    doc = ledger.document(target.name, item.event.invoice_id)
    if item.action == "create":
        doc = DocumentState()  # the platform no longer has it: post it afresh
    # Force a rewrite of everything: the connector skips nothing it thinks is already there.
    engine = doc.engine.model_copy(update={"invoice_digest": None}) if doc.engine else None  # engine: resend it
    return doc.model_copy(update={"delivered_version": 0, "payload_hash": None, "extra": {}, "engine": engine})


def preview(ledger: Ledger, connector: Connector, target: TargetConfig, items: list[ResyncItem]
            ) -> list[tuple[InvoiceEvent, list[dict]]]:
    """``resync --preview``: what ``apply`` would send per invoice (``Connector.preview``), sending nothing."""
    return [(item.event, connector.preview(item.event, _resync_doc(ledger, target, item)))
            for item in items if item.action != "no change"]


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
