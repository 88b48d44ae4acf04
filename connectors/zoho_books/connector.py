"""The Zoho Books connector: contacts, invoices (create with the shop's number, full update, mark sent,
void), customer payments applied to the invoice they pay, refunds as credit notes credited to the invoice,
and a report of any difference between the tax Zoho computed and the shop's.

Zoho has no concurrency token on invoices (no SyncToken/ETag: the last write wins) and no request-id
replay, so a retried delivery finds what an interrupted one created by its references: the invoice by
``invoice_number``, payments by ``reference_number`` "LW<payment id>", credit notes by "LWR<refund id>".
"""

from __future__ import annotations

import json
import re
import threading
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import structlog

from connectors import adjustments
from connectors.base import (
    ClosedPeriodError,
    Connector,
    DeliveryContext,
    DocumentState,
    ExternalRef,
    PermanentError,
    RemoteInvoice,
    delivered,
    sync_entity,
)
from connectors.http import PlatformHttp
from connectors.oauth import OAuth2RefreshAuth
from connectors.zoho_books import mapping
from connectors.zoho_books.client import ZohoClient, classify
from connectors.zoho_books.settings import ZohoSettings
from daemon.canonical import InvoiceEvent, PaymentStatus

_LOCK_DATE = re.compile(r"before (\d{4}-\d{2}-\d{2})")

log = structlog.get_logger(__name__)
ZERO = Decimal("0")


class ZohoBooksConnector(Connector):
    platform = "zoho-books"
    settings_model = ZohoSettings

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: ZohoSettings = self.settings
        oauth = OAuth2RefreshAuth(target=target.name, token_url=settings.token_endpoint(),
                                  credentials=runtime.credentials(target.name), client_auth="body",
                                  scheme="Zoho-oauthtoken")
        limiter = runtime.limiter(target, per_minute=settings.requests_per_minute, per_day=settings.requests_per_day,
                                  concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, base_url=settings.api_root(target.base_url),
                                 limiter=limiter, auth=oauth, classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = ZohoClient(self.http, settings.organization_id)
        self.mapping = target.mapping
        self._tax_lock = threading.Lock()
        self._groups: dict[frozenset[str], str] | None = None

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
                    self._remove_payments(doc, ctx, wanted={})
                    self._unapply_credits(doc, ctx, room=ZERO)
                    self._void(doc, ctx)
                    bound.info("zoho_invoice_voided", external_id=doc.external_id)
                except ClosedPeriodError as exc:
                    self._adjust_closed(event, doc, ctx, exc, bound, reason="voided after the books were locked",
                                        wanted={})
                    doc.status = "voided"
                    ctx.checkpoint(doc)
            return delivered(event, doc)
        # Payments reversed, moved or changed go first, so a lowered total never falls below what is applied.
        self._remove_payments(doc, ctx, wanted)
        doc.customer_id = self._customer(event, ctx)
        tax_ids = self._tax_ids(event)
        payload = mapping.invoice_payload(event, doc.customer_id, tax_ids, self.mapping, self._items(event, ctx))
        digest = mapping.payload_hash(payload)
        self._keep_open_date(doc, payload)
        invoice: dict[str, Any] | None = None
        if doc.external_id is None:
            try:
                invoice = self.client.call("POST", "/invoices", payload, ignore_auto_number_generation="true")["invoice"]
            except ClosedPeriodError as exc:
                invoice = self._create_redated(event, doc, payload, exc, bound)
            doc.external_id, doc.status = invoice["invoice_id"], "posted"
            doc.token = invoice.get("last_modified_time")
            doc.extra["invoice_hash"] = digest
            doc.extra.pop("sent", None)
            ctx.checkpoint(doc)
            bound.info("zoho_invoice_created", external_id=doc.external_id)
        elif doc.extra.get("invoice_hash") != digest:
            # A lower total must not fall below the credits applied to the invoice: take them off first.
            self._unapply_credits(doc, ctx, room=event.computed.total - sum((p.amount for p in wanted.values()), ZERO))
            try:
                invoice = self.client.call("PUT", f"/invoices/{doc.external_id}", payload)["invoice"]
                doc.token = invoice.get("last_modified_time")
                bound.info("zoho_invoice_updated", external_id=doc.external_id)
            except ClosedPeriodError as exc:
                # the difference posts as an adjustment in the open period; the hash below keeps it from
                # being tried again (the next change computes its difference from the adjustments recorded)
                self._adjust_closed(event, doc, ctx, exc, bound, wanted=mapping.event_groups(event, tax_ids, self.mapping))
            doc.extra["invoice_hash"] = digest
            ctx.checkpoint(doc)
        if invoice is not None:
            doc.extra["held"] = json.dumps(adjustments.encode(mapping.event_groups(event, tax_ids, self.mapping)),
                                           sort_keys=True)
            self._record_totals(event, doc, invoice, bound)
        if doc.extra.get("sent") != "1":
            self._mark_sent(doc, ctx, invoice)
        room = self._platform_total(doc, event) - sum((p.amount for p in wanted.values()), ZERO)
        self._unapply_credits(doc, ctx, room=room)
        self._add_payments(event, doc, ctx, wanted)
        self._credit_notes(event, doc, ctx, room)
        return delivered(event, doc)


    # -- items: one per part number (item_mode "per_part_number"), else mapping.items per line kind --
    def _items(self, event: InvoiceEvent, ctx: DeliveryContext) -> dict[int, str]:
        return {ln.id: self._item(ln, ctx) for ln in event.lines if mapping.per_part_number(ln, self.mapping)}

    def _item(self, line, ctx: DeliveryContext) -> str:
        name = mapping.item_name(line)

        def find() -> ExternalRef | None:
            rows = [i for i in self.client.list("/items", "items", name=name) if i.get("name") == name]
            return ExternalRef(external_id=str(rows[0]["item_id"])) if rows else None

        def create() -> ExternalRef:
            created = self.client.call("POST", "/items", mapping.item_payload(line, self.mapping))["item"]
            return ExternalRef(external_id=str(created["item_id"]))

        return sync_entity(ctx, "item", f"part:{name}", mapping.item_hash(line, self.mapping),
                           find=find, create=create, update=lambda ref: ref).external_id

    # -- closed periods: Zoho's transaction lock date --
    def _first_open_day(self, exc: ClosedPeriodError) -> date:
        """Zoho's lock message names the lock date ("dated before 2026-11-30"): that day is the first open one.
        Without a date in the message: today."""
        found = _LOCK_DATE.search(exc.reason)
        lock = date.fromisoformat(found.group(1)) - timedelta(days=1) if found else None
        return adjustments.first_open_day(lock)

    def _keep_open_date(self, doc: DocumentState, payload: dict[str, Any]) -> None:
        """An invoice re-dated into the open period once stays there."""
        open_date = doc.extra.get("open_date")
        if open_date:
            payload["date"] = open_date
            if payload.get("due_date"):
                payload["due_date"] = max(payload["due_date"], open_date)

    def _post_open(self, path: str, body: dict[str, Any], ctx: DeliveryContext) -> dict[str, Any]:
        """POST a payment or credit note; when its date is locked, the same document dated the first open day."""
        try:
            return self.client.call("POST", path, body)
        except ClosedPeriodError as exc:
            open_day = self._first_open_day(exc).isoformat()
            log.warning("zoho_closed_period_redated", target=ctx.target, path=path, original_date=body.get("date"),
                        posted_date=open_day, reason=exc.reason[:200])
            return self.client.call("POST", path, {**body, "date": open_day})

    def _create_redated(self, event: InvoiceEvent, doc: DocumentState, payload: dict[str, Any],
                        exc: ClosedPeriodError, bound) -> dict[str, Any]:
        """A NEW invoice dated in a locked period: posted whole, dated the first open day, and reported."""
        open_day = self._first_open_day(exc).isoformat()
        body = {**payload, "date": open_day}
        if body.get("due_date"):
            body["due_date"] = max(body["due_date"], open_day)
        body["notes"] = f"{payload.get('notes', '')}; shop date {payload.get('date')} is in a locked period"[:5000]
        invoice = self.client.call("POST", "/invoices", body, ignore_auto_number_generation="true")["invoice"]
        doc.extra["open_date"] = open_day
        entry = {"kind": "redated", "entity": "invoice", "id": invoice["invoice_id"],
                 "number": invoice.get("invoice_number"), "date": open_day, "shop_date": str(payload.get("date")),
                 "total": str(invoice.get("total")), "version": str(event.version), "reason": exc.reason[:200]}
        adjustments.record(doc.extra, entry)
        bound.warning("zoho_closed_period_adjustment", **entry)
        return invoice

    def _find_adjustment(self, event: InvoiceEvent, seq: int) -> tuple[str, dict[str, Any]] | None:
        """The adjustment numbered ``seq`` if an earlier attempt posted it (either kind)."""
        number = mapping.adjustment_number(event.number, seq, "increase")
        rows = [i for i in self.client.list("/invoices", "invoices", invoice_number=number)
                if i.get("invoice_number") == number]
        if rows:
            return "increase", rows[0]
        reference = mapping.adjustment_number(event.number, seq, "decrease")
        rows = [c for c in self.client.list("/creditnotes", "creditnotes", reference_number=reference)
                if c.get("reference_number") == reference]
        return ("decrease", rows[0]) if rows else None

    def _adjust_closed(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, exc: ClosedPeriodError,
                       bound, wanted: adjustments.Groups, reason: str = "changed after the books were locked") -> None:
        """Zoho refused the change (the invoice's date is locked): post the difference between what Zoho holds
        (the invoice as last posted plus every adjustment recorded) and the shop's version, per account and tax,
        as an invoice (increase) or a credit note (decrease) dated the first open day and linked to the original
        by number. A retry finds an adjustment an earlier attempt posted (by number) and records it instead."""
        held = {key: (Decimal(n), Decimal(t)) for key, (n, t) in json.loads(doc.extra.get("held", "{}")).items()}
        customer_id = doc.customer_id or self._customer(event, ctx)

        def found_effect(kind: str, posted: dict[str, Any], diff: adjustments.Groups) -> adjustments.Groups:
            # Posted by an interrupted attempt: its effect is the difference of then (now, if the direction agrees).
            return diff if kind == adjustments.direction(diff) else {}

        def post(kind: str, seq: int, diff: adjustments.Groups) -> tuple[dict[str, Any], adjustments.Groups]:
            body = mapping.adjustment_payload(event, kind, seq, customer_id, adjustments.signed(diff, kind),
                                              self._first_open_day(exc), self.mapping, doc.external_id, reason)
            if kind == "decrease":
                return self.client.call("POST", "/creditnotes", body)["creditnote"], diff
            posted = self.client.call("POST", "/invoices", body, ignore_auto_number_generation="true")["invoice"]
            if posted.get("status") == "draft":
                self.client.call("POST", f"/invoices/{posted['invoice_id']}/status/sent")
            return posted, diff

        def describe(kind: str, posted: dict[str, Any]) -> dict[str, Any]:
            return {"entity": "invoice" if kind == "increase" else "creditnote",
                    "id": posted.get("invoice_id") or posted.get("creditnote_id"),
                    "number": posted.get("invoice_number") or posted.get("reference_number"),
                    "date": str(posted.get("date")), "platform_total": str(posted.get("total"))}

        def recorded(entry: dict[str, Any]) -> None:
            ctx.checkpoint(doc)
            bound.warning("zoho_closed_period_adjustment", **{k: v for k, v in entry.items() if k != "effect"})

        _, entry = adjustments.settle(doc.extra, held, wanted, platform="Zoho", version=event.version,
                                      original=doc.external_id, reason=exc.reason, find=lambda seq: self._find_adjustment(event, seq),
                                      post=post, found_effect=found_effect, describe=describe, recorded=recorded)
        if entry is None:
            bound.info("zoho_closed_period_no_difference", reason=exc.reason[:200])

    def _adopt_existing(self, event: InvoiceEvent, doc: DocumentState) -> None:
        """An earlier attempt may have created the invoice before its answer was lost: find it first."""
        found = [i for i in self.client.list("/invoices", "invoices", invoice_number=event.number[:100])
                 if i.get("invoice_number") == event.number[:100]]
        if found:
            doc.external_id, doc.status = found[0]["invoice_id"], "posted"
            doc.extra.pop("invoice_hash", None)  # content unknown: send the update
            doc.extra.pop("sent", None)

    def _platform_total(self, doc: DocumentState, event: InvoiceEvent) -> Decimal:
        return Decimal(doc.extra.get("platform_total", f"{event.computed.total:f}"))

    def _record_totals(self, event: InvoiceEvent, doc: DocumentState, invoice: dict[str, Any], bound) -> None:
        """Zoho computed the tax from the tax ids: keep the shop's numbers, report any difference."""
        total = Decimal(str(invoice["total"]))
        tax = total - Decimal(str(invoice.get("sub_total", total)))
        doc.extra["platform_total"] = f"{total:f}"
        if total != event.computed.total or tax != event.computed.tax_total:
            difference = tax - event.computed.tax_total
            doc.extra["tax_difference"] = f"{difference:f}"
            if total - event.computed.total != difference:
                doc.extra["total_difference"] = f"{total - event.computed.total:f}"
            bound.warning("zoho_tax_difference", external_id=doc.external_id, platform_tax=f"{tax:f}",
                          shop_tax=f"{event.computed.tax_total:f}", difference=f"{difference:f}")
        else:
            doc.extra.pop("tax_difference", None)
            doc.extra.pop("total_difference", None)

    def _mark_sent(self, doc: DocumentState, ctx: DeliveryContext, invoice: dict[str, Any] | None) -> None:
        """Zoho creates API invoices as drafts; payments and credits only apply to sent (open) invoices."""
        if invoice is None or "status" not in invoice:
            invoice = self.client.get(f"/invoices/{doc.external_id}", "invoice") or {}
        if invoice.get("status") == "draft":
            self.client.call("POST", f"/invoices/{doc.external_id}/status/sent")
        doc.extra["sent"] = "1"
        ctx.checkpoint(doc)

    def _void(self, doc: DocumentState, ctx: DeliveryContext) -> None:
        current = self.client.get(f"/invoices/{doc.external_id}", "invoice")
        if current is None:
            doc.status = "deleted"
            return
        if current.get("status") != "void":
            self.client.call("POST", f"/invoices/{doc.external_id}/status/void")
        doc.status = "voided"
        ctx.checkpoint(doc)

    # -- payments --
    def _remove_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """Reversed, moved or changed payments: delete the Zoho payment (its amount returns to the balance)."""
        for payment_id, ref in list(doc.payments.items()):
            current = wanted.get(payment_id)
            if current is not None and ref.amount == current.amount:
                continue
            if self.client.get(f"/customerpayments/{ref.external_id}", "payment") is not None:
                self.client.call("DELETE", f"/customerpayments/{ref.external_id}")
            del doc.payments[payment_id]
            ctx.checkpoint(doc)

    def _add_payments(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """New payments, each applied to THIS invoice in its own body — never left to auto-apply."""
        for payment_id, payment in wanted.items():
            if payment_id in doc.payments:
                continue
            reference = mapping.payment_reference(payment)
            found = []
            if ctx.attempt > 1:
                found = [p for p in self.client.list("/customerpayments", "customerpayments", reference_number=reference)
                         if p.get("reference_number") == reference]
            if found:
                created = found[0]
            else:
                body = mapping.payment_payload(payment, doc.external_id, doc.customer_id, event, self.mapping)
                created = self._post_open("/customerpayments", body, ctx)["payment"]
            doc.payments[payment_id] = ExternalRef(external_id=created["payment_id"], amount=payment.amount,
                                                   status="applied")
            ctx.checkpoint(doc)

    # -- refunds: credit notes credited to the invoice --
    def _credit_notes(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, room: Decimal) -> None:
        for refund in event.refunds:
            key = str(refund.id)
            ref = doc.refunds.get(key)
            if ref is None:
                ref = self._creditnote(refund, event, doc, ctx)
                doc.refunds[key] = ref
                ctx.checkpoint(doc)
            left = room - sum((_applied(r) for r in doc.refunds.values()), ZERO)
            if _applied(ref) == ZERO and left > ZERO and ref.amount:
                amount = min(ref.amount, left)
                already = self._credited(ref.external_id, doc.external_id) if ctx.attempt > 1 else None
                if already is None:
                    self.client.call("POST", f"/creditnotes/{ref.external_id}/invoices",
                                     {"invoices": [{"invoice_id": doc.external_id, "amount_applied": amount}]})
                    already = amount
                doc.refunds[key] = ref.model_copy(update={"status": f"applied:{already:f}"})
                ctx.checkpoint(doc)

    def _creditnote(self, refund, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext) -> ExternalRef:
        reference = mapping.refund_reference(refund)
        found = []
        if ctx.attempt > 1:
            found = [c for c in self.client.list("/creditnotes", "creditnotes", reference_number=reference)
                     if c.get("reference_number") == reference]
        if found:
            note = found[0]
        else:
            line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
            tax_id = self._tax_id(tuple(t.code for t in line.taxes)) if line is not None else None
            body = mapping.creditnote_payload(refund, event, doc.customer_id, tax_id, self.mapping)
            note = self._post_open("/creditnotes", body, ctx)["creditnote"]
        total = Decimal(str(note.get("total", refund.amount + refund.tax_amount)))
        if total != refund.amount + refund.tax_amount:
            log.warning("zoho_credit_note_difference", target=ctx.target, invoice_id=event.invoice_id,
                        refund_id=refund.id, platform_total=f"{total:f}",
                        shop_total=f"{refund.amount + refund.tax_amount:f}")
        return ExternalRef(external_id=note["creditnote_id"], amount=total, status="open")

    def _credited(self, creditnote_id: str, invoice_id: str) -> Decimal | None:
        rows = self.client.list(f"/creditnotes/{creditnote_id}/invoices", "invoices_credited")
        amounts = [Decimal(str(r["amount_applied"])) for r in rows if r.get("invoice_id") == invoice_id]
        return sum(amounts, ZERO) if amounts else None

    def _unapply_credits(self, doc: DocumentState, ctx: DeliveryContext, room: Decimal) -> None:
        """Take credits off the invoice while they exceed ``room`` (total less the payments to apply)."""
        for key, ref in sorted(doc.refunds.items(), reverse=True):
            if sum((_applied(r) for r in doc.refunds.values()), ZERO) <= room:
                return
            if _applied(ref) == ZERO:
                continue
            for row in self.client.list(f"/creditnotes/{ref.external_id}/invoices", "invoices_credited"):
                if row.get("invoice_id") == doc.external_id:
                    self.client.call("DELETE", f"/creditnotes/{ref.external_id}/invoices/{row['creditnote_invoice_id']}")
            doc.refunds[key] = ref.model_copy(update={"status": "open"})
            ctx.checkpoint(doc)

    # -- shared entities --
    def _customer(self, event: InvoiceEvent, ctx: DeliveryContext) -> str:
        customer = event.customer
        payload = mapping.contact_payload(customer)

        def find() -> ExternalRef | None:
            found = self._find_contact(customer)
            return ExternalRef(external_id=found["contact_id"]) if found else None

        def create() -> ExternalRef:
            return ExternalRef(external_id=self.client.call("POST", "/contacts", payload)["contact"]["contact_id"])

        def update(ref: ExternalRef) -> ExternalRef:  # the shop changed the customer (phone, email …)
            updated = self.client.call("PUT", f"/contacts/{ref.external_id}", payload)
            return ExternalRef(external_id=updated["contact"]["contact_id"])

        return sync_entity(ctx, "customer", str(customer.id), mapping.contact_hash(customer),
                           find=find, create=create, update=update).external_id

    def _find_contact(self, customer) -> dict[str, Any] | None:
        suffix = mapping.contact_suffix(customer)
        for row in self.client.list("/contacts", "contacts", contact_name_contains=suffix):
            if str(row.get("contact_name", "")).endswith(suffix):
                return row
        for key in self.mapping.customer_match:
            value = {"email": customer.email, "phone": customer.phone, "name": customer.name}[key]
            if not value:
                continue
            rows = self.client.list("/contacts", "contacts", **{"contact_name" if key == "name" else key: value})
            rows = [r for r in rows if r.get("contact_type", "customer") == "customer"]
            if rows:
                return rows[0]
        return None

    # -- taxes: a tax id per component, a tax group for several --
    def _tax_ids(self, event: InvoiceEvent) -> dict[int, str | None]:
        return {ln.id: self._tax_id(tuple(t.code for t in ln.taxes)) for ln in event.lines}

    def _tax_id(self, codes: tuple[str, ...], resolve: bool = True) -> str | None:
        if not codes:
            return None
        if len(codes) > 1:
            for key in ("+".join(codes), "+".join(sorted(codes))):
                if key in self.mapping.tax_codes:
                    return self.mapping.tax_codes[key]
        missing = [c for c in codes if c not in self.mapping.tax_codes]
        if missing:
            raise PermanentError(f"tax code(s) {', '.join(missing)} have no Zoho tax in mapping.tax_codes")
        if len(codes) == 1:
            return self.mapping.tax_codes[codes[0]]
        members = frozenset(self.mapping.tax_codes[c] for c in codes)
        group = self._tax_groups().get(members)
        if group is None and resolve:
            group = self._tax_groups(reload=True).get(members)
        if group is None:
            raise PermanentError(f"no Zoho tax group combines {' + '.join(codes)} (tax ids {sorted(members)}); "
                                 f"create one or map '{'+'.join(codes)}' in mapping.tax_codes")
        return group

    def _tax_groups(self, reload: bool = False) -> dict[frozenset[str], str]:
        with self._tax_lock:
            if self._groups is None or reload:
                groups: dict[frozenset[str], str] = {}
                for tax in self.client.list("/settings/taxes", "taxes"):
                    if tax.get("tax_type") == "tax_group":
                        detail = self.client.get(f"/settings/taxgroups/{tax['tax_id']}", "tax_group") or {}
                        groups[frozenset(str(t["tax_id"]) for t in detail.get("taxes", []))] = str(tax["tax_id"])
                self._groups = groups
            return self._groups

    # -- reads --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = [i for i in self.client.list("/invoices", "invoices", invoice_number=event.number[:100])
                 if i.get("invoice_number") == event.number[:100]]
        return _remote(found[0]) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self.client.get(f"/invoices/{external_id}", "invoice")
        return _remote(found) if found else None

    # -- issue #5: mapping check and preview --
    def check_mapping(self) -> list[str]:
        problems: list[str] = []
        accounts = {str(a["account_id"]) for a in self.client.list("/chartofaccounts", "chartofaccounts")}
        for kind, account in sorted(self.mapping.income_accounts.items()):
            if account not in accounts:
                problems.append(f"income_accounts.{kind.value}: account '{account}' not found")
        if self.mapping.core_account and self.mapping.core_account not in accounts:
            problems.append(f"core_account: account '{self.mapping.core_account}' not found")
        for method, account in sorted(self.mapping.payment_accounts.items()):
            if account not in accounts:
                problems.append(f"payment_accounts.{method}: account '{account}' not found")
        taxes = {str(t["tax_id"]): t for t in self.client.list("/settings/taxes", "taxes")}
        for code, tax_id in sorted(self.mapping.tax_codes.items()):
            if tax_id not in taxes:
                problems.append(f"tax_codes.{code}: tax '{tax_id}' not found")
        if self.mapping.items:
            items = {str(i["item_id"]) for i in self.client.list("/items", "items")}
            for kind, item in sorted(self.mapping.items.items()):
                if item not in items:
                    problems.append(f"items.{kind.value}: item '{item}' not found")
        locations = branches = tags = None
        for code, value in sorted(self.mapping.location_tracking.items()):
            kind, _, rest = value.partition(":")
            kind, rest = (kind, rest) if rest else ("location", value)
            if kind == "location":
                locations = locations if locations is not None else {
                    str(x["location_id"]) for x in self.client.list("/locations", "locations")}
                if rest not in locations:
                    problems.append(f"location_tracking.{code}: location '{rest}' not found")
            elif kind == "branch":
                branches = branches if branches is not None else {
                    str(x["branch_id"]) for x in self.client.list("/branches", "branches")}
                if rest not in branches:
                    problems.append(f"location_tracking.{code}: branch '{rest}' not found")
            elif kind == "tag":
                tags = tags if tags is not None else {
                    (str(t["tag_id"]), str(o["tag_option_id"])) for t in self.client.list("/settings/tags", "reporting_tags")
                    for o in t.get("tag_options", [])}
                if tuple(rest.split(":", 1)) not in tags:
                    problems.append(f"location_tracking.{code}: reporting tag option '{rest}' not found")
            else:
                problems.append(f"location_tracking.{code}: unknown kind '{kind}' (location:, branch:, tag:)")
        return problems

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        """What ``deliver`` would send for this event and ledger state; sends nothing (tax group ids may be
        read from Zoho)."""
        out: list[dict[str, Any]] = []
        invoice_id = doc.external_id or "<new invoice>"
        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        for payment_id, ref in doc.payments.items():
            current = wanted.get(payment_id) if event.status.value not in ("void", "deleted") else None
            if current is None or current.amount != ref.amount:
                out.append({"method": "DELETE", "path": f"/customerpayments/{ref.external_id}", "body": None})
        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status != "voided":
                out.append({"method": "POST", "path": f"/invoices/{invoice_id}/status/void", "body": None})
            return out
        customer_id = doc.customer_id
        if customer_id is None:
            customer_id = "<new customer>"
            out.append({"method": "POST", "path": "/contacts", "body": mapping.contact_payload(event.customer)})
        payload = mapping.invoice_payload(event, customer_id, self._tax_ids(event), self.mapping)
        if doc.external_id is None:
            out.append({"method": "POST", "path": "/invoices?ignore_auto_number_generation=true", "body": payload})
            out.append({"method": "POST", "path": f"/invoices/{invoice_id}/status/sent", "body": None})
        elif doc.extra.get("invoice_hash") != mapping.payload_hash(payload):
            out.append({"method": "PUT", "path": f"/invoices/{invoice_id}", "body": payload})
        for payment_id, payment in wanted.items():
            ref = doc.payments.get(payment_id)
            if ref is None or ref.amount != payment.amount:
                out.append({"method": "POST", "path": "/customerpayments",
                            "body": mapping.payment_payload(payment, invoice_id, customer_id, event, self.mapping)})
        for refund in event.refunds:
            if str(refund.id) in doc.refunds:
                continue
            line = next((ln for ln in event.lines if ln.id == refund.line_id), None)
            tax_id = self._tax_id(tuple(t.code for t in line.taxes)) if line is not None else None
            out.append({"method": "POST", "path": "/creditnotes",
                        "body": mapping.creditnote_payload(refund, event, customer_id, tax_id, self.mapping)})
            out.append({"method": "POST", "path": f"/creditnotes/<new credit note {refund.id}>/invoices",
                        "body": {"invoices": [{"invoice_id": invoice_id,
                                               "amount_applied": refund.amount + refund.tax_amount}]}})
        return out


def _applied(ref: ExternalRef) -> Decimal:
    status = ref.status or ""
    return Decimal(status.split(":", 1)[1]) if status.startswith("applied:") else ZERO


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    total = Decimal(str(invoice["total"])) if invoice.get("total") is not None else None
    sub_total = invoice.get("sub_total")
    status = {"void": "void", "draft": "draft"}.get(invoice.get("status", ""), "issued")
    return RemoteInvoice(external_id=invoice["invoice_id"], number=invoice.get("invoice_number"),
                         token=invoice.get("last_modified_time"), status=status, total=total,
                         tax_total=(total - Decimal(str(sub_total))) if total is not None and sub_total is not None else None,
                         balance=Decimal(str(invoice["balance"])) if invoice.get("balance") is not None else None,
                         raw=invoice)
