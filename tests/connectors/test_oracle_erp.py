"""Oracle Fusion Cloud Receivables: every invoice and receipt the connector sends validated against the field
tables of ``$LEDGERWIRE_SPECS_DIR/oracle-erp/SOURCE.md`` (read at test time: Oracle's OpenAPI is not stored),
the validator shown to refuse bad bodies, and the platform's own rules (lines fixed once created: an edit is a
reversal credit memo plus a new invoice; Basic or OAuth; ADF error bodies by framework version; ETags)."""

from __future__ import annotations

import os
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError, StaleTokenError
from connectors.oracle_erp import Sandbox
from connectors.oracle_erp.client import classify
from connectors.testing import refund
from connectors.testing import GST, PST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, \
    payment
from daemon.canonical import Refund

API = "/fscmRestApi/resources/11.13.18.05"
IDENT = re.compile(r"\b[A-Z][A-Za-z]+\b")


class SourceTables:
    """The field tables of SOURCE.md: per resource, the fields (with type, maximum length, required) and the
    child arrays' fields. A body may hold only fields the table names (stricter than Oracle, which reads its
    OpenAPI: a misspelt field fails here)."""

    def __init__(self, text: str) -> None:
        self.fields: dict[str, dict[str, dict[str, Any]]] = {}
        self.children: dict[str, set[str]] = {}
        resource = None
        for row in text.splitlines():
            heading = re.match(r"Field table — POST (\w+)", row)
            if heading:
                resource = heading.group(1)
                self.fields[resource] = {}
            elif resource is not None and row.startswith("| ") and not row.startswith(("| field", "|---")):
                self._row(resource, [c.strip() for c in row.strip().strip("|").split("|")])
            elif resource is not None and not row.startswith("|") and row.strip() and self.fields[resource]:
                resource = None  # the table ended

    def _row(self, resource: str, cells: list[str]) -> None:
        first, kind, notes = cells[0], cells[1] if len(cells) > 1 else "", cells[2] if len(cells) > 2 else ""
        if first == "response":
            return
        if re.fullmatch(r"[\w.]+\[\][\w.\[\]]*", first):  # a child array: its fields are named in the notes
            path = [p for p in first.replace("[]", "").split(".") if p]
            self.fields[resource].setdefault(path[0], {"type": "array"})
            self.children.setdefault(path[-1], set()).update(IDENT.findall(notes))
            if len(path) > 1:
                self.children.setdefault(path[0], set()).add(path[1])
            return
        for part in re.split(r",\s*(?![^{]*\})", first):  # commas outside braces
            inner = re.match(r"(\w+)\[\] \{([^}]*)\}", part)
            if inner:  # "remittanceReferences[] {ReceiptMatchBy, …}"
                self.fields[resource][inner.group(1)] = {"type": "array"}
                self.children[inner.group(1)] = set(IDENT.findall(inner.group(2)))
                continue
            limit = re.search(r"\(≤(\d+)\)", part)
            alternatives = re.findall(r"\(or (\w+)\)", part)
            # "A / B / C": whole names; "ShipToCustomerNumber/Name": the last word replaced
            expanded = alternatives
            for whole in re.split(r"\s+/\s+", part.split("(")[0].strip()):
                names = whole.split("/")
                expanded = expanded + [names[0]] + [re.sub(r"[A-Z][a-z]+$", alt, names[0]) for alt in names[1:]]
            kinds = kind.split("/") if kind else ["string"]
            expanded = expanded[len(alternatives):] + alternatives
            for n, name in enumerate(expanded):
                if not name:
                    continue
                length = re.search(r"\((\d+)\)", kind)
                self.fields[resource][name] = {
                    "type": re.sub(r"\(.*", "", kinds[min(n, len(kinds) - 1)]).strip() or "string",
                    "max": int(limit.group(1)) if limit else int(length.group(1)) if length else None,
                    "required": "**required**" in notes}

    def problems(self, resource: str, body: Any) -> list[str]:
        table = self.fields.get(resource)
        if table is None:
            return [f"SOURCE.md has no field table for POST {resource}"]
        out = [f"{name} is required" for name, spec in table.items() if spec.get("required") and name not in body]
        for name, value in body.items():
            spec = table.get(name)
            if spec is None:
                out.append(f"{name} is not a field of POST {resource}")
                continue
            out += self._value(name, spec["type"], value, spec.get("max"))
        return out

    def _value(self, name: str, kind: str, value: Any, limit: int | None) -> list[str]:
        if kind == "array":
            if not isinstance(value, list):
                return [f"{name}: an array is expected"]
            out = []
            for child in value:
                allowed = self.children.get(name, set())
                for key, inner in child.items():
                    if key not in allowed:
                        out.append(f"{name}[].{key} is not a field the table names")
                    elif isinstance(inner, list):
                        out += self._value(key, "array", inner, None)
                    elif isinstance(inner, str) and key.endswith("Date"):
                        out += self._value(key, "date", inner, None)
            return out
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, Decimal))):
            return [f"{name}: a number is expected"]
        if kind in ("string", "date") and not isinstance(value, str):
            return [f"{name}: a string is expected"]
        if kind == "date":
            try:
                date.fromisoformat(value)
            except ValueError:
                return [f"{name}: {value!r} is not a date"]
        if limit and len(value) > limit:
            return [f"{name}: longer than {limit}"]
        return []


@pytest.fixture(scope="module")
def tables() -> SourceTables:
    path = Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs")) / "oracle-erp" / "SOURCE.md"
    if not path.exists():
        pytest.skip(f"no Oracle field tables at {path}")
    return SourceTables(path.read_text())


@pytest.fixture
def oracle():
    sandbox = Sandbox()
    with connectors_on(sandbox, "oracle") as build:
        yield sandbox, build()


def test_the_tables_are_read_from_source_md(tables):
    assert {"BusinessUnit", "TransactionNumber", "BillToCustomerNumber", "receivablesInvoiceLines"} <= set(
        tables.fields["receivablesInvoices"])
    assert {"LineNumber", "Description", "Quantity", "UnitSellingPrice", "receivablesInvoiceLineTaxLines"} <= \
        tables.children["receivablesInvoiceLines"]
    assert tables.children["receivablesInvoiceLineTaxLines"] == {"TaxAmount", "TaxRegimeCode", "TaxRateCode"}
    receipts = tables.fields["standardReceipts"]
    assert receipts["Amount"]["required"] and receipts["BusinessUnit"] == {"type": "string", "max": 240,
                                                                           "required": True}
    assert receipts["Comments"]["max"] == 200


def test_every_invoice_and_receipt_matches_the_field_tables(oracle, tables):
    sandbox, connector = oracle
    entities = MemoryEntities()
    v1 = invoice_event(6001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")],
                       lines=list(invoice_event().lines) + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4])
    doc = deliver(connector, entities, v2, doc)
    assert deliver(connector, entities, next_version(v2, status="void"), doc).status == "voided"
    checked = {"receivablesInvoices": 0, "standardReceipts": 0}
    for method, path, body in sandbox.requests:
        resource = path.strip("/").split("/")[0]
        if method == "POST" and path.strip("/") in checked:
            assert tables.problems(resource, body) == [], (path, body)
            checked[resource] += 1
    assert checked == {"receivablesInvoices": 2, "standardReceipts": 2}  # the replacement and the moved receipt


@pytest.mark.parametrize("resource,change,problem", [
    ("receivablesInvoices", {"InvoiceNumber": "X"}, "InvoiceNumber is not a field"),
    ("receivablesInvoices", {"TransactionDate": "20/11/2026"}, "is not a date"),
    ("receivablesInvoices", {"receivablesInvoiceLines": [{"LineNumber": 1, "Amount": Decimal("1")}]},
     "receivablesInvoiceLines[].Amount"),
    ("receivablesInvoices", {"receivablesInvoiceLines": [{"LineNumber": 1, "receivablesInvoiceLineTaxLines": [
        {"TaxAmount": Decimal("1"), "TaxRate": "5"}]}]}, "receivablesInvoiceLineTaxLines[].TaxRate"),
    ("standardReceipts", {"Amount": None}, "Amount is required"),
    ("standardReceipts", {"BusinessUnit": "B" * 241}, "longer than 240"),
    ("standardReceipts", {"Comments": "c" * 201}, "longer than 200"),
    ("standardReceipts", {"Amount": "12.00"}, "a number is expected"),
])
def test_the_table_check_refuses_bad_bodies(tables, resource, change, problem):
    good = {"receivablesInvoices": {"BusinessUnit": "BU", "TransactionSource": "Manual", "TransactionType": "Invoice",
                                    "TransactionDate": "2026-11-20", "BillToCustomerNumber": "LWC1",
                                    "receivablesInvoiceLines": [{"LineNumber": 1, "Description": "x",
                                                                 "Quantity": Decimal("1"),
                                                                 "UnitSellingPrice": Decimal("2")}]},
            "standardReceipts": {"Amount": Decimal("10"), "BusinessUnit": "BU", "ReceiptNumber": "LW1"}}[resource]
    assert tables.problems(resource, good) == []
    bad = {k: v for k, v in (good | change).items() if v is not None}
    assert any(problem in p for p in tables.problems(resource, bad))


def test_an_edit_reverses_the_invoice_and_creates_a_new_one_with_the_payment_moved(oracle):
    sandbox, connector = oracle
    entities = MemoryEntities()
    v1 = invoice_event(6010, payments=[payment(1, "100.00")])
    doc = deliver(connector, entities, v1)
    first = doc.external_id
    v2 = next_version(v1, lines=list(v1.lines)[:3])
    doc = deliver(connector, entities, v2, doc)
    assert doc.external_id != first and doc.delivered_version == 2
    booked = {b.external_id: b for b in sandbox.booked_invoices()}
    assert booked[first].voided and booked[first].payment_count == 0
    new = booked[doc.external_id]
    assert (new.voided, new.total, new.line_count, new.payments_applied) == (False, v2.computed.total, 3,
                                                                              Decimal("100.00"))
    (reversal,) = [m for m in sandbox.records("receivablesCreditMemos") if m["TransactionNumber"] == f"RV{first}"]
    assert (-reversal["EnteredAmount"], reversal["CreditMemoBalance"]) == (v1.computed.total, 0)
    receipts = sandbox.records("standardReceipts")
    assert sorted(r["ReceiptStatus"] for r in receipts) == ["Applied", "Reversed"]  # reversed, never deleted
    # Oracle's own rule: the invoice's lines never changed.
    assert not [r for r in sandbox.requests if r[0] == "PATCH"]


def test_manual_tax_lines_carry_the_shops_amounts(oracle):
    sandbox, connector = oracle
    v1 = invoice_event(6020, lines=[line(1, "part", "Relay", "3", "3.33", taxes=(GST, PST))])
    deliver(connector, MemoryEntities(), v1)
    (invoice,) = sandbox.records("receivablesInvoices")
    (sent,) = invoice["receivablesInvoiceLines"]
    assert [(t["TaxRateCode"], t["TaxAmount"]) for t in sent["receivablesInvoiceLineTaxLines"]] == [
        ("GST5", Decimal("0.50")), ("PST7", Decimal("0.70"))]
    assert (invoice["EnteredAmount"], invoice["TaxAmount"]) == (v1.computed.total, v1.computed.tax_total)


def test_an_amount_applied_outside_ledgerwire_stops_the_edit_with_a_clear_error(oracle):
    sandbox, connector = oracle
    entities = MemoryEntities()
    v1 = invoice_event(6030)
    doc = deliver(connector, entities, v1)
    with sandbox._lock:  # the bookkeeper applies a receipt of their own in Oracle
        sandbox.tables["receivablesInvoices"][int(doc.external_id)]["InvoiceBalanceAmount"] -= Decimal("5.00")
    with pytest.raises(PermanentError, match="applied to it that the shop no longer shows"):
        deliver(connector, entities, next_version(v1, lines=list(v1.lines)[:2]), doc)


def test_basic_auth_for_an_integration_user():
    sandbox = Sandbox()
    with connectors_on(sandbox, "oracle", auth="basic") as build:
        connector = build()
        doc = deliver(connector, MemoryEntities(), invoice_event(6040))
        assert doc.status == "posted" and sandbox.refresh_count == 0
        sandbox.users = {user: "changed" for user in sandbox.users}
        with pytest.raises(AuthError):
            deliver(connector, MemoryEntities(), invoice_event(6041))


def test_errors_are_adf_json_from_framework_version_4_and_plain_text_before():
    bad = {"content": b'{"Bogus": 1}'}
    sandbox = Sandbox()
    server = sandbox.serve()
    try:
        c = sandbox.seed_credentials()
        auth = (c["username"], c["password"])
        url = server.url + API + "/standardReceipts"
        item = {"Content-Type": "application/vnd.oracle.adf.resourceitem+json"}
        v4 = httpx.post(url, headers=item | {"REST-Framework-Version": "4"}, auth=auth, **bad)
        v1 = httpx.post(url, headers=item, auth=auth, **bad)
        wrong_type = httpx.post(url, headers={"Content-Type": "text/plain", "REST-Framework-Version": "4"}, auth=auth,
                                **bad)
    finally:
        server.stop()
    assert v4.status_code == 400 and v4.json()["o:errorDetails"][0]["detail"].startswith("The attribute Bogus")
    assert v1.status_code == 400 and v1.headers["content-type"].startswith("text/plain") and "Bogus" in v1.text
    assert wrong_type.status_code == 415
    for answer in (v4, v1):
        error = classify(answer)
        assert isinstance(error, PermanentError) and "Bogus" in str(error)


@pytest.mark.parametrize("status,kind", [(401, AuthError), (412, StaleTokenError), (429, RateLimitedError),
                                         (503, RetryableError), (400, PermanentError)])
def test_adf_error_bodies_are_classified(status, kind):
    body = {"title": "x", "status": str(status), "o:errorDetails": [{"detail": "why", "o:errorCode": "AR-123"}]}
    error = classify(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind and error.platform_code == "AR-123"
    if kind is RateLimitedError:
        assert error.retry_after == 7


def test_only_status_terms_and_date_can_change_and_only_incomplete_invoices_can_be_deleted(oracle):
    sandbox, connector = oracle
    doc = deliver(connector, MemoryEntities(), invoice_event(6050))
    path = f"receivablesInvoices/{doc.external_id}"
    with pytest.raises(PermanentError, match="only the InvoiceStatus, PaymentTerms, and TransactionDate"):
        connector.client.write("PATCH", path, {"Comments": "new"})
    with pytest.raises(PermanentError, match="delete only an incomplete"):
        connector.client.write("DELETE", path)
    held = connector.client.get(path)
    with pytest.raises(StaleTokenError):
        connector.client.write("PATCH", path, {"PaymentTerms": "30 Net"}, etag='W/"0"')
    connector.client.write("PATCH", path, {"InvoiceStatus": "Incomplete"}, etag=held["@etag"])
    connector.client.write("DELETE", path)
    assert [b.voided for b in sandbox.booked_invoices()] == [True]


def test_the_fair_use_throttle_answers_429_with_retry_after():
    sandbox = Sandbox(minute_limit=2)  # fewer look-ups since customer matching is off by default (issue #20)
    with connectors_on(sandbox, "oracle", paced=False) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            deliver(connector, MemoryEntities(), invoice_event(6060))
    assert raised.value.retry_after >= 1 and sandbox.rate_limit_breaches() == 1


def test_a_receipt_left_unapplied_by_an_interrupted_attempt_is_applied_when_adopted(oracle):
    """The receipt is created, its application answered 500: the retry finds the receipt by its number and
    applies it — never a second receipt."""
    from connectors.base import DocumentState
    from connectors.testing import MemoryContext

    sandbox, connector = oracle
    entities = MemoryEntities()
    v1 = invoice_event(6070)
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, payments=[payment(5, "60.00")])
    sandbox.faults.fault_at(2, "500")  # the receipt's application
    context = MemoryContext(connector.target.name, v2, entities)
    with pytest.raises(RetryableError):
        connector.deliver(v2, doc, context)
    (receipt,) = sandbox.records("standardReceipts")
    assert receipt["ReceiptStatus"] == "Unapplied"
    doc = deliver(connector, entities, v2, context.checkpoints[-1] if context.checkpoints else DocumentState(),
                  attempt=2)
    (receipt,) = sandbox.records("standardReceipts")
    assert receipt["ReceiptStatus"] == "Applied" and doc.payments["5"].amount == Decimal("60.00")
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("60.00")


def test_a_refunds_tax_is_split_over_the_returned_lines_components(oracle):
    sandbox, connector = oracle
    v1 = invoice_event(6080, lines=[line(1, "part", "Relay", "1", "100.00", taxes=(GST, PST))])
    doc = deliver(connector, MemoryEntities(), v1)
    deliver(connector, MemoryEntities(), next_version(v1, refunds=[refund(3, 1, "50.00", "6.00")]), doc)
    (memo,) = sandbox.records("receivablesCreditMemos")
    (sent,) = memo["receivablesCreditMemoLines"]
    assert [(t["TaxRateCode"], t["TaxAmount"]) for t in sent["receivablesCreditMemoLineTaxLines"]] == [
        ("GST5", Decimal("-2.50")), ("PST7", Decimal("-3.50"))]
    assert memo["EnteredAmount"] == Decimal("-56.00") and memo["CreditMemoBalance"] == 0


def test_a_goodwill_refunds_tax_is_on_the_main_taxed_lines_components(oracle):
    """A goodwill refund (no line) that carries tax: credited with that tax on the components of the invoice's
    largest taxed line, never refused nor folded into the amount (issue #20)."""
    sandbox, connector = oracle
    v1 = invoice_event(6090)
    doc = deliver(connector, MemoryEntities(), v1)
    goodwill = Refund(id=9, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"), line_id=None,
                      reason="Goodwill: late job", created_at=v1.emitted_at)
    deliver(connector, MemoryEntities(), next_version(v1, refunds=[goodwill]), doc)
    (memo,) = sandbox.records("receivablesCreditMemos")
    (sent,) = memo["receivablesCreditMemoLines"]
    assert [(t["TaxRateCode"], t["TaxAmount"]) for t in sent["receivablesCreditMemoLineTaxLines"]] == [
        ("GST5", Decimal("-2.00"))]
    assert memo["EnteredAmount"] == Decimal("-42.00")


# The attributes of Oracle's OnAccountCreditMemoRefund service data object (Receivables On-Account Credit Memo
# Refund Service, docs.oracle.com/en/cloud/saas/financials/25c/oeswf/receivableson-accountcreditmemorefundservice-
# d16510e62058.html): the refund action's body may name no other.
REFUND_SDO = {"AmountApplied": "number", "ApplicationReferenceId": "number", "ApplicationReferenceNumber": "string",
              "ApplyDate": "date", "Comments": "string", "CreditMemoBatchSource": "string",
              "CreditMemoBusinessUnit": "string", "CreditMemoCustomerTrxId": "number", "CreditMemoTrxNumber": "string",
              "GlDate": "date", "RefundPaymentMethod": "string"}


def _refund_problems(body: dict[str, Any]) -> list[str]:
    out = [f"{name} is required" for name in ("AmountApplied", "ApplyDate") if name not in body]
    for name, value in body.items():
        kind = REFUND_SDO.get(name)
        if kind is None:
            out.append(f"{name} is not an attribute of OnAccountCreditMemoRefund")
        elif kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, Decimal))):
            out.append(f"{name}: a number is expected")
        elif kind == "date" and not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            out.append(f"{name}: not a date")
    return out


def test_a_paid_back_refund_is_refunded_out_of_its_credit_memo(oracle):
    """The credit memo of a refund the shop paid back is refunded (nothing left open on it, the paid invoice
    untouched); the body has only the SDO's attributes; the sandbox refuses more than is open and an unknown
    attribute; the refund taken back unapplies it."""
    from connectors.engine_state import DocKind
    from connectors.oracle_erp import mapping

    sandbox, connector = oracle
    entities = MemoryEntities()
    v1 = invoice_event(6100, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, v1)
    paid_back = Refund(id=8, kind="return", amount=Decimal("20.00"), tax_amount=Decimal("1.00"), line_id=2,
                       payment_id=1, reason="Part returned unused", created_at=v1.emitted_at)
    v2 = next_version(v1, refunds=[paid_back])
    doc = deliver(connector, entities, v2, doc)
    (memo,) = sandbox.records("receivablesCreditMemos")
    assert (memo["EnteredAmount"], memo["CreditMemoBalance"], memo["RefundedAmount"], memo["AppliedAmount"]) == (
        Decimal("-21.00"), Decimal("0.00"), Decimal("21.00"), Decimal("0"))
    (sent,) = [body for method, path, body in sandbox.requests if path.endswith("/refundOnAccountCreditMemo")]
    assert _refund_problems(sent) == [] and sent["ApplicationReferenceNumber"] == "LWR8"
    assert connector.read_invoice(doc.external_id).balance == 0
    good = mapping.refund_application_payload(v2, paid_back, Decimal("1.00"), "LWR8", date(2026, 11, 20))
    for bad, problem in [({**good, "Amount": Decimal("1")}, "Amount is not an attribute"),
                         ({k: v for k, v in good.items() if k != "ApplyDate"}, "ApplyDate is required"),
                         ({**good, "AmountApplied": "1.00"}, "a number is expected")]:
        assert any(problem in p for p in _refund_problems(bad)), problem
    path = f"receivablesCreditMemos/{memo['CustomerTransactionId']}/action/refundOnAccountCreditMemo"
    for bad in (good, {**good, "Amount": Decimal("1")}):  # nothing left to refund; an attribute Oracle lacks
        with pytest.raises(PermanentError):
            connector.client.write("POST", path, bad, action=True)
    (found,) = connector.find(DocKind.REFUND_PAYMENT, connector.reference(DocKind.REFUND_PAYMENT, v2, "8"))
    assert found.amount == Decimal("21.00")
    deliver(connector, entities, next_version(v2, refunds=[]), doc)
    (memo,) = sandbox.records("receivablesCreditMemos")
    assert memo["RefundedAmount"] == 0 and memo["CreditMemoBalance"] == Decimal("-21.00")
    assert connector.find(DocKind.REFUND_PAYMENT, "LWR8") == []
