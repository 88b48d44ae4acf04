"""The QuickBooks Online connector: customers, items, invoices (create, sparse update, void) and
payments applied to the invoice they pay, with SyncToken handling and look-ups before any re-create.

Issue #5: refunds/returns post as CreditMemos applied to their invoice (a zero-total Payment linking both);
closed books (QuickBooks' "Account Period Closed") turn the change into an adjustment dated in the first
open period; automatic sales tax differences are detected and recorded; fleet terms, discount posting,
core accounts; ``check_mapping`` and ``preview``."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

from connectors.base import (
    ClosedPeriodError,
    Connector,
    DeliveryError,
    DeliveryContext,
    DocumentState,
    ExternalRef,
    RemoteInvoice,
    StaleTokenError,
    deliver_each,
    delivered,
    sync_entity,
)
from connectors import adjustments
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
from connectors.quickbooks_online import mapping
from connectors.quickbooks_online.client import QboClient, classify, classify_fault
from connectors.quickbooks_online.settings import QboSettings
from daemon.canonical import InvoiceEvent, LineKind, PaymentStatus

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://quickbooks.api.intuit.com"


class QuickBooksOnlineConnector(Connector):
    platform = "quickbooks-online"
    settings_model = QboSettings
    supports_batch = True
    batch_size = 30  # Intuit's limit per batch request

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: QboSettings = self.settings
        auth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_url,
                                 credentials=runtime.credentials(target.name))
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, concurrency=settings.concurrency)
        # Batch requests have their own documented limit (40 per minute per company), which a target's
        # rate_limit (the request limit) does not change.
        self.batch_limiter = runtime.limiter(target, per_minute=settings.batch_requests_per_minute,
                                             concurrency=settings.concurrency, overridable=False)
        self.http = PlatformHttp(target=target.name, platform=self.platform, base_url=target.base_url or DEFAULT_BASE_URL,
                                 limiter=limiter, auth=auth, classify=classify, timeout_s=target.request_timeout_s)
        self.client = QboClient(self.http, settings.realm_id, settings.minor_version)
        self.mapping = target.mapping

    def close(self) -> None:
        self.http.close()

    # -- the delivery --
    def deliver(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> DocumentState:
        doc = doc.model_copy(deep=True)
        bound = log.bind(target=ctx.target, invoice_id=event.invoice_id, version=event.version)
        if doc.external_id is None and ctx.attempt > 1:
            self._adopt_existing(event, doc)
        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status != "voided":
                try:
                    self._release_credits(doc, ctx, room=Decimal("0"))
                    self._remove_payments(doc, ctx, wanted={})
                    self._void(doc, ctx)
                except ClosedPeriodError as exc:
                    self._void_in_closed_period(event, doc, ctx, exc, bound)
            return delivered(event, doc)
        # Payments that were reversed, moved or changed go first, so a lowered total never falls below
        # what is still applied to the invoice; credit applications shrink to what the shop leaves unpaid.
        self._remove_payments(doc, ctx, wanted)
        paid = sum((p.amount for p in wanted.values()), Decimal("0"))
        self._release_credits(doc, ctx, room=event.computed.total - paid)
        customer_id = self._customer(event, ctx)
        doc.customer_id = customer_id
        item_ids = self._items(event, ctx)
        payload = mapping.invoice_payload(event, customer_id, item_ids, self.mapping)
        digest = mapping.invoice_hash(payload)
        if doc.extra.get("txn_date"):  # re-dated into the open period once: stays there
            payload["TxnDate"] = doc.extra["txn_date"]
        if doc.external_id is None:
            try:
                created = self.client.write("Invoice", payload, request_id=ctx.idempotency_key("invoice"))
            except ClosedPeriodError as exc:
                created = self._create_redated(event, doc, ctx, payload, exc, bound)
            doc.external_id, doc.token, doc.status = created["Id"], created["SyncToken"], "posted"
            doc.extra["invoice_hash"] = digest
            self._note_tax(event, doc, created, bound)
            ctx.checkpoint(doc)
            bound.info("qbo_invoice_created", external_id=doc.external_id)
        elif doc.extra.get("invoice_hash") != digest:
            try:
                updated = self._update_invoice(doc, payload, ctx)
                if updated is not None:
                    self._note_tax(event, doc, updated, bound)
            except ClosedPeriodError as exc:
                self._adjust_closed(event, doc, ctx, exc, bound)
            doc.extra["invoice_hash"] = digest
            ctx.checkpoint(doc)
        self._add_payments(doc, ctx, wanted)
        self._post_refunds(event, doc, ctx)
        self._apply_credits(event, doc, ctx, room=event.computed.total - paid)
        return delivered(event, doc)

    def deliver_many(self, batch):
        """New invoices are created with one ``/batch`` request per 30; each is then finished (payments)
        by ``deliver``, which finds the invoice already there. Everything else goes one by one — and so
        does everything when fewer than two are new or the batch allowance (40/min, apart from the
        500/min) has no request free right now: waiting for it would leave the request budget idle."""
        results: list = [None] * len(batch)
        candidates = [index for index, (event, doc, ctx) in enumerate(batch)
                      if doc.external_id is None and ctx.attempt == 1 and event.status.value == "issued"]
        if len(candidates) < 2:
            return deliver_each(self, batch, results)
        with self.batch_limiter.slot_if_free() as free:
            if not free:
                return deliver_each(self, batch, results)
            creates: list[tuple[int, dict[str, Any], str]] = []
            for index in candidates:
                event, doc, ctx = batch[index]
                try:
                    customer_id = self._customer(event, ctx)
                    item_ids = self._items(event, ctx)
                except DeliveryError as exc:
                    results[index] = exc
                    continue
                doc.customer_id = customer_id
                payload = mapping.invoice_payload(event, customer_id, item_ids, self.mapping)
                creates.append((index, payload, mapping.invoice_hash(payload)))
            if not creates:
                return deliver_each(self, batch, results)
            first_ctx = batch[creates[0][0]][2]
            answers = self.client.batch(
                [{"bId": str(i), "operation": "create", "Invoice": payload} for i, payload, _ in creates],
                request_id=first_ctx.idempotency_key("batch", *[batch[i][0].invoice_id for i, _, _ in creates]))
        for index, _, digest in creates:
            event, doc, ctx = batch[index]
            answer = answers.get(str(index), {})
            if "Invoice" not in answer:
                results[index] = classify_fault(answer.get("Fault") or {"Error": [{"Message": "no answer"}]})
                continue
            doc.external_id, doc.token, doc.status = answer["Invoice"]["Id"], answer["Invoice"]["SyncToken"], "posted"
            doc.extra["invoice_hash"] = digest
            self._note_tax(event, doc, answer["Invoice"],
                           log.bind(target=ctx.target, invoice_id=event.invoice_id, version=event.version))
            ctx.checkpoint(doc)
        return deliver_each(self, batch, results)

    def _adopt_existing(self, event: InvoiceEvent, doc: DocumentState) -> None:
        """An earlier attempt may have created the invoice before its answer was lost: find it first."""
        found = self.client.query("Invoice", DocNumber=mapping.doc_number(event))
        if found:
            doc.external_id, doc.token, doc.status = found[0]["Id"], found[0]["SyncToken"], "posted"
            doc.extra.pop("invoice_hash", None)  # content unknown: send the update

    def _update_invoice(self, doc: DocumentState, payload: dict[str, Any], ctx: DeliveryContext
                        ) -> dict[str, Any] | None:
        for attempt in (1, 2):
            body = {**payload, "Id": doc.external_id, "SyncToken": doc.token, "sparse": True}
            try:
                updated = self.client.write("Invoice", body, request_id=ctx.idempotency_key("invoice", doc.token))
                doc.token = updated["SyncToken"]
                return updated
            except StaleTokenError:
                if attempt == 2:
                    raise
                # A payment (ours or the bookkeeper's) bumped the SyncToken: re-read and retry once.
                current = self.client.read("Invoice", doc.external_id)
                doc.token = current["SyncToken"] if current else doc.token
        return None

    def _void(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        current = self.client.read("Invoice", doc.external_id)
        if current is None:
            doc.status = "deleted"
            return
        voided = self.client.write("Invoice", {"Id": doc.external_id, "SyncToken": current["SyncToken"]},
                                   request_id=ctx.idempotency_key("void"), operation="void")
        doc.token, doc.status = voided["SyncToken"], "voided"
        ctx.checkpoint(doc)

    def _remove_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """Reversed, moved or changed payments: delete the QuickBooks payment (its amount returns to the
        invoice's balance)."""
        for payment_id, ref in list(doc.payments.items()):
            current = wanted.get(payment_id)
            if current is not None and ref.amount == current.amount:
                continue
            existing = self.client.read("Payment", ref.external_id)
            if existing is not None:
                self.client.write("Payment", {"Id": ref.external_id, "SyncToken": existing["SyncToken"]},
                                  request_id=ctx.idempotency_key("payment-delete", payment_id, ref.external_id),
                                  operation="delete")
            del doc.payments[payment_id]
            ctx.checkpoint(doc)

    def _add_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """New payments, created linked to THIS invoice — never left to QuickBooks' auto-apply."""
        for payment_id, payment in wanted.items():
            if payment_id in doc.payments:
                continue
            reference = mapping.payment_reference(payment)
            found = self.client.query("Payment", PaymentRefNum=reference) if ctx.attempt > 1 else []
            if found:
                created = found[0]
            else:
                body = mapping.payment_payload(payment, doc.external_id, doc.customer_id, self.mapping)
                created = self._create_open("Payment", body, ctx, ctx.idempotency_key("payment", payment_id), doc)
            doc.payments[payment_id] = ExternalRef(external_id=created["Id"], token=created["SyncToken"],
                                                   amount=payment.amount, status="applied")
            ctx.checkpoint(doc)

    # -- shared entities --
    def _customer(self, event: InvoiceEvent, ctx: DeliveryContext) -> str:
        customer = event.customer
        key = str(customer.id)
        payload = mapping.customer_payload(customer, self.mapping)
        digest = mapping.customer_hash(customer, self.mapping)

        def find() -> ExternalRef | None:
            found = self._find_customer(customer)
            return ExternalRef(external_id=found["Id"], token=found["SyncToken"]) if found else None

        def create() -> ExternalRef:
            created = self.client.write("Customer", payload, request_id=ctx.idempotency_key("customer", key))
            return ExternalRef(external_id=created["Id"], token=created["SyncToken"])

        def update(ref: ExternalRef) -> ExternalRef | None:  # the shop changed the customer
            current = self.client.read("Customer", ref.external_id)
            if current is None:
                return None
            updated = self.client.write("Customer", {**payload, "Id": ref.external_id,
                                                     "SyncToken": current["SyncToken"], "sparse": True},
                                        request_id=ctx.idempotency_key("customer-update", key, digest))
            return ExternalRef(external_id=updated["Id"], token=updated["SyncToken"])

        return sync_entity(ctx, "customer", key, digest, find=find, create=create, update=update).external_id

    def _find_customer(self, customer) -> dict[str, Any] | None:
        for key in self.mapping.customer_match:
            if key == "name":
                found = self.client.query("Customer", DisplayName=mapping.customer_display_name(customer))
            elif key == "email" and customer.email:
                found = self.client.query("Customer", PrimaryEmailAddr=customer.email)
            elif key == "phone" and customer.phone:
                # PrimaryPhone is not a filterable field in QuickBooks' query language: compare digits.
                digits = _digits(customer.phone)
                found = [c for c in self.client.query_all("Customer")
                         if _digits((c.get("PrimaryPhone") or {}).get("FreeFormNumber", "")) == digits]
            else:
                continue
            if found:
                return found[0]
        return None

    def _item(self, line, ctx: DeliveryContext) -> str:
        key, name = mapping.item_key(line, self.mapping)
        configured = self.mapping.items.get(line.kind)
        if configured and key.startswith("kind:"):
            return configured
        ref = ctx.entities.get("item", key)
        if ref is not None:
            return ref.external_id
        with ctx.entities.lock("item", key):
            ref = ctx.entities.get("item", key)
            if ref is None:
                found = self.client.query("Item", Name=name)
                item = found[0] if found else self.client.write(
                    "Item", mapping.item_payload(name, line, self.mapping), request_id=ctx.idempotency_key("item", key))
                ref = ExternalRef(external_id=item["Id"], token=item["SyncToken"])
                ctx.entities.put("item", key, ref)
            return ref.external_id

    # -- items per line (discount lines on a discount account need none) --
    def _items(self, event: InvoiceEvent, ctx: DeliveryContext) -> dict[int, str]:
        return {line.id: self._item(line, ctx) for line in event.lines if not self._on_discount_account(line)}

    def _on_discount_account(self, line) -> bool:
        return (line.kind == LineKind.DISCOUNT and self.mapping.discount_posting == "discount_account"
                and bool(self.mapping.discount_account))

    # -- tax computed by QuickBooks --
    def _note_tax(self, event: InvoiceEvent, doc: DocumentState, answer: dict[str, Any], bound) -> None:
        """The shop's tax is the truth. Where QuickBooks recomputed it (automatic sales tax) and differs,
        record the difference (platform − shop) and log it; never change the shop's numbers."""
        platform_tax = Decimal(str((answer.get("TxnTaxDetail") or {}).get("TotalTax", event.computed.tax_total)))
        difference = platform_tax - event.computed.tax_total
        if difference:
            doc.extra["tax_difference"] = str(difference)
            bound.warning("qbo_tax_difference", external_id=answer.get("Id"), platform_tax=str(platform_tax),
                          shop_tax=str(event.computed.tax_total), difference=str(difference))
        else:
            doc.extra.pop("tax_difference", None)

    # -- closed periods --
    def _first_open_day(self) -> date:
        close = (self.client.preferences().get("AccountingInfoPrefs") or {}).get("BookCloseDate")
        return adjustments.first_open_day(date.fromisoformat(str(close)) if close else None)

    def _record_adjustment(self, doc: DocumentState, entry: dict[str, str], bound) -> None:
        adjustments.record(doc.extra, entry)
        bound.warning("qbo_closed_period_adjustment", **entry)

    def _create_open(self, entity: str, body: dict[str, Any], ctx: DeliveryContext, request_id: str,
                     doc: DocumentState) -> dict[str, Any]:
        """Create; when the books are closed for the body's date, create it dated the first open day."""
        try:
            return self.client.write(entity, body, request_id=request_id)
        except ClosedPeriodError as exc:
            open_day = self._first_open_day()
            log.warning("qbo_closed_period_redated", target=ctx.target, entity=entity, original_date=body.get("TxnDate"),
                        posted_date=open_day.isoformat(), reason=exc.reason)
            redated = {**body, "TxnDate": open_day.isoformat()}
            if entity != "Payment":
                redated["PrivateNote"] = f"{body.get('PrivateNote', '')}; shop date {body.get('TxnDate')} is in a closed " \
                                         f"period"[:4000]
            return self.client.write(entity, redated, request_id=request_id + "-open")

    def _create_redated(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, payload: dict[str, Any],
                        exc: ClosedPeriodError, bound) -> dict[str, Any]:
        """A new invoice dated in a closed period: posted whole, dated the first open day, and reported."""
        open_day = self._first_open_day()
        body = {**payload, "TxnDate": open_day.isoformat(),
                "PrivateNote": f"{payload.get('PrivateNote', '')}; shop date {payload.get('TxnDate')} is in a closed "
                               f"period"[:4000]}
        created = self.client.write("Invoice", body, request_id=ctx.idempotency_key("invoice-open"))
        doc.extra["txn_date"] = open_day.isoformat()
        self._record_adjustment(doc, {"kind": "redated", "entity": "Invoice", "id": created["Id"],
                                      "doc_number": body["DocNumber"], "date": open_day.isoformat(),
                                      "total": str(created.get("TotalAmt")), "tax": str(event.computed.tax_total),
                                      "version": str(event.version), "reason": exc.reason[:200]}, bound)
        return created

    def _held(self, doc: DocumentState) -> tuple[Decimal, Decimal]:
        """What QuickBooks holds for this invoice: the invoice (as last read) plus every adjustment."""
        current = self.client.read("Invoice", doc.external_id) if doc.external_id else None
        total = Decimal(str(current.get("TotalAmt", 0))) if current else Decimal("0")
        tax = Decimal(str((current.get("TxnTaxDetail") or {}).get("TotalTax", 0))) if current else Decimal("0")
        for a in adjustments.load(doc.extra):
            sign = {"increase": 1, "decrease": -1}.get(a["kind"], 0)
            total += sign * Decimal(a["total"])
            tax += sign * Decimal(a["tax"])
        return total, tax

    def _adjust_closed(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, exc: ClosedPeriodError,
                       bound, reason: str = "changed after the books were closed",
                       target_total: Decimal | None = None, target_tax: Decimal | None = None) -> None:
        """The update was refused (closed period): post the difference between what QuickBooks holds and the
        shop's version as an adjustment — an Invoice (increase) or a CreditMemo (decrease) — dated the
        first open day, linked to the original by DocNumber and PrivateNote, recorded in doc.extra."""
        held_total, held_tax = self._held(doc)
        want_total = event.computed.total if target_total is None else target_total
        want_tax = event.computed.tax_total if target_tax is None else target_tax
        d_total, d_tax = want_total - held_total, want_tax - held_tax
        if not d_total and not d_tax:
            bound.info("qbo_closed_period_no_difference", reason=exc.reason[:200])
            return
        kind = "increase" if d_total > 0 else "decrease"
        sign = 1 if kind == "increase" else -1
        amount, tax = sign * (d_total - d_tax), sign * d_tax
        seq = adjustments.next_sequence(adjustments.load(doc.extra))
        entity = "Invoice" if kind == "increase" else "CreditMemo"
        number = mapping.adjustment_doc_number(event, seq, kind)
        found = self.client.query(entity, DocNumber=number)  # a retry finds the adjustment already posted
        if found:
            posted = found[0]
        else:
            open_day = self._first_open_day()
            item_id = self._named_item("kind:adjustment", "Invoice adjustment", ctx)
            body = mapping.adjustment_payload(event, kind, seq, doc.customer_id or self._customer(event, ctx), item_id,
                                              amount, tax, open_day, doc.external_id, self.mapping, reason)
            posted = self.client.write(entity, body, request_id=ctx.idempotency_key("adjustment", seq, number))
        self._record_adjustment(doc, {"kind": kind, "entity": entity, "id": posted["Id"], "doc_number": number,
                                      "date": str(posted.get("TxnDate")), "total": str(abs(d_total)),
                                      "tax": str(abs(d_tax)), "version": str(event.version),
                                      "reason": exc.reason[:200]}, bound)
        ctx.checkpoint(doc)

    def _void_in_closed_period(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext,
                               exc: ClosedPeriodError, bound) -> None:
        """A void the closed books refuse: a credit memo for the full amount held, dated the first open day."""
        self._adjust_closed(event, doc, ctx, exc, bound, reason="voided after the books were closed",
                            target_total=Decimal("0"), target_tax=Decimal("0"))
        doc.status = "voided"

    def _named_item(self, key: str, name: str, ctx: DeliveryContext) -> str:
        ref = ctx.entities.get("item", key)
        if ref is not None:
            return ref.external_id
        with ctx.entities.lock("item", key):
            ref = ctx.entities.get("item", key)
            if ref is None:
                found = self.client.query("Item", Name=name)
                account = self.mapping.income_accounts.get(LineKind.PART) or "1"
                item = found[0] if found else self.client.write(
                    "Item", {"Name": name, "Type": "Service", "IncomeAccountRef": {"value": account}},
                    request_id=ctx.idempotency_key("item", key))
                ref = ExternalRef(external_id=item["Id"], token=item["SyncToken"])
                ctx.entities.put("item", key, ref)
            return ref.external_id

    # -- refunds and returns --
    def _refund_item(self, event: InvoiceEvent, refund, ctx: DeliveryContext) -> str:
        line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
        if line is not None and not self._on_discount_account(line):
            return self._item(line, ctx)
        return self._named_item("kind:refund", "Refunds", ctx)

    def _post_refunds(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        """Each refund once: a CreditMemo (DocNumber from the refund id, looked up before any re-create)."""
        for refund in event.refunds:
            refund_id = str(refund.id)
            if refund_id in doc.refunds:
                continue
            number = mapping.refund_doc_number(refund)
            found = self.client.query("CreditMemo", DocNumber=number) if ctx.attempt > 1 else []
            if found:
                memo = found[0]
            else:
                body = mapping.credit_memo_payload(event, refund, doc.customer_id, self._refund_item(event, refund, ctx),
                                                   self.mapping)
                memo = self._create_open("CreditMemo", body, ctx, ctx.idempotency_key("refund", refund_id), doc)
            doc.refunds[refund_id] = ExternalRef(external_id=memo["Id"], token=memo["SyncToken"],
                                                 amount=refund.amount + refund.tax_amount, status="open")
            ctx.checkpoint(doc)
            log.info("qbo_credit_memo_posted", target=ctx.target, invoice_id=event.invoice_id, refund_id=refund.id,
                     external_id=memo["Id"])

    def _applications(self, doc: DocumentState) -> dict[str, tuple[str, Decimal]]:
        out = {}
        for key, value in doc.extra.items():
            if key.startswith("credit_applied:"):
                payment_id, amount = value.split(":", 1)
                out[key.split(":", 1)[1]] = (payment_id, Decimal(amount))
        return out

    def _release_credits(self, doc: DocumentState, ctx: DeliveryContext, room: Decimal) -> None:
        """Credit applications beyond what the shop leaves unpaid (or all, before a void) are removed
        first; ``_apply_credits`` re-applies what fits afterwards."""
        applications = self._applications(doc)
        if sum((a for _, a in applications.values()), Decimal("0")) <= max(room, Decimal("0")):
            return
        for refund_id, (payment_id, _) in applications.items():
            existing = self.client.read("Payment", payment_id)
            if existing is not None:
                self.client.write("Payment", {"Id": payment_id, "SyncToken": existing["SyncToken"]},
                                  request_id=ctx.idempotency_key("credit-release", refund_id, payment_id),
                                  operation="delete")
            del doc.extra[f"credit_applied:{refund_id}"]
            if refund_id in doc.refunds:
                doc.refunds[refund_id].status = "open"
            ctx.checkpoint(doc)

    def _apply_credits(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, room: Decimal) -> None:
        """Apply each open credit memo to this invoice, up to what the shop leaves unpaid — never to
        another invoice by QuickBooks' auto-apply."""
        room -= sum((a for _, a in self._applications(doc).values()), Decimal("0"))
        for refund_id, ref in doc.refunds.items():
            if f"credit_applied:{refund_id}" in doc.extra or room <= 0 or doc.external_id is None:
                continue
            amount = min(ref.amount or Decimal("0"), room)
            if amount <= 0:
                continue
            reference = f"LWR{refund_id}"
            found = self.client.query("Payment", PaymentRefNum=reference) if ctx.attempt > 1 else []
            if found:
                applied = found[0]
            else:
                body = mapping.credit_application_payload(doc.customer_id, doc.external_id, ref.external_id, amount,
                                                          date.today(), reference)
                applied = self.client.write("Payment", body,
                                            request_id=ctx.idempotency_key("credit-apply", refund_id, amount))
            doc.extra[f"credit_applied:{refund_id}"] = f"{applied['Id']}:{amount}"
            ref.status = "applied"
            room -= amount
            ctx.checkpoint(doc)

    # -- issue #5: the mapping checked online, and a preview --
    def check_mapping(self) -> list[str]:
        m = self.mapping
        lists = {kind: self.client.query_all(kind) for kind in
                 ("Account", "TaxCode", "TaxRate", "Item", "Class", "Department", "Term")}
        ids = {kind: {str(r["Id"]) for r in rows if r.get("Active", True)} for kind, rows in lists.items()}
        names = {kind: {str(r.get("Name")) for r in rows if r.get("Active", True)} for kind, rows in lists.items()}
        problems: list[str] = []

        def need(kind: str, value: str, where: str, by_name: bool = False) -> None:
            if value not in ids[kind] and not (by_name and value in names[kind]):
                problems.append(f"{where}: {kind.lower()} {value!r} not found")

        for kind, account in m.income_accounts.items():
            need("Account", account, f"income_accounts.{kind.value}")
        for method, account in m.payment_accounts.items():
            need("Account", account, f"payment_accounts.{method}")
        if m.core_account:
            need("Account", m.core_account, "core_account")
        if m.discount_posting == "discount_account":
            if not m.discount_account:
                problems.append("discount_account: required with discount_posting 'discount_account'")
            else:
                need("Account", m.discount_account, "discount_account")
        for code, rate in m.tax_codes.items():
            if rate not in ids["TaxRate"] and rate not in ids["TaxCode"]:
                problems.append(f"tax_codes.{code}: tax rate/code {rate!r} not found")
        for kind, item in m.items.items():
            need("Item", item, f"items.{kind.value}", by_name=True)
        for location, tracking in m.location_tracking.items():
            dimension, _, value = tracking.partition(":")
            if dimension not in ("class", "department"):
                problems.append(f"location_tracking.{location}: {tracking!r} is not class:<id> or department:<id>")
            else:
                need("Class" if dimension == "class" else "Department", value, f"location_tracking.{location}")
        for days, term in m.payment_terms.items():
            need("Term", term, f"payment_terms.{days}")
        return problems

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        """What ``deliver`` would send, read-only: reads find existing customers/items; nothing is written."""
        base = self.client.base
        out: list[dict[str, Any]] = []

        def send(entity: str, body: dict[str, Any], operation: str | None = None) -> None:
            path = f"{base}/{entity.lower()}" + (f"?operation={operation}" if operation else "")
            out.append({"method": "POST", "path": path, "body": body})

        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        if doc.external_id is None and event.status.value == "issued":
            found = self.client.query("Invoice", DocNumber=mapping.doc_number(event))
            if found:
                doc = doc.model_copy(update={"external_id": found[0]["Id"], "token": found[0]["SyncToken"],
                                             "extra": {k: v for k, v in doc.extra.items() if k != "invoice_hash"}})
        removed = [pid for pid, ref in doc.payments.items()
                   if event.status.value in ("void", "deleted") or wanted.get(pid) is None
                   or wanted[pid].amount != ref.amount]
        for pid in removed:
            send("Payment", {"Id": doc.payments[pid].external_id, "SyncToken": doc.payments[pid].token or "<current>"},
                 "delete")
        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status != "voided":
                send("Invoice", {"Id": doc.external_id, "SyncToken": "<current>"}, "void")
            return out
        customer = event.customer
        found = self._find_customer(customer) if doc.customer_id is None else {"Id": doc.customer_id}
        if found is None:
            send("Customer", mapping.customer_payload(customer, self.mapping))
        customer_id = found["Id"] if found else "<new customer>"
        item_ids: dict[int, str] = {}
        for line in event.lines:
            if self._on_discount_account(line):
                continue
            key, name = mapping.item_key(line, self.mapping)
            configured = self.mapping.items.get(line.kind)
            if configured and key.startswith("kind:"):
                item_ids[line.id] = configured
                continue
            existing = self.client.query("Item", Name=name)
            if existing:
                item_ids[line.id] = existing[0]["Id"]
            else:
                item_ids[line.id] = f"<new item {name}>"
                if not any(r["body"].get("Name") == name for r in out if r["path"].endswith("/item")):
                    send("Item", mapping.item_payload(name, line, self.mapping))
        payload = mapping.invoice_payload(event, customer_id, item_ids, self.mapping)
        if doc.extra.get("txn_date"):
            payload["TxnDate"] = doc.extra["txn_date"]
        invoice_id = doc.external_id or "<new invoice>"
        if doc.external_id is None:
            send("Invoice", payload)
        elif doc.extra.get("invoice_hash") != mapping.invoice_hash(mapping.invoice_payload(
                event, customer_id, item_ids, self.mapping)):
            send("Invoice", {**payload, "Id": doc.external_id, "SyncToken": doc.token or "<current>", "sparse": True})
        for pid, payment in wanted.items():
            if pid in doc.payments and pid not in removed:
                continue
            send("Payment", mapping.payment_payload(payment, invoice_id, customer_id, self.mapping))
        for refund in event.refunds:
            if str(refund.id) in doc.refunds:
                continue
            line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
            item = item_ids.get(line.id, "<refund item>") if line else "<refund item>"
            send("CreditMemo", mapping.credit_memo_payload(event, refund, customer_id, item, self.mapping))
        return out

    # -- reads --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = self.client.query("Invoice", DocNumber=mapping.doc_number(event))
        return _remote(found[0]) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.read("Invoice", external_id)
        return _remote(found) if found else None


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text or "")


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=invoice["Id"], number=invoice.get("DocNumber"), token=invoice.get("SyncToken"),
                         status="void" if str(invoice.get("PrivateNote", "")).startswith("Voided") else "issued",
                         total=invoice.get("TotalAmt"), tax_total=(invoice.get("TxnTaxDetail") or {}).get("TotalTax"),
                         balance=invoice.get("Balance"), raw=invoice)
