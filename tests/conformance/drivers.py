"""Per-platform drivers of the conformance suite: how to reach into a connector's sandbox (close its books,
expire tokens, edit as the bookkeeper, count what landed). A connector joins the suite by one line in
``ON_ENGINE`` (and a driver here); registered connectors missing from it show as skips."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any


class QuickBooksOnlineDriver:
    platform = "quickbooks-online"

    def __init__(self) -> None:
        from connectors.quickbooks_online import Sandbox

        self.sandbox = Sandbox()

    def _realm(self):
        return next(iter(self.sandbox.realms.values()))

    def close_books(self, through: date) -> None:
        self.sandbox.set_book_close_date(through)

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's memo at the platform: its concurrency token moves on."""
        invoice = self._realm().entities["Invoice"][external_id]
        invoice["CustomerMemo"] = {"value": "Edited by the bookkeeper"}
        invoice["SyncToken"] = str(int(invoice["SyncToken"]) + 1)

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.entities("Customer") if c.get("CompanyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(number, total, credit still open) of every credit note, adjustments included."""
        return [(m.get("DocNumber", ""), Decimal(m["TotalAmt"]), Decimal(m.get("Balance", 0)))
                for m in self.sandbox.entities("CreditMemo")]

    def credit_applications(self) -> int:
        return sum(1 for p in self.sandbox.entities("Payment") if not p.get("_deleted")
                   and Decimal(p["TotalAmt"]) == 0)

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as (entity, body)."""
        return [(path.strip("/"), body) for _, path, body in self.sandbox.requests if path != "/preferences"]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"].split("?")[0].rsplit("/", 1)[1], p["body"]) for p in planned]


class QuickBooksDesktopDriver:
    """A pull platform: ``deliver`` queues; the sandbox's Web Connector then runs sessions against the
    connector's SOAP service until the invoice is up to date, its answer is lost (the fault trigger's "timeout":
    QBWC dies with QuickBooks' answer in hand, i.e. the daemon never learns what the write did) or the session
    ends on an error. The harness's "crash after write k" is that same lost answer."""

    platform = "quickbooks-desktop"

    def __init__(self) -> None:
        from connectors.quickbooks_desktop import Sandbox

        self.sandbox = Sandbox()

    def attach(self, connector) -> None:
        from connectors import engine_pull
        from connectors.quickbooks_desktop import mapping

        self.sandbox.attach(connector.asgi_app())
        read = connector.read_invoice

        def read_back(external_id: str):
            """The suite's read-back: outside a Web Connector session, asked of the company file directly."""
            if engine_pull._EXCHANGE.get() is not None:
                return read(external_id)
            with engine_pull.answering(lambda rq: mapping.parse_response(self.sandbox.process(rq)[0])[0]):
                return read(external_id)

        connector.read_invoice = read_back

    def deliver(self, connector, event, ctx, crash_after_write: int | None):
        from connectors.base import DocumentState

        connector.deliver(event, DocumentState(), ctx)
        if crash_after_write is not None:
            self.sandbox.faults.fault_at(crash_after_write, "timeout")
        for _ in range(12):
            summary = self.sandbox.run_session()
            doc = connector.document(event.invoice_id)
            work = connector.queue.load(event.invoice_id)
            if work.done_version >= event.version:
                return doc, doc
            if summary["result"] in ("lost", "none") or summary.get("last_error") not in (
                    None, "Nothing to send right now"):
                return None, doc
        raise AssertionError(f"invoice {event.invoice_id} not settled: {self.sandbox.sessions[-3:]}")

    def close_books(self, through: date) -> None:
        self.sandbox.set_closing_date(through)

    def bookkeeper_edit(self, external_id: str) -> None:
        company = self.sandbox.company
        with company.lock:
            company.invoices[external_id].update(Memo="Edited by the bookkeeper", EditSequence=company.edit_seq())

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.company.customers.values() if c.get("CompanyName") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        company = self.sandbox.company
        return [(m.get("RefNumber", ""), m["Total"], m["Total"] - company.credit_used(m["TxnID"]))
                for m in company.credit_memos.values()]

    def credit_applications(self) -> int:
        return sum(1 for p in self.sandbox.company.payments.values() if p.get("credits"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(tag, body) for tag, body in map(_qbxml, self.sandbox.requests)
                if tag.endswith(("AddRq", "ModRq")) or tag in ("TxnDelRq", "TxnVoidRq")]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [_qbxml(p["body"]) for p in planned]


def _qbxml(document: str) -> tuple[str, dict[str, Any]]:
    """(request tag, the request as a tree of its elements' text, placeholders unescaped) of a qbXML document."""
    from lxml import etree

    from connectors.quickbooks_desktop import mapping

    request = etree.fromstring(document.split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0]
    return request.tag, mapping.to_dict(request)


# platform -> driver. Porting a connector onto the engine: add its line here.
ON_ENGINE: dict[str, type] = {
    "quickbooks-online": QuickBooksOnlineDriver,
    "quickbooks-desktop": QuickBooksDesktopDriver,
}
