"""The bookkeeper's operations shared by the command line and the console: retry or drop a dead letter,
and reconcile a period. ``ledgerwire dlq retry|drop`` and ``ledgerwire reconcile`` print what these return;
the console (``daemon/console``) renders it — one code path, so both behave the same.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from connectors.base import Connector
from daemon import metrics
from daemon.config import AppConfig, TargetConfig
from daemon.sink.ledger import Ledger

RECONCILE_FIELDS = ["invoice", "kind", "detail", "ledger_version", "source_version", "external_id"]
RECONCILE_KINDS = ("missing", "amount", "conflict", "payment")


@dataclass
class DeadLetterOutcome:
    """What a retry or drop did: ``ok`` False with ``message`` when the platform refused again."""

    ok: bool
    message: str
    target: str
    invoice_id: int
    invoice_number: str
    version: int
    resolved: int = 0
    error_class: str | None = None


def drop_dead_letter(ledger: Ledger, target: TargetConfig, row: dict[str, Any]) -> DeadLetterOutcome:
    """Give up on an invoice's dead letters at a target (it stays unposted there)."""
    n = ledger.resolve_dead_letters(target.name, row["invoice_id"], "dropped")
    return DeadLetterOutcome(True, f"dropped {n} dead letter(s) of invoice {row['invoice_number']} on {target.name}",
                             target.name, row["invoice_id"], row["invoice_number"], row["version"], resolved=n)


def retry_dead_letter(config: AppConfig, ledger: Ledger, runtime: Any, target: TargetConfig, row: dict[str, Any],
                      worker: Any = None) -> DeadLetterOutcome:
    """Deliver the newest dead-lettered version of ``row``'s invoice now, then unpark the invoice.

    ``worker``: the running daemon's ``SinkWorker`` for the target (the console passes it, so the retry
    shares the sink's connector and rate limits); without one a worker is built just for this call.
    """
    from daemon.canonical import decode_invoice_event
    from daemon.sink.deliver import Shutdown, SinkWorker, deliver_event_now, deliver_pulled_again

    rows = [r for r in ledger.dead_letters(target.name) if r["invoice_id"] == row["invoice_id"]]
    if not rows:
        return DeadLetterOutcome(False, f"invoice {row['invoice_number']} has no open dead letter on {target.name}",
                                 target.name, row["invoice_id"], row["invoice_number"], row["version"])
    newest = max(rows, key=lambda r: r["version"])
    newest_row = ledger.dead_letter_row(newest["id"])
    event = decode_invoice_event(bytes(newest_row["event"]))
    worker = worker or SinkWorker(config, target, ledger, runtime, threading.Event())
    try:
        if newest_row["topic"].startswith("pull:"):
            # Refused by a pull platform after it was queued: the ledger already counts the version as
            # delivered, so hand it straight back to the connector to queue again.
            outcome = deliver_pulled_again(worker, event)
        else:
            # Fresh request ids: the platform answered the old ones with the refusal and would replay it. The
            # retry is an attempt > 1, so the connector looks up what the refused delivery did create first.
            outcome = deliver_event_now(worker, event, salt=f"dlq-retry-{uuid.uuid4().hex}")
    except Shutdown as exc:  # the target's grant needs a person: it is paused now
        return DeadLetterOutcome(False, f"{event.number} v{event.version}: not delivered, {target.name} needs "
                                        f"re-authorisation: {exc}", target.name, event.invoice_id, event.number,
                                 event.version, error_class="auth")
    if outcome is not None and not isinstance(outcome, tuple):
        return DeadLetterOutcome(False, f"retry failed again: {outcome.error_class.value}: {outcome.reason}",
                                 target.name, event.invoice_id, event.number, event.version,
                                 error_class=outcome.error_class.value)
    if isinstance(outcome, tuple):
        doc, attempts, action = outcome
        # As the sink records a delivery: the attempt count ends with it, and the audit trail shows what
        # was posted (an invoice's total there is what the console's cash page reads).
        doc.extra.pop("attempt_version", None)
        doc.extra.pop("attempts", None)
        ledger.record_document(target=target.name, invoice_id=event.invoice_id, invoice_number=event.number, doc=doc,
                               audit={"version": event.version, "action": f"dlq-retry-{action}",
                                      "payload_hash": doc.payload_hash,
                                      "request_summary": {"status": event.status.value, "lines": len(event.lines),
                                                          "payments": len(event.payments),
                                                          "total": str(event.computed.total), "attempts": attempts},
                                      "response_status": doc.status, "external_id": doc.external_id,
                                      "source_tx": event.source.tx_id})
    n = ledger.resolve_dead_letters(target.name, row["invoice_id"], "retried")
    return DeadLetterOutcome(True, f"invoice {event.number} v{event.version} delivered to {target.name}; "
                                   f"{n} dead letter(s) resolved", target.name, event.invoice_id, event.number,
                             event.version, resolved=n)


def reconcile_differences(config: AppConfig, ledger: Ledger, connector: Connector, target: TargetConfig,
                          since: date, until: date, location: str | None = None) -> list[dict[str, Any]]:
    """Source (the fold's state) vs ledger vs platform for invoices issued in the period: one row per
    difference (missing, amount, conflict, payment); sets the reconcile-mismatch gauges."""
    from daemon.operations import resync

    rows: list[dict[str, Any]] = []
    for item in resync.plan(config, ledger, connector, target, since, until, location):
        doc = ledger.document(target.name, item.event.invoice_id)
        kind = {"create": "missing", "conflict": "conflict", "update": "amount"}.get(item.action)
        remote = connector.fetch_invoice(doc.external_id) if doc.external_id else None
        expected = resync.expected_balance(item.event)  # refunds count: a refunded invoice owes less
        if kind is None and remote is not None and remote.balance is not None \
                and item.event.status.value == "issued" and remote.balance != expected:
            kind, item.detail = "payment", f"balance {remote.balance} vs {expected}"
        if kind is not None:
            rows.append({"invoice": item.event.number, "kind": kind, "detail": item.detail,
                         "ledger_version": doc.delivered_version, "source_version": item.event.version,
                         "external_id": doc.external_id or ""})
    for kind in RECONCILE_KINDS:
        metrics.RECONCILE_MISMATCHES.labels(target.name, kind).set(sum(1 for r in rows if r["kind"] == kind))
    return rows
