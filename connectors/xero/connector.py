"""The Xero connector: contacts, invoices (create — several per request —, edit, void), payments applied to
the invoice they pay, and refunds as credit notes allocated to the invoice.

Xero has no concurrency token on invoices; its rule instead is that a document with payments or credit
notes allocated to it cannot be edited or voided. The connector therefore takes its own payments and
allocations off first (by the ids it recorded, or — when Xero still refuses — by re-reading the invoice
and finding them by our references), edits, then puts them back. Refresh tokens are single-use and
rotate: ``OAuth2RefreshAuth`` persists the new one before it is used.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import structlog

from connectors.base import (
    Connector,
    DeliveryContext,
    DeliveryError,
    DocumentState,
    ExternalRef,
    PermanentError,
    RemoteInvoice,
    StaleTokenError,
)
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
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
                self._void(event, doc, ctx)
                bound.info("xero_invoice_voided", external_id=doc.external_id)
            return self._done(event, doc)
        contact_id = self._contact(event, ctx)
        doc.customer_id = contact_id
        payload = mapping.invoice_payload(event, contact_id, self.mapping)
        digest = mapping.invoice_hash(payload)
        # Payments reversed, moved or changed go first, so a lowered total never falls below what is applied.
        self._remove_payments(doc, ctx, wanted)
        if doc.external_id is None:
            answer = self.client.write("PUT", "/Invoices", {"Invoices": [payload]}, key=ctx.idempotency_key("invoice"),
                                       unitdp=UNITDP)
            self._record_invoice(event, doc, answer["Invoices"][0], digest)
            ctx.checkpoint(doc)
            bound.info("xero_invoice_created", external_id=doc.external_id)
        elif doc.extra.get("invoice_hash") != digest:
            self._update_invoice(event, doc, payload, digest, ctx)
            bound.info("xero_invoice_updated", external_id=doc.external_id)
        self._add_payments(doc, ctx, wanted)
        self._refunds(event, doc, ctx)
        return self._done(event, doc)

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
                    results[index] = error_for_messages(validation_messages(item), status=400, detail=item)
                    continue
                self._record_invoice(event, doc, item, digest)
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

    def _record_invoice(self, event: InvoiceEvent, doc: DocumentState, invoice: dict[str, Any], digest: str) -> None:
        doc.external_id, doc.status = invoice["InvoiceID"], "posted"
        doc.token = invoice.get("UpdatedDateUTC")
        doc.extra["invoice_hash"] = digest
        doc.extra["total"] = str(invoice.get("Total", event.computed.total))
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

    def _find(self, number: str) -> dict[str, Any] | None:
        found = self.client.get("/Invoices", InvoiceNumbers=number, unitdp=UNITDP).get("Invoices") or []
        live = [i for i in found if i.get("Type") == "ACCREC" and i.get("Status") != "DELETED"]
        return live[0] if live else None

    def _update_invoice(self, event: InvoiceEvent, doc: DocumentState, payload: dict[str, Any], digest: str,
                        ctx: DeliveryContext) -> None:
        # Xero refuses to edit a document with payments or credit notes allocated: take ours off first;
        # they are put back by _add_payments/_refunds.
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

    def _amount_due(self, doc: DocumentState) -> Decimal:
        allocated = sum((Decimal(a) for refs in self._allocations(doc).values() for _, a in refs), ZERO)
        paid = sum((ref.amount or ZERO for ref in doc.payments.values()), ZERO)
        return Decimal(doc.extra.get("total", "0")) - paid - allocated

    def _delete_payment(self, payment_id: str, xero_payment_id: str, ctx: DeliveryContext) -> None:
        try:
            self.client.write("POST", f"/Payments/{xero_payment_id}", {"Status": "DELETED"},
                              key=ctx.idempotency_key("payment-delete", payment_id, xero_payment_id))
        except PermanentError as exc:
            if exc.status != 404 and "already been deleted" not in exc.reason:
                raise

    def _remove_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        for payment_id, ref in list(doc.payments.items()):
            current = wanted.get(payment_id)
            if current is not None and ref.amount == current.amount:
                continue
            self._delete_payment(payment_id, ref.external_id, ctx)
            del doc.payments[payment_id]
            ctx.checkpoint(doc)

    def _remove_allocations(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        allocations = self._allocations(doc)
        for refund_id, refs in list(allocations.items()):
            credit_note = doc.refunds.get(refund_id)
            for allocation_id, _ in refs:
                if credit_note is not None:
                    try:
                        self.client.delete(f"/CreditNotes/{credit_note.external_id}/Allocations/{allocation_id}")
                    except PermanentError as exc:
                        if exc.status != 404:
                            raise
            del allocations[refund_id]
            self._set_allocations(doc, allocations)
            ctx.checkpoint(doc)

    def _detach(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        """Every payment and credit-note allocation of ours comes off the invoice (to be put back)."""
        for payment_id, ref in list(doc.payments.items()):
            self._delete_payment(payment_id, ref.external_id, ctx)
            del doc.payments[payment_id]
            ctx.checkpoint(doc)
        self._remove_allocations(doc, ctx)

    def _detach_found(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        invoice = self.client.read(f"/Invoices/{doc.external_id}", "Invoices", unitdp=UNITDP)
        if invoice is None:
            raise StaleTokenError("Xero: the invoice is gone", platform_code="404")
        foreign = []
        for payment in invoice.get("Payments") or []:
            reference = str(payment.get("Reference") or "")
            if payment.get("Status", "AUTHORISED") == "DELETED":
                continue
            if reference.startswith(mapping.PAYMENT_PREFIX):
                self._delete_payment(reference, payment["PaymentID"], ctx)
                doc.payments = {k: v for k, v in doc.payments.items() if v.external_id != payment["PaymentID"]}
            else:
                foreign.append(payment.get("PaymentID"))
        for credit in invoice.get("CreditNotes") or []:
            number = str(credit.get("CreditNoteNumber") or "")
            if not number.startswith(mapping.CREDIT_NOTE_PREFIX):
                foreign.append(credit.get("CreditNoteID"))
                continue
            full = self.client.read(f"/CreditNotes/{credit['CreditNoteID']}", "CreditNotes") or {}
            for allocation in full.get("Allocations") or []:
                if (allocation.get("Invoice") or {}).get("InvoiceID") == doc.external_id and allocation.get("AllocationID"):
                    self.client.delete(f"/CreditNotes/{credit['CreditNoteID']}/Allocations/{allocation['AllocationID']}")
        self._set_allocations(doc, {})
        ctx.checkpoint(doc)
        if foreign:
            raise PermanentError(f"Xero: invoice {doc.external_id} has payments or credit notes not posted by "
                                 f"Ledgerwire ({len(foreign)}); remove them in Xero to let the edit through")

    def _add_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """New payments, each applied to THIS invoice, in one PUT /Payments."""
        new = [(pid, p) for pid, p in wanted.items() if pid not in doc.payments]
        if not new:
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
        if sum((p.amount for _, p in new), ZERO) > self._amount_due(doc) and self._allocations(doc):
            self._remove_allocations(doc, ctx)  # payments come first; credit is re-allocated to what is left
        bodies = [mapping.payment_payload(p, doc.external_id, self.mapping) for _, p in new]
        generation = ",".join(sorted(ref.external_id for ref in doc.payments.values()))
        answer = self.client.write("PUT", "/Payments", {"Payments": bodies},
                                   key=ctx.idempotency_key("payments", *[pid for pid, _ in new], generation,
                                                           doc.extra.get("invoice_hash", "")))
        for (payment_id, payment), created in zip(new, answer.get("Payments") or []):
            doc.payments[payment_id] = ExternalRef(external_id=created["PaymentID"], amount=payment.amount,
                                                   status="applied")
        ctx.checkpoint(doc)

    def _find_payment(self, reference: str, invoice_id: str | None) -> dict[str, Any] | None:
        found = self.client.get("/Payments", where=f"Reference=={quote(reference)}").get("Payments") or []
        for payment in found:
            if payment.get("Status") != "DELETED" and (payment.get("Invoice") or {}).get("InvoiceID") == invoice_id:
                return payment
        return None

    # -- refunds: credit notes allocated to the invoice --
    def _refunds(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> None:
        allocations = self._allocations(doc)
        for refund in sorted(event.refunds, key=lambda r: r.id):
            refund_id = str(refund.id)
            ref = doc.refunds.get(refund_id)
            if ref is None:
                number = mapping.credit_note_number(refund)
                found = self._find_credit_note(number) if ctx.attempt > 1 else None
                if found is None:
                    body = mapping.credit_note_payload(refund, event, doc.customer_id, self.mapping)
                    answer = self.client.write("PUT", "/CreditNotes", {"CreditNotes": [body]}, unitdp=UNITDP,
                                               key=ctx.idempotency_key("credit-note", refund_id))
                    found = answer["CreditNotes"][0]
                ref = ExternalRef(external_id=found["CreditNoteID"], amount=Decimal(str(found.get("Total"))),
                                  status="authorised")
                doc.refunds[refund_id] = ref
                ctx.checkpoint(doc)
            allocated = sum((Decimal(a) for _, a in allocations.get(refund_id, [])), ZERO)
            amount = min((ref.amount or ZERO) - allocated, self._amount_due(doc))
            if amount <= 0:
                continue  # fully paid invoice: the credit stays on the contact, linked by Reference
            answer = self.client.write("PUT", f"/CreditNotes/{ref.external_id}/Allocations",
                                       mapping.allocation_payload(doc.external_id, amount, refund.created_at.date().isoformat()),
                                       key=ctx.idempotency_key("allocation", refund_id, str(allocated),
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
        self._detach(doc, ctx)
        for refund_id, ref in doc.refunds.items():
            if ref.status != "voided":
                self.client.write("POST", f"/CreditNotes/{ref.external_id}",
                                  {"CreditNotes": [{"CreditNoteID": ref.external_id, "Status": "VOIDED"}]},
                                  key=ctx.idempotency_key("credit-note-void", refund_id))
                ref.status = "voided"
                ctx.checkpoint(doc)
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

    # -- contacts --
    def _contact(self, event: InvoiceEvent, ctx: DeliveryContext) -> str:
        customer = event.customer
        key = str(customer.id)
        digest = mapping.contact_hash(customer)
        ref = ctx.entities.get("customer", key)
        if ref is not None and ref.status == digest:
            return ref.external_id
        with ctx.entities.lock("customer", key):
            ref = ctx.entities.get("customer", key)
            if ref is None:
                found = self._find_contact(customer)
                if found is None:
                    answer = self.client.write("PUT", "/Contacts", {"Contacts": [mapping.contact_payload(customer)]},
                                               key=ctx.idempotency_key("contact", key))
                    created = answer["Contacts"][0]
                    ref = ExternalRef(external_id=created["ContactID"], status=digest)
                    ctx.entities.put("customer", key, ref)
                    return ref.external_id
                ref = ExternalRef(external_id=found["ContactID"])  # its details unknown: brought up to date below
            if ref.status != digest:  # the shop changed the customer (phone, email): correct Xero's record
                body = {"Contacts": [{**mapping.contact_payload(customer), "ContactID": ref.external_id}]}
                self.client.write("POST", f"/Contacts/{ref.external_id}", body,
                                  key=ctx.idempotency_key("contact-update", key, digest))
                ref = ExternalRef(external_id=ref.external_id, status=digest)
            ctx.entities.put("customer", key, ref)
            return ref.external_id

    def _find_contact(self, customer) -> dict[str, Any] | None:
        """By ContactNumber (= the shop's customer id), then by the configured ``customer_match`` keys."""
        where = [f"ContactNumber=={quote(str(customer.id))}"]
        for key in self.mapping.customer_match:
            if key == "email" and customer.email:
                where.append(f"EmailAddress=={quote(customer.email)}")
            elif key == "name":
                where.append(f"Name=={quote(mapping.contact_name(customer))}")
            elif key == "phone" and customer.phone:
                where.append(f"Phones[0].PhoneNumber=={quote(customer.phone)}")
        for condition in where:
            found = [c for c in self.client.get("/Contacts", where=condition).get("Contacts") or []
                     if c.get("ContactStatus", "ACTIVE") == "ACTIVE"]
            if found:
                return found[0]
        return None

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
                calls.append({"method": "POST", "path": f"/Payments/{doc.payments[payment_id].external_id}",
                              "body": {"Status": "DELETED"}})
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
