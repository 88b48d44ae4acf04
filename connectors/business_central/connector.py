"""The Dynamics 365 Business Central (API v2.0) connector: platform operations for the delivery engine.

Customers (ours numbered ``LWC<shop id>``; else the target's match rules), sales invoices created as drafts
with their lines (deep insert) and posted by the ``Microsoft.NAV.post`` bound action (the engine's issue step).
A posted invoice cannot be modified in Business Central, so an update cancels it (``Microsoft.NAV.cancel``: a
corrective credit memo) — or deletes it while still a draft — and posts a replacement with the same
``externalDocumentNumber`` (``update_replaces``); a void is the cancel. Once a refund's credit memo is applied to
the invoice neither is possible (no unapply in API v2.0): edits and voids are adjustments (``adjust_when_credited``:
an increase invoice ``<number>-A<n>``, a decrease credit memo ``<number>-C<n>`` applied to the invoice). Payments are lines of a customer
payment journal applied to the invoice (``appliesToInvoiceId``); refunds are credit memos linked to the
invoice (``invoiceId``: posting applies them). ``PATCH`` and ``DELETE`` carry the entity's ETag in
``If-Match`` (a stale one: 412). The lifecycle, look-ups before re-creating, checkpoints and preview are the
engine's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors import references
from connectors.auth import OAuth2ClientCredentialsAuth
from connectors.base import ExternalRef, PermanentError, RemoteInvoice
from connectors.business_central import mapping
from connectors.business_central.adjusted import CANCELED, CREDIT_MEMOS, DRAFT, INVOICES, LINES, AdjustedInvoices
from connectors.business_central.client import BusinessCentralClient, quoted
from connectors.business_central.errors import classify, credited_cancel_refused
from connectors.business_central.settings import BusinessCentralSettings
from connectors.business_central.tax_rounding import TaxRounding
from connectors.engine import AdjustmentSpec, Capabilities, EngineConnector, ItemSpec, Posting, pick
from connectors.engine_state import DocKind
from connectors.http import PlatformHttp
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, Payment, Refund

API_HOST = "https://api.businesscentral.dynamics.com"


class BusinessCentralConnector(AdjustedInvoices, TaxRounding, EngineConnector):
    platform = "business-central"
    settings_model = BusinessCentralSettings
    # Journal lines are deleted; a payment names its invoice (appliesToInvoiceId); a credit memo names its
    # invoice (invoiceId) and is applied on posting, so there is no separate application write. Closing dates
    # ("Allow Posting From" in the General Ledger Setup) are not readable through API v2.0: not modelled.
    capabilities = Capabilities(multi_currency=True, void="void", delete_payments=True, payment_linked_at_creation=True,
                                credit_notes=True, credit_applications=False, closed_periods=False,
                                issue_after_create=True, update_detaches_money=True, update_replaces=True,
                                adjust_when_credited=True)

    def __init__(self, target, runtime) -> None:
        super().__init__(target, runtime)
        settings: BusinessCentralSettings = self.settings
        token_url = settings.token_url or f"https://login.microsoftonline.com/{settings.tenant_id}/oauth2/v2.0/token"
        auth = OAuth2ClientCredentialsAuth(target=target.name, token_url=token_url, scope=settings.scope,
                                           client_auth="body", credentials=runtime.credentials(target.name))
        limiter = runtime.limiter(target, per_minute=settings.requests_per_five_minutes / 5,
                                  concurrency=settings.concurrency)
        base = target.base_url or f"{API_HOST}/v2.0/{settings.tenant_id}/{settings.environment}/api/v2.0"
        self.http = PlatformHttp(target=target.name, platform=self.platform, limiter=limiter, auth=auth,
                                 base_url=base.rstrip("/") + "/", classify=classify,
                                 timeout_s=target.request_timeout_s)
        self.client = BusinessCentralClient(self.http, settings.company_id)
        self.mapping = target.mapping
        self._journal_id: str | None = None

    # -- shared entities --
    def customer_digest(self, customer: Customer) -> str:
        return mapping.customer_digest(customer)

    def find_customer(self, customer: Customer) -> ExternalRef | None:
        ours = mapping.customer_number(customer)  # ours first: a retry after a crash finds what it made
        fields = {"email": ("email", customer.email), "phone": ("phoneNumber", customer.phone),
                  "name": ("displayName", customer.name)}
        searches = [("number", ours)] + [fields[key] for key in self.mapping.customer_match if fields[key][1]]
        for field, value in searches:
            for row in self.client.list("customers", f"{field} eq {quoted(value)}"):
                number = str(row.get("number") or "")
                # Never another shop customer's record: ours carry the shop's id in their number.
                if number == ours or (field != "number" and not number.startswith("LWC")):
                    return _ref(row)
        return None

    def create_customer(self, customer: Customer, request_id: str) -> ExternalRef:
        return _ref(self.client.write("POST", "customers", mapping.customer_payload(customer)))

    def update_customer(self, ref: ExternalRef, customer: Customer, request_id: str) -> ExternalRef | None:
        held = self.client.get(f"customers({ref.external_id})")
        if held is None:
            return None
        body = {k: v for k, v in mapping.customer_payload(customer).items() if k != "number"}  # the key stays
        return _ref(self.client.write("PATCH", f"customers({ref.external_id})", body, etag=held["@odata.etag"]))

    def item_for(self, line: InvoiceLine) -> ItemSpec | None:
        return None  # lines post on G/L accounts

    def find_item(self, spec: ItemSpec) -> ExternalRef | None:
        raise PermanentError("business-central posts lines on G/L accounts, never on items")

    create_item = find_item

    # -- references and look-ups --
    def reference(self, kind: DocKind, event: InvoiceEvent, key: str = "") -> str:
        if kind is DocKind.INVOICE:
            return event.number[:35]
        if kind is DocKind.PAYMENT:
            return mapping.payment_reference(next(p for p in event.payments if str(p.id) == key))
        if kind in (DocKind.CREDIT_NOTE, DocKind.CREDIT_APPLICATION):
            return mapping.credit_memo_reference(key)
        if kind is DocKind.ADJUSTMENT:
            adjustment_kind, sequence = references.adjustment_key(key)
            return mapping.adjustment_number(event.number[:35], sequence, adjustment_kind)
        raise PermanentError(f"business-central has no {kind.value} documents")

    def find(self, kind: DocKind, reference: str) -> list[ExternalRef]:
        if kind is DocKind.PAYMENT:
            return [_ref(p) for p in self.client.list(f"{self._journal()}/customerPayments",
                                                      f"documentNumber eq {quoted(reference)}")]
        if kind not in (DocKind.INVOICE, DocKind.CREDIT_NOTE, DocKind.ADJUSTMENT):
            return []
        increase = kind is DocKind.INVOICE or (kind is DocKind.ADJUSTMENT and references.is_increase(reference))
        resource = INVOICES if increase else CREDIT_MEMOS
        return [_ref(d) for d in self.client.list(resource, f"externalDocumentNumber eq {quoted(reference)}")
                if d.get("status") != CANCELED]

    def finish(self, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """A credit memo an earlier attempt created and never posted is posted now (an invoice: the engine's
        issue step)."""
        if kind is DocKind.ADJUSTMENT and ref.status == "draft" and self.client.get(
                f"{CREDIT_MEMOS}({ref.external_id})") is None:
            return ref  # an increase is an invoice: the engine issues it
        if kind in (DocKind.CREDIT_NOTE, DocKind.ADJUSTMENT) and ref.status == "draft":
            self.client.write("POST", f"{CREDIT_MEMOS}({ref.external_id})/Microsoft.NAV.post")
            return _ref(self.client.get(f"{CREDIT_MEMOS}({ref.external_id})") or {}, ref)
        return ref

    def finish_for(self, event: InvoiceEvent, kind: DocKind, ref: ExternalRef) -> ExternalRef:
        """An adopted draft an earlier attempt left before its tax rounding line is completed first."""
        resource = INVOICES if kind is DocKind.INVOICE else CREDIT_MEMOS
        held = self.client.get(f"{resource}({ref.external_id})") if kind in (DocKind.INVOICE, DocKind.CREDIT_NOTE) \
            and ref.status == "draft" else None
        if held is not None:
            refund = next((r for r in event.refunds if mapping.credit_memo_reference(r.id)
                           == held.get("externalDocumentNumber")), None)
            total = event.computed.total if kind is DocKind.INVOICE else refund.amount + refund.tax_amount \
                if refund else None
            if total is not None:
                ref = _ref(self._round(resource, held, total, str(held.get("externalDocumentNumber"))), ref)
        return self.finish(kind, ref)

    # -- the invoice --
    def create_invoice(self, event: InvoiceEvent, posting: Posting) -> RemoteInvoice:
        body = mapping.invoice_payload(event, posting.customer_id, self.mapping, posting.txn_date)
        return _remote(self._draft(INVOICES, body, event.computed.total, event.number))

    def _draft(self, resource: str, body: dict[str, Any], shop_total: Decimal, number: str) -> dict[str, Any]:
        """A draft document; where Business Central's tax rounding leaves its total off the shop's printed one,
        a non-taxable line on ``settings.tax_rounding_account`` makes up the difference (logged; the engine
        records the tax difference)."""
        return self._round(resource, self.client.write("POST", resource, body), shop_total, number)

    def issue_invoice(self, current: ExternalRef, request_id: str) -> None:
        held = self.client.get(f"{INVOICES}({current.external_id})")
        if (held is None and current.status == "draft") or (held or {}).get("status") == DRAFT:
            self.client.write("POST", f"{INVOICES}({current.external_id})/Microsoft.NAV.post")

    def update_invoice(self, event: InvoiceEvent, posting: Posting, current: ExternalRef) -> RemoteInvoice:
        """Cancel (or, a draft, delete) the invoice and post its replacement; an earlier attempt's replacement
        (the same number and amount) is taken instead of a second one."""
        self._withdraw(current)
        found = [r for r in self.find(DocKind.INVOICE, self.reference(DocKind.INVOICE, event))
                 if r.external_id != current.external_id]
        replacement = pick(found, event.computed.total, exact=True)
        made = _remote(self._draft(INVOICES, mapping.invoice_payload(
            event, posting.customer_id, self.mapping, posting.txn_date), event.computed.total, event.number)
        ) if replacement is None else replacement
        if made.status == "draft" or (replacement is None and made.status is None):
            self.client.write("POST", f"{INVOICES}({made.external_id})/Microsoft.NAV.post")
        posted = self.client.get(f"{INVOICES}({made.external_id})")  # Business Central's own tax, as on a create
        return _remote(posted) if posted else RemoteInvoice(external_id=made.external_id)

    def void_invoice(self, current: ExternalRef, request_id: str) -> RemoteInvoice | None:
        """The shop issued it: a draft left by an interrupted attempt is posted first, so the cancel is on record."""
        self.issue_invoice(current, request_id)
        self._withdraw(current)
        return self.read_invoice(current.external_id)

    def _withdraw(self, current: ExternalRef) -> None:
        held = self.client.get(f"{INVOICES}({current.external_id})")
        if held is None or held.get("status") == CANCELED:
            return
        if held.get("status") == DRAFT:  # never posted, being replaced: deleted (with the ETag; stale → 412)
            self.client.write("DELETE", f"{INVOICES}({current.external_id})", etag=current.token or held["@odata.etag"])
            return
        try:
            self.client.write("POST", f"{INVOICES}({current.external_id})/Microsoft.NAV.cancel")
        except PermanentError as refused:
            memos = [m["number"] for m in self.client.list(CREDIT_MEMOS, f"invoiceNumber eq {quoted(held['number'])}")
                     if m.get("status") == "Open"]
            if not memos:
                raise
            raise credited_cancel_refused(held["number"], memos, refused) from refused

    def read_invoice(self, external_id: str) -> RemoteInvoice | None:
        """The posted invoice as the books hold it: its own total, its tax with its tax rounding line (what
        adjustments are computed from: else a resync would post a cent of tax as an empty adjustment), and as its
        balance, once adjusted, what the customer still owes on the shop's invoice (``_owed``)."""
        found, remote = self._booked(external_id)
        if found is None or remote is None:
            return None
        adjustments = self._adjustments(found)
        if adjustments and remote.balance is not None:
            remote = remote.model_copy(update={"balance": self._owed(found, adjustments)})
        return remote

    def fetch_invoice(self, external_id: str) -> RemoteInvoice | None:
        """The invoice as the books hold it, for resync and reconcile to compare with the shop: its tax includes
        the tax rounding line on the sales tax account (``settings.tax_rounding_account``), which makes Business
        Central's per-document rounding up to the tax the shop charged (else every such invoice reads as changed,
        and a resync cancels and replaces it)."""
        found, remote = self._booked(external_id)
        if found is None or remote is None:
            return None
        adjustments = self._adjustments(found, lines=True) if remote.status != "void" else []
        if not adjustments or remote.total is None or remote.tax_total is None or remote.balance is None:
            return remote
        # Adjustments (an invoice holding a credit memo cannot be cancelled): the shop's invoice is all of them.
        total, tax = Decimal(str(remote.total)), Decimal(str(remote.tax_total))
        for sign, doc in adjustments:
            total += sign * Decimal(str(doc.get("totalAmountIncludingTax") or 0))
            tax += sign * (Decimal(str(doc.get("totalTaxAmount") or 0)) + self._rounding(doc))
        voided = total == 0 and any(sign < 0 for sign, _ in adjustments)
        return remote.model_copy(update={"total": total, "tax_total": tax, "balance": self._owed(found, adjustments),
                                         "status": "void" if voided else remote.status})

    def _booked(self, external_id: str) -> tuple[dict[str, Any] | None, RemoteInvoice | None]:
        """The posted invoice with its lines, and as read back: its tax with its tax rounding line (tax, in the books)."""
        found = self.client.get(f"{INVOICES}({external_id})", **{"$expand": LINES[INVOICES]})
        if not found:
            return None, None
        remote = _remote(found)
        if remote.tax_total is not None:
            remote = remote.model_copy(update={"tax_total": Decimal(str(remote.tax_total)) + self._rounding(found)})
        return found, remote

    def find_invoice(self, event: InvoiceEvent) -> RemoteInvoice | None:
        found = pick(self.find(DocKind.INVOICE, self.reference(DocKind.INVOICE, event)), event.computed.total)
        return self.fetch_invoice(found.external_id) if found else None

    # -- money --
    def _journal(self) -> str:
        if self._journal_id is None:
            code = self.settings.payment_journal
            found = self.client.list("customerPaymentJournals", f"code eq {quoted(code)}")
            if not found:
                raise PermanentError(f"Business Central has no customer payment journal {code!r} "
                                     "(settings.payment_journal)")
            self._journal_id = str(found[0]["id"])
        return f"customerPaymentJournals({self._journal_id})"

    def create_payment(self, event: InvoiceEvent, payment: Payment, invoice_id: str, posting: Posting) -> ExternalRef:
        body = mapping.payment_payload(event, payment, invoice_id, posting.customer_id, posting.txn_date)
        return _ref(self.client.write("POST", f"{self._journal()}/customerPayments", body))

    def delete_payment(self, ref: ExternalRef, request_id: str) -> None:
        path = f"{self._journal()}/customerPayments({ref.external_id})"
        held = self.client.get(path)
        if held is not None:  # already gone: nothing to do
            self.client.write("DELETE", path, etag=held["@odata.etag"])

    def create_credit_note(self, event: InvoiceEvent, refund: Refund, posting: Posting) -> ExternalRef:
        body = mapping.credit_memo_payload(event, refund, posting.customer_id, posting.invoice_id, self.mapping,
                                           posting.txn_date)
        made = self._draft(CREDIT_MEMOS, body, refund.amount + refund.tax_amount, body["externalDocumentNumber"])
        return self.finish(DocKind.CREDIT_NOTE, _ref(made))

    def apply_credit(self, credit: ExternalRef, invoice_id: str, amount: Decimal, reference: str,
                     posting: Posting) -> ExternalRef:
        raise PermanentError("business-central applies a credit memo to its invoice when it is posted")

    release_credit = apply_credit

    # -- adjustments: closed periods are not readable through API v2.0 (capability off); an invoice a refund's
    # credit memo is applied to cannot be cancelled (``adjust_when_credited``), so its edits are posted as these --
    def books_closed_through(self) -> date | None:
        return None

    def create_adjustment(self, event: InvoiceEvent, adjustment: AdjustmentSpec, posting: Posting) -> ExternalRef:
        """An increase as a sales invoice (the engine posts it: ``issue_after_create``), a decrease as a credit memo
        linked to the invoice (``invoiceId``: posting applies it there), with the shop's number tagged. Their
        lines are what the shop's lines hold less what the invoice and the earlier adjustments hold, per account
        and tax code, so Business Central taxes them as the shop did; the rounding line makes the total the
        engine's difference."""
        held: list[tuple[int, list[dict[str, Any]]]] = []
        for sign, resource, external_id in [(1, INVOICES, posting.invoice_id)] + [
                (1 if a.kind == "increase" else -1, INVOICES if a.kind == "increase" else CREDIT_MEMOS, a.external_id)
                for a in posting.adjustments if a.kind in ("increase", "decrease")]:
            found = self.client.get(f"{resource}({external_id})", **{"$expand": LINES[resource]}) or {}
            held.append((sign, found.get(LINES[resource]) or []))
        increase = adjustment.kind == "increase"
        day = (posting.txn_date or event.issue_date).isoformat()
        wanted = [] if event.status.value in ("void", "deleted") else mapping.invoice_payload(
            event, posting.customer_id, self.mapping)[LINES[INVOICES]]  # a void: everything held comes off
        lines = mapping.adjustment_lines(held, wanted, 1 if increase else -1, self.settings.tax_rounding_account)
        body: dict[str, Any] = {"customerId": posting.customer_id, "externalDocumentNumber": adjustment.reference,
                                "postingDate": day, "currencyCode": event.currency}
        if increase:
            body |= {"invoiceDate": day, LINES[INVOICES]: lines}
        else:
            body |= {"creditMemoDate": day, "invoiceId": posting.invoice_id, LINES[CREDIT_MEMOS]: lines}
        resource = INVOICES if increase else CREDIT_MEMOS
        made = self._draft(resource, body, adjustment.net + adjustment.tax, adjustment.reference)
        return _ref(made) if increase else self.finish(DocKind.CREDIT_NOTE, _ref(made))


def _status(row: dict[str, Any]) -> str | None:
    status = row.get("status")
    return None if status is None else "void" if status == CANCELED else "draft" if status == DRAFT else "issued"


def _amount(row: dict[str, Any]) -> Decimal | None:
    total = row.get("totalAmountIncludingTax", row.get("amount"))
    return Decimal(str(total)) if total is not None else None


def _ref(row: dict[str, Any], fallback: ExternalRef | None = None) -> ExternalRef:
    if not row and fallback is not None:
        return fallback
    return ExternalRef(external_id=str(row["id"]), token=row.get("@odata.etag"), amount=_amount(row),
                       status=_status(row))


def _remote(invoice: dict[str, Any]) -> RemoteInvoice:
    return RemoteInvoice(external_id=str(invoice["id"]), number=invoice.get("externalDocumentNumber"),
                         token=invoice.get("@odata.etag"), status=_status(invoice), total=invoice.get(
                             "totalAmountIncludingTax"), tax_total=invoice.get("totalTaxAmount"),
                         balance=invoice.get("remainingAmount"), raw=invoice)
