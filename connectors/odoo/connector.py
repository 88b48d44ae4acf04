"""The Odoo connector: customers (res.partner), customer invoices (account.move, move_type out_invoice)
created and posted, edited through draft (button_draft → write → action_post), cancelled
(button_draft → button_cancel), payments registered on THIS invoice through the account.payment.register
wizard and reversed by cancelling the payment, and refunds posted once each as credit notes (out_refund
with reversed_entry_id = the invoice). XML-RPC has no request ids, so every create is preceded on retries
by a look-up by our reference (payment_reference = shop invoice number, memo = LW<payment id>).

Odoo keeps no concurrency token on account.move; its ``write_date`` is kept as the document's token and
the invoice's state is re-read before every change, so a change made in Odoo meanwhile (a bookkeeper
resetting it to draft, a reconciliation) is seen, logged and worked with rather than failed on.

Resetting a posted invoice to draft unreconciles its payments in Odoo (``button_draft`` removes the move's
reconciliation), so an edit of an invoice that has payments cancels our payments first and registers them
again after re-posting: the payments stay applied to this invoice, never left as outstanding credits.

Closed periods (the company's lock date): a change or void Odoo would refuse for a posted invoice is posted
as an adjustment dated the first open day — an out_invoice ``<number>-A<n>`` for an increase, an out_refund
``<number>-C<n>`` (reversed_entry_id = the original) for a decrease or void — per account and tax set, recorded
in doc.extra["adjustments"] (connectors.adjustments), found by its number on a retry. A new invoice, payment
or credit note dated in the locked period is posted whole on the first open day.
"""

from __future__ import annotations

from datetime import date
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
from connectors.odoo import mapping
from connectors.odoo.client import OdooClient, classify_http
from connectors.odoo.settings import OdooSettings
from daemon.canonical import CENT, InvoiceEvent, PaymentStatus

log = structlog.get_logger(__name__)

MOVE_FIELDS = ["id", "name", "state", "write_date", "payment_reference", "amount_total", "amount_tax",
               "amount_residual", "payment_state", "move_type", "invoice_date"]
LINE_FIELDS = ["account_id", "tax_ids", "price_subtotal", "price_total", "display_type"]
PREVIEW_PATH = "/xmlrpc/2/object"


class OdooConnector(Connector):
    platform = "odoo"
    settings_model = OdooSettings

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: OdooSettings = self.settings
        base_url = settings.url or target.base_url
        if not base_url:
            raise PermanentError("Odoo target needs settings.url or base_url")
        limiter = runtime.limiter(target, per_second=settings.requests_per_second, concurrency=settings.concurrency)
        self.http = PlatformHttp(target=target.name, platform=self.platform, base_url=base_url, limiter=limiter,
                                 classify=classify_http, timeout_s=target.request_timeout_s)
        self.client = OdooClient(self.http, target=target.name, db=settings.db, login=settings.login,
                                 credentials=runtime.credentials(target.name))
        self.mapping = target.mapping
        self.memo_field = settings.payment_memo_field

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
                    self._refuse_if_locked(self._read_move(int(doc.external_id)))
                    self._remove_payments(doc, ctx, wanted={})
                    self._cancel(doc, ctx, bound)
                except ClosedPeriodError as exc:
                    self._void_in_closed_period(event, doc, ctx, exc, bound)
            return delivered(event, doc)
        payments_before = {k: v.external_id for k, v in doc.payments.items()}
        self._remove_payments(doc, ctx, wanted)
        partner_id = self._customer(event, ctx)
        doc.customer_id = str(partner_id)
        vals = mapping.invoice_vals(event, partner_id, self.mapping, self._products(event, ctx),
                                    open_date=doc.extra.get("open_date"),
                                    included=self._included_taxes() if event.tax_inclusive else None)
        digest = mapping.invoice_hash(vals)
        current = self._read_move(int(doc.external_id)) if doc.external_id is not None else None
        if doc.external_id is not None and current is None:
            bound.warning("odoo_invoice_gone", external_id=doc.external_id)  # deleted in Odoo by hand
            doc.external_id, doc.token, doc.payments = None, None, {}
        if doc.external_id is None:
            move_id = self.client.execute("account.move", "create", [vals])
            doc.external_id, doc.status = str(move_id), "posted"
            doc.extra["odoo_state"] = "draft"
            ctx.checkpoint(doc)
            digest = self._post(event, doc, move_id, vals, digest, ctx, bound)
            bound.info("odoo_invoice_created", external_id=doc.external_id)
            self._after_post(event, doc, digest, ctx, bound)
        elif current["state"] != "posted" or doc.extra.get("invoice_hash") != digest:
            try:
                self._update(event, doc, current, vals, digest, ctx, bound)
            except ClosedPeriodError as exc:
                self._adjust_closed(event, doc, ctx, exc, bound)
                doc.extra["invoice_hash"] = digest
                ctx.checkpoint(doc)
        self._add_payments(doc, ctx, wanted)
        self._add_refunds(event, doc, ctx, partner_id)
        if {k: v.external_id for k, v in doc.payments.items()} != payments_before:
            # Reconciling our payments changed the invoice (payment_state): keep its write_date current so
            # the next delivery only reports changes made in Odoo by someone else.
            doc.token = (self._read_move(int(doc.external_id)) or {}).get("write_date", doc.token)
        return delivered(event, doc)

    def _read_move(self, move_id: int) -> dict[str, Any] | None:
        return self.client.read_one("account.move", move_id, MOVE_FIELDS)

    def _adopt_existing(self, event: InvoiceEvent, doc: DocumentState) -> None:
        """An earlier attempt may have created the invoice before its answer was lost: find it first."""
        found = self._find_moves(event)
        if found:
            doc.external_id, doc.token, doc.status = str(found[0]["id"]), found[0]["write_date"], "posted"
            doc.extra.pop("invoice_hash", None)  # content unknown: write it again
            posted_on = found[0].get("invoice_date")
            if posted_on and event.issue_date and str(posted_on) > event.issue_date.isoformat():
                doc.extra["open_date"] = str(posted_on)  # re-dated into the open period by an earlier attempt

    def _find_moves(self, event: InvoiceEvent) -> list[dict[str, Any]]:
        found = self.client.search_read("account.move", [("move_type", "=", "out_invoice"),
                                                         ("payment_reference", "=", event.number)],
                                        MOVE_FIELDS, order="id asc")
        return sorted(found, key=lambda m: m["state"] == "cancel")  # a live one first

    def _update(self, event, doc, current, vals, digest, ctx, bound) -> None:
        if doc.token and current["write_date"] != doc.token:
            bound.info("odoo_invoice_changed_in_odoo", external_id=doc.external_id, state=current["state"])
        move_id = int(doc.external_id)
        if current["state"] == "posted":
            self._refuse_if_locked(current)  # before any payment is taken off: Odoo would refuse button_draft
        if doc.payments:
            # button_draft would unreconcile them: cancel ours now, register them again after posting.
            self._remove_payments(doc, ctx, wanted={})
        if current["state"] in ("posted", "cancel"):
            self.client.execute("account.move", "button_draft", [[move_id]])
            doc.extra["odoo_state"] = "draft"
            ctx.checkpoint(doc)
        self.client.execute("account.move", "write", [[move_id], mapping.invoice_update_vals(vals)])
        digest = self._post(event, doc, move_id, vals, digest, ctx, bound)
        bound.info("odoo_invoice_updated", external_id=doc.external_id)
        self._after_post(event, doc, digest, ctx, bound)

    def _after_post(self, event, doc, digest, ctx, bound) -> None:
        """Record the new write_date and compare Odoo's computed totals with the shop's."""
        posted = self._read_move(int(doc.external_id)) or {}
        doc.token = posted.get("write_date")
        doc.status = "posted"
        doc.extra["odoo_state"] = posted.get("state", "posted")
        doc.extra["invoice_hash"] = digest
        if posted.get("name"):
            doc.extra["odoo_number"] = str(posted["name"])
        total = _money(posted.get("amount_total"))
        tax = _money(posted.get("amount_tax"))
        if total is not None and tax is not None:
            difference = tax - event.computed.tax_total
            if difference or total != event.computed.total:
                doc.extra["tax_difference"] = str(difference)
                bound.warning("odoo_tax_difference", external_id=doc.external_id, odoo_tax=str(tax),
                              shop_tax=str(event.computed.tax_total), odoo_total=str(total),
                              shop_total=str(event.computed.total), difference=str(difference))
            else:
                doc.extra.pop("tax_difference", None)
        ctx.checkpoint(doc)

    # -- closed periods: the company's lock date --
    def _lock_date(self) -> date | None:
        companies = self.client.search_read("res.company", [], ["fiscalyear_lock_date"])
        locks = [date.fromisoformat(str(c["fiscalyear_lock_date"])[:10]) for c in companies
                 if c.get("fiscalyear_lock_date")]
        return max(locks, default=None)

    def _first_open_day(self) -> date:
        return adjustments.first_open_day(self._lock_date())

    def _refuse_if_locked(self, move: dict[str, Any] | None) -> None:
        """A posted invoice dated on or before the lock date: refused before anything is taken off it (Odoo
        would refuse button_draft anyway, after our payments were gone)."""
        day = (move or {}).get("invoice_date")
        if not move or move.get("state") != "posted" or not day:
            return
        lock = self._lock_date()
        if lock is not None and date.fromisoformat(str(day)[:10]) <= lock:
            raise ClosedPeriodError(f"Odoo: the invoice is dated {day}, on or before the lock date {lock.isoformat()}",
                                    platform_code="lock_date")

    def _post(self, event, doc, move_id: int, vals: dict[str, Any], digest: str, ctx, bound) -> str:
        """action_post a draft; when its date is in the locked period, date it the first open day and post it
        whole (a draft holds nothing in the books yet). Returns the hash of what was posted."""
        try:
            self.client.execute("account.move", "action_post", [[move_id]])
            return digest
        except ClosedPeriodError as exc:
            open_day = self._first_open_day().isoformat()
            due = max(str(vals.get("invoice_date_due") or open_day), open_day)
            self.client.execute("account.move", "write", [[move_id], {"invoice_date": open_day,
                                                                      "invoice_date_due": due}])
            self.client.execute("account.move", "action_post", [[move_id]])
            doc.extra["open_date"] = open_day
            entry = {"kind": "redated", "entity": "out_invoice", "id": str(move_id), "number": event.number,
                     "date": open_day, "shop_date": str(vals.get("invoice_date")), "version": str(event.version),
                     "reason": exc.reason[:200]}
            adjustments.record(doc.extra, entry)
            ctx.checkpoint(doc)
            bound.warning("odoo_closed_period_redated", **entry)
            return mapping.invoice_hash({**vals, "invoice_date": open_day, "invoice_date_due": due})

    def _move_groups(self, move: dict[str, Any] | None, sign: int = 1) -> adjustments.Groups:
        """What a posted document holds per posting key (account|taxes) as (net, tax), read back from Odoo."""
        if not move or move.get("state") != "posted":
            return {}
        line_ids = move.get("invoice_line_ids")
        if line_ids is None:
            line_ids = (self.client.read_one("account.move", int(move["id"]), ["invoice_line_ids"]) or {}).get(
                "invoice_line_ids") or []
        out: adjustments.Groups = {}
        if not line_ids:
            return out
        rows = self.client.search_read("account.move.line", [("id", "in", list(line_ids))], LINE_FIELDS)
        mapped = {mapping.record_id(v, f"tax_codes.{k}") for k, v in self.mapping.tax_codes.items()}
        excluded: dict[int, int] = {}
        if any(t not in mapped for row in rows for t in row.get("tax_ids") or []):
            # A tax-inclusive invoice's price-included taxes post under the mapped (excluded) tax's key.
            excluded = {incl: excl for excl, incl in sorted(self._included_taxes().items(), reverse=True)}
        for line in rows:
            if line.get("display_type") not in ("product", False, None):
                continue
            account = line["account_id"][0] if isinstance(line["account_id"], list) else line["account_id"]
            net = Decimal(str(line["price_subtotal"]))
            taxes = [excluded.get(t, t) for t in line.get("tax_ids") or []]
            adjustments.add(out, mapping.group_key(int(account), taxes), net,
                            Decimal(str(line["price_total"])) - net, sign)
        return out

    def _find_adjustment(self, event: InvoiceEvent, seq: int) -> tuple[str, dict[str, Any]] | None:
        """Adjustment number ``seq`` if an earlier attempt created it (either kind); a draft one is posted now."""
        numbers = [mapping.adjustment_number(event.number, seq, k) for k in ("increase", "decrease")]
        found = self.client.search_read("account.move", [("move_type", "in", ["out_invoice", "out_refund"]),
                                                         ("payment_reference", "in", numbers)],
                                        MOVE_FIELDS + ["invoice_line_ids"], limit=1, order="id asc")
        if not found:
            return None
        move = found[0]
        if move["state"] == "draft":
            self.client.execute("account.move", "action_post", [[int(move["id"])]])
            move = self.client.read_one("account.move", int(move["id"]), MOVE_FIELDS + ["invoice_line_ids"]) or move
        return ("increase" if move["move_type"] == "out_invoice" else "decrease"), move

    def _adjust_closed(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, exc: ClosedPeriodError,
                       bound, reason: str = "changed after the books were locked",
                       wanted: adjustments.Groups | None = None) -> None:
        """Odoo refused the change (the invoice's date is locked): post the difference between what Odoo holds
        (the original as read now, plus every adjustment recorded) and the shop's version — per account and tax
        set — as an out_invoice (increase) or an out_refund (decrease, reversed_entry_id = the original) dated
        the first open day, numbered ``<number>-A<n>``/``-C<n>`` in payment_reference, ref = the original's
        numbers. An adjustment an earlier attempt posted is found by that number and recorded, not posted again."""
        wanted = mapping.event_groups(event, self.mapping) if wanted is None else wanted
        original = self._read_move(int(doc.external_id)) if doc.external_id else None
        base = self._move_groups(original)
        partner_id = int(doc.customer_id) if doc.customer_id else self._customer(event, ctx)

        def effect_of(kind: str, posted: dict[str, Any]) -> adjustments.Groups:
            return self._move_groups(posted, 1 if kind == "increase" else -1)  # what Odoo computed

        def post(kind: str, seq: int, diff: adjustments.Groups) -> tuple[dict[str, Any], adjustments.Groups]:
            vals = mapping.adjustment_vals(event, kind, seq, partner_id, adjustments.signed(diff, kind),
                                           self._first_open_day().isoformat(),
                                           int(doc.external_id) if doc.external_id else None,
                                           (original or {}).get("name") or None, self.mapping, reason)
            new_id = self.client.execute("account.move", "create", [vals])
            self.client.execute("account.move", "action_post", [[new_id]])
            posted = self.client.read_one("account.move", int(new_id), MOVE_FIELDS + ["invoice_line_ids"]) or {
                "id": new_id, "state": "posted", "payment_reference": vals["payment_reference"]}
            return posted, effect_of(kind, posted)

        def describe(kind: str, posted: dict[str, Any]) -> dict[str, Any]:
            return {"entity": "out_invoice" if kind == "increase" else "out_refund", "id": str(posted["id"]),
                    "number": str(posted.get("payment_reference") or ""), "odoo_number": str(posted.get("name") or ""),
                    "date": str(posted.get("invoice_date") or "")}

        def recorded(entry: dict[str, Any]) -> None:
            ctx.checkpoint(doc)
            bound.warning("odoo_closed_period_adjustment", **{k: v for k, v in entry.items() if k != "effect"})

        held, entry = adjustments.settle(
            doc.extra, base, wanted, platform="Odoo", version=event.version, original=doc.external_id,
            reason=exc.reason, find=lambda seq: self._find_adjustment(event, seq), post=post,
            found_effect=lambda kind, posted, diff: effect_of(kind, posted), describe=describe, recorded=recorded,
            postable=lambda diff: {k: v for k, v in diff.items() if v[0]})  # a tax-only cent is reported, not posted
        self._note_held_difference(event, doc, held, bound)
        if entry is None:
            bound.info("odoo_closed_period_no_difference", reason=exc.reason[:200])

    def _note_held_difference(self, event: InvoiceEvent, doc: DocumentState, held: adjustments.Groups, bound) -> None:
        """Odoo computes the adjustment's tax itself: a cent it rounds differently is recorded, never hidden."""
        net, tax = adjustments.totals(held)
        shop_tax = sum((t for _, t in mapping.event_groups(event, self.mapping).values()), Decimal("0")) \
            if event.status.value not in ("void", "deleted") else Decimal("0")
        difference = tax - shop_tax
        if difference:
            doc.extra["tax_difference"] = str(difference)
            bound.warning("odoo_tax_difference", external_id=doc.external_id, odoo_tax=str(tax), shop_tax=str(shop_tax),
                          difference=str(difference))
        else:
            doc.extra.pop("tax_difference", None)

    def _void_in_closed_period(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext,
                               exc: ClosedPeriodError, bound) -> None:
        """A void the lock date refuses: a credit note for everything Odoo holds, dated the first open day.
        Payments come off first where Odoo still lets them (the shop reversed them with the void)."""
        for payment_id, ref in list(doc.payments.items()):
            try:
                self._cancel_payment(ref)
            except ClosedPeriodError as locked:
                bound.warning("odoo_closed_period_payment_kept", payment=payment_id, reason=locked.reason[:200])
                continue
            del doc.payments[payment_id]
            ctx.checkpoint(doc)
        self._adjust_closed(event, doc, ctx, exc, bound, reason="voided after the books were locked", wanted={})
        doc.status = "voided"

    def _included_taxes(self) -> dict[int, int]:
        """Each mapped (tax-excluded) sales tax → the price-included sales tax of the same percentage, for
        tax-inclusive shop invoices (Odoo then takes the tax out of the price itself)."""
        if getattr(self, "_included", None) is None:
            mapped = sorted({mapping.record_id(v, f"tax_codes.{k}") for k, v in self.mapping.tax_codes.items()})
            rates = {int(t["id"]): Decimal(str(t["amount"])) for t in self.client.search_read(
                "account.tax", [("id", "in", mapped)], ["id", "amount"])} if mapped else {}
            twins = self.client.search_read("account.tax", [("type_tax_use", "=", "sale"), ("amount_type", "=", "percent"),
                                                            ("price_include", "=", True)], ["id", "amount"], order="id asc")
            by_rate: dict[Decimal, int] = {}
            for t in twins:
                by_rate.setdefault(Decimal(str(t["amount"])), int(t["id"]))
            self._included = {i: by_rate[r] for i, r in rates.items() if r in by_rate}
        return self._included

    def _products(self, event: InvoiceEvent, ctx: DeliveryContext) -> dict[int, int]:
        """item_mode "per_part_number": one product.product per part number (default_code), created once
        through the entity map (found by default_code first) — line id → product id."""
        out: dict[int, int] = {}
        for line in event.lines:
            code = mapping.part_key(line, self.mapping)
            if code is None:
                continue

            def find(code=code) -> ExternalRef | None:
                found = self.client.search_read("product.product", [("default_code", "=", code)], ["id"], limit=1,
                                                order="id asc")
                return ExternalRef(external_id=str(found[0]["id"])) if found else None

            def create(line=line) -> ExternalRef:
                return ExternalRef(external_id=str(self.client.execute("product.product", "create",
                                                                       [mapping.product_vals(line)])))

            ref = sync_entity(ctx, "item", f"part:{code}", code, find=find, create=create, update=lambda ref: ref)
            out[line.id] = int(ref.external_id)
        return out

    def _cancel(self, doc: DocumentState, ctx: DeliveryContext, bound) -> None:
        current = self._read_move(int(doc.external_id))
        if current is None:
            doc.status = "deleted"
            return
        move_id = int(doc.external_id)
        if current["state"] == "posted":
            self.client.execute("account.move", "button_draft", [[move_id]])
        if current["state"] != "cancel":
            self.client.execute("account.move", "button_cancel", [[move_id]])
        after = self._read_move(move_id) or {}
        doc.token, doc.status = after.get("write_date"), "voided"
        doc.extra["odoo_state"] = "cancel"
        ctx.checkpoint(doc)
        bound.info("odoo_invoice_cancelled", external_id=doc.external_id)

    # -- payments --
    def _remove_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """Reversed, moved or changed payments: reset the Odoo payment to draft and cancel it (its amount
        returns to the invoice's residual)."""
        for payment_id, ref in list(doc.payments.items()):
            current = wanted.get(payment_id)
            if current is not None and ref.amount == current.amount:
                continue
            self._cancel_payment(ref)
            del doc.payments[payment_id]
            ctx.checkpoint(doc)

    def _cancel_payment(self, ref: ExternalRef) -> None:
        found = self.client.read_one("account.payment", int(ref.external_id), ["id", "state"])
        if found is not None and found["state"] not in ("cancel", "canceled"):
            if found["state"] != "draft":  # a crash may have left it in draft already
                self.client.execute("account.payment", "action_draft", [[int(ref.external_id)]])
            self.client.execute("account.payment", "action_cancel", [[int(ref.external_id)]])

    def _find_payment(self, reference: str) -> dict[str, Any] | None:
        found = self.client.search_read("account.payment", [(self.memo_field, "=", reference),
                                                            ("state", "not in", ["draft", "cancel", "canceled"])],
                                        ["id", "state", "amount"], limit=1)
        return found[0] if found else None

    def _add_payments(self, doc: DocumentState, ctx: DeliveryContext, wanted: dict) -> None:
        """New payments registered on THIS invoice (the wizard opened on it) — never auto-applied."""
        for payment_id, payment in wanted.items():
            if payment_id in doc.payments:
                continue
            reference = mapping.payment_reference(payment)
            found = self._find_payment(reference) if ctx.attempt > 1 else None
            if found is not None:
                odoo_id = int(found["id"])
            else:
                context = mapping.register_context(int(doc.external_id))
                vals = mapping.register_vals(payment, self.mapping)
                try:
                    wizard = self.client.execute("account.payment.register", "create", [vals], context)
                    action = self.client.execute("account.payment.register", "action_create_payments", [[wizard]],
                                                 context)
                except ClosedPeriodError as exc:  # received in the locked period: registered on the first open day
                    vals["payment_date"] = self._first_open_day().isoformat()
                    log.warning("odoo_closed_period_redated", target=ctx.target, entity="account.payment",
                                payment=payment_id, date=vals["payment_date"], reason=exc.reason[:200])
                    wizard = self.client.execute("account.payment.register", "create", [vals], context)
                    action = self.client.execute("account.payment.register", "action_create_payments", [[wizard]],
                                                 context)
                odoo_id = action.get("res_id") if isinstance(action, dict) else None
                if not odoo_id:
                    found = self._find_payment(reference)
                    if found is None:
                        raise PermanentError(f"Odoo registered no payment for {reference}")
                    odoo_id = int(found["id"])
            doc.payments[payment_id] = ExternalRef(external_id=str(odoo_id), amount=payment.amount, status="applied")
            ctx.checkpoint(doc)

    # -- refunds --
    def _add_refunds(self, event: InvoiceEvent, doc: DocumentState, ctx: DeliveryContext, partner_id: int) -> None:
        for refund in event.refunds:
            key = str(refund.id)
            if key in doc.refunds:
                continue
            reference = mapping.refund_reference(event, refund)
            found = self.client.search_read("account.move", [("move_type", "=", "out_refund"),
                                                             ("payment_reference", "=", reference)],
                                            ["id", "state"], limit=1) if ctx.attempt > 1 else []
            if found:
                refund_id = int(found[0]["id"])
                state = found[0]["state"]
            else:
                vals = mapping.refund_vals(event, refund, partner_id, int(doc.external_id), self.mapping)
                refund_id = self.client.execute("account.move", "create", [vals])
                state = "draft"
            doc.refunds[key] = ExternalRef(external_id=str(refund_id), amount=refund.amount, status="draft")
            ctx.checkpoint(doc)
            if state == "draft":
                try:
                    self.client.execute("account.move", "action_post", [[refund_id]])
                except ClosedPeriodError as exc:  # dated in the locked period: posted on the first open day
                    open_day = self._first_open_day().isoformat()
                    self.client.execute("account.move", "write", [[refund_id], {"invoice_date": open_day}])
                    self.client.execute("account.move", "action_post", [[refund_id]])
                    log.warning("odoo_closed_period_redated", target=ctx.target, entity="out_refund",
                                id=str(refund_id), date=open_day, reason=exc.reason[:200])
            doc.refunds[key] = ExternalRef(external_id=str(refund_id), amount=refund.amount, status="posted")
            ctx.checkpoint(doc)

    # -- customers --
    def _customer(self, event: InvoiceEvent, ctx: DeliveryContext) -> int:
        customer = event.customer
        vals = mapping.partner_vals(customer)

        def find() -> ExternalRef | None:
            found = self._find_partner(customer)
            return ExternalRef(external_id=str(found["id"])) if found else None

        def create() -> ExternalRef:
            return ExternalRef(external_id=str(self.client.execute("res.partner", "create", [vals])))

        def update(ref: ExternalRef) -> ExternalRef:  # the shop changed the customer (or we matched one)
            self.client.execute("res.partner", "write", [[int(ref.external_id)], vals])
            return ref

        return int(sync_entity(ctx, "customer", str(customer.id), mapping.customer_hash(customer),
                               find=find, create=create, update=update).external_id)

    def _find_partner(self, customer) -> dict[str, Any] | None:
        searches: list[list] = [[("ref", "=", str(customer.id))]]
        for key in self.mapping.customer_match:
            if key == "email" and customer.email:
                searches.append([("email", "=ilike", customer.email)])
            elif key == "phone" and customer.phone:
                searches.append([("phone", "=", customer.phone)])
            elif key == "name":
                searches.append([("name", "=", customer.name)])
        for domain in searches:
            found = self.client.search_read("res.partner", domain, ["id"], limit=1, order="id asc")
            if found:
                return found[0]
        return None

    # -- reads --
    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = self._find_moves(event)
        return _remote(found[0]) if found else None

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        found = self._read_move(int(external_id))
        return _remote(found) if found else None

    # -- issue #5: mapping check and preview --
    def check_mapping(self) -> list[str]:
        """Resolve every id the mapping names against Odoo with read-only calls; one line per problem."""
        problems: list[str] = []
        m = self.mapping

        def ids_of(refs: dict[str, str], label: str) -> dict[str, int]:
            out = {}
            for name, value in refs.items():
                try:
                    out[name] = int(value)
                except (TypeError, ValueError):
                    problems.append(f"{name}: {label} {value!r} is not an Odoo record id")
            return out

        def fetch(model: str, ids: dict[str, int], fields: list[str]) -> dict[int, dict[str, Any]]:
            if not ids:
                return {}
            rows = self.client.search_read(model, [("id", "in", sorted(set(ids.values())))], fields)
            return {int(r["id"]): r for r in rows}

        accounts = {f"income_accounts.{k.value}": v for k, v in m.income_accounts.items()}
        if m.core_account:
            accounts["core_account"] = m.core_account
        if m.discount_posting == "discount_account":
            if m.discount_account:
                accounts["discount_account"] = m.discount_account
            else:
                problems.append("discount_account: required with discount_posting 'discount_account'")
        account_ids = ids_of(accounts, "account")
        found = fetch("account.account", account_ids, ["id", "code", "name"])
        problems += [f"{name}: account '{i}' not found" for name, i in account_ids.items() if i not in found]

        tax_ids = ids_of({f"tax_codes.{k}": v for k, v in m.tax_codes.items()}, "tax")
        taxes = fetch("account.tax", tax_ids, ["id", "name", "amount", "amount_type", "type_tax_use", "price_include"])
        for name, i in tax_ids.items():
            tax = taxes.get(i)
            if tax is None:
                problems.append(f"{name}: tax '{i}' not found")
            elif tax.get("type_tax_use") != "sale":
                problems.append(f"{name}: tax '{i}' is not a sales tax (type_tax_use={tax.get('type_tax_use')})")
            elif tax.get("amount_type") != "percent" or tax.get("price_include"):
                problems.append(f"{name}: tax '{i}' must be a tax-excluded percentage (the shop's prices exclude tax)")

        journal_ids = ids_of({f"payment_accounts.{k}": v for k, v in m.payment_accounts.items()}, "journal")
        analytic_ids: dict[str, int] = {}
        for code, value in m.location_tracking.items():
            kind, _, ident = value.rpartition(":")
            kind = kind or "analytic"
            target = ids_of({f"location_tracking.{code}": ident}, "tracking")
            if kind == "journal":
                journal_ids.update(target)
            elif kind == "analytic":
                analytic_ids.update(target)
            else:
                problems.append(f"location_tracking.{code}: {value!r} is neither analytic:<id> nor journal:<id>")
        journals = fetch("account.journal", journal_ids, ["id", "name", "type"])
        for name, i in journal_ids.items():
            journal = journals.get(i)
            wanted_types = ("sale",) if name.startswith("location_tracking") else ("bank", "cash")
            if journal is None:
                problems.append(f"{name}: journal '{i}' not found")
            elif journal.get("type") not in wanted_types:
                problems.append(f"{name}: journal '{i}' is a {journal.get('type')} journal, not {'/'.join(wanted_types)}")
        analytic = fetch("account.analytic.account", analytic_ids, ["id", "name"])
        problems += [f"{name}: analytic account '{i}' not found" for name, i in analytic_ids.items() if i not in analytic]

        product_ids = ids_of({f"items.{k.value}": v for k, v in m.items.items()}, "product")
        products = fetch("product.product", product_ids, ["id", "name"])
        problems += [f"{name}: product '{i}' not found" for name, i in product_ids.items() if i not in products]

        # The shop prices to 4 decimals and counts to 3; Odoo rounds price_unit and quantity to its
        # "Product Price" / "Product Unit of Measure" precisions (2 by default), which would change totals.
        precisions = {r["name"]: r["digits"] for r in self.client.search_read(
            "decimal.precision", [("name", "in", ["Product Price", "Product Unit of Measure"])], ["name", "digits"])}
        for name, needed in (("Product Price", 4), ("Product Unit of Measure", 3)):
            if precisions.get(name, 0) < needed:
                problems.append(f"decimal precision {name!r} is {precisions.get(name, 'unset')}; the shop needs {needed} "
                                f"digits (Settings > Technical > Decimal Accuracy)")
        return problems

    def preview(self, event: InvoiceEvent, doc: DocumentState) -> list[dict[str, Any]]:
        """The execute_kw calls deliver() would make (without db/uid/API key), sending no writes."""
        calls: list[dict[str, Any]] = []

        def call(model: str, method: str, args: list, kwargs: dict | None = None) -> None:
            calls.append({"method": "POST", "path": PREVIEW_PATH,
                          "body": {"model": model, "method": method, "args": _wire_shape(args),
                                   "kwargs": _wire_shape(kwargs or {})}})

        wanted = {str(p.id): p for p in event.payments if p.status == PaymentStatus.RECEIVED}
        removed = set()

        def remove(payment_ids) -> None:
            for pid in payment_ids:
                if pid in doc.payments and pid not in removed:
                    removed.add(pid)
                    call("account.payment", "action_draft", [[int(doc.payments[pid].external_id)]])
                    call("account.payment", "action_cancel", [[int(doc.payments[pid].external_id)]])

        move: Any = int(doc.external_id) if doc.external_id else "<new invoice>"
        if event.status.value in ("void", "deleted"):
            if doc.external_id is not None and doc.status != "voided":
                remove(list(doc.payments))
                call("account.move", "button_draft", [[move]])
                call("account.move", "button_cancel", [[move]])
            return calls
        remove([pid for pid, ref in doc.payments.items()
                if pid not in wanted or wanted[pid].amount != ref.amount])
        partner: Any = int(doc.customer_id) if doc.customer_id else None
        if partner is None:
            found = self._find_partner(event.customer)
            partner = int(found["id"]) if found else "<new customer>"
            if found is None:
                call("res.partner", "create", [mapping.partner_vals(event.customer)])
        products: dict[int, Any] = {}
        new_products: set[str] = set()
        for line in event.lines:  # item_mode "per_part_number": found by default_code, else created first
            code = mapping.part_key(line, self.mapping)
            if code is None:
                continue
            found = self.client.search_read("product.product", [("default_code", "=", code)], ["id"], limit=1,
                                            order="id asc")
            if found:
                products[line.id] = int(found[0]["id"])
            else:
                products[line.id] = f"<new product {code}>"
                if code not in new_products:
                    new_products.add(code)
                    call("product.product", "create", [mapping.product_vals(line)])
        vals = mapping.invoice_vals(event, partner, self.mapping, products, open_date=doc.extra.get("open_date"),
                                    included=self._included_taxes() if event.tax_inclusive else None)
        if doc.external_id is None:
            call("account.move", "create", [vals])
            call("account.move", "action_post", [[move]])
        elif doc.extra.get("invoice_hash") != mapping.invoice_hash(vals) or doc.extra.get("odoo_state") != "posted":
            remove(list(doc.payments))
            if doc.extra.get("odoo_state", "posted") != "draft":
                call("account.move", "button_draft", [[move]])
            call("account.move", "write", [[move], mapping.invoice_update_vals(vals)])
            call("account.move", "action_post", [[move]])
        for pid, payment in wanted.items():
            if pid in doc.payments and pid not in removed:
                continue
            context = mapping.register_context(move)
            call("account.payment.register", "create", [mapping.register_vals(payment, self.mapping)], context)
            call("account.payment.register", "action_create_payments", [["<new wizard>"]], context)
        for refund in event.refunds:
            if str(refund.id) not in doc.refunds:
                call("account.move", "create", [mapping.refund_vals(event, refund, partner, move, self.mapping)])
                call("account.move", "action_post", [["<new credit note>"]])
        return calls


def _wire_shape(value: Any) -> Any:
    """Tuples travel as XML-RPC arrays: show them as lists, as the wire carries them."""
    if isinstance(value, dict):
        return {k: _wire_shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire_shape(v) for v in value]
    return value


def _money(value: Any) -> Decimal | None:
    if value is None or value is False:
        return None
    return Decimal(str(value)).quantize(CENT)


def _remote(move: dict[str, Any]) -> RemoteInvoice:
    status = {"posted": "issued", "draft": "draft", "cancel": "void"}.get(move.get("state"), move.get("state"))
    return RemoteInvoice(external_id=str(move["id"]), number=move.get("payment_reference") or None,
                         token=move.get("write_date") or None, status=status, total=_money(move.get("amount_total")),
                         tax_total=_money(move.get("amount_tax")), balance=_money(move.get("amount_residual")), raw=move)
