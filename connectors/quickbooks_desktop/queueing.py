"""The push side of QuickBooks Desktop, a pull platform: ``deliver`` queues the newest version of an invoice
durably (``connectors.pull_queue``) and returns at once with status "queued"; the Web Connector carries the work
later (``qbwc.py``). Reads for reconcile, trace and preview come from what QuickBooks last answered: a pull
platform cannot be asked on demand."""

from __future__ import annotations

from typing import Any

import structlog

from connectors import engine
from connectors.base import DocumentState, RemoteInvoice
from connectors.pull_queue import ddl
from daemon.canonical import InvoiceEvent

log = structlog.get_logger(__name__)


class QueuedDelivery:
    """Mixed into the connector, which sets ``queue``, ``driver`` (``engine_pull.PullDriver``) and ``entities``."""

    @classmethod
    def ledger_ddl(cls) -> str:
        return ddl("qbd")

    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx) -> DocumentState:
        self.queue.enqueue(event.invoice_id, event.version, event.model_dump_json())
        work = self.queue.load(event.invoice_id)
        known = self.driver.document(work.state if work else {})
        if work and work.failed_reason:
            known.extra["qbd_last_error"] = work.failed_reason[:500]
        known.status = "queued"
        log.info("qbd_queued", target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        return engine.delivered(event, known)

    def unconfirmed(self) -> int:
        """Invoice versions queued that the Web Connector has not yet brought to QuickBooks (nor dead-lettered)."""
        return self.queue.pending()

    def document(self, invoice_id: int) -> DocumentState | None:
        """What is known at QuickBooks of a queued invoice (the engine's state, newest checkpoint)."""
        work = self.queue.load(invoice_id)
        return self.driver.document(work.state) if work else None

    # -- reads for reconcile/trace: from what QuickBooks last answered (a pull platform cannot be asked now) --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        known = self.document(event.invoice_id)
        return known_invoice(known) if known and known.external_id else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        work = self.queue.by_txn(external_id)
        return known_invoice(self.driver.document(work.state)) if work else None

    def preview(self, event: InvoiceEvent, doc: DocumentState, entities=None) -> list[dict[str, Any]]:
        """The qbXML writes the Web Connector would carry for this event, in order (the engine's loop against
        the recorder: queries find nothing new, writes answer "<new …>" ids). Writes nothing."""
        known = self.document(event.invoice_id)
        return engine.preview(self, self.target.name, event, known or doc, self.entities)


def known_invoice(doc: DocumentState) -> RemoteInvoice:
    """An invoice as the queue last knew it from QuickBooks' answers."""
    return RemoteInvoice(external_id=doc.external_id or "", token=doc.token,
                         status="void" if doc.status == "voided" else "issued",
                         raw={"payments": {k: v.external_id for k, v in doc.payments.items()},
                              "refunds": {k: v.external_id for k, v in doc.refunds.items()}})
