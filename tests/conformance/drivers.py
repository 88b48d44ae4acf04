"""Per-platform drivers of the conformance suite: how to reach into a connector's sandbox (close its books,
expire tokens, edit as the bookkeeper, count what landed). A connector joins the suite by one line in
``ON_ENGINE`` (and a driver here), or by a module in ``tests/conformance/platforms/``; registered connectors
missing from both show as skips."""

from __future__ import annotations

import importlib
import pkgutil
import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

UNLIMITED_PER_MINUTE = 100_000  # a sandbox's request-rate limit in a driver with ``limits_lifted``


class SandboxDriver:
    """What most drivers share: the sandbox built once per driver (``make_sandbox``), tokens from the sandbox
    kit's ``TokenIssuer``. A driver may also be a plain class in the shape of ``SageAccountingDriver`` with
    ``self.sandbox`` set in ``__init__``: the harness reads only attributes.

    ``limits_lifted = True`` says the sandbox is built without its platform's request-rate limits, so the
    harness does not pace the connector either (the sweeps then run at full speed; 429 handling is still
    covered by the injected 429 scenario)."""

    platform: str
    limits_lifted = False

    def __init__(self) -> None:
        self.sandbox = self.make_sandbox()

    def make_sandbox(self) -> Any:
        raise NotImplementedError

    def expire_tokens(self) -> None:
        self.sandbox.issuer.expire_all()

    def token_refreshes(self) -> int:
        return self.sandbox.issuer.refresh_count


class QuickBooksOnlineDriver(SandboxDriver):
    platform = "quickbooks-online"
    limits_lifted = True

    def make_sandbox(self) -> Any:
        from connectors.quickbooks_online import Sandbox

        return Sandbox(api_per_minute=UNLIMITED_PER_MINUTE)

    def _realm(self):
        return next(iter(self.sandbox.realms.values()))

    def close_books(self, through: date) -> None:
        self.sandbox.set_book_close_date(through)

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
                   and Decimal(p["TotalAmt"]) == 0 and not any(  # a refund paid back's link is no application
                       lt.get("TxnType") == "Expense" for ln in p.get("Line", []) for lt in ln.get("LinkedTxn", [])))

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as (entity, body)."""
        return [(path.strip("/"), body) for _, path, body in self.sandbox.requests if path != "/preferences"]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["path"].split("?")[0].rsplit("/", 1)[1], p["body"]) for p in planned]


class ZohoBooksDriver(SandboxDriver):
    platform = "zoho-books"
    limits_lifted = True

    def make_sandbox(self) -> Any:
        from connectors.zoho_books import Sandbox

        return Sandbox(api_per_minute=UNLIMITED_PER_MINUTE)  # Zoho's 100/minute would make the sweeps wait

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_date(through + timedelta(days=1))  # Zoho locks what is dated *before* its date

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes in Zoho (Zoho has no concurrency token: last write wins)."""
        with self.sandbox._lock:
            self.sandbox.org().invoices[external_id]["notes"] = "Edited by the bookkeeper"

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.org().contacts.values() if c.get("company_name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference, total, credit still open) of every credit note, adjustments included."""
        return [(c.get("reference_number", ""), Decimal(c["total"]), Decimal(c["balance"]))
                for c in self.sandbox.org().creditnotes.values()]

    def credit_applications(self) -> int:
        return len(self.sandbox.org().applications)

    def writes(self) -> list[tuple[str, Any]]:
        return [(_route(method, path), body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(_route(p["method"], p["path"].split("?")[0]), p["body"]) for p in planned]


def _route(method: str, path: str) -> str:
    """"POST /creditnotes/{id}/invoices": ids and a preview's placeholders alike."""
    return f"{method} " + re.sub(r"/(\d+|<[^>]*>)", "/{id}", path)


class OdooDriver(SandboxDriver):
    platform = "odoo"
    limits_lifted = True  # the sandbox has no rate limit; the target's own 40/s cap is Odoo's fair use only

    def make_sandbox(self) -> Any:
        from connectors.odoo import Sandbox

        return Sandbox()

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_date(through)

    def expire_tokens(self) -> None:
        """API keys do not expire; what a connector caches is the session's uid. The user is re-created (a
        restored database): the cached uid is refused and the connector must authenticate again, once."""
        with self.sandbox._lock:
            for key, (uid, login) in list(self.sandbox.db.api_keys.items()):
                self.sandbox.db.api_keys[key] = (uid + 100, login)

    def token_refreshes(self) -> int:
        return self.sandbox.authentications

    def bookkeeper_edit(self, external_id: str) -> None:
        with self.sandbox._lock:
            move = self.sandbox.db.get("account.move", int(external_id))
            move["narration"] = "Edited by the bookkeeper"
            move["write_date"] = self.sandbox.db.tick()

    def customers(self, name: str) -> int:
        return sum(1 for p in self.sandbox.records("res.partner") if p.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(our reference, total, credit still open) of every posted credit note, adjustments included."""
        return [(str(move.get("payment_reference") or ""), move["amount_total"], move["amount_residual"])
                for move in self.sandbox.records("account.move")
                if move["move_type"] == "out_refund" and move["state"] == "posted"]

    def credit_applications(self) -> int:
        return len(self.sandbox.records("account.partial.reconcile"))

    def writes(self) -> list[tuple[str, Any]]:
        return [(f"{model}.{method}", {"args": args, "kwargs": kwargs})
                for model, method, args, kwargs in self.sandbox.writes()]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['body']['model']}.{p['body']['method']}", {"args": p["body"]["args"], "kwargs": p["body"]["kwargs"]})
                for p in planned]


class QuickBooksDesktopDriver(SandboxDriver):
    """A pull platform: ``deliver`` queues; the sandbox's Web Connector then runs sessions against the
    connector's SOAP service until the invoice is up to date, its answer is lost (the fault trigger's "timeout":
    QBWC dies with QuickBooks' answer in hand, i.e. the daemon never learns what the write did) or the session
    ends on an error. The harness's "crash after write k" is that same lost answer."""

    platform = "quickbooks-desktop"

    def make_sandbox(self) -> Any:
        from connectors.quickbooks_desktop import Sandbox

        return Sandbox()

    def attach(self, connector) -> None:
        from connectors import engine_pull
        from connectors.quickbooks_desktop import qbxml

        self.sandbox.attach(connector.asgi_app())

        def read_back(operation):
            """The suite's read-backs (an invoice, a look-up by reference): outside a Web Connector session,
            asked of the company file directly."""
            def direct(*args):
                if engine_pull._EXCHANGE.get() is not None:
                    return operation(*args)
                with engine_pull.answering(lambda rq: qbxml.parse_response(self.sandbox.process(rq)[0])[0]):
                    return operation(*args)
            return direct

        connector.read_invoice = read_back(connector.read_invoice)
        connector.find = read_back(connector.find)

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

    from connectors.quickbooks_desktop import qbxml

    request = etree.fromstring(document.split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0]
    return request.tag, qbxml.to_dict(request)


class SageAccountingDriver(SandboxDriver):
    platform = "sage-accounting"
    limits_lifted = True

    def make_sandbox(self) -> Any:
        from connectors.sage_accounting import Sandbox

        return Sandbox(minute_limit=UNLIMITED_PER_MINUTE)

    def close_books(self, through: date) -> None:
        self.sandbox.set_lockdown_date(through)

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's notes in Sage (Sage has no concurrency token: last write wins)."""
        with self.sandbox._lock:
            for business in self.sandbox.businesses.values():
                invoice = business.tables["sales_invoices"].get(external_id)
                if invoice is not None:
                    invoice.update(notes="Edited by the bookkeeper", updated_at="2026-11-29T12:00:00.000000+00:00")

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.records("contacts") if c.get("name") == name)

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(reference, total, credit still open) of every live credit note, adjustments included."""
        return [(n.get("reference", ""), n["total_amount"], n["outstanding_amount"])
                for n in self.sandbox.records("sales_credit_notes") if n["status"]["id"] != "VOID"]

    def credit_applications(self) -> int:
        return len(self.sandbox.records("contact_allocations"))

    def writes(self) -> list[tuple[str, Any]]:
        """Every write the sandbox received, as ("<METHOD> <resource>", body)."""
        return [(f"{method} {path.strip('/').split('/')[0]}", body) for method, path, body in self.sandbox.requests]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(f"{p['method']} {p['path'].strip('/').split('/')[0].split('?')[0]}", p["body"]) for p in planned]


class XeroDriver(SandboxDriver):
    platform = "xero"
    limits_lifted = True
    ID = re.compile(r"/(<[^>]+>|[0-9a-f]{8}-[0-9a-f-]{27})")  # a document id (or a preview's placeholder)

    def make_sandbox(self) -> Any:
        from connectors.xero import Sandbox

        return Sandbox(minute_limit=UNLIMITED_PER_MINUTE)

    def close_books(self, through: date) -> None:
        self.sandbox.set_lock_date(period=through)

    def bookkeeper_edit(self, external_id: str) -> None:
        """The bookkeeper changes the invoice's reference in Xero (Xero has no concurrency token)."""
        self.sandbox.org().invoices[external_id]["Reference"] = "Edited by the bookkeeper"

    def customers(self, name: str) -> int:
        return sum(1 for c in self.sandbox.org().contacts.values() if c["Name"].startswith(f"{name} (#"))

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        return [(c.get("CreditNoteNumber", ""), Decimal(c["Total"]), Decimal(c.get("RemainingCredit", 0)))
                for c in self.sandbox.org().credit_notes.values()]

    def credit_applications(self) -> int:
        return sum(len(c["Allocations"]) for c in self.sandbox.org().credit_notes.values())

    def writes(self) -> list[tuple[str, Any]]:
        return [(r["method"] + self.ID.sub("/{id}", r["path"]), r["body"]) for r in self.sandbox.requests
                if r["method"] != "GET"]

    def previewed(self, planned: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(p["method"] + self.ID.sub("/{id}", p["path"].split("?")[0]), p["body"]) for p in planned]


# platform -> driver. Porting a connector onto the engine: add its line here.
ON_ENGINE: dict[str, type] = {
    "quickbooks-online": QuickBooksOnlineDriver,
    "zoho-books": ZohoBooksDriver,
    "xero": XeroDriver,
    "odoo": OdooDriver,
    "quickbooks-desktop": QuickBooksDesktopDriver,
    "sage-accounting": SageAccountingDriver,
}


def _platform_modules() -> dict[str, type]:
    """Drivers defined one per module under ``tests/conformance/platforms/``."""
    from tests.conformance import platforms

    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(platforms.__path__):
        module = importlib.import_module(f"{platforms.__name__}.{info.name}")
        found[module.PLATFORM] = module.Driver
    return found


ON_ENGINE.update(_platform_modules())
