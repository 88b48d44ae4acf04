"""SAP Business One Service Layer: every request the connector sends validated against the field table of
``sap-business-one/SOURCE.md`` (SAP publishes no $metadata outside the product; the table is read and turned into a
validator at test time), the validator shown to refuse bad bodies, and the platform's own rules (session cookies and
re-login, posted documents cancelled never changed, NumAtCard look-ups, OData paging, the error body)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError
from connectors.engine_state import DocKind
from connectors.sap_business_one import Sandbox, mapping
from connectors.sap_business_one.client import classify
from connectors.testing import (GST, PST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version,
                               payment)
from daemon.canonical import Refund
from daemon.config import MappingConfig


class FieldTable:
    """SOURCE.md's field table: per entity its fields (type, maximum length, enum values), what is required, the
    payment means of which one is required, and the bound actions."""

    def __init__(self, source: Path) -> None:
        self.fields: dict[str, dict[str, tuple[str, int | None, tuple[str, ...]]]] = {}
        self.required: dict[str, set[str]] = {}
        self.required_for: dict[str, dict[str, str]] = {}  # entity -> field -> DocType it is required for
        self.means: dict[str, set[str]] = {}
        self.actions: set[tuple[str, str]] = set()
        entity = ""
        same_type: list[str] = []  # entity sets of the Invoices' type (SAPB1.Document): its bound actions too
        table = source.read_text().split("| entity", 1)[1]
        for row in table.splitlines()[2:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            cells += [""] * (5 - len(cells))
            if cells[0]:
                entity = re.match(r"\w+", cells[0]).group(0)
            names, kind, required = cells[1], cells[2], cells[3]
            if entity == "Actions":
                self.actions |= set(re.findall(r"POST /(\w+)\(<DocEntry>\)/(\w+)", names))
                continue
            if names == "same shape as Invoices":
                same_type.append(entity)
                self.fields[entity] = dict(self.fields["Invoices"])
                self.required[entity] = set(self.required.get("Invoices", set()))
                self.required_for[entity] = dict(self.required_for.get("Invoices", {}))
                continue
            fields = self._fields(entity, names, kind)
            if required.startswith(("yes", "**yes**")) and "for" not in required.split("(")[0]:
                self.required.setdefault(entity, set()).update(fields)
            for doc_kind in re.findall(r"yes for (item|service)-type docs", required):
                self.required_for.setdefault(entity, {}).update(
                    {f: {"item": "dDocument_Items", "service": "dDocument_Service"}[doc_kind] for f in fields})
            self.required.setdefault(entity, set()).update(re.findall(r"(\w+) required for", required))
            if "one payment means required" in required:
                self.means[entity] = {f for f in fields if f.endswith(("Sum", "Cards", "Checks"))}
        # An OData action is bound to an entity type, not to one entity set: CreditNotes, "same shape as Invoices",
        # is SAPB1.Document as Invoices is, so Invoices' bound actions (Cancel, Close) are CreditNotes' as well.
        self.actions |= {(name, action) for name in same_type for owner, action in set(self.actions)
                         if owner == "Invoices"}
        # Outgoing payments (OVPM, entity set VendorPayments) are the same SAPB1.Payment as IncomingPayments (ORCT):
        # SAP's DI API has one Payments object for both, with Payments_Invoices for both (RCT2 / VPM2; the SDK help,
        # mirrored at biuan.com/Payments). Not in SOURCE.md's table: its IncomingPayments rows and actions apply.
        self.fields["VendorPayments"] = dict(self.fields["IncomingPayments"])
        self.required["VendorPayments"] = set(self.required.get("IncomingPayments", set()))
        self.means["VendorPayments"] = set(self.means["IncomingPayments"])
        self.actions |= {("VendorPayments", action) for owner, action in set(self.actions) if owner == "IncomingPayments"}

    def _fields(self, entity: str, text: str, kind: str) -> list[str]:
        table = self.fields.setdefault(entity, {})
        for nested, inner in re.findall(r"(\w+) \[\{([^}]*)\}\]", text):
            table[nested] = ("array", None, ())
            self._fields(nested, inner, "")
        text = re.sub(r"\w+ \[\{[^}]*\}\]", "", text)
        enums = {name: tuple(re.findall(r"[a-z]\w+", values))
                 for name, values in re.findall(r"([A-Z]\w+) \(?((?:[a-z]\w+ ?/ ?)*[a-z]\w+)\)?", text)}
        names = re.findall(r"\b([A-Z]\w*)(\[\])?", re.sub(r"\([^)]*[A-Z]{2}[^)]*\)", "", text))
        length = re.match(r"string\((\d+)\)", kind)
        base = "enum" if kind.startswith("enum") else re.match(r"\w*", kind).group(0)
        for name, array in names:
            values = enums.get(name) or (tuple(re.findall(r"[a-z]\w+", kind[4:])) if base == "enum" else ())
            table[name] = ("array" if array else "enum" if values else base, int(length.group(1)) if length else None,
                           values)
        return [name for name, _ in names]

    def problems(self, entity: str, body: dict[str, Any], doc_type: str | None = None) -> list[str]:
        table, out = self.fields[entity], []
        doc_type = body.get("DocType", doc_type or "dDocument_Items")
        for name in sorted(self.required.get(entity, set()) - set(body)):
            out.append(f"{name}: required")
        for name, needed_for in self.required_for.get(entity, {}).items():
            if needed_for == doc_type and name not in body:
                out.append(f"{name}: required for {doc_type}")
        if entity in self.means and not self.means[entity] & set(body):
            out.append("a payment means is required")
        for name, value in body.items():
            if name not in table:
                out.append(f"{name}: not a field of {entity}")
                continue
            kind, length, values = table[name]
            if kind == "array":
                ok = isinstance(value, list)
                for item in value if ok and name in self.fields else []:
                    out += [f"{name}/{p}" for p in self.problems(name, item, doc_type)]
            else:
                ok = {"string": isinstance(value, str) and (length is None or len(value) <= length),
                      "date": isinstance(value, str) and _is_date(value),
                      "decimal": isinstance(value, (int, Decimal)) and not isinstance(value, bool),
                      "int": isinstance(value, int) and not isinstance(value, bool),
                      "enum": value in values}.get(kind, True)
            if not ok:
                out.append(f"{name}: {value!r} is not a {kind}{f'({length})' if length else ''}")
        return out


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def table(specs) -> FieldTable:
    return FieldTable(specs / "sap-business-one" / "SOURCE.md")


@pytest.fixture
def b1():
    sandbox = Sandbox()
    with connectors_on(sandbox, "b1") as build:
        connector = build()
        sent: list[httpx.Request] = []  # every request the connector sends, as it goes out
        connector.http.client.event_hooks["request"].append(sent.append)
        yield sandbox, connector, sent


def refund(refund_id: int, line_id: int, amount: str, tax: str, payment_id: int | None = None) -> Refund:
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  payment_id=payment_id, reason="Part returned unused", created_at=invoice_event().emitted_at)


def test_every_request_matches_the_source_field_table(b1, table):
    sandbox, connector, captured = b1
    entities = MemoryEntities()
    v1 = invoice_event(8001, payments=[payment(1, "100.00")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, refunds=[refund(2, 2, "289.95", "14.50")]), doc)
    v3 = invoice_event(8003, payments=[payment(3, "10.00")])
    doc = deliver(connector, entities, next_version(v3, status="void"), deliver(connector, entities, v3))
    assert doc.status == "voided"
    v4 = invoice_event(8004, payments=[payment(4, "10.00")], refunds=[refund(4, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, next_version(v4, status="void"), deliver(connector, entities, v4))
    assert doc.status == "voided" and doc.refunds["4"].status == "voided"  # its credit memo cancelled first
    deliver(connector, entities, invoice_event(8002, customer=v1.customer.model_copy(update={"phone": "555-0199"})))
    v5 = invoice_event(8005, payments=[payment(5, "677.58")])  # a refund paid back, then taken back
    doc = deliver(connector, entities, v5)
    v6 = next_version(v5, refunds=[refund(5, 2, "20.00", "1.00", payment_id=5)])
    deliver(connector, entities, next_version(v6, refunds=[]), deliver(connector, entities, v6, doc))
    seen, problems = set(), {}
    for request in captured:
        path = request.url.path.split("/b1s/v1/", 1)[1]
        entity = re.match(r"\w+", path).group(0)
        seen.add((request.method, re.sub(r"\([^)]*\)", "()", path)))
        if "/" in path:  # a bound action: named in the table, no body
            assert (entity, path.rsplit("/", 1)[1]) in table.actions, f"{path} is not a documented action"
            assert not request.content
        elif request.method == "PATCH":
            body = jsonmoney.loads(request.content)
            problems.update({path: [p for p in table.problems(entity, body) if not p.endswith(": required")]})
        elif request.content and entity != "Login":
            if found := table.problems(entity, jsonmoney.loads(request.content)):
                problems[f"{request.method} {path}"] = found
    assert not any(problems.values()), problems
    for expected in [("POST", "BusinessPartners"), ("PATCH", "BusinessPartners()"), ("POST", "Invoices"),
                     ("POST", "Invoices()/Cancel"), ("POST", "IncomingPayments"), ("POST", "IncomingPayments()/Cancel"),
                     ("POST", "CreditNotes"), ("POST", "CreditNotes()/Cancel"), ("POST", "VendorPayments"),
                     ("POST", "VendorPayments()/Cancel")]:
        assert expected in seen, f"{expected} never sent"


def test_the_table_check_refuses_bad_bodies(table):
    good = {"CardCode": "LWC1", "DocType": "dDocument_Service", "DocDueDate": "2026-12-20", "NumAtCard": "INV-1",
            "DocumentLines": [{"AccountCode": "40100", "LineTotal": Decimal("10.00"), "TaxCode": "GST"}]}
    assert table.problems("Invoices", good) == []
    line0 = good["DocumentLines"][0]
    bad = [({**good, "DocDueDate": "20/12/2026"}, "DocDueDate: '20/12/2026' is not a date"),
           ({k: v for k, v in good.items() if k != "DocDueDate"}, "DocDueDate: required"),
           ({k: v for k, v in good.items() if k != "CardCode"}, "CardCode: required"),
           ({**good, "DocType": "dService"}, "DocType: 'dService' is not a enum"),
           ({**good, "DocTotal": Decimal("1")}, "DocTotal: not a field of Invoices"),
           ({**good, "DocumentLines": [{**line0, "LineTotal": "10.00"}]}, "DocumentLines/LineTotal: '10.00' is not a decimal"),
           ({**good, "DocumentLines": [{"LineTotal": Decimal("1")}]}, "DocumentLines/AccountCode: required for dDocument_Service"),
           ({**good, "DocumentLines": [{**line0, "BaseEntry": "7"}]}, "DocumentLines/BaseEntry: '7' is not a int")]
    for body, expected in bad:
        assert expected in table.problems("Invoices", body), (expected, table.problems("Invoices", body))
    assert "CardCode: 'LWC12345678901234' is not a string(15)" in table.problems(
        "BusinessPartners", {"CardCode": "LWC12345678901234", "CardName": "x"})
    assert "CardType: 'C' is not a enum" in table.problems("BusinessPartners", {"CardCode": "A", "CardType": "C"})
    payment_body = {"CardCode": "LWC1", "PaymentInvoices": [{"DocEntry": 1, "SumApplied": Decimal("5"),
                                                             "InvoiceType": "it_Invoice"}]}
    assert "a payment means is required" in table.problems("IncomingPayments", payment_body)
    assert "PaymentInvoices/InvoiceType: 'Invoice' is not a enum" in table.problems("IncomingPayments", {
        **payment_body, "CashSum": Decimal("5"), "PaymentInvoices": [{"DocEntry": 1, "InvoiceType": "Invoice"}]})
    assert table.problems("CreditNotes", good) == []  # "same shape as Invoices"
    event = invoice_event(8, payments=[payment(1, "50.00")])
    paid_back = refund(3, 2, "20.00", "1.00", payment_id=1)
    out = mapping.refund_payment_payload(event, paid_back, "12", Decimal("21.00"), "LWR3 paid back INV-000008",
                                         "LWC77", "_SYS00000000001")
    assert table.problems("VendorPayments", out) == []
    for body, expected in [({**out, "DocType": "rSupplier"}, "DocType: 'rSupplier' is not a enum"),
                           ({k: v for k, v in out.items() if k != "TransferSum"}, "a payment means is required"),
                           ({**out, "PaymentInvoices": [{"DocEntry": 12, "SumApplied": Decimal("21.00"),
                                                         "InvoiceType": "it_CreditNote"}]}, "'it_CreditNote' is not a enum"),
                           ({**out, "CardName": "Dana"}, "CardName: not a field of VendorPayments")]:
        assert any(expected in p for p in table.problems("VendorPayments", body)), (expected, body)
    assert ("Invoices", "Cancel") in table.actions and ("IncomingPayments", "Cancel") in table.actions
    assert ("CreditNotes", "Cancel") in table.actions and ("IncomingPayments", "Close") not in table.actions


def test_the_sandbox_and_the_table_agree_on_what_is_writable(table):
    from connectors.sap_business_one.sandbox import LINE, NESTED, WRITABLE

    for entity, writable in list(WRITABLE.items()) + list(NESTED.items()):
        documented = set(table.fields[entity]) | ({"LineNum"} if writable is LINE else set())
        assert set(writable) <= documented, (entity, set(writable) - documented)
        for name, kind in writable.items():
            if kind.startswith("enum:"):
                assert set(kind[5:].split("|")) == set(table.fields[entity][name][2]), name


def test_the_sandbox_refuses_what_the_table_refuses(b1):
    sandbox, connector, _ = b1
    deliver(connector, MemoryEntities(), invoice_event(8100))
    for body, message in [({"CardCode": "LWC1", "CardName": "x", "Notes": "y"}, "Property 'Notes' of 'BusinessPartner' is invalid"),
                          ({"CardCode": "LWC12345678901234", "CardName": "x"}, "Value too long in property 'CardCode'"),
                          ({"CardCode": "X1", "CardName": "x", "CardType": "C"}, "Enum value 'C' is invalid"),
                          ({"CardName": "x"}, "Property 'CardCode' of 'BusinessPartner' is missing")]:
        with pytest.raises(PermanentError, match=re.escape(message)) as refused:
            connector.client.write("POST", "BusinessPartners", body)
        assert refused.value.status == 400 and refused.value.detail["message"]["lang"] == "en-us"


def test_a_session_cookie_pair_and_a_new_login_after_the_idle_timeout(b1):
    sandbox, connector, captured = b1
    deliver(connector, MemoryEntities(), invoice_event(8200))
    assert sandbox.logins == 1
    api = [r for r in captured if "/Login" not in r.url.path]
    assert all(re.search(r"B1SESSION=\w+", r.headers["cookie"]) and "ROUTEID=.node1" in r.headers["cookie"] for r in api)
    sandbox.expire_sessions()  # the server timed the session out: 401 code 301, one login, the request once more
    deliver(connector, MemoryEntities(), invoice_event(8201))
    assert sandbox.logins == 2
    refused = httpx.post(connector.target.base_url.rstrip("/") + "/Login",
                         json={"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "wrong"})
    assert refused.status_code == 401 and refused.json()["error"]["message"]["lang"] == "en-us"
    stale = httpx.get(connector.target.base_url.rstrip("/") + "/Invoices", cookies={"B1SESSION": "x", "ROUTEID": ".node1"})
    assert stale.status_code == 401 and stale.json()["error"]["code"] == 301


def test_an_edit_cancels_the_posted_invoice_and_posts_a_replacement(b1):
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v1 = invoice_event(8300, payments=[payment(1, "50.00")])
    doc = deliver(connector, entities, v1)
    first = doc.external_id
    with pytest.raises(PermanentError, match="Cannot update a posted document"):
        connector.client.write("PATCH", f"Invoices({first})", {"DocumentLines": [{"LineNum": 0, "LineTotal": 1}]})
    with pytest.raises(PermanentError, match="payments or target documents are linked"):
        connector.client.write("POST", f"Invoices({first})/Cancel")
    doc = deliver(connector, entities, next_version(v1, lines=list(v1.lines)[:3]), doc)
    booked = {b.external_id: b for b in sandbox.booked_invoices() if b.number == v1.number}
    assert booked[first].voided and booked[first].payment_count == 0
    assert not booked[doc.external_id].voided and booked[doc.external_id].payments_applied == Decimal("50.00")
    cancellations = [i for i in sandbox.records("Invoices") if i["CancelStatus"] == "csCancellation"]
    assert [str(i["NumAtCard"]) for i in cancellations] == [v1.number]
    assert [r.external_id for r in connector.find(connector_kind("INVOICE"), v1.number)] == [doc.external_id]


def connector_kind(name: str):
    from connectors.engine_state import DocKind

    return DocKind[name]


def test_a_refund_is_a_credit_memo_copied_from_its_invoice_line(b1):
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v1 = invoice_event(8400)
    doc = deliver(connector, entities, v1)
    deliver(connector, entities, next_version(v1, refunds=[refund(5, 2, "289.95", "14.50")]), doc)
    (memo,) = sandbox.records("CreditNotes")
    (memo_line,) = memo["DocumentLines"]
    assert (memo_line["BaseType"], str(memo_line["BaseEntry"]), memo_line["BaseLine"]) == (13, doc.external_id, 1)
    assert memo["NumAtCard"] == "LWR5" and memo["DocTotal"] == memo["_applied"]
    held = connector.read_invoice(doc.external_id)
    assert held.balance == v1.computed.total - memo["DocTotal"]


def test_look_ups_follow_the_odata_next_link(b1):
    sandbox, connector, _ = b1
    for number in range(3):
        connector.client.write("POST", "BusinessPartners", {"CardCode": f"P{number}", "CardName": "Same Name"})
    connector.client.page_size = 2
    assert [r["CardCode"] for r in connector.client.list("BusinessPartners", "CardName eq 'Same Name'")] == ["P0", "P1", "P2"]


@pytest.mark.parametrize(("status", "code", "kind"), [
    (401, 301, AuthError), (429, -1, RateLimitedError), (400, -5002, PermanentError), (404, -2028, PermanentError),
    (500, -1, RetryableError)])
def test_the_error_body_is_classified(status, code, kind):
    body = {"error": {"code": code, "message": {"lang": "en-us", "value": "Invalid session."}}}
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind and error.platform_code == str(code) and "Invalid session." in str(error)
    if kind is RateLimitedError:
        assert error.retry_after == 7
    assert classify(httpx.Response(502, text="<html>bad gateway</html>")) is None


def test_service_lines_post_on_accounts_with_the_tax_code_of_their_components():
    rules = MappingConfig(income_accounts={"part": "40100"}, tax_codes={"GST+PST": "GSTPST", "GST": "GST"})
    event = invoice_event(8500, lines=[line(1, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    body = mapping.invoice_payload(event, "LWC1", rules)
    assert body["DocType"] == "dDocument_Service" and body["NumAtCard"] == event.number
    assert body["DocumentLines"] == [{"ItemDescription": "2 x Relay", "AccountCode": "40100",
                                      "LineTotal": Decimal("22.40"), "TaxCode": "GSTPST"}]
    with pytest.raises(PermanentError, match="names no Business One tax code for 'PST'"):
        mapping.invoice_payload(invoice_event(8501, lines=[line(1, "part", "x", "1", "1.00", taxes=(PST,))]), "c", rules)
    with pytest.raises(PermanentError, match="too long for a Business One CardCode"):
        mapping.card_code(event.customer.model_copy(update={"id": 10 ** 13}))


def test_another_shop_customers_record_is_never_taken(b1):
    sandbox, connector, _ = b1
    first = deliver(connector, MemoryEntities(), invoice_event(8600))
    other = invoice_event(8601, customer=invoice_event().customer.model_copy(update={"id": 78}))
    assert deliver(connector, MemoryEntities(), other).customer_id != first.customer_id


def test_a_payment_larger_than_what_is_open_leaves_the_rest_on_account(b1):
    """A refund's credit memo already reduced the invoice: Business One applies only what is open, and so does the
    payment's body (the engine posts payments before the memos, so the shop's own never meet this)."""
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v1 = invoice_event(8700)
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[refund(7, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v2, doc)
    still_open = connector.read_invoice(doc.external_id).balance
    connector.client.write("POST", "IncomingPayments", mapping.payment_payload(
        v2, payment(8, str(v1.computed.total)), doc.external_id, doc.customer_id, "_SYS00000000001", still_open))
    (received,) = sandbox.records("IncomingPayments")
    (applied,) = received["PaymentInvoices"]
    assert received["TransferSum"] == v1.computed.total
    assert applied["SumApplied"] == v1.computed.total - Decimal("304.45")
    assert connector.read_invoice(doc.external_id).balance == 0
    with pytest.raises(PermanentError, match="exceeds the open balance"):
        connector.client.write("POST", "IncomingPayments", {**{k: v for k, v in received.items() if k in (
            "CardCode", "TransferSum", "TransferAccount")}, "PaymentInvoices": [{**applied, "SumApplied": Decimal("1")}]})


@pytest.mark.parametrize("refund_first", [True, False], ids=["refund-then-payments", "payments-then-refund"])
def test_every_shop_payment_stays_applied_to_its_invoice_whatever_the_refund_arrives_after(b1, refund_first):
    """The customer paid the invoice in full in two payments and a returned part was paid back (the end-to-end
    spine's INV-MAIN-000017: "applied 168.11 in 1 vs 268.11 in 2"). A credit memo copied from the invoice is
    reconciled with it as far as it is open, so a payment posted after it found nothing open and sat on the
    customer's account: the engine cancels the memo before the payments change and copies it again after, so
    both payments are applied to the invoice in either order. The refund was paid back: its memo is one of its own,
    never set against the invoice, closed by one live outgoing payment (cancelled before its memo is, each time the
    memo is cancelled, and made again after)."""
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v1 = invoice_event(8750)
    first, second = payment(1, "100.00"), payment(2, str(v1.computed.total - Decimal("100.00")))
    returned = refund(7, 2, "289.95", "14.50", payment_id=1)
    steps = [dict(refunds=[returned]), dict(refunds=[returned], payments=[first]),
             dict(refunds=[returned], payments=[first, second])] if refund_first else [
             dict(payments=[first]), dict(payments=[first, second]), dict(refunds=[returned], payments=[first, second])]
    doc, version = deliver(connector, entities, v1), v1
    for change in steps:
        version = next_version(version, **change)
        doc = deliver(connector, entities, version, doc)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert (booked.payment_count, booked.payments_applied) == (2, v1.computed.total)
    applied = [pi["SumApplied"] for p in sandbox.records("IncomingPayments") if p["Cancelled"] == "tNO"
               for pi in p["PaymentInvoices"]]
    assert sorted(applied) == sorted([first.amount, second.amount])
    (memo,) = [m for m in sandbox.records("CreditNotes") if m["CancelStatus"] == "csNo"]
    assert memo["NumAtCard"] == "LWR7" and memo["DocTotal"] == Decimal("304.45") and memo["_applied"] == 0
    assert connector.read_invoice(doc.external_id).balance == 0 and doc.refunds["7"].external_id == str(memo["DocEntry"])
    (paid_out,) = [p for p in sandbox.records("VendorPayments") if p["Cancelled"] == "tNO"]
    assert paid_out["PaymentInvoices"] == [{"DocEntry": memo["DocEntry"], "SumApplied": Decimal("304.45"),
                                            "InvoiceType": "it_CredItnote"}]
    assert sandbox.credit_open(memo) == 0 and doc.engine.settlements["7"].external_id == str(paid_out["DocEntry"])


def test_a_paid_back_refund_is_a_memo_of_its_own_closed_by_an_outgoing_payment(b1):
    """The sandbox's VendorPayments: an outgoing payment to the customer pays its A/R credit memo, never more than
    it has open, never an invoice or another customer's memo; the memo cannot be cancelled while it is paid out; the
    payment's cancel opens it again."""
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v1 = invoice_event(8800, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[refund(8, 2, "20.00", "1.00", payment_id=1)])
    doc = deliver(connector, entities, v2, doc)
    (memo,) = sandbox.records("CreditNotes")
    (paid_out,) = sandbox.records("VendorPayments")
    assert (memo["DocTotal"], sandbox.credit_open(memo), memo["DocumentStatus"]) == (
        Decimal("21.00"), Decimal("0.00"), "bost_Close")
    assert not any(ln.get("BaseEntry") for ln in memo["DocumentLines"])  # not copied: the invoice stays paid
    assert (paid_out["DocType"], paid_out["TransferAccount"], paid_out["TransferSum"]) == (
        "rCustomer", "_SYS00000000001", Decimal("21.00"))
    assert connector.read_invoice(doc.external_id).balance == 0
    body = {k: v for k, v in paid_out.items() if k in ("CardCode", "DocType", "TransferSum", "TransferAccount")}
    one_cent = [{"DocEntry": memo["DocEntry"], "SumApplied": Decimal("0.01"), "InvoiceType": "it_CredItnote"}]
    connector.create_customer(v1.customer.model_copy(update={"id": 999, "name": "Someone else"}), "r")
    for bad, message in [({**body, "TransferSum": Decimal("0.01"), "PaymentInvoices": one_cent}, "exceeds the open balance"),
                         ({**body, "PaymentInvoices": [{**one_cent[0], "DocEntry": int(doc.external_id),
                                                        "InvoiceType": "it_Invoice"}]}, "not an open A/R credit memo"),
                         ({**body, "CardCode": "LWC999", "TransferSum": Decimal("0.01"), "PaymentInvoices": one_cent},
                          "not an open A/R credit memo"),
                         ({k: v for k, v in body.items() if k != "DocType"}, "DocType rCustomer"),
                         ({**body, "PaymentInvoices": []}, "must pay its credit memos exactly")]:
        with pytest.raises(PermanentError, match=message):
            connector.client.write("POST", "VendorPayments", bad)
    with pytest.raises(PermanentError, match="payments are linked"):
        connector.client.write("POST", f"CreditNotes({memo['DocEntry']})/Cancel")
    (found,) = connector.find(DocKind.REFUND_PAYMENT, connector.reference(DocKind.REFUND_PAYMENT, v2, "8"))
    assert found.external_id == str(paid_out["DocEntry"])
    doc = deliver(connector, entities, next_version(v2, refunds=[]), doc)  # taken back: cancelled, memo cancelled
    assert connector.find(DocKind.REFUND_PAYMENT, connector.reference(DocKind.REFUND_PAYMENT, v2, "8")) == []
    assert [m["CancelStatus"] for m in sandbox.records("CreditNotes") if m["DocEntry"] == memo["DocEntry"]] == ["csYes"]


def test_every_tax_code_the_target_config_names_fits_the_line_tax_code_field():
    from connectors.sap_business_one.sandbox import LINE

    sandbox, limit = Sandbox(), int(LINE["TaxCode"].split(":")[1])
    codes = sandbox.target_config("b1", "http://x")["mapping"]["tax_codes"].values()
    assert all(code in sandbox.tax_codes and len(code) <= limit for code in codes)


def paid_and_refunded(connector, entities, invoice_id: int, refund_id: int):
    """An invoice with a payment of 50.00 (payment id 1), then a version refunding a part of it."""
    v1 = invoice_event(invoice_id, payments=[payment(1, "50.00")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[refund(refund_id, 2, "289.95", "14.50")])
    return v2, deliver(connector, entities, v2, doc)


def test_an_edit_after_a_refund_cancels_its_credit_memo_and_copies_it_again_from_the_replacement(b1):
    """Business One refuses to cancel an invoice a credit memo was copied from (the chaos run's dead letter): the
    engine cancels the memo first, replaces the invoice, and copies the memo again from the replacement's line."""
    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v2, doc = paid_and_refunded(connector, entities, 8800, 9)
    first = doc.external_id
    doc = deliver(connector, entities, next_version(v2, lines=list(v2.lines)[:4]), doc)
    memos = {m["DocEntry"]: m for m in sandbox.records("CreditNotes")}
    live = [m for m in memos.values() if m["CancelStatus"] == "csNo"]
    assert sorted(m["CancelStatus"] for m in memos.values()) == ["csCancellation", "csNo", "csYes"]
    (memo,) = live
    assert (memo["NumAtCard"], str(memo["DocumentLines"][0]["BaseEntry"])) == ("LWR9", doc.external_id)
    assert doc.external_id != first and doc.refunds["9"].external_id == str(memo["DocEntry"])
    held = connector.read_invoice(doc.external_id)
    assert held.balance == held.total - Decimal("50.00") - memo["DocTotal"] and memo["DocTotal"] == memo["_applied"]


def test_a_replacement_refused_after_the_credit_memo_was_cancelled_puts_the_memo_and_the_payment_back(b1):
    """The bookkeeper applied a payment of their own to the invoice, so Business One still refuses the cancel
    after the engine cancelled the refund's credit memo and took its payment off: both go back on the invoice
    before the dead letter (a refused edit never loses money or credit)."""
    from connectors.testing import MemoryContext

    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v2, doc = paid_and_refunded(connector, entities, 8900, 10)
    connector.client.write("POST", "IncomingPayments", {
        "CardCode": doc.customer_id, "CashSum": Decimal("5.00"), "CashAccount": "_SYS00000000001",
        "PaymentInvoices": [{"DocEntry": int(doc.external_id), "SumApplied": Decimal("5.00")}]})
    v3 = next_version(v2, lines=list(v2.lines)[:4])
    ctx = MemoryContext(connector.target.name, v3, entities)
    with pytest.raises(PermanentError, match="payments or target documents are linked"):
        connector.deliver(v3, doc, ctx)
    saved = ctx.checkpoints[-1]
    (memo,) = [m for m in sandbox.records("CreditNotes") if m["CancelStatus"] == "csNo"]
    assert str(memo["DocumentLines"][0]["BaseEntry"]) == doc.external_id and memo["DocTotal"] == memo["_applied"]
    assert saved.refunds["10"].external_id == str(memo["DocEntry"]) and saved.refunds["10"].status == "open"
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v2.number]
    assert not booked.voided and booked.payments_applied == Decimal("55.00") and set(saved.payments) == {"1"}


def test_a_credit_memo_cancel_refused_before_an_edit_posts_the_ones_already_cancelled_again(b1, monkeypatch):
    """Two refunds: Business One cancels the first credit memo and refuses the second (a document of the
    bookkeeper's own on it): the first is copied again from the invoice before the dead letter."""
    from connectors.sap_business_one.sandbox import B1Error
    from connectors.testing import MemoryContext

    sandbox, connector, _ = b1
    entities = MemoryEntities()
    v2, doc = paid_and_refunded(connector, entities, 8950, 11)
    v3 = next_version(v2, refunds=[*v2.refunds, refund(12, 3, "10.00", "0.50")])
    doc = deliver(connector, entities, v3, doc)
    action = sandbox._action

    def refuse_the_second(name, current, verb):
        if name == "CreditNotes" and current.get("NumAtCard") == "LWR12":
            raise B1Error(400, -5002, "Cannot cancel the document: target documents are linked to it")
        return action(name, current, verb)

    monkeypatch.setattr(sandbox, "_action", refuse_the_second)
    v4 = next_version(v3, lines=list(v3.lines)[:4])
    ctx = MemoryContext(connector.target.name, v4, entities)
    with pytest.raises(PermanentError, match="target documents are linked"):
        connector.deliver(v4, doc, ctx)
    live = sorted(m["NumAtCard"] for m in sandbox.records("CreditNotes") if m["CancelStatus"] == "csNo")
    assert live == ["LWR11", "LWR12"] and {r.status for r in ctx.checkpoints[-1].refunds.values()} == {"open"}
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v2.number]
    assert not booked.voided and booked.payments_applied == Decimal("50.00")
