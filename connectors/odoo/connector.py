"""The Odoo connector: platform operations for the delivery engine (connectors/engine.py), over XML-RPC
``execute_kw`` with the user's API key.

Customers are res.partner (``ref`` = the shop's customer id), part numbers product.product (``default_code``).
An invoice is an account.move ``out_invoice``: created in draft and posted (``action_post``), edited through
draft (``button_draft`` → write → post; that unreconciles what is applied to it, so the engine takes our payments
and credits off first and applies them again after: ``update_detaches_money``), cancelled as its void. Payments
go through the ``account.payment.register`` wizard opened on THIS invoice and are reversed by cancelling them;
refunds are ``out_refund`` credit notes reconciled with the invoice (``js_assign_outstanding_line``). Closed
periods are the company's lock date: the engine re-dates and adjusts; adjustments are posted here line by line.
Odoo has no request ids: ``find`` by our reference (``payment_reference`` = the shop's number, ``<number>/R<id>``,
``<number>-A<n>``/``-C<n>``, the payment memo ``LW<id>``) makes every retry safe; ``finish`` posts a left draft.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.base import ClosedPeriodError, ExternalRef, PermanentError, RemoteInvoice
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting
from connectors.engine_state import DocKind
from connectors.odoo import closed_period, currency, mapping, reconcile, wire
from connectors.odoo.check import check_mapping
from connectors.odoo.client import OdooClient
from connectors.odoo.faults import classify_http
from connectors.odoo.settings import OdooSettings
from connectors.odoo.taxes import IncludedTaxes
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

MOVE_FIELDS = ["id", "name", "state", "write_date", "payment_reference", "amount_total", "amount_tax",
               "amount_residual", "move_type", "invoice_date"]
MOVE_TYPES = {DocKind.INVOICE: ["out_invoice"], DocKind.CREDIT_NOTE: ["out_refund"]}
PARTNER_MATCH = {"email": "=ilike", "phone": "=", "name": "="}  # customer_match key -> res.partner operator


class OdooConnector(EngineConnector):
    platform = "odoo"
    settings_model = OdooSettings
    capabilities = Capabilities(multi_currency=True, delete_payments=False, update_detaches_money=True, refund_settlement=True)
    mapping_check = staticmethod(check_mapping)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: OdooSettings = self.settings
        base_url = settings.url or target.base_url
        if not base_url:
            raise PermanentError("Odoo target needs settings.url or base_url")
        self.client = OdooClient(self.platform_http(base_url=base_url, classify=classify_http), target=target.name,
                                 db=settings.db, login=settings.login, credentials=runtime.credentials(target.name))
        self.mapping = target.mapping
        self.memo_field = settings.payment_memo_field
        self.included_taxes = IncludedTaxes(self.client, self.mapping)

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_hash(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        # Ours first (``ref`` = the shop's id), then the target's match rules; never another shop customer's
        # partner (same name or email): ours carry the shop's id in ``ref``.
        found = next(iter(self._partners([("ref", "=", str(customer.id))])), None) or references.match_customer(
            customer, self.mapping.customer_match, lambda key, value: self._partners([(key, PARTNER_MATCH[key], value)]),
            lambda partner: partner.get("ref") or None)
        return ExternalRef(external_id=str(found["id"])) if found else None

    def _partners(self, domain: list) -> list[dict[str, Any]]:
        return self.client.search_read("res.partner", domain, ["id", "ref"], order="id asc")

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return ExternalRef(external_id=str(self.client.execute("res.partner", "create",
                                                               [mapping.partner_vals(customer)])))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        self.client.execute("res.partner", "write", [[_id(ref.external_id)], mapping.partner_vals(customer)])
        return ref

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        """item_mode "per_part_number": one product per part number; else the line kind's mapped product."""
        code = mapping.part_key(line, self.mapping)
        if code is not None:
            return ItemSpec(f"part:{code}", code, line)
        configured = self.mapping.items.get(line.kind)
        return ItemSpec(f"kind:{line.kind.value}", line.kind.value, line, configured) if configured else None

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        found = self.client.search_read("product.product", [("default_code", "=", spec.name)], ["id"], limit=1,
                                        order="id asc")
        return ExternalRef(external_id=str(found[0]["id"])) if found else None

    def create_item(self, spec: ItemSpec, request_id: str) -> ExternalRef:
        assert spec.line is not None  # the engine's own items (refund, adjustment) are never asked for here
        return ExternalRef(external_id=str(self.client.execute("product.product", "create",
                                                               [mapping.product_vals(spec.line)])))

    # -- references --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):  # an application: its credit note's
            return mapping.refund_reference(event, next(r for r in event.refunds if str(r.id) == key))
        return super().reference(kind, event, key)

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind in (DocKind.PAYMENT, DocKind.REFUND_PAYMENT):
            rows = self.client.search_read("account.payment", [(self.memo_field, "=", reference), (
                "state", "not in", ["draft", "cancel", "canceled"])], ["id", "amount"], order="id asc")
            return [ExternalRef(external_id=str(r["id"]), amount=r["amount"]) for r in rows]
        if kind is DocKind.CREDIT_APPLICATION:
            return [partial for note in self.find(DocKind.CREDIT_NOTE, reference)
                    for partial in reconcile.applications(self.client,
                                                          reconcile.receivable_line(self.client, note.external_id))]
        domain = [("move_type", "in", MOVE_TYPES.get(kind, ["out_invoice", "out_refund"])),
                  ("payment_reference", "=", reference), ("state", "in", ["draft", "posted"])]
        return [_ref(move) for move in self.client.search_read("account.move", domain, MOVE_FIELDS, order="id asc")]

    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A move an earlier attempt created and never posted (its answer or the process was lost): post it."""
        if ref.status != "draft":
            return ref
        self.client.execute("account.move", "action_post", [[_id(ref.external_id)]])
        return _ref(self._read_move(ref.external_id) or {"id": ref.external_id, "amount_total": ref.amount})

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        return self._remote(self._create_posted(self._invoice_vals(event, posting)))

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """Odoo keeps no concurrency token: the move's state is read, so one a bookkeeper left in draft is
        written as it is (``button_draft`` would be refused on a draft)."""
        move_id = _id(current.external_id)
        if (self._read_move(move_id) or {}).get("state") in ("posted", "cancel"):
            self.client.execute("account.move", "button_draft", [[move_id]])
        vals = mapping.invoice_update_vals(self._invoice_vals(event, posting))
        self.client.execute("account.move", "write", [[move_id], vals])
        self.client.execute("account.move", "action_post", [[move_id]])
        return self._remote(move_id)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        move_id = _id(current.external_id)
        held = self._read_move(move_id)
        if held is None:
            return None  # deleted in Odoo by hand
        if held["state"] == "posted":
            self.client.execute("account.move", "button_draft", [[move_id]])
        if held["state"] != "cancel":
            self.client.execute("account.move", "button_cancel", [[move_id]])
        return self._remote(move_id)

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        return _remote(found) if (found := self._read_move(external_id)) else None

    def _invoice_vals(self, event: InvoiceEvent, posting: Posting) -> dict[str, Any]:
        return mapping.invoice_vals(event, _id(posting.customer_id), self.mapping,
                                    {line_id: _id(item) for line_id, item in posting.item_ids.items()},
                                    open_date=posting.txn_date.isoformat() if posting.txn_date else None,
                                    included=self.included_taxes() if event.tax_inclusive else None) | currency.currency_vals(self.client, event.currency)

    def _create_posted(self, vals: dict[str, Any]) -> int | str:
        move_id = self.client.execute("account.move", "create", [vals])
        try:
            self.client.execute("account.move", "action_post", [[move_id]])
        except ClosedPeriodError:
            # Locked since it was planned: the never-posted draft goes, so the re-planned create is the only one.
            self.client.execute("account.move", "unlink", [[move_id]])
            raise
        return move_id

    def _read_move(self, move_id: int | str, fields: list[str] = MOVE_FIELDS) -> dict[str, Any] | None:
        return self.client.read_one("account.move", move_id, fields)

    def _remote(self, move_id: int | str) -> RemoteInvoice:  # as Odoo computed it; a preview's placeholder as is
        return self.read_invoice(str(move_id)) or RemoteInvoice(external_id=str(move_id))

    # -- money --
    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        """Registered on THIS invoice: the wizard opened on it (active_ids), a difference left open."""
        return self._register(mapping.register_vals(payment, self.mapping), invoice_id, posting, payment.amount)

    def settle_refund(self, event: InvoiceEvent, refund: Refund, credit: ExternalRef, amount: Decimal,
                      reference: str, posting: Posting) -> ExternalRef:
        """The money paid back: a payment registered on the credit note (Odoo makes it outbound), from the
        journal of the payment the refund pays back, so the credit note is left with nothing open."""
        method = references.refund_method(event, refund) or ""
        vals = mapping.register_vals(Payment(id=refund.id, amount=amount, method=method,
                                             received_at=refund.created_at), self.mapping) | {"communication": reference}
        return self._register(vals, credit.external_id, posting, amount)

    def unsettle_refund(self, settlement: ExternalRef, request_id: str) -> None:
        self.delete_payment(settlement, request_id)

    def _register(self, vals: dict[str, Any], move_id: str, posting: Posting, amount: Decimal) -> ExternalRef:
        if posting.txn_date is not None:  # received in the locked period: registered on the first open day
            vals["payment_date"] = posting.txn_date.isoformat()
        context = mapping.register_context(_id(move_id))
        wizard = self.client.execute("account.payment.register", "create", [vals], context)
        action = self.client.execute("account.payment.register", "action_create_payments", [[wizard]], context)
        if isinstance(action, dict) and action.get("res_id"):
            return ExternalRef(external_id=str(action["res_id"]), amount=amount)
        found = self.find(DocKind.PAYMENT, vals["communication"])
        if not found:
            raise PermanentError(f"Odoo registered no payment for {vals['communication']}")
        return found[-1]

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        """Reset to draft and cancelled (its amount returns to the invoice's residual); a crash may have left
        it in draft already."""
        found = self.client.read_one("account.payment", ref.external_id, ["id", "state"])
        if found is not None and found["state"] not in ("cancel", "canceled"):
            if found["state"] != "draft":
                self.client.execute("account.payment", "action_draft", [[_id(ref.external_id)]])
            self.client.execute("account.payment", "action_cancel", [[_id(ref.external_id)]])

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        vals = mapping.refund_vals(event, refund, _id(posting.customer_id), self.mapping) | currency.currency_vals(self.client, event.currency)
        if posting.txn_date is not None:  # dated in the locked period: posted on the first open day
            vals["invoice_date"] = posting.txn_date.isoformat()
        return ExternalRef(external_id=str(self._create_posted(vals)), amount=refund.amount + refund.tax_amount)

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        """The credit note's receivable line reconciled with the invoice (as "Add" on its outstanding credits);
        the application is the ``account.partial.reconcile`` it makes."""
        line = reconcile.receivable_line(self.client, credit.external_id)
        self.client.execute("account.move", "js_assign_outstanding_line", [[_id(invoice_id)], line])
        made = reconcile.applications(self.client, line)
        if made:
            return made[-1]
        if self.client.recorder is not None:
            return ExternalRef(external_id="<new account.partial.reconcile>", amount=amount)
        raise PermanentError(f"Odoo reconciled nothing for credit note {credit.external_id}")

    def release_credit(self, application: ExternalRef, request_id: str) -> None:
        if self.client.read_one("account.partial.reconcile", application.external_id, ["id"]) is not None:
            self.client.execute("account.partial.reconcile", "unlink", [[_id(application.external_id)]])

    def home_currency(self) -> str | None:  # configured, else the company's (currency.py)
        return self.mapping.home_currency or currency.home_currency(self.client)

    # -- closed periods: the company's lock date --
    def books_closed_through(self) -> date | None:
        companies = self.client.search_read("res.company", [], ["fiscalyear_lock_date"])
        return max((date.fromisoformat(str(c["fiscalyear_lock_date"])[:10]) for c in companies
                    if c.get("fiscalyear_lock_date")), default=None)

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        """The difference between what Odoo holds (the original and every adjustment, read back) and the shop's
        version, per account and tax set: an out_invoice ``-A<n>`` (increase) or an out_refund ``-C<n>``
        (decrease), dated the first open day. Odoo computes its tax."""
        original = self._read_move(adjustment.original_id, MOVE_FIELDS + ["invoice_line_ids"]) \
            if adjustment.original_id else None
        lines = closed_period.lines_to_post(self.client, self.mapping, self.included_taxes, event, adjustment.kind,
                                            original, MOVE_FIELDS + ["invoice_line_ids"])
        vals = closed_period.adjustment_vals(event, adjustment.kind, adjustment.sequence, _id(posting.customer_id), lines,
                                       (posting.txn_date or date.today()).isoformat(), (original or {}).get("name") or None,
                                       self.mapping, adjustment.reason) | currency.currency_vals(self.client, event.currency)
        move_id = self._create_posted(vals)
        return _ref(self._read_move(move_id) or {"id": move_id})


def _id(value: Any) -> Any:
    """An Odoo record id as the wire carries it (int); a preview's placeholder stays as it is."""
    return int(value) if str(value).isdigit() else value


def _ref(move: dict[str, Any]) -> ExternalRef:
    return ExternalRef(external_id=str(move["id"]), token=move.get("write_date") or None,
                       amount=wire.money(move.get("amount_total")), status=move.get("state") or None)


def _remote(move: dict[str, Any]) -> RemoteInvoice:
    status = {"posted": "issued", "draft": "draft", "cancel": "void"}.get(move.get("state"), move.get("state"))
    return RemoteInvoice(external_id=str(move["id"]), number=move.get("payment_reference") or None,
                         token=move.get("write_date") or None, status=status,
                         total=wire.money(move.get("amount_total")), tax_total=wire.money(move.get("amount_tax")),
                         balance=wire.money(move.get("amount_residual")), raw=move)
