"""Bill.com v3: every invoice, payment and customer body the connector sends validated against the field tables
of ``$LEDGERWIRE_SPECS_DIR/bill-com/SOURCE.md`` (read here, at test time; BILL publishes no OpenAPI file), the
validator shown to refuse bad bodies, and the platform's own rules (session login and re-login on BDC_1109,
limits and their error bodies, PUT replacing lines, credit memos applied through ``creditAmount``).

Fields the SOURCE.md tables do not name are refused unless named below with the BILL page that documents them.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.auth import SessionLoginAuth, bill_com_session, bill_com_session_expired
from connectors.base import AuthError, PermanentError, RateLimitedError, ReauthorizationRequired, RetryableError
from connectors.bill_com import Sandbox, mapping
from connectors.bill_com.client import classify
from connectors.testing import MemoryCredentials, MemoryEntities, connectors_on, deliver, invoice_event, next_version, payment
from daemon.canonical import Refund

# Not in SOURCE.md's tables, each documented by a BILL page:
EXTRA = {
    "invoice": {"creditAmount": "changelog 2025-04-11 'New v3 API endpoints for credit memos': creditAmount"},
    "line": {"id": "reference replaceinvoice: 'when you omit an existing line item id, the line item is removed'"},
}
# Credit memos: not in SOURCE.md's tables; from the guide developer.bill.com/docs/ar-credit-memos.
MEMO_REQUIRED = {"customerId", "referenceNumber", "creditDate", "creditMemoLineItems"}
MEMO_FIELDS = MEMO_REQUIRED | {"description"}


def _source() -> str:
    specs = Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs"))
    path = specs / "bill-com" / "SOURCE.md"
    if not path.exists():
        pytest.skip(f"{path} not found: set LEDGERWIRE_SPECS_DIR")
    return path.read_text()


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first markdown table after the line starting with ``heading``."""
    lines = text[text.index(heading):].splitlines()[1:]
    rows, started = [], False
    for line in lines:
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-: ") and cells[0] != "field":
                rows.append(cells)
        elif started and line.strip():
            break
    return rows


class SourceTableValidator:
    """Field names, required fields, types, lengths and enums read from SOURCE.md's tables."""

    def __init__(self, text: str) -> None:
        self.invoice: dict[str, dict[str, Any]] = {}
        for cells in _table(text, "Field table — POST /v3/invoices"):
            names = [n.strip().removesuffix("[]") for n in cells[0].split(",")]
            for name in names:
                if re.fullmatch(r"[a-z][A-Za-z]*", name):
                    self.invoice[name] = {"type": cells[1], "required": "**yes**" in cells[2], "notes": cells[-1]}
            if cells[0].startswith("invoiceLineItems"):
                notes = cells[3]
                self.line = {m.group(1): "(required)" in m.group(0)
                             for m in re.finditer(r"(\w+)( \(required\))?", notes.split("each:")[1].split(";")[0])}
        self.invoice |= {name: {"type": "", "required": False, "notes": why} for name, why in EXTRA["invoice"].items()}
        self.line |= {name: False for name in EXTRA["line"]}
        self.payment: dict[str, dict[str, Any]] = {}
        for cells in _table(text, "POST /v3/invoices/record-payment"):
            spec = {"type": cells[1], "required": "**yes**" in cells[2]}
            first = cells[0].split(" ")[0]
            if first == "invoices[]":
                self.payment["invoices"] = spec | {"items": set(re.findall(r"\w+", cells[0].split("{")[1]))}
            elif "," in cells[0]:
                for name in re.findall(r"(\w+)(?: \(`[^`]*`\))?", cells[0]):
                    self.payment[name] = spec
            else:
                self.payment[first] = spec
        self.payment_types = set(re.findall(r"[A-Z_]{3,}", self.payment["paymentType"]["type"]))
        customers = text[text.index("Customers: POST /v3/customers"):].split("\n\n")[0]
        self.customer_required = {"name", "email"} if "name and email" in customers else set()

    def problems(self, method: str, path: str, body: Any) -> list[str]:
        if method == "POST" and path == "/v3/invoices" or method == "PUT" and path.startswith("/v3/invoices/"):
            return self._invoice(body)
        if path == "/v3/invoices/record-payment":
            return self._payment(body)
        if method == "POST" and path == "/v3/customers" or method == "PATCH" and path.startswith("/v3/customers/"):
            return [f"customer.{n}: required" for n in self.customer_required if not body.get(n)]
        if method == "POST" and path == "/v3/credit-memos":
            return ([f"memo.{n}: required" for n in MEMO_REQUIRED if not body.get(n)]
                    + [f"memo.{n}: unknown" for n in set(body) - MEMO_FIELDS]
                    + [p for ln in body.get("creditMemoLineItems") or [] for p in self._line(ln)])
        if method == "PATCH" and path.startswith("/v3/invoices/"):
            return [f"invoice.{n}: unknown" for n in set(body) - set(self.invoice)]
        if method == "POST" and re.fullmatch(r"/v3/(invoices|credit-memos)/[^/]+/archive", path):
            return []
        return [f"{method} {path}: not an operation the connector may use"]

    def _line(self, line: dict[str, Any]) -> list[str]:
        out = [f"line.{n}: unknown" for n in set(line) - set(self.line)]
        out += [f"line.{n}: required" for n, required in self.line.items() if required and line.get(n) is None]
        out += [f"line.{n}: not a number" for n in ("quantity", "price") if n in line and not _number(line[n])]
        return out

    def _invoice(self, body: dict[str, Any]) -> list[str]:
        out = [f"invoice.{n}: unknown" for n in set(body) - set(self.invoice)]
        out += [f"invoice.{n}: required" for n, spec in self.invoice.items() if spec["required"] and n not in body]
        for name, spec in self.invoice.items():
            value = body.get(name)
            if value is None:
                continue
            if spec["type"].startswith("date") and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                out.append(f"invoice.{name}: not yyyy-MM-dd")
            limit = re.search(r"≤(\d+)", spec["type"])
            if spec["type"].startswith("string") and (not isinstance(value, str) or limit and len(value) > int(limit[1])):
                out.append(f"invoice.{name}: not a string of at most {limit[1] if limit else '?'}")
            if spec["type"] == "object" and not isinstance(value, dict):
                out.append(f"invoice.{name}: not an object")
        customer = body.get("customer") or {}
        if not ("id" in customer or {"name", "email"} <= set(customer)):
            out.append("invoice.customer: needs id, or name and email")
        for line in body.get("invoiceLineItems") or []:
            out += self._line(line)
        return out

    def _payment(self, body: dict[str, Any]) -> list[str]:
        out = [f"payment.{n}: unknown" for n in set(body) - set(self.payment)]
        out += [f"payment.{n}: required" for n, spec in self.payment.items() if spec["required"] and n not in body]
        if body.get("paymentType") not in self.payment_types:
            out.append(f"payment.paymentType: not one of {sorted(self.payment_types)}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(body.get("paymentDate"))):
            out.append("payment.paymentDate: not a date")
        if not _number(body.get("amount")):
            out.append("payment.amount: not a number")
        for part in body.get("invoices") or []:
            out += [f"payment.invoices.{n}: unknown" for n in set(part) - self.payment["invoices"]["items"]]
        if len(str(body.get("description") or "")) > 4000:
            out.append("payment.description: longer than 4000")
        return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


@pytest.fixture(scope="module")
def validator() -> SourceTableValidator:
    return SourceTableValidator(_source())


def full_life(invoice_id: int):
    refund = Refund(id=invoice_id, kind="return", amount=Decimal("289.95"), tax_amount=Decimal("14.50"), line_id=2,
                    payment_id=None, reason="returned", created_at=payment(1, "1").received_at)
    return invoice_event(invoice_id, payments=[payment(invoice_id, "100.00")], refunds=[refund])


# -- the validator refuses bad bodies --------------------------------------------------------------------

GOOD_INVOICE = {"customer": {"id": "0cu1"}, "invoiceNumber": "A-1", "invoiceDate": "2026-11-20",
                "invoiceLineItems": [{"description": "Alternator", "quantity": Decimal("1"), "price": Decimal("10")}]}
GOOD_PAYMENT = {"paymentDate": "2026-11-20", "paymentType": "CASH", "amount": Decimal("5"),
                "invoices": [{"id": "00e1", "amount": Decimal("5")}]}


def test_the_table_is_read_from_source_md(validator):
    assert {"customer", "invoiceLineItems", "invoiceNumber", "invoiceDate", "dueDate"} <= set(validator.invoice)
    assert validator.invoice["customer"]["required"] and validator.invoice["invoiceLineItems"]["required"]
    assert validator.line == {"quantity": True, "description": False, "price": False, "id": False}
    assert validator.payment_types == {"CASH", "CHECK", "CREDIT_CARD", "ACH", "PAYPAL", "OTHER"}
    assert {n for n, s in validator.payment.items() if s["required"]} == {"paymentDate", "paymentType", "amount", "invoices"}
    assert validator.problems("POST", "/v3/invoices", GOOD_INVOICE) == []
    assert validator.problems("POST", "/v3/invoices/record-payment", GOOD_PAYMENT) == []


@pytest.mark.parametrize("bad, expected", [
    ({k: v for k, v in GOOD_INVOICE.items() if k != "customer"}, "invoice.customer: required"),
    ({k: v for k, v in GOOD_INVOICE.items() if k != "invoiceLineItems"} | {"lineItems": GOOD_INVOICE["invoiceLineItems"]},
     "invoice.lineItems: unknown"),  # the v2-era name
    (GOOD_INVOICE | {"invoiceNumber": "x" * 101}, "invoice.invoiceNumber: not a string of at most 100"),
    (GOOD_INVOICE | {"invoiceDate": "20/11/2026"}, "invoice.invoiceDate: not yyyy-MM-dd"),
    (GOOD_INVOICE | {"invoiceLineItems": [{"description": "x", "price": Decimal("1")}]}, "line.quantity: required"),
    (GOOD_INVOICE | {"invoiceLineItems": [{"quantity": Decimal("1"), "amount": Decimal("1")}]}, "line.amount: unknown"),
    (GOOD_INVOICE | {"invoiceLineItems": [{"quantity": "1"}]}, "line.quantity: not a number"),
])
def test_bad_invoice_bodies_are_refused(validator, bad, expected):
    assert expected in validator.problems("POST", "/v3/invoices", bad)


@pytest.mark.parametrize("bad, expected", [
    (GOOD_PAYMENT | {"paymentType": "CARD"}, "payment.paymentType"),
    ({k: v for k, v in GOOD_PAYMENT.items() if k != "invoices"}, "payment.invoices: required"),
    (GOOD_PAYMENT | {"amount": 5.0}, "payment.amount: not a number"),
    (GOOD_PAYMENT | {"invoices": [{"id": "00e1", "amount": Decimal("5"), "invoiceId": "x"}]}, "payment.invoices.invoiceId"),
    (GOOD_PAYMENT | {"memo": "x"}, "payment.memo: unknown"),
])
def test_bad_payment_bodies_are_refused(validator, bad, expected):
    assert any(p.startswith(expected) for p in validator.problems("POST", "/v3/invoices/record-payment", bad))


def test_a_customer_without_email_is_refused(validator):
    assert validator.problems("POST", "/v3/customers", {"name": "Dana"}) == ["customer.email: required"]


# -- every request the connector sends -------------------------------------------------------------------

def test_every_write_the_connector_sends_matches_source_md(validator):
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        connector, entities = build(), MemoryEntities()
        event = full_life(5001)
        doc = deliver(connector, entities, event)
        edited = next_version(event, lines=event.lines[:3], payments=[payment(7, "50.00", method="check")], refunds=[])
        doc = deliver(connector, entities, edited, doc)
        deliver(connector, entities, next_version(edited, status="void", payments=[]), doc)
    paths = {(m, re.sub(r"/(00e|0cu|ccr|0rp)\w+", "/{id}", p)) for m, p, _ in sandbox.requests}
    assert {("POST", "/v3/invoices"), ("PUT", "/v3/invoices/{id}"), ("POST", "/v3/invoices/record-payment"),
            ("POST", "/v3/credit-memos"), ("PATCH", "/v3/invoices/{id}"), ("POST", "/v3/invoices/{id}/archive"),
            ("POST", "/v3/credit-memos/{id}/archive"), ("POST", "/v3/customers")} <= paths
    for method, path, body in sandbox.requests:
        assert validator.problems(method, path, body) == [], (method, path, body)


# -- the platform's rules ----------------------------------------------------------------------------------

def test_put_keeps_the_line_ids_it_names_and_the_credit_applied():
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        connector, entities = build(), MemoryEntities()
        event = full_life(5002)
        doc = deliver(connector, entities, event)
        before = sandbox.records("invoices")[0]
        edited = next_version(event, lines=[*event.lines[:2], *event.lines[3:]])
        deliver(connector, entities, edited, doc)
        after = sandbox.records("invoices")[0]
    kept = [ln["id"] for ln in after["invoiceLineItems"]]
    assert kept == [ln["id"] for ln in before["invoiceLineItems"]][: len(kept)]  # updated in place, one removed
    assert after["creditAmount"] == before["creditAmount"] == Decimal("304.45")
    assert after["totalAmount"] == edited.computed.total
    assert after["dueAmount"] == edited.computed.total - Decimal("100.00") - Decimal("304.45")


def test_a_put_without_line_ids_replaces_every_line():
    """BILL's rule, kept by the sandbox: omitted line ids are removed, new lines get new ids."""
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        deliver(build(), MemoryEntities(), invoice_event(5003))
        invoice = sandbox.records("invoices")[0]
        held = {ln["id"] for ln in invoice["invoiceLineItems"]}
        body = {"customer": {"id": invoice["customerId"]}, "invoiceNumber": invoice["invoiceNumber"],
                "invoiceLineItems": [{"description": "One", "quantity": Decimal("2"), "price": Decimal("5.00")}]}
        org = next(iter(sandbox.orgs.values()))
        replaced = sandbox._invoice(org, org.invoices[invoice["id"]], body, "PUT")
    assert len(replaced["invoiceLineItems"]) == 1 and replaced["invoiceLineItems"][0]["id"] not in held
    assert replaced["totalAmount"] == Decimal("10.00")


def test_an_idle_session_is_renewed_by_one_login_on_bdc_1109():
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        connector = build()
        deliver(connector, MemoryEntities(), invoice_event(5004))
        logins = sandbox.logins
        sandbox.expire_sessions()
        assert connector.read_invoice(sandbox.records("invoices")[0]["id"]) is not None
        assert sandbox.logins == logins + 1


def _login_transport(answers: list[httpx.Response], seen: list[tuple[str, str | None]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("sessionId")))
        if request.url.path.endswith("/v3/login"):
            return httpx.Response(200, json={"sessionId": f"s{sum(p.endswith('/login') for p, _ in seen)}"})
        return answers.pop(0)
    return httpx.MockTransport(handler)


def test_session_login_relogs_once_on_the_documented_expired_error_whatever_its_status():
    expired = [{"timestamp": "t", "code": "BDC_1109", "severity": "ERROR", "category": "DOWNSTREAM",
                "message": "Session is invalid.  Please log in."}]
    seen: list[tuple[str, str | None]] = []
    transport = _login_transport([httpx.Response(400, json=expired), httpx.Response(200, json={"ok": 1})], seen)
    cred = MemoryCredentials({"username": "u", "password": "p", "organization_id": "008x", "dev_key": "k"})
    auth = SessionLoginAuth(target="bill", credentials=cred, login=bill_com_session("http://bill"), transport=transport,
                            session_expired=bill_com_session_expired)
    with httpx.Client(transport=transport, auth=auth) as http:
        assert http.get("http://bill/v3/invoices").status_code == 200
    assert seen == [("/v3/login", None), ("/v3/invoices", "s1"), ("/v3/login", None), ("/v3/invoices", "s2")]
    seen.clear()  # a second expired answer after the re-login is the platform's answer, not another login
    transport2 = _login_transport([httpx.Response(401, json=expired)] * 2, seen)
    auth2 = SessionLoginAuth(target="bill", credentials=cred, login=bill_com_session("http://bill"),
                             transport=transport2, session_expired=bill_com_session_expired)
    with httpx.Client(transport=transport2, auth=auth2) as http:
        assert http.get("http://bill/v3/invoices").status_code == 401
    assert sum(p.endswith("/login") for p, _ in seen) == 2


def test_a_wrong_password_pauses_the_target_and_a_login_limit_waits():
    sandbox = Sandbox(login_hour_limit=1)
    with connectors_on(sandbox, "bill") as build:
        connector = build()
        cred = connector.auth.credentials
        cred.update({"password": "wrong"})
        with pytest.raises(ReauthorizationRequired):
            connector.read_invoice("00e0")
        with pytest.raises(RateLimitedError):  # BILL counts logins: 200 an hour (here 1), BDC_1144
            connector.auth.refresh()
    assert sandbox.rate_limit_breaches() == 1


def test_logins_count_against_200_an_hour_not_the_e_mail_endpoints_5_a_minute():
    """SOURCE.md: "POST /v3/login 200/hour; endpoints that send email/SMS … 5/minute". The sandbox counted logins
    against the e-mail endpoints' 5 a minute too: the chaos run's `resync` beside two restarted daemons was refused
    its login (BDC_1144) and counted as a breach."""
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        connector = build()
        for _ in range(sandbox.email_window.limit + 3):
            connector.auth.refresh()
    assert sandbox.logins == sandbox.email_window.limit + 3 and sandbox.rate_limit_breaches() == 0


def test_the_fourth_concurrent_request_gets_bdc_1322():
    sandbox = Sandbox()
    with sandbox._slot("k/o") as a, sandbox._slot("k/o") as b, sandbox._slot("k/o") as c, sandbox._slot("k/o") as d:
        assert (a, b, c, d) == (True, True, True, False)
    with sandbox._slot("k/o") as again:
        assert again
    assert sandbox.rate_limit_breaches() == 1


def test_the_hour_limit_answers_bdc_1144_and_the_connector_waits_for_the_next_hour():
    sandbox = Sandbox(hour_limit=3)
    with connectors_on(sandbox, "bill") as build:
        connector = build()
        with pytest.raises(RateLimitedError) as caught:
            for _ in range(4):
                connector.client.http.request("GET", "/v3/invoices", params={"max": 1})
    assert caught.value.platform_code == "BDC_1144" and 0 < caught.value.retry_after <= 3600
    assert sandbox.rate_limit_breaches() == 1


def _answer(status: int, code: str, message: str = "m") -> httpx.Response:
    return httpx.Response(status, content=jsonmoney.dumps([{"timestamp": "t", "code": code, "severity": "ERROR",
                                                           "category": "REQUEST", "message": message}]))


def test_classify_reads_bills_error_body():
    assert isinstance(classify(_answer(400, "BDC_1322")), RateLimitedError)
    assert classify(_answer(400, "BDC_1322")).retry_after == 1.0
    assert isinstance(classify(_answer(401, "BDC_1109")), AuthError)
    assert isinstance(classify(_answer(500, "BDC_1001")), RetryableError)
    refused = classify(_answer(400, "BDC_VALIDATION", "customer.id: must be an existing customer"))
    assert isinstance(refused, PermanentError) and "customer.id" in refused.reason
    assert classify(httpx.Response(502, text="<html>")) is None  # the default classification applies


def test_the_sandbox_refuses_what_bill_refuses():
    sandbox = Sandbox()
    org_id = sandbox.seed_credentials()["organization_id"]
    org = sandbox.orgs[org_id]
    from connectors.bill_com.sandbox import BillError
    with pytest.raises(BillError, match="email"):
        sandbox._customer(org, None, {"name": "Dana"}, "POST")
    customer = sandbox._customer(org, None, {"name": "Dana", "email": "d@x"}, "POST")
    with pytest.raises(BillError, match="lineItems"):
        sandbox._invoice(org, None, {"customer": {"id": customer["id"]}, "lineItems": []}, "POST")
    invoice = sandbox._invoice(org, None, {"customer": {"id": customer["id"]}, "invoiceLineItems": [
        {"quantity": Decimal("1"), "price": Decimal("10")}]}, "POST")
    with pytest.raises(BillError, match="paymentType"):
        sandbox._record_payment(org, GOOD_PAYMENT | {"paymentType": "CARD", "invoices": [{"id": invoice["id"], "amount": Decimal("5")}]})
    with pytest.raises(BillError, match="more than"):
        sandbox._record_payment(org, GOOD_PAYMENT | {"amount": Decimal("11"), "invoices": [{"id": invoice["id"], "amount": Decimal("11")}]})
    with pytest.raises(BillError, match="available credit"):
        sandbox._invoice(org, org.invoices[invoice["id"]], {"creditAmount": Decimal("1")}, "PATCH")
    sandbox._record_payment(org, GOOD_PAYMENT | {"invoices": [{"id": invoice["id"], "amount": Decimal("5")}]})
    with pytest.raises(BillError, match="archived"):
        sandbox._action(org, "invoices", org.invoices[invoice["id"]], "archive")


def test_tax_goes_as_lines_at_the_shops_amounts():
    event = invoice_event(5005)
    lines = mapping.invoice_lines(event)
    taxed = [ln for ln in lines if ln["description"].startswith(mapping.TAX_LINE)]
    assert sum((ln["price"] for ln in taxed), Decimal("0")) == event.computed.tax_total
    assert sum((ln["quantity"] * ln["price"] for ln in lines), Decimal("0")) == event.computed.total


def test_a_customer_without_email_needs_the_fallback():
    event = invoice_event(5006)
    customer = event.customer.model_copy(update={"email": None})
    with pytest.raises(PermanentError, match="fallback_email"):
        mapping.customer_payload(customer, None)
    assert mapping.customer_payload(customer, "ar@shop.example")["email"] == "ar@shop.example"


# -- issue #19: a second refund of the same line (the chaos run's uncaught 500) ----------------------------

def _memos_agree_with_invoices(sandbox: Sandbox) -> None:
    """What each credit memo has applied is what the invoices hold of it (a refused write changed nothing)."""
    invoices = sandbox.records("invoices")
    for memo in sandbox.records("memos"):
        held = sum((i["credits"].get(memo["id"], Decimal("0")) for i in invoices), Decimal("0"))
        assert memo["appliedAmount"] == held, (memo["referenceNumber"], memo["appliedAmount"], held)
        assert Decimal("0") <= memo["appliedAmount"] <= memo["totalAmount"]


# (payments before the refunds, payments after the second refund): refunds of 304.45 each on a 677.58 invoice
@pytest.mark.parametrize("before, after", [
    (["500.00"], ["100.00"]),   # refund A bigger than the open 177.58: applied up to it, the rest stays credit
    (["100.00"], []),           # the two refunds add up to more than the open amount
    ([], ["50.00"]),            # a payment after both refunds: the credit applied gives room back
    (["677.58"], []),           # paid in full: no room, both memos stay customer credit
])
def test_a_second_refund_of_the_same_line_is_applied_without_a_server_error(before, after):
    """Issue #19 (chaos run, INV-MAIN-000012 v3): the second refund's credit memo answered ``PATCH creditAmount``
    with an uncaught 500 (KeyError in the sandbox) while another memo of the same customer came after the one it
    drew from. Each delivery must go through at once, with the books right: credit applied = what the engine
    applied, the rest left as customer credit on the memos, and the invoice's balance what reconcile expects."""
    sandbox = Sandbox()
    with connectors_on(sandbox, "bill") as build:
        connector, entities = build(), MemoryEntities()
        line_refund = lambda rid: Refund(id=rid, kind="return", amount=Decimal("289.95"), tax_amount=Decimal("14.50"),
                                         line_id=2, reason="returned", created_at=payment(1, "1").received_at)
        paid = [payment(100 + i, amount) for i, amount in enumerate(before)]
        event = invoice_event(5101, payments=paid)
        doc = deliver(connector, entities, event)
        event = next_version(event, refunds=[line_refund(1)])
        doc = deliver(connector, entities, event, doc)
        # another invoice of the same customer refunded meanwhile: a later memo of that customer
        other = invoice_event(5102, refunds=[line_refund(9)])
        deliver(connector, entities, other)
        event = next_version(event, refunds=[line_refund(1), line_refund(2)])
        doc = deliver(connector, entities, event, doc)
        if after:
            event = next_version(event, payments=[payment(200 + i, amount) for i, amount in enumerate(after)])
            doc = deliver(connector, entities, event, doc)
            event = next_version(event, refunds=[*event.refunds, line_refund(3)])  # and a third one
            doc = deliver(connector, entities, event, doc)
    invoice = next(i for i in sandbox.records("invoices") if i["invoiceNumber"] == event.number)
    paid_total = sum((p.amount for p in event.payments), Decimal("0"))
    refunded = sum((r.amount + r.tax_amount for r in event.refunds), Decimal("0"))
    open_before_credit = event.computed.total - paid_total
    assert invoice["paidAmount"] == paid_total
    assert invoice["creditAmount"] == min(refunded, open_before_credit)  # applied up to the balance
    assert invoice["dueAmount"] == max(Decimal("0"), open_before_credit - refunded)
    _memos_agree_with_invoices(sandbox)


def test_a_credit_amount_that_uses_up_an_older_memo_before_a_later_one_is_applied_not_a_500():
    """The sandbox's own rule (credit drawn from the customer's memos oldest first) with a later memo left
    untouched: 200 and the books right; a refused creditAmount leaves every memo as it was."""
    sandbox = Sandbox()
    org = sandbox.orgs[sandbox.seed_credentials()["organization_id"]]
    customer = sandbox._customer(org, None, {"name": "Dana", "email": "d@x"}, "POST")
    invoice = sandbox._invoice(org, None, {"customer": {"id": customer["id"]}, "invoiceLineItems": [
        {"quantity": Decimal("1"), "price": Decimal("100")}]}, "POST")
    memo = {"customerId": customer["id"], "creditDate": "2026-11-20"}
    for number in ("CM1", "CM2"):
        sandbox._memo(org, memo | {"referenceNumber": number, "creditMemoLineItems": [
            {"quantity": Decimal("1"), "price": Decimal("30")}]})
    applied = sandbox._invoice(org, org.invoices[invoice["id"]], {"creditAmount": Decimal("30")}, "PATCH")
    assert applied["creditAmount"] == Decimal("30") and applied["dueAmount"] == Decimal("70")
    from connectors.bill_com.sandbox import BillError
    sandbox._record_payment(org, GOOD_PAYMENT | {"amount": Decimal("50"), "invoices": [
        {"id": invoice["id"], "amount": Decimal("50")}]})
    with pytest.raises(BillError, match="cannot be less than"):  # 50 paid + 60 credit > 100
        sandbox._invoice(org, org.invoices[invoice["id"]], {"creditAmount": Decimal("60")}, "PATCH")
    _memos_agree_with_invoices(sandbox)
    assert [m["appliedAmount"] for m in sandbox.records("memos")] == [Decimal("30"), Decimal("0")]


def test_a_goodwill_refunds_tax_goes_as_the_invoices_main_tax_code():
    """Issue #20: a refund with no line carries its tax as a tax line named for the invoice's main taxed line's
    code (GST here), never folded into the untaxed amount."""
    event = invoice_event(5201)
    goodwill = Refund(id=3, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"), line_id=None,
                      reason="Goodwill: late job", created_at=payment(1, "1").received_at)
    lines = mapping.credit_memo_payload(event, goodwill, "0cu1")["creditMemoLineItems"]
    assert [(ln["description"], ln["price"]) for ln in lines] == [("Goodwill: late job", Decimal("40.00")),
                                                                  (f"{mapping.TAX_LINE}GST", Decimal("2.00"))]
