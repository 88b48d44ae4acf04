"""The bookkeeper's operations shared by the command line and the console: retry or drop a dead letter,
and reconcile a period. ``ledgerwire dlq retry|drop`` and ``ledgerwire reconcile`` print what these return;
the console (``daemon/console``) renders it — one code path, so both behave the same.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import structlog

from connectors.base import Connector
from daemon import metrics
from daemon.config import AppConfig, TargetConfig
from daemon.operations.patience import Patience
from daemon.sink.ledger import Ledger

RECONCILE_FIELDS = ["invoice", "kind", "detail", "ledger_version", "source_version", "external_id"]
log = structlog.get_logger(__name__)
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
                          since: date, until: date, location: str | None = None,
                          patience: Patience | None = None) -> list[dict[str, Any]]:
    """Source (the fold's state) vs ledger vs platform for invoices issued in the period: one row per
    difference (missing, amount, conflict, payment); sets the reconcile-mismatch gauges."""
    from daemon.operations import resync

    patience = patience or Patience(uncertain_wait_s=target.request_timeout_s)
    rows: list[dict[str, Any]] = []
    for item in resync.plan(config, ledger, connector, target, since, until, location, patience):
        doc = ledger.document(target.name, item.event.invoice_id)
        kind = {"create": "missing", "conflict": "conflict", "update": "amount"}.get(item.action)
        remote = item.held
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


class ReconcileSchedule:
    """Reconciliation on a schedule inside the daemon, so the mismatch gauge is real (issue #13). It uses each
    running sink's connector (its rate limiter included). An error is logged and the next round comes."""

    def __init__(self, config: AppConfig, ledger: Ledger, connectors: dict[str, Connector], stop: threading.Event,
                 clock=time.time) -> None:
        self.config, self.ledger, self.stop, self.clock = config, ledger, stop, clock
        self.connectors = {name: c for name, c in connectors.items() if reconcile_enabled(config.target(name), c)}
        # The first round soon after start (the gauge is real early), then every interval.
        self.next_at = {name: clock() + min(300.0, config.target(name).reconcile.interval_s) for name in self.connectors}

    def run(self) -> None:
        while not self.stop.is_set():
            self.run_due()
            self.stop.wait(30.0)

    def run_due(self) -> list[str]:
        done = []
        for name, connector in self.connectors.items():
            if self.stop.is_set() or self.clock() < self.next_at[name]:
                continue
            target = self.config.target(name)
            self.next_at[name] = self.clock() + target.reconcile.interval_s
            today = date.today()
            try:
                # Waits out the platform's limits (shared with the sink) but never past a shutdown.
                patience = Patience(uncertain_wait_s=target.request_timeout_s, wait=self.stop.wait, say=None)
                rows = reconcile_differences(self.config, self.ledger, connector, target,
                                             today - timedelta(days=target.reconcile.period_days),
                                             today + timedelta(days=1), patience=patience)
            except Exception:  # noqa: BLE001 - a failed round (platform away) is logged; the next one comes
                log.exception("reconcile_failed", target=name)
                continue
            metrics.RECONCILE_LAST_RUN.labels(name).set(time.time())
            log.info("reconciled", target=name, differences=len(rows), period_days=target.reconcile.period_days)
            done.append(name)
        return done


def reconcile_enabled(target: TargetConfig, connector: Connector) -> bool:
    if target.reconcile.enabled is not None:
        return target.reconcile.enabled
    return "requests_per_day" not in type(connector.settings).model_fields
