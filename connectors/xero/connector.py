"""The Xero connector: contacts, invoices (create — several per request —, edit, void), payments applied to
the invoice they pay, and refunds as credit notes allocated to the invoice.

Xero has no concurrency token on invoices; its rule instead is that a document with payments or credit
notes allocated to it cannot be edited or voided. The connector therefore takes its own payments and
allocations off first (by the ids it recorded, or — when Xero still refuses — by re-reading the invoice
and finding them by our references), edits, then puts them back. Refresh tokens are single-use and
rotate: ``OAuth2RefreshAuth`` persists the new one before it is used.

Closed periods (Xero's lock dates): a refused change posts its difference as an adjustment dated the first
open day (``connectors.adjustments``): an increase as an invoice ``<number>-A<n>``, a decrease as a credit
note ``<number>-C<n>`` allocated to the original (then to the increases) up to what is due. A shop payment
larger than the original's amount due is split across the original and its increases, one Xero payment per
invoice referenced ``LW<id>`` / ``LW<id>-A<n>``. A refund removed after its credit note was locked is reversed
by an increase adjustment; the credit note stays.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import structlog

from connectors.base import (
    ClosedPeriodError,
    Connector,
    DeliveryContext,
    DeliveryError,
    DocumentState,
    ExternalRef,
    PermanentError,
    RemoteInvoice,
    StaleTokenError,
    deliver_each,
    delivered,
    sync_entity,
)
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
from connectors import adjustments
from connectors.xero import mapping
from connectors.xero.client import AllocatedError, XeroClient, classify, error_for_messages, quote, validation_messages
from connectors.xero.settings import XeroSettings
from daemon.canonical import InvoiceEvent, PaymentStatus

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.xero.com/api.xro/2.0"
UNITDP = 4  # unit prices carry 4 decimal places
ZERO = Decimal("0.00")


class XeroConnector(Connector):
    platform = "xero"
    settings_model = XeroSettings
    supports_batch = True

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: XeroSettings = self.settings
        self.batch_size = settings.batch_size
        self.credentials = runtime.credentials(target.name)
        self._tenant: str | None = settings.tenant_id
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url, credentials=self.credentials,
                                 extra_headers=self._tenant_header, client_auth="basic")
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, per_day=settings.requests_per_day,
                                  concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, base_url=target.base_url or DEFAULT_BASE_URL,
                                 limiter=limiter, auth=auth, classify=classify, timeout_s=target.request_timeout_s)
        self.client = XeroClient(self.http)
        self.mapping = target.mapping

    def close(self) -> None:
        self.http.close()

    # -- tenant --
    def _tenant_header(self, cred: dict[str, Any]) -> dict[str, str]:
        tenant = self._tenant or cred.get("tenant_id")
        return {"xero-tenant-id": tenant} if tenant else {}

    def _ensure_tenant(self) -> None:
        if self._tenant:
            return
        stored = self.credentials.get().get("tenant_id")
        if stored:
            self._tenant = stored
            return
        # Not configured: the organisations this app is connected to (identity API GET /connections).
        response = self.http.request("GET", self.settings.connections_url, headers={"Accept": "application/json"})
        connections = [c for c in json.loads(response.content) if c.get("tenantType", "ORGANISATION") == "ORGANISATION"]
        if len(connections) != 1:
            raise PermanentError(f"Xero: the app is connected to {len(connections)} organisations; set "
                                 "settings.tenant_id to the one this target posts to")
        self._tenant = connections[0]["tenantId"]
        self.credentials.update({"tenant_id": self._tenant})
        log.info("xero_tenant_selected", target=self.target.name, tenant_id=self._tenant)

    # -- the delivery --
    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        self._ensure_tenant()
        doc = doc.model_copy(deep=True)
        bound = log.bind(target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        if doc.external_id is None and ctx.attempt > 1:
            self._adopt_existing(event, doc)
        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status not in ("voided", "deleted"):
                try:
                    self._void(event, doc, ctx)
                    bound.info("xero_invoice_voided", external_id=doc.external_id)
                except ClosedPeriodError as exc:
                    self._void_in_closed_period(event, doc, ctx, exc, bound)
            return delivered(event, doc)
        contact_id = self._contact(event, ctx)
        doc.customer_id = contact_id
        self._items(event, ctx)
        payload = mapping.invoice_payload(event, contact_id, self.mapping)
        digest = mapping.invoice_hash(payload)
        self._keep_open_date(doc, payload)
        # Payments reversed, moved or changed go first, so a lowered total never falls below what is applied.
        self._remove_payments(doc, ctx, wanted)
        if doc.external_id is None:
            try:
                answer = self.client.write("PUT", "/Invoices", {"Invoices": [payload]},
                                           key=ctx.idempotency_key("invoice"), unitdp=UNITDP)
            except ClosedPeriodError as exc:
                answer = self._create_redated(event, doc, ctx, payload, exc, bound)
            self._record_invoice(event, doc, answer["Invoices"][0], digest)
            ctx.checkpoint(doc)
            bound.info("xero_invoice_created", external_id=doc.external_id)
        elif doc.extra.get("invoice_hash") != digest:
            try:
                self._update_invoice(event, doc, payload, digest, ctx)
                bound.info("xero_invoice_updated", external_id=doc.external_id)
            except ClosedPeriodError as exc:
                self._adjust_closed(event, doc, ctx, exc, bound)
                doc.extra["invoice_hash"] = digest  # adjusted: this version is delivered, never retried
                ctx.checkpoint(doc)
        self._add_payments(doc, ctx, wanted)
        # What is left due goes to the invoice's own decrease adjustments before the refunds' credit notes.
        self._void_removed_refunds(event, doc, ctx)
        self._allocate_adjustment_credit(doc, ctx)
        self._refunds(event, doc, ctx)
        return delivered(event, doc)

    def deliver_many(self, batch):
        """New invoices go to Xero in one ``PUT /Invoices?summarizeErrors=false`` per ``batch_size``: each
        item answers on its own (``HasErrors`` + ``ValidationErrors``), so one bad invoice fails alone. Each
        invoice is then finished (payments, refunds) by ``deliver``, which finds it created."""
        self._ensure_tenant()
        results: list[DocumentState | DeliveryError | None] = [None] * len(batch)
        creates: list[tuple[int, dict[str, Any], str]] = []
        for index, (event, doc, ctx) in enumerate(batch):
            if doc.external_id is None and ctx.attempt == 1 and event.status.value == "issued":
                try:
                    contact_id = self._contact(event, ctx)
                    self._items(event, ctx)
                    payload = mapping.invoice_payload(event, contact_id, self.mapping)
                except DeliveryError as exc:
                    results[index] = exc
                    continue
                doc.customer_id = contact_id
                creates.append((index, payload, mapping.invoice_hash(payload)))
        if creates:
            first_ctx = batch[creates[0][0]][2]
            key = first_ctx.idempotency_key("batch", *[batch[i][0].invoice_id for i, _, _ in creates])
            answer = self.client.write("PUT", "/Invoices", {"Invoices": [p for _, p, _ in creates]}, key=key,
                                       unitdp=UNITDP, summarizeErrors="false")
            for (index, _, digest), item in zip(creates, answer.get("Invoices") or []):
                event, doc, ctx = batch[index]
                if item.get("HasErrors") or item.get("ValidationErrors"):
                    error = error_for_messages(validation_messages(item), status=400, detail=item)
                    if not isinstance(error, ClosedPeriodError):  # a locked date: deliver() re-dates it
                        results[index] = error
                    continue
                self._record_invoice(event, doc, item, digest)
                ctx.checkpoint(doc)
        return deliver_each(self, batch, results)

    def _record_invoice(self, event: InvoiceEvent, doc: DocumentState, invoice: dict[str, Any], digest: str) -> None:
        doc.external_id, doc.status = invoice["InvoiceID"], "posted"
        doc.token = invoice.get("UpdatedDateUTC")
        doc.extra["invoice_hash"] = digest
        doc.extra["total"] = str(invoice.get("Total", event.computed.total))
        day = _xero_date(invoice.get("DateString") or invoice.get("Date"))
        if day is not None:
            doc.extra["date"] = day.isoformat()
        self._check_amounts(event, doc, invoice)

    def _check_amounts(self, event: InvoiceEvent, doc: DocumentState, invoice: dict[str, Any]) -> None:
        """The shop's numbers are the truth: report (never hide) a difference in Xero's totals."""
        tax = Decimal(str(invoice.get("TotalTax", event.computed.tax_total)))
        total = Decimal(str(invoice.get("Total", event.computed.total)))
        if tax != event.computed.tax_total or total != event.computed.total:
            doc.extra["tax_difference"] = str(tax - event.computed.tax_total)
            doc.extra["total_difference"] = str(total - event.computed.total)
            log.warning("xero_amount_difference", target=self.target.name, invoice_id=event.invoice_id,
                        version=event.version, platform_tax=str(tax), shop_tax=str(event.computed.tax_total),
                        platform_total=str(total), shop_total=str(event.computed.total))
        else:
            doc.extra.pop("tax_difference", None)
            doc.extra.pop("total_difference", None)

    def _adopt_existing(self, event: InvoiceEvent, doc: DocumentState) -> None:
        """An earlier attempt may have created the invoice before its answer was lost: find it first."""
        found = self._find(event.number)
        if found is not None:
            doc.external_id, doc.token = found["InvoiceID"], found.get("UpdatedDateUTC")
            doc.status = "voided" if found.get("Status") == "VOIDED" else "posted"
            doc.extra["total"] = str(found.get("Total", ZERO))
            doc.extra.pop("invoice_hash", None)  # content unknown: send the update
            day = _xero_date(found.get("DateString") or found.get("Date"))
            if day is not None:
                doc.extra["date"] = day.isoformat()
                if event.issue_date and day > event.issue_date:  # posted re-dated into the open period
                    doc.extra["open_date"] = day.isoformat()

    def _find(self, number: str) -> dict[str, Any] | None:
        found = self.client.get("/Invoices", InvoiceNumbers=number, unitdp=UNITDP).get("Invoices") or []
        live = [i for i in found if i.get("Type") == "ACCREC" and i.get("Status") != "DELETED"]
        return live[0] if live else None

    def _update_invoice(self, event: InvoiceEvent, doc: DocumentState, payload: dict[str, Any], digest: str,
                        ctx: DeliveryContext) -> None:
        # Xero refuses to edit a document with payments or credit notes allocated: take ours off first;
        # they are put back by _add_payments/_refunds. A document dated on or before the lock date cannot be
        # edited at all: found out before taking anything off.
        if doc.payments or self._allocations(doc) or self._credit_allocations(doc):
            self._refuse_if_locked(doc)
        self._detach(doc, ctx)
        body = {"Invoices": [{**payload, "InvoiceID": doc.external_id}]}
        for attempt in (1, 2):
            try:
                answer = self.client.write("POST", f"/Invoices/{doc.external_id}", body, unitdp=UNITDP,
                                           key=ctx.idempotency_key("invoice-update", digest, attempt))
                break
            except AllocatedError:
                if attempt == 2:
                    raise
                # Our ledger did not know every allocation (a crash between a write and its checkpoint, or
                # an adopted invoice): re-read the invoice, take off what is ours, retry once.
                self._detach_found(doc, ctx)
        self._record_invoice(event, doc, answer["Invoices"][0], digest)
        ctx.checkpoint(doc)

    # -- payments and allocations --
    def _allocations(self, doc: DocumentState) -> dict[str, list[list[str]]]:
        return json.loads(doc.extra.get("allocations", "{}"))

    def _set_allocations(self, doc: DocumentState, allocations: dict[str, list[list[str]]]) -> None:
        if allocations:
            doc.extra["allocations"] = json.dumps(allocations, sort_keys=True)
        else:
            doc.extra.pop("allocations", None)

    def _credit_allocations(self, doc: DocumentState) -> dict[str, list[list[str]]]:
        """Decrease-adjustment credit notes' allocations: credit note id -> [[allocation id, amount, invoice id]]."""
        return json.loads(doc.extra.get("credit_allocations", "{}"))

    def _set_credit_allocations(self, doc: DocumentState, allocations: dict[str, list[list[str]]]) -> None:
        allocations = {k: v for k, v in allocations.items() if v}
        if allocations:
            doc.extra["credit_allocations"] = json.dumps(allocations, sort_keys=True)
        else:
            doc.extra.pop("credit_allocations", None)

    def _payment_parts(self, doc: DocumentState) -> dict[str, list[list[str]]]:
        """Shop payments split across the original and its increase adjustments: payment id ->
        [[Xero payment id, invoice id, amount]] (a payment not listed is one Xero payment on the original)."""
        return json.loads(doc.extra.get("payment_parts", "{}"))

    def _parts_of(self, doc: DocumentState, payment_id: str) -> list[list[str]]:
        parts = self._payment_parts(doc).get(payment_id)
        if parts is not None:
            return parts
        ref = doc.payments[payment_id]
        return [[ref.external_id, doc.external_id or "", str(ref.amount or ZERO)]]

    def _set_parts(self, doc: DocumentState, payment_id: str, parts: list[list[str]] | None) -> None:
        all_parts = self._payment_parts(doc)
        if parts:
            all_parts[payment_id] = parts
        else:
            all_parts.pop(payment_id, None)
        if all_parts:
            doc.extra["payment_parts"] = json.dumps(all_parts, sort_keys=True)
        else:
            doc.extra.pop("payment_parts", None)

    def _amount_due(self, doc: DocumentState) -> Decimal:
        """What is still due on the original invoice, from what this ledger posted to it."""
        allocated = sum((Decimal(a) for refs in self._allocations(doc).values() for _, a in refs), ZERO)
        allocated += sum((Decimal(a) for refs in self._credit_allocations(doc).values() for _, a, invoice_id in refs
                          if invoice_id == doc.external_id), ZERO)
        paid = ZERO
        for payment_id in doc.payments:
            paid += sum((Decimal(a) for _, invoice_id, a in self._parts_of(doc, payment_id)
                         if invoice_id == doc.external_id), ZERO)
        return Decimal(doc.extra.get("total", "0")) - paid - allocated

    def _increase_targets(self, doc: DocumentState) -> list[tuple[str, str]]:
        """Where a payment may go, in order: (invoice id, reference suffix) of the original, then of every
        increase adjustment invoice (``<number>-A<n>``, including refund reversals)."""
        out = [(doc.external_id or "", "")]
        for entry in adjustments.load(doc.extra):
            if entry.get("kind") == "increase" and entry.get("entity") == "Invoice" and entry.get("id"):
                out.append((entry["id"], mapping.adjustment_suffix(str(entry.get("number")))))
        return out

    def _dues(self, targets: list[tuple[str, str]]) -> dict[str, Decimal]:
        """Xero's AmountDue of each invoice (one GET /Invoices?IDs=…); nothing is due on a voided or paid one."""
        found = self.client.get("/Invoices", IDs=",".join(i for i, _ in targets), unitdp=UNITDP).get("Invoices") or []
        dues = {invoice_id: ZERO for invoice_id, _ in targets}
        for invoice in found:
            if invoice.get("InvoiceID") in dues and invoice.get("Status") == "AUTHORISED":
                dues[invoice["InvoiceID"]] = Decimal(str(invoice.get("AmountDue") or 0))
        return dues

    def _delete_payment(self, payment_id: str, xero_payment_id: str, ctx: DeliveryContext) -> None:
        try:
            self.client.write("POST", f"/Payments/{xero_payment_id}", {"Status": "DELETED"},
                              key=ctx.idempotency_key("payment-delete", payment_id, xero_payment_id))
        except PermanentError as exc:
            if exc.status != 404 and "already been deleted" not in exc.reason:
                raise

    def _delete_parts(self, doc: DocumentState, payment_id: str, ctx: DeliveryContext) -> None:
        """Every Xero payment a shop payment was posted as (one, or one per invoice it was split across)
        comes off; each part leaves the record as soon as it is gone, so a retry deletes only what is left."""
        parts = self._parts_of(doc, payment_id)
        while parts:
            self._delete_payment(payment_id, parts[0][0], ctx)
            parts = parts[1:]
            if parts:
                self._set_parts(doc, payment_id, parts)
                doc.payments[payment_id].external_id = parts[0][0]
                ctx.checkpoint(doc)
        self._set_parts(doc, payment_id, None)
        del doc.payments[payment_id]
        ctx.checkpoint(doc)

    def _remove_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        for payment_id, ref in list(doc.payments.items()):
            current = wanted.get(payment_id)
            if current is not None and ref.amount == current.amount:
                continue
            self._delete_parts(doc, payment_id, ctx)

    def _remove_allocations(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        """Credit notes' allocations come off (refunds' and decrease adjustments'), to be put back after the
        payments. An allocation dated on or before the lock date stays (Xero refuses to remove it), and so does
        the one of a refund reversed by an adjustment (its credit note is kept where it is)."""
        allocations = self._allocations(doc)
        for refund_id, refs in list(allocations.items()):
            credit_note = doc.refunds.get(refund_id)
            if credit_note is not None and credit_note.status == "reversed":
                continue
            try:
                for allocation_id, _ in refs:
                    if credit_note is not None:
                        self._delete_allocation(credit_note.external_id, allocation_id)
            except ClosedPeriodError as exc:
                log.warning("xero_locked_allocation_kept", target=self.target.name, reason=exc.reason[:200])
                continue
            del allocations[refund_id]
            self._set_allocations(doc, allocations)
            ctx.checkpoint(doc)
        credits = self._credit_allocations(doc)
        for credit_id, refs in list(credits.items()):
            for ref in list(refs):
                try:
                    self._delete_allocation(credit_id, ref[0])
                except ClosedPeriodError as exc:
                    log.warning("xero_locked_allocation_kept", target=self.target.name, reason=exc.reason[:200])
                    continue
                refs.remove(ref)
                self._set_credit_allocations(doc, credits)
                ctx.checkpoint(doc)

    def _delete_allocation(self, credit_id: str, allocation_id: str) -> None:
        try:
            self.client.delete(f"/CreditNotes/{credit_id}/Allocations/{allocation_id}")
        except PermanentError as exc:
            if exc.status != 404:
                raise

    def _detach(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        """Every payment and credit-note allocation of ours comes off the invoice (to be put back)."""
        for payment_id in list(doc.payments):
            self._delete_parts(doc, payment_id, ctx)
        self._remove_allocations(doc, ctx)

    def _detach_found(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        invoice = self.client.read(f"/Invoices/{doc.external_id}", "Invoices", unitdp=UNITDP)
        if invoice is None:
            raise StaleTokenError("Xero: the invoice is gone", platform_code="404")
        foreign = []
        adjustment_note = re.compile(re.escape(str(invoice.get("InvoiceNumber") or "")) + r"-C\d+")
        for payment in invoice.get("Payments") or []:
            reference = str(payment.get("Reference") or "")
            if payment.get("Status", "AUTHORISED") == "DELETED":
                continue
            if reference.startswith(mapping.PAYMENT_PREFIX):
                self._delete_payment(reference, payment["PaymentID"], ctx)
                gone = [k for k, v in doc.payments.items() if v.external_id == payment["PaymentID"]]
                for payment_id in gone:
                    del doc.payments[payment_id]
                    self._set_parts(doc, payment_id, None)
            else:
                foreign.append(payment.get("PaymentID"))
        for credit in invoice.get("CreditNotes") or []:
            number = str(credit.get("CreditNoteNumber") or "")
            if not number.startswith(mapping.CREDIT_NOTE_PREFIX) and not adjustment_note.fullmatch(number):
                foreign.append(credit.get("CreditNoteID"))
                continue
            full = self.client.read(f"/CreditNotes/{credit['CreditNoteID']}", "CreditNotes") or {}
            for allocation in full.get("Allocations") or []:
                if (allocation.get("Invoice") or {}).get("InvoiceID") == doc.external_id and allocation.get("AllocationID"):
                    self.client.delete(f"/CreditNotes/{credit['CreditNoteID']}/Allocations/{allocation['AllocationID']}")
        self._set_allocations(doc, {})
        self._set_credit_allocations(doc, {})
        ctx.checkpoint(doc)
        if foreign:
            raise PermanentError(f"Xero: invoice {doc.external_id} has payments or credit notes not posted by "
                                 f"Ledgerwire ({len(foreign)}); remove them in Xero to let the edit through")

    def _add_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """New payments, each applied to THIS invoice, in one PUT /Payments."""
        new = [(pid, p) for pid, p in wanted.items() if pid not in doc.payments]
        if not new:
            return
        targets = self._increase_targets(doc)
        if len(targets) > 1:
            self._add_split_payments(doc, ctx, new, targets)
            return
        if ctx.attempt > 1:
            for payment_id, payment in list(new):
                found = self._find_payment(mapping.payment_reference(payment), doc.external_id)
                if found is not None:
                    doc.payments[payment_id] = ExternalRef(external_id=found["PaymentID"], amount=payment.amount,
                                                           status="applied")
                    new.remove((payment_id, payment))
            if not new:
                ctx.checkpoint(doc)
                return
        if sum((p.amount for _, p in new), ZERO) > self._amount_due(doc) and (
                self._allocations(doc) or self._credit_allocations(doc)):
            self._remove_allocations(doc, ctx)  # payments come first; credit is re-allocated to what is left
        bodies = [mapping.payment_payload(p, doc.external_id, self.mapping) for _, p in new]
        generation = ",".join(sorted(ref.external_id for ref in doc.payments.values()))
        answer = self._put_open("/Payments", {"Payments": bodies}, bodies, ctx,
                                ctx.idempotency_key("payments", *[pid for pid, _ in new], generation,
                                                    doc.extra.get("invoice_hash", "")))
        for (payment_id, payment), created in zip(new, answer.get("Payments") or []):
            doc.payments[payment_id] = ExternalRef(external_id=created["PaymentID"], amount=payment.amount,
                                                   status="applied")
        ctx.checkpoint(doc)

    def _add_split_payments(self, doc: DocumentState, ctx: DeliveryContext, new: list, targets: list) -> None:
        """The invoice has increase adjustments (``<number>-A<n>``): Xero refuses a payment larger than one
        invoice's AmountDue, so each shop payment is split across the original (first) and its adjustments in
        order, one Xero payment per invoice, referenced ``LW<id>`` on the original and ``LW<id>-A<n>`` on an
        adjustment, so a retry finds every part by its reference. More than everything due is left on the last
        part, for Xero to refuse with its own message."""
        parts: dict[str, list[list[str]]] = {}
        if ctx.attempt > 1:
            for payment_id, payment in new:
                for invoice_id, suffix in targets:
                    found = self._find_payment(mapping.payment_reference(payment) + suffix, invoice_id)
                    if found is not None:
                        parts.setdefault(payment_id, []).append(
                            [found["PaymentID"], invoice_id, str(Decimal(str(found.get("Amount"))))])
        posted = lambda pid: sum((Decimal(a) for _, _, a in parts.get(pid, [])), ZERO)  # noqa: E731
        needed = sum((p.amount - posted(pid) for pid, p in new), ZERO)
        dues = self._dues(targets) if needed > 0 else {}
        if needed > sum(dues.values(), ZERO) and (self._allocations(doc) or self._credit_allocations(doc)):
            self._remove_allocations(doc, ctx)  # payments come first; credit is re-allocated to what is left
            dues = self._dues(targets)
        bodies: list[dict[str, Any]] = []
        plan: list[tuple[str, str]] = []
        for payment_id, payment in new:
            done = {invoice_id for _, invoice_id, _ in parts.get(payment_id, [])}
            left = payment.amount - posted(payment_id)
            first = len(bodies)
            for invoice_id, suffix in targets:
                if left <= 0:
                    break
                take = min(left, dues.get(invoice_id, ZERO))
                if invoice_id in done or take <= 0:
                    continue
                bodies.append(mapping.payment_payload(payment, invoice_id, self.mapping, amount=take, suffix=suffix))
                plan.append((payment_id, invoice_id))
                dues[invoice_id] -= take
                left -= take
            if left > 0:  # an overpayment: Xero answers "exceeds the amount outstanding"
                if len(bodies) > first:
                    bodies[-1]["Amount"] += left
                else:
                    invoice_id, suffix = next(((i, s) for i, s in targets if i not in done), targets[0])
                    bodies.append(mapping.payment_payload(payment, invoice_id, self.mapping, amount=left,
                                                          suffix=suffix))
                    plan.append((payment_id, invoice_id))
        if bodies:
            signature = mapping.invoice_hash({"Payments": bodies})
            answer = self._put_open("/Payments", {"Payments": bodies}, bodies, ctx,
                                    ctx.idempotency_key("payment-parts", *[pid for pid, _ in new], signature))
            for (payment_id, invoice_id), created in zip(plan, answer.get("Payments") or []):
                parts.setdefault(payment_id, []).append(
                    [created["PaymentID"], invoice_id, str(Decimal(str(created.get("Amount"))))])
        for payment_id, payment in new:
            if parts.get(payment_id):
                doc.payments[payment_id] = ExternalRef(external_id=parts[payment_id][0][0], amount=payment.amount,
                                                       status="applied")
                self._set_parts(doc, payment_id, parts[payment_id])
        ctx.checkpoint(doc)

    def _find_payment(self, reference: str, invoice_id: str | None) -> dict[str, Any] | None:
        found = self.client.get("/Payments", where=f"Reference=={quote(reference)}").get("Payments") or []
        for payment in found:
            if payment.get("Status") != "DELETED" and (payment.get("Invoice") or {}).get("InvoiceID") == invoice_id:
                return payment
        return None

    # -- refunds: credit notes allocated to the invoice --
    def _refunds(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        self._void_removed_refunds(event, doc, ctx)
        allocations = self._allocations(doc)
        for refund in sorted(event.refunds, key=lambda r: r.id):
            refund_id = str(refund.id)
            ref = doc.refunds.get(refund_id)
            if ref is not None and ref.status == "voided":
                ref = None  # removed in the shop, then entered again: a new credit note
            if ref is None:
                number = mapping.credit_note_number(refund)
                reversals = self._reversals(doc, refund_id)
                if reversals:  # entered again after its locked credit note was reversed: that number is taken
                    number = f"{number}-{reversals + 1}"
                found = self._find_credit_note(number) if ctx.attempt > 1 else None
                if found is None:
                    body = {**mapping.credit_note_payload(refund, event, doc.customer_id, self.mapping),
                            "CreditNoteNumber": number}
                    answer = self._put_open("/CreditNotes", {"CreditNotes": [body]}, [body], ctx,
                                            ctx.idempotency_key("credit-note", refund_id), unitdp=UNITDP)
                    found = answer["CreditNotes"][0]
                ref = ExternalRef(external_id=found["CreditNoteID"], amount=Decimal(str(found.get("Total"))),
                                  status="authorised")
                doc.refunds[refund_id] = ref
                ctx.checkpoint(doc)
            allocated = sum((Decimal(a) for _, a in allocations.get(refund_id, [])), ZERO)
            amount = min((ref.amount or ZERO) - allocated, self._amount_due(doc))
            if amount <= 0:
                continue  # fully paid invoice: the credit stays on the contact, linked by Reference
            body = mapping.allocation_payload(doc.external_id, amount, refund.created_at.date().isoformat())
            answer = self._put_open(f"/CreditNotes/{ref.external_id}/Allocations", body, body["Allocations"], ctx,
                                    ctx.idempotency_key("allocation", refund_id, str(allocated),
                                                        doc.extra.get("invoice_hash", "")))
            created = (answer.get("Allocations") or [{}])[0]
            allocations.setdefault(refund_id, []).append([created.get("AllocationID", ""), str(amount)])
            self._set_allocations(doc, allocations)
            ctx.checkpoint(doc)

    def _find_credit_note(self, number: str) -> dict[str, Any] | None:
        found = self.client.get("/CreditNotes", where=f"CreditNoteNumber=={quote(number)}").get("CreditNotes") or []
        live = [c for c in found if c.get("Status") not in ("DELETED", "VOIDED")]
        return live[0] if live else None

    # -- void --
    def _void(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        """Payments and allocations off, the credit notes voided, then the invoice voided."""
        self._refuse_if_locked(doc)
        self._detach(doc, ctx)
        for refund_id, ref in doc.refunds.items():
            if ref.status != "voided":
                self._void_credit_note(refund_id, ref, doc, ctx)
        body = {"Invoices": [{"InvoiceID": doc.external_id, "Status": "VOIDED"}]}
        for attempt in (1, 2):
            try:
                self.client.write("POST", f"/Invoices/{doc.external_id}", body,
                                  key=ctx.idempotency_key("void", attempt))
                break
            except AllocatedError:
                if attempt == 2:
                    raise
                self._detach_found(doc, ctx)
            except PermanentError as exc:
                if exc.status == 404:
                    doc.status = "deleted"
                    return
                raise
        doc.status = "voided"
        ctx.checkpoint(doc)

    def _void_credit_note(self, refund_id: str, ref: ExternalRef, doc: DocumentState, ctx: DeliveryContext) -> None:
        self.client.write("POST", f"/CreditNotes/{ref.external_id}",
                          {"CreditNotes": [{"CreditNoteID": ref.external_id, "Status": "VOIDED"}]},
                          key=ctx.idempotency_key("credit-note-void", refund_id, ref.external_id))
        ref.status = "voided"
        ctx.checkpoint(doc)

    def _void_removed_refunds(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        """A refund the shop removed after it was posted: its allocations come off the invoice and its credit
        note is voided (Xero keeps the voided document, so the trail stays)."""
        current = {str(r.id) for r in event.refunds}
        for refund_id, ref in list(doc.refunds.items()):
            if refund_id in current or ref.status in ("voided", "reversed"):
                continue
            try:
                allocations = self._allocations(doc)
                for allocation_id, _ in allocations.get(refund_id, []):
                    self._delete_allocation(ref.external_id, allocation_id)
                allocations.pop(refund_id, None)
                self._set_allocations(doc, allocations)
                ctx.checkpoint(doc)
                self._void_credit_note(refund_id, ref, doc, ctx)
            except ClosedPeriodError as exc:
                # The credit note (or its allocation) is dated on or before the lock date: Xero keeps it.
                self._reverse_refund(event, doc, ctx, refund_id, ref, exc)
                continue
            log.info("xero_credit_note_voided", target=ctx.target, invoice_id=event.invoice_id, refund_id=refund_id,
                     external_id=ref.external_id)

    def _reverse_refund(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, refund_id: str,
                        ref: ExternalRef, exc: ClosedPeriodError) -> None:
        """A refund removed in the shop whose credit note Xero cannot void (locked period): the credit note
        stays, and an increase adjustment — an invoice ``<number>-A<n>`` dated the first open day, with the
        credit note's lines — charges the amount again. The invoice is never parked. Its effect on the invoice
        lines is none (credit notes never change the invoice's own amounts), so later closed-period
        differences are unaffected. Credit the note still has (its allocation came off before Xero refused the
        void) is allocated to the new invoice, so the customer owes exactly the original's amount again."""
        entries = adjustments.load(doc.extra)
        seq = adjustments.next_sequence(entries)
        found = self._find_adjustment(event, seq)
        note = self.client.read(f"/CreditNotes/{ref.external_id}", "CreditNotes", unitdp=UNITDP) or {}
        if found is not None:
            kind, posted = found
            if kind != "increase" or mapping.reversed_refund(posted) != refund_id:
                raise PermanentError(f"Xero: adjustment {posted.get('InvoiceNumber') or posted.get('CreditNoteNumber')}"
                                     f" exists but is not recorded; cannot reverse refund {refund_id} safely")
        else:
            lines = mapping.document_groups(note)
            if not lines:
                raise PermanentError(f"Xero: credit note {ref.external_id} of refund {refund_id} could not be read")
            body = mapping.adjustment_payload(event, "increase", seq, doc.customer_id or self._contact(event, ctx),
                                              lines, self._first_open_day(), self.mapping,
                                              mapping.refund_reversal_reason(refund_id))
            answer = self.client.write("PUT", "/Invoices", {"Invoices": [body]}, unitdp=UNITDP,
                                       key=ctx.idempotency_key("refund-reversal", refund_id, seq))
            posted = answer["Invoices"][0]
        entry = self._reversal_entry(event, doc, refund_id, posted, exc.reason)
        adjustments.record(doc.extra, entry)
        self._park_reversed(doc, refund_id)
        ctx.checkpoint(doc)
        log.warning("xero_closed_period_refund_reversed", target=ctx.target, invoice_id=event.invoice_id,
                    **{k: v for k, v in entry.items() if k != "effect"})
        remaining = Decimal(str(note.get("RemainingCredit") or 0))
        amount = min(remaining, Decimal(str(posted.get("AmountDue", posted.get("Total")) or 0)))
        if amount > 0 and note.get("Status") == "AUTHORISED":
            body = mapping.allocation_payload(posted["InvoiceID"], amount, entry["date"])
            self._put_open(f"/CreditNotes/{ref.external_id}/Allocations", body, body["Allocations"], ctx,
                           ctx.idempotency_key("refund-reversal-allocation", refund_id, posted["InvoiceID"]))

    def _park_reversed(self, doc: DocumentState, refund_id: str) -> None:
        """The reversed refund's credit note (and its locked allocation) moves to ``<refund id>~r<n>``: kept on
        the record, never voided or re-allocated, and the refund id is free for the shop to enter it again (a new
        credit note, numbered ``LW-CN-<id>-<n+1>``)."""
        ref = doc.refunds.pop(refund_id, None)
        if ref is None or ref.status == "voided":
            return
        key = f"{refund_id}~r{self._reversals(doc, refund_id) + 1}"
        ref.status = "reversed"
        doc.refunds[key] = ref
        allocations = self._allocations(doc)
        if refund_id in allocations:
            allocations[key] = allocations.pop(refund_id)
            self._set_allocations(doc, allocations)

    @staticmethod
    def _reversals(doc: DocumentState, refund_id: str) -> int:
        return sum(1 for key in doc.refunds if key.startswith(f"{refund_id}~r"))

    def _reversal_entry(self, event: InvoiceEvent, doc: DocumentState, refund_id: str, posted: dict[str, Any],
                        reason: str) -> dict[str, Any]:
        ref = doc.refunds.get(refund_id)
        return {"kind": "increase", "entity": "Invoice", "id": posted.get("InvoiceID"),
                "number": posted.get("InvoiceNumber"),
                "date": str(_xero_date(posted.get("DateString") or posted.get("Date"))),
                "total": str(posted.get("Total")), "tax": str(posted.get("TotalTax")), "version": str(event.version),
                "original": doc.external_id, "reason": reason[:200], "effect": {}, "refund": refund_id,
                "credit_note": ref.external_id if ref is not None else None}

    # -- decrease adjustments: credit notes allocated to the original --
    def _allocate_adjustment_credit(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        """A decrease adjustment (``<number>-C<n>``) is a credit note: allocated to the original invoice up to
        its amount due (then to the increase adjustments), like a refund's, so the original shows no false open
        balance. Payments come first: ``_remove_allocations`` releases these when a payment needs the room."""
        if doc.external_id is None:
            return
        credits = self._credit_allocations(doc)
        todo = []
        for entry in adjustments.load(doc.extra):
            if entry.get("kind") != "decrease" or entry.get("entity") != "CreditNote" or not entry.get("id"):
                continue
            allocated = sum((Decimal(a) for _, a, _ in credits.get(entry["id"], [])), ZERO)
            if Decimal(entry.get("total") or 0) - allocated > 0:
                todo.append(entry)
        if not todo:
            return
        targets = self._increase_targets(doc)
        dues = self._dues(targets)
        for entry in todo:
            credit_id = entry["id"]
            refs = credits.setdefault(credit_id, [])
            remaining = Decimal(entry.get("total") or 0) - sum((Decimal(a) for _, a, _ in refs), ZERO)
            if ctx.attempt > 1:  # an allocation an earlier attempt made before its checkpoint: Xero knows
                note = self.client.read(f"/CreditNotes/{credit_id}", "CreditNotes") or {}
                known = {r[0] for r in refs}
                for allocation in note.get("Allocations") or []:
                    if allocation.get("AllocationID") and allocation["AllocationID"] not in known:
                        refs.append([allocation["AllocationID"], str(Decimal(str(allocation.get("Amount")))),
                                     str((allocation.get("Invoice") or {}).get("InvoiceID"))])
                remaining = Decimal(str(note.get("RemainingCredit", remaining) or 0))
            for invoice_id, _ in targets:
                amount = min(remaining, dues.get(invoice_id, ZERO))
                if amount <= 0:
                    continue
                body = mapping.allocation_payload(invoice_id, amount, entry.get("date") or
                                                  self._first_open_day().isoformat())
                answer = self._put_open(f"/CreditNotes/{credit_id}/Allocations", body, body["Allocations"], ctx,
                                        ctx.idempotency_key("adjustment-allocation", credit_id, invoice_id,
                                                            ",".join(r[0] for r in refs)))
                created = (answer.get("Allocations") or [{}])[0]
                refs.append([created.get("AllocationID", ""), str(amount), invoice_id])
                self._set_credit_allocations(doc, credits)
                ctx.checkpoint(doc)
                dues[invoice_id] -= amount
                remaining -= amount

    # -- items per part number --
    def _items(self, event: InvoiceEvent, ctx: DeliveryContext) -> None:
        """``item_mode: per_part_number``: every part number on the invoice has its Item (created once, under
        the entity lock, so concurrent invoices of a new part create it once); lines carry its code."""
        if self.mapping.item_mode != "per_part_number":
            return
        seen: set[str] = set()
        for line in event.lines:
            if line.part_number and line.part_number not in seen:
                seen.add(line.part_number)
                self._part_item(line, ctx)

    def _part_item(self, line, ctx: DeliveryContext) -> str:
        code = mapping.part_item_code(line.part_number)
        key = f"part:{line.part_number}"
        if ctx.entities.get("item", key) is not None:
            return code
        with ctx.entities.lock("item", key):
            if ctx.entities.get("item", key) is None:
                found = self.client.get("/Items", where=f"Code=={quote(code)}").get("Items") or []
                if found:
                    item = found[0]
                else:
                    answer = self.client.write("PUT", "/Items", {"Items": [mapping.item_payload(line, self.mapping)]},
                                               key=ctx.idempotency_key("item", code), unitdp=UNITDP)
                    item = answer["Items"][0]
                ctx.entities.put("item", key, ExternalRef(external_id=item["ItemID"], status=code))
        return code

    # -- closed periods: Xero's period lock date and end-of-year lock date --
    def _lock_date(self) -> date | None:
        organisation = (self.client.get("/Organisation").get("Organisations") or [{}])[0]
        locks = [_xero_date(organisation.get(k)) for k in ("PeriodLockDate", "EndOfYearLockDate")]
        return max((d for d in locks if d is not None), default=None)

    def _first_open_day(self) -> date:
        return adjustments.first_open_day(self._lock_date())

    def _refuse_if_locked(self, doc: DocumentState) -> None:
        """Before taking payments off an invoice to edit or void it: is its date locked? (Xero would refuse the
        edit anyway, after the payments were gone.)"""
        day = doc.extra.get("date")
        lock = self._lock_date() if day else None
        if lock is not None and date.fromisoformat(day) <= lock:
            raise ClosedPeriodError(f"Xero: the invoice is dated {day}, on or before the lock date "
                                    f"{lock.isoformat()}", platform_code="lock_date")

    def _keep_open_date(self, doc: DocumentState, payload: dict[str, Any]) -> None:
        """An invoice re-dated into the open period once stays there (dated back, every edit would be refused)."""
        open_date = doc.extra.get("open_date")
        if open_date:
            payload["Date"] = open_date
            payload["DueDate"] = max(payload["DueDate"], open_date)

    def _put_open(self, path: str, body: dict[str, Any], dated: list[dict[str, Any]], ctx: DeliveryContext,
                  key: str, **params: Any) -> dict[str, Any]:
        """PUT; when Xero refuses a date on or before its lock date, the same documents dated the first open day."""
        try:
            return self.client.write("PUT", path, body, key=key, **params)
        except ClosedPeriodError as exc:
            open_day = self._first_open_day()
            for item in dated:
                if date.fromisoformat(str(item["Date"])[:10]) < open_day:
                    item["Date"] = open_day.isoformat()
            log.warning("xero_closed_period_redated", target=ctx.target, path=path.split("/")[1],
                        posted_date=open_day.isoformat(), reason=exc.reason[:200])
            return self.client.write("PUT", path, body, key=f"{key}-open", **params)

    def _create_redated(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, payload: dict[str, Any],
                        exc: ClosedPeriodError, bound) -> dict[str, Any]:
        """A new invoice dated in a locked period: posted whole, dated the first open day, and reported."""
        open_day = self._first_open_day()
        body = {**payload, "Date": open_day.isoformat(), "DueDate": max(payload["DueDate"], open_day.isoformat())}
        answer = self.client.write("PUT", "/Invoices", {"Invoices": [body]}, unitdp=UNITDP,
                                   key=ctx.idempotency_key("invoice-open", open_day.isoformat()))
        created = answer["Invoices"][0]
        doc.extra["open_date"] = open_day.isoformat()
        entry = {"kind": "redated", "entity": "Invoice", "id": created["InvoiceID"], "number": payload["InvoiceNumber"],
                 "date": open_day.isoformat(), "shop_date": payload["Date"], "total": str(created.get("Total")),
                 "tax": str(created.get("TotalTax")), "version": str(event.version), "reason": exc.reason[:200]}
        adjustments.record(doc.extra, entry)
        bound.warning("xero_closed_period_adjustment", **{k: v for k, v in entry.items()})
        return answer

    def _find_adjustment(self, event: InvoiceEvent, seq: int) -> tuple[str, dict[str, Any]] | None:
        """The adjustment numbered ``seq`` if an earlier attempt posted it (either kind: a retry may differ)."""
        found = self._find(mapping.adjustment_number(event.number, seq, "increase"))
        if found is not None:
            return "increase", found
        credit = self._find_credit_note(mapping.adjustment_number(event.number, seq, "decrease"))
        return ("decrease", credit) if credit is not None else None

    def _adjust_closed(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, exc: ClosedPeriodError,
                       bound, reason: str = "changed after the books were locked",
                       wanted: dict[str, tuple[Decimal, Decimal]] | None = None) -> None:
        """Xero refused the change (the invoice's date is locked): post the difference between what Xero holds
        (the original as read now, plus every adjustment recorded) and the shop's version — per account and tax
        rate — as an ACCREC invoice (increase) or an ACCRECCREDIT credit note (decrease) dated the first open
        day, numbered ``<number>-A<n>``/``-C<n>`` and referencing the original. An adjustment an earlier attempt
        posted is found by its number and recorded instead of posted again."""
        wanted = mapping.event_groups(event, self.mapping) if wanted is None else wanted
        original = self.client.read(f"/Invoices/{doc.external_id}", "Invoices", unitdp=UNITDP) if doc.external_id \
            else None
        base = mapping.document_groups(original) if original and original.get("Status") not in ("VOIDED", "DELETED") \
            else {}
        contact_id = doc.customer_id or self._contact(event, ctx)

        def found_effect(kind: str, posted: dict[str, Any], diff: adjustments.Groups) -> adjustments.Groups | None:
            reversed_id = mapping.reversed_refund(posted) if kind == "increase" else None
            if reversed_id is not None:  # a refund reversal whose record was lost: no effect on the lines
                adjustments.record(doc.extra, self._reversal_entry(event, doc, reversed_id, posted, exc.reason))
                self._park_reversed(doc, reversed_id)
                ctx.checkpoint(doc)
                return None
            return mapping.document_groups(posted, 1 if kind == "increase" else -1)

        def post(kind: str, seq: int, diff: adjustments.Groups) -> tuple[dict[str, Any], adjustments.Groups]:
            body = mapping.adjustment_payload(event, kind, seq, contact_id, adjustments.signed(diff, kind),
                                              self._first_open_day(), self.mapping, reason)
            collection = "Invoices" if kind == "increase" else "CreditNotes"
            answer = self.client.write("PUT", f"/{collection}", {collection: [body]}, unitdp=UNITDP,
                                       key=ctx.idempotency_key("adjustment", seq, kind))
            return answer[collection][0], diff

        def describe(kind: str, posted: dict[str, Any]) -> dict[str, Any]:
            return {"entity": "Invoice" if kind == "increase" else "CreditNote",
                    "id": posted.get("InvoiceID") or posted.get("CreditNoteID"),
                    "number": posted.get("InvoiceNumber") or posted.get("CreditNoteNumber"),
                    "date": str(_xero_date(posted.get("DateString") or posted.get("Date")))}

        def recorded(entry: dict[str, Any]) -> None:
            ctx.checkpoint(doc)
            bound.warning("xero_closed_period_adjustment", **{k: v for k, v in entry.items() if k != "effect"})

        _, entry = adjustments.settle(doc.extra, base, wanted, platform="Xero", version=event.version,
                                      original=doc.external_id, reason=exc.reason, find=lambda seq: self._find_adjustment(event, seq),
                                      post=post, found_effect=found_effect, describe=describe, recorded=recorded)
        if entry is None:
            bound.info("xero_closed_period_no_difference", reason=exc.reason[:200])

    def _void_in_closed_period(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext,
                               exc: ClosedPeriodError, bound) -> None:
        """A void the lock date refuses: a credit note for the full amount Xero holds, dated the first open
        day. What Xero still lets go comes off first (payments, allocations and refund credit notes dated in
        the open period)."""
        for payment_id in list(doc.payments):
            try:
                self._delete_parts(doc, payment_id, ctx)
            except ClosedPeriodError:
                continue
        try:
            self._remove_allocations(doc, ctx)
            for refund_id, ref in doc.refunds.items():
                if ref.status not in ("voided", "reversed"):
                    self._void_credit_note(refund_id, ref, doc, ctx)
        except ClosedPeriodError as locked:
            bound.warning("xero_closed_period_refunds_kept", reason=locked.reason[:200])
        self._adjust_closed(event, doc, ctx, exc, bound, reason="voided after the books were locked", wanted={})
        self._allocate_adjustment_credit(doc, ctx)
        doc.status = "voided"
        ctx.checkpoint(doc)

    # -- contacts --
    def _contact(self, event: InvoiceEvent, ctx: DeliveryContext) -> str:
        customer = event.customer
        key = str(customer.id)
        digest = mapping.contact_hash(customer)
        payload = mapping.contact_payload(customer)

        def find() -> ExternalRef | None:  # its details unknown: brought up to date by update()
            found = self._find_contact(customer)
            return ExternalRef(external_id=found["ContactID"]) if found else None

        def create() -> ExternalRef:
            answer = self.client.write("PUT", "/Contacts", {"Contacts": [payload]}, key=ctx.idempotency_key("contact", key))
            return ExternalRef(external_id=answer["Contacts"][0]["ContactID"])

        def update(ref: ExternalRef) -> ExternalRef:  # the shop changed the customer (phone, email)
            self.client.write("POST", f"/Contacts/{ref.external_id}",
                              {"Contacts": [{**payload, "ContactID": ref.external_id}]},
                              key=ctx.idempotency_key("contact-update", key, digest))
            return ref

        return sync_entity(ctx, "customer", key, digest, find=find, create=create, update=update).external_id

    def _find_contact(self, customer) -> dict[str, Any] | None:
        """By ContactNumber (= the shop's customer id), then by the configured ``customer_match`` keys."""
        for key in ["number", *self.mapping.customer_match]:
            if key == "number":
                found = self._contacts(f"ContactNumber=={quote(str(customer.id))}")
            elif key == "email" and customer.email:
                found = self._contacts(f"EmailAddress=={quote(customer.email)}")
            elif key == "name":
                found = self._contacts(f"Name=={quote(mapping.contact_name(customer))}")
            elif key == "phone" and customer.phone:
                found = self._contacts_by_phone(customer.phone)
            else:
                continue
            if found:
                return found[0]
        return None

    def _contacts(self, where: str) -> list[dict[str, Any]]:
        return [c for c in self.client.get("/Contacts", where=where).get("Contacts") or []
                if c.get("ContactStatus", "ACTIVE") == "ACTIVE"]

    def _contacts_by_phone(self, phone: str) -> list[dict[str, Any]]:
        """Xero cannot filter contacts by phone: page through them (100 a page) and compare digits, so
        "(555) 010-4401" finds "555-010-4401". Runs once per new customer, under the customer lock."""
        digits = _digits(phone)
        if not digits:
            return []
        found: list[dict[str, Any]] = []
        for page in range(1, 1000):
            contacts = self.client.get("/Contacts", page=page).get("Contacts") or []
            for contact in contacts:
                numbers = {_digits(f"{p.get('PhoneAreaCode') or ''}{p.get('PhoneNumber') or ''}")
                           for p in contact.get("Phones") or []} | \
                          {_digits(p.get("PhoneNumber") or "") for p in contact.get("Phones") or []}
                if digits in numbers and contact.get("ContactStatus", "ACTIVE") == "ACTIVE":
                    found.append(contact)
            if found or len(contacts) < 100:
                break
        return found

    # -- reads --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        self._ensure_tenant()
        found = self._find(event.number)
        return _remote(found) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        self._ensure_tenant()
        found = self.client.read(f"/Invoices/{external_id}", "Invoices", unitdp=UNITDP)
        return _remote(found) if found else None

    # -- issue #5: mapping check and preview --
    def check_mapping(self) -> list[str]:
        """Resolve every account, tax rate, item and tracking option the mapping names (read-only calls)."""
        self._ensure_tenant()
        accounts = {a.get("Code"): a for a in self.client.get("/Accounts").get("Accounts") or [] if a.get("Code")}
        tax_rates = {t.get("TaxType"): t for t in self.client.get("/TaxRates").get("TaxRates") or []}
        problems: list[str] = []

        def account(where: str, code: str, *, payments: bool = False) -> None:
            found = accounts.get(code)
            if found is None:
                problems.append(f"{where}: account '{code}' not found")
            elif found.get("Status", "ACTIVE") != "ACTIVE":
                problems.append(f"{where}: account '{code}' is {found.get('Status')}")
            elif payments and found.get("Type") != "BANK" and not found.get("EnablePaymentsToAccount"):
                problems.append(f"{where}: account '{code}' does not accept payments (not a bank account and "
                                "'Enable payments to this account' is off)")

        for kind, code in sorted(self.mapping.income_accounts.items()):
            account(f"income_accounts.{kind.value}", code)
        if self.mapping.core_account:
            account("core_account", self.mapping.core_account)
        if self.mapping.discount_posting == "discount_account":
            if not self.mapping.discount_account:
                problems.append("discount_account: required with discount_posting 'discount_account'")
            else:
                account("discount_account", self.mapping.discount_account)
        for method, code in sorted(self.mapping.payment_accounts.items()):
            account(f"payment_accounts.{method}", code, payments=True)
        for source, tax_type in sorted(self.mapping.tax_codes.items()):
            found = tax_rates.get(tax_type)
            if found is None:
                problems.append(f"tax_codes.{source}: tax rate '{tax_type}' not found")
            elif found.get("Status", "ACTIVE") != "ACTIVE":
                problems.append(f"tax_codes.{source}: tax rate '{tax_type}' is {found.get('Status')}")
        if self.mapping.items:
            codes = {i.get("Code") for i in self.client.get("/Items").get("Items") or []}
            for kind, code in sorted(self.mapping.items.items()):
                if code not in codes:
                    problems.append(f"items.{kind.value}: item '{code}' not found")
        if self.mapping.location_tracking:
            categories = {c.get("Name"): c for c in self.client.get("/TrackingCategories").get("TrackingCategories") or []}
            for location, value in sorted(self.mapping.location_tracking.items()):
                name, _, option = value.partition(":")
                category = categories.get(name)
                if not option:
                    problems.append(f"location_tracking.{location}: '{value}' is not 'Category:Option'")
                elif category is None:
                    problems.append(f"location_tracking.{location}: tracking category '{name}' not found")
                elif option not in {o.get("Name") for o in category.get("Options") or []
                                    if o.get("Status", "ACTIVE") == "ACTIVE"}:
                    problems.append(f"location_tracking.{location}: option '{option}' not found in category '{name}'")
        return problems

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        """What ``deliver`` would send for ``event`` given ``doc``: computed, nothing sent (no reads either)."""
        calls: list[dict[str, Any]] = []
        invoice_id = doc.external_id or "<new invoice>"
        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        allocations = self._allocations(doc)

        def detach(payment_ids: list[str]) -> None:
            for payment_id in payment_ids:
                for part_id, _, _ in self._parts_of(doc, payment_id):
                    calls.append({"method": "POST", "path": f"/Payments/{part_id}", "body": {"Status": "DELETED"}})
            for refund_id, refs in allocations.items():
                for allocation_id, _ in refs:
                    calls.append({"method": "DELETE", "body": None, "path":
                                  f"/CreditNotes/{doc.refunds[refund_id].external_id}/Allocations/{allocation_id}"})

        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status not in ("voided", "deleted"):
                detach(list(doc.payments))
                for ref in doc.refunds.values():
                    if ref.status != "voided":
                        calls.append({"method": "POST", "path": f"/CreditNotes/{ref.external_id}", "body": {
                            "CreditNotes": [{"CreditNoteID": ref.external_id, "Status": "VOIDED"}]}})
                calls.append({"method": "POST", "path": f"/Invoices/{doc.external_id}",
                              "body": {"Invoices": [{"InvoiceID": doc.external_id, "Status": "VOIDED"}]}})
            return calls
        contact_id = doc.customer_id or "<new contact>"
        if doc.customer_id is None:
            calls.append({"method": "PUT", "path": "/Contacts",
                          "body": {"Contacts": [mapping.contact_payload(event.customer)]}})
        payload = mapping.invoice_payload(event, contact_id, self.mapping)
        digest = mapping.invoice_hash(payload)
        removed = [pid for pid, ref in doc.payments.items()
                   if pid not in wanted or wanted[pid].amount != ref.amount]
        kept = {pid: ref for pid, ref in doc.payments.items() if pid not in removed}
        if doc.external_id is None:
            detach(removed)
            calls.append({"method": "PUT", "path": f"/Invoices?unitdp={UNITDP}", "body": {"Invoices": [payload]}})
        elif doc.extra.get("invoice_hash") != digest:
            detach(list(doc.payments))
            kept, allocations = {}, {}
            calls.append({"method": "POST", "path": f"/Invoices/{doc.external_id}?unitdp={UNITDP}",
                          "body": {"Invoices": [{**payload, "InvoiceID": doc.external_id}]}})
        else:
            detach(removed)
        new = [p for pid, p in wanted.items() if pid not in kept]
        if new:
            calls.append({"method": "PUT", "path": "/Payments",
                          "body": {"Payments": [mapping.payment_payload(p, invoice_id, self.mapping) for p in new]}})
        for refund in sorted(event.refunds, key=lambda r: r.id):
            ref = doc.refunds.get(str(refund.id))
            credit_id = ref.external_id if ref is not None else "<new credit note>"
            if ref is None:
                calls.append({"method": "PUT", "path": f"/CreditNotes?unitdp={UNITDP}", "body": {"CreditNotes": [
                    mapping.credit_note_payload(refund, event, contact_id, self.mapping)]}})
            if str(refund.id) not in allocations:
                calls.append({"method": "PUT", "path": f"/CreditNotes/{credit_id}/Allocations",
                              "body": mapping.allocation_payload(invoice_id, refund.amount + refund.tax_amount,
                                                                 refund.created_at.date().isoformat())})
        return calls


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    status = {"AUTHORISED": "issued", "PAID": "issued", "SUBMITTED": "issued", "DRAFT": "draft",
              "VOIDED": "void", "DELETED": "deleted"}.get(str(invoice.get("Status")), invoice.get("Status"))
    return RemoteInvoice(external_id=invoice["InvoiceID"], number=invoice.get("InvoiceNumber"),
                         token=invoice.get("UpdatedDateUTC"), status=status, total=invoice.get("Total"),
                         tax_total=invoice.get("TotalTax"), balance=invoice.get("AmountDue"), raw=invoice)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def _xero_date(value: Any) -> date | None:
    """Xero's dates: "/Date(1546214400000+0000)/" (its JSON), "2019-01-01T00:00:00" or "2019-01-01"."""
    if not value:
        return None
    text = str(value)
    match = re.fullmatch(r"/Date\((-?\d+)([+-]\d{4})?\)/", text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=timezone.utc).date()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None
