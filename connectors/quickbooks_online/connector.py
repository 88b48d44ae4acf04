"""The QuickBooks Online connector: customers, items, invoices (create, sparse update, void) and
payments applied to the invoice they pay, with SyncToken handling and look-ups before any re-create."""

from __future__ import annotations

from typing import Any

import structlog

from connectors.base import (
    Connector,
    DeliveryError,
    DeliveryContext,
    DocumentState,
    ExternalRef,
    RemoteInvoice,
    StaleTokenError,
)
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
from connectors.quickbooks_online import mapping
from connectors.quickbooks_online.client import QboClient, classify, classify_fault
from connectors.quickbooks_online.settings import QboSettings
from daemon.canonical import InvoiceEvent, PaymentStatus

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
        # Batch requests have their own documented limit: 40 per minute per company.
        self.batch_limiter = runtime.limiter(target, per_minute=40, concurrency=settings.concurrency)
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
                self._remove_payments(doc, ctx, wanted={})
                self._void(doc, ctx)
            return self._done(event, doc)
        # Payments that were reversed, moved or changed go first, so a lowered total never falls below
        # what is still applied to the invoice.
        self._remove_payments(doc, ctx, wanted)
        customer_id = self._customer(event, ctx)
        doc.customer_id = customer_id
        item_ids = {line.id: self._item(line, ctx) for line in event.lines}
        payload = mapping.invoice_payload(event, customer_id, item_ids, self.mapping)
        digest = mapping.invoice_hash(payload)
        if doc.external_id is None:
            created = self.client.write("Invoice", payload, request_id=ctx.idempotency_key("invoice"))
            doc.external_id, doc.token, doc.status = created["Id"], created["SyncToken"], "posted"
            doc.extra["invoice_hash"] = digest
            ctx.checkpoint(doc)
            bound.info("qbo_invoice_created", external_id=doc.external_id)
        elif doc.extra.get("invoice_hash") != digest:
            self._update_invoice(doc, payload, ctx)
            doc.extra["invoice_hash"] = digest
            ctx.checkpoint(doc)
        self._add_payments(doc, ctx, wanted)
        return self._done(event, doc)

    def deliver_many(self, batch):
        """New invoices are created with one ``/batch`` request per 30; each is then finished (payments)
        by ``deliver``, which finds the invoice already there. Everything else goes one by one."""
        results: list = [None] * len(batch)
        creates: list[tuple[int, dict[str, Any], str]] = []
        for index, (event, doc, ctx) in enumerate(batch):
            if doc.external_id is None and ctx.attempt == 1 and event.status.value == "issued":
                try:
                    customer_id = self._customer(event, ctx)
                    item_ids = {line.id: self._item(line, ctx) for line in event.lines}
                except DeliveryError as exc:
                    results[index] = exc
                    continue
                doc.customer_id = customer_id
                payload = mapping.invoice_payload(event, customer_id, item_ids, self.mapping)
                creates.append((index, payload, mapping.invoice_hash(payload)))
        if creates:
            first_ctx = batch[creates[0][0]][2]
            with self.batch_limiter.slot():
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
                ctx.checkpoint(doc)
        for index, (event, doc, ctx) in enumerate(batch):
            if results[index] is not None:
                continue
            try:
                results[index] = self.deliver(event, doc, ctx)
            except DeliveryError as exc:
                results[index] = exc
        return results

    def _done(self, event: InvoiceEvent, doc: DocumentState) -> DocumentState:
        doc.delivered_version = event.version
        doc.payload_hash = event.content_hash()
        return doc

    def _adopt_existing(self, event: InvoiceEvent, doc: DocumentState) -> None:
        """An earlier attempt may have created the invoice before its answer was lost: find it first."""
        found = self.client.query("Invoice", DocNumber=mapping.doc_number(event))
        if found:
            doc.external_id, doc.token, doc.status = found[0]["Id"], found[0]["SyncToken"], "posted"
            doc.extra.pop("invoice_hash", None)  # content unknown: send the update

    def _update_invoice(self, doc: DocumentState, payload: dict[str, Any], ctx: DeliveryContext) -> None:
        for attempt in (1, 2):
            body = {**payload, "Id": doc.external_id, "SyncToken": doc.token, "sparse": True}
            try:
                updated = self.client.write("Invoice", body, request_id=ctx.idempotency_key("invoice", doc.token))
                doc.token = updated["SyncToken"]
                return
            except StaleTokenError:
                if attempt == 2:
                    raise
                # A payment (ours or the bookkeeper's) bumped the SyncToken: re-read and retry once.
                current = self.client.read("Invoice", doc.external_id)
                doc.token = current["SyncToken"] if current else doc.token

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
                created = self.client.write("Payment", body, request_id=ctx.idempotency_key("payment", payment_id))
            doc.payments[payment_id] = ExternalRef(external_id=created["Id"], token=created["SyncToken"],
                                                   amount=payment.amount, status="applied")
            ctx.checkpoint(doc)

    # -- shared entities --
    def _customer(self, event: InvoiceEvent, ctx: DeliveryContext) -> str:
        customer = event.customer
        key = str(customer.id)
        digest = mapping.customer_hash(customer)
        ref = ctx.entities.get("customer", key)
        if ref is not None and ref.status == digest:
            return ref.external_id
        with ctx.entities.lock("customer", key):
            ref = ctx.entities.get("customer", key)
            if ref is None:
                found = self._find_customer(customer)
                if found is None:
                    created = self.client.write("Customer", mapping.customer_payload(customer),
                                                request_id=ctx.idempotency_key("customer", key))
                    ctx.entities.put("customer", key, ExternalRef(external_id=created["Id"], token=created["SyncToken"],
                                                                  status=digest))
                    return created["Id"]
                ref = ExternalRef(external_id=found["Id"], token=found["SyncToken"])
            if ref.status != digest:  # the shop changed the customer: correct the ledger's record
                current = self.client.read("Customer", ref.external_id)
                if current is not None:
                    updated = self.client.write("Customer", {**mapping.customer_payload(customer), "Id": ref.external_id,
                                                             "SyncToken": current["SyncToken"], "sparse": True},
                                                request_id=ctx.idempotency_key("customer-update", key, digest))
                    ref = ExternalRef(external_id=updated["Id"], token=updated["SyncToken"], status=digest)
            ctx.entities.put("customer", key, ref)
            return ref.external_id

    def _find_customer(self, customer) -> dict[str, Any] | None:
        for key in self.mapping.customer_match:
            if key == "name":
                found = self.client.query("Customer", DisplayName=mapping.customer_display_name(customer))
            elif key == "email" and customer.email:
                found = self.client.query("Customer", PrimaryEmailAddr=customer.email)
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

    # -- reads --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = self.client.query("Invoice", DocNumber=mapping.doc_number(event))
        return _remote(found[0]) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.read("Invoice", external_id)
        return _remote(found) if found else None


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=invoice["Id"], number=invoice.get("DocNumber"), token=invoice.get("SyncToken"),
                         status="void" if str(invoice.get("PrivateNote", "")).startswith("Voided") else "issued",
                         total=invoice.get("TotalAmt"), tax_total=(invoice.get("TxnTaxDetail") or {}).get("TotalTax"),
                         balance=invoice.get("Balance"), raw=invoice)
