"""Issue #5's remaining QuickBooks Desktop mapping choices, on the QBD sandbox driven by its simulated Web
Connector: refunds as credit memos APPLIED to the invoice they refund (ReceivePaymentAdd → AppliedToTxnAdd →
SetCredit), giving way to the shop's later payments and to a void; the company's closing date (3171) with
re-dated new documents and adjustments in the first open day. Every qbXML request is checked against
Intuit's qbxmlops130.xsd."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from lxml import etree

from connectors.base import ClosedPeriodError
from connectors.quickbooks_desktop import mapping, qbxml
from connectors.testing import invoice_event, line, next_version, payment
from daemon.canonical import Refund
from tests.connectors.test_quickbooks_desktop import deliver, qbd  # noqa: F401 - the fixture


def sync(sandbox, sessions=6):
    for _ in range(sessions):
        if sandbox.run_session()["result"] == "none":
            return
    raise AssertionError(f"work left after {sessions} sessions: {sandbox.sessions[-3:]}")


def post(sandbox, connector, event, doc=None):
    doc = deliver(connector, event, doc)
    sync(sandbox)
    return deliver(connector, event, doc)  # the doc as the next delivery sees it (adjustments, differences)


def refund(refund_id, line_id, amount, tax, when=datetime(2026, 11, 22, 10, tzinfo=timezone.utc)):
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned unused", created_at=when)


def invoice(sandbox, number):
    (inv,) = [i for i in sandbox.company.invoices.values() if i.get("Other") == number]
    return inv


def applications(sandbox):
    return [p for p in sandbox.company.payments.values() if p["credits"]]


def ops(sandbox):
    return [etree.fromstring(r.split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0].tag for r in sandbox.requests]


# --- refunds: credit memos applied to their invoice -----------------------------------------------------

def test_refund_credit_memo_is_applied_to_its_invoice_once(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(payments=[payment(1, "200.00")])
    doc = post(sandbox, connector, v1)
    # The alternator (line 2, 289.95 + 5 % GST 14.50) comes back unused.
    v2 = next_version(v1, refunds=[refund(9, 2, "289.95", "14.50")])
    doc = post(sandbox, connector, v2, doc)
    (memo,) = sandbox.company.credit_memos.values()
    assert memo["Total"] == Decimal("304.45") and memo["Other"] == v1.number and memo["RefNumber"] == "LWR9"
    # Applied to THIS invoice: a 0.00 ReceivePayment whose AppliedToTxnAdd carries SetCredit.
    inv = invoice(sandbox, v1.number)
    (application,) = applications(sandbox)
    assert application["TotalAmount"] == Decimal("0") and application["RefNumber"] == "LWC9"
    assert application["credits"] == [(inv["TxnID"], memo["TxnID"], Decimal("304.45"))]
    assert sandbox.company.balance(inv) == Decimal("677.58") - Decimal("200.00") - Decimal("304.45")
    # The booked invoice is unchanged and counts only money received.
    (booked,) = sandbox.booked_invoices()
    assert booked.total == v1.computed.total and booked.payments_applied == Decimal("200.00")
    assert booked.payment_count == 1
    # Later versions: neither the memo nor its application posts again.
    post(sandbox, connector, next_version(v2), doc)
    assert len(sandbox.company.credit_memos) == 1 and len(applications(sandbox)) == 1
    sent = [r for r in sandbox.requests if "<SetCredit>" in r]
    assert len(sent) == 1 and f"<CreditTxnID>{memo['TxnID']}</CreditTxnID>" in sent[0]


def test_lost_answer_of_a_credit_application_is_not_applied_twice(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(1201)
    doc = post(sandbox, connector, v1)
    deliver(connector, next_version(v1, refunds=[refund(4, 3, "45.00", "0")]), doc)
    sandbox.faults.timeout = 1.0  # each write is saved, its answer lost: the memo, then the application
    assert [sandbox.run_session()["result"] for _ in range(2)] == ["lost", "lost"]
    sandbox.faults.timeout = 0.0
    sync(sandbox)
    assert len(applications(sandbox)) == 1 and len(sandbox.company.credit_memos) == 1
    assert any("ReceivePaymentQueryRq" in r and "<RefNumber>LWC4</RefNumber>" in r for r in sandbox.requests)
    assert sandbox.company.balance(invoice(sandbox, v1.number)) == v1.computed.total - Decimal("45.00")


def test_credit_application_gives_way_to_the_customers_payments_and_to_a_void(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(refunds=[refund(3, 2, "289.95", "14.50")])
    doc = post(sandbox, connector, v1)
    (application,) = applications(sandbox)
    assert application["credits"][0][2] == Decimal("304.45")
    # The customer pays all but 100.00: the application is released first, then 100.00 applied again.
    v2 = next_version(v1, payments=[payment(1, "577.58")])
    doc = post(sandbox, connector, v2, doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("577.58") and booked.payment_count == 1
    (application,) = applications(sandbox)
    assert application["credits"][0][2] == Decimal("100.00")
    assert sandbox.company.balance(invoice(sandbox, v1.number)) == Decimal("0.00")
    # The shop now takes the whole amount in cash: no room for credit is left at all.
    v3 = next_version(v2, payments=[payment(1, "577.58"), payment(2, "100.00", "cash")])
    doc = post(sandbox, connector, v3, doc)
    assert applications(sandbox) == [] and sandbox.booked_invoices()[0].payments_applied == Decimal("677.58")
    # Void: payments and credit applications removed, the invoice voided, the credit memo kept.
    post(sandbox, connector, next_version(v3, status="void", payments=[]), doc)
    (booked,) = sandbox.booked_invoices()
    assert booked.voided and booked.payment_count == 0 and applications(sandbox) == []
    assert len(sandbox.company.credit_memos) == 1
    assert connector.runtime.failures == []


def test_sandbox_never_applies_more_credit_than_the_open_balance(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(1301, payments=[payment(1, "600.00")])
    post(sandbox, connector, v1)
    inv = invoice(sandbox, v1.number)
    customer = inv["customer"]
    memo = mapping.credit_memo_add(refund(5, 2, "289.95", "14.50"), v1, customer, {"full_name": "Parts"},
                                   connector.mapping, "Shop Tax Lines")
    response, *_ = sandbox.process(qbxml.document("13.0", [memo]))
    memo_id = qbxml.parse_response(response)[0]["rets"][0]["TxnID"]
    too_much = mapping.credit_application("LWC5", customer, inv["TxnID"], memo_id, Decimal("100.00"))
    (rs,) = qbxml.parse_response(sandbox.process(qbxml.document("13.0", [too_much]))[0])
    assert rs["statusCode"] == 3210 and "exceeds the open balance 77.58" in rs["statusMessage"]


# --- closed periods -------------------------------------------------------------------------------------

def test_change_in_a_closed_period_posts_adjustments_in_the_first_open_day(qbd):
    sandbox, connector = qbd
    v1 = invoice_event()
    doc = post(sandbox, connector, v1)
    sandbox.set_closing_date(date(2026, 11, 30))
    # A line added after the books were closed: QuickBooks refuses the InvoiceMod with 3171.
    v2 = next_version(v1, lines=list(v1.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = post(sandbox, connector, v2, doc)
    original = invoice(sandbox, v1.number)
    assert original["Total"] == v1.computed.total  # untouched
    adjustment = invoice(sandbox, "A1-INV-001001")
    assert adjustment["TxnDate"] == "2026-12-01" and original["TxnID"] in adjustment["Memo"]
    assert adjustment["Total"] == v2.computed.total - v1.computed.total == Decimal("9.98")
    assert sum(ln["Amount"] for ln in adjustment["lines"] if ln["is_tax"]) == Decimal("0.48")
    (entry,) = doc.engine.adjustments
    assert entry.kind == "increase" and entry.external_id == adjustment["TxnID"] and "books were closed" in entry.reason
    assert "PreferencesQueryRq" in ops(sandbox) and connector.runtime.failures == []
    # A line removed again: the difference goes the other way, as a credit memo.
    v3 = next_version(v2, lines=list(v1.lines)[:-1])
    doc = post(sandbox, connector, v3, doc)
    (memo,) = sandbox.company.credit_memos.values()
    assert memo["Other"] == "C2-INV-001001" and memo["TxnDate"] == "2026-12-01"
    assert memo["Total"] == v2.computed.total - v3.computed.total
    # The same version again changes nothing.
    post(sandbox, connector, v3, doc)
    assert len(sandbox.company.credit_memos) == 1
    # A void in the closed period: a credit memo for everything QuickBooks still holds.
    doc = post(sandbox, connector, next_version(v3, status="void"), doc)
    memos = list(sandbox.company.credit_memos.values())
    assert len(memos) == 2 and memos[1]["Total"] == v3.computed.total
    assert [a.kind for a in doc.engine.adjustments] == ["increase", "decrease", "decrease"]
    held = original["Total"] + adjustment["Total"] - sum(m["Total"] for m in memos)
    assert held == Decimal("0.00") and not original.get("voided")
    assert connector.runtime.failures == []


def test_lost_answer_of_an_adjustment_is_not_posted_twice(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(1401)
    doc = post(sandbox, connector, v1)
    sandbox.set_closing_date(date(2026, 11, 30))
    v2 = next_version(v1, lines=list(v1.lines)[:-1])
    deliver(connector, v2, doc)
    sandbox.faults.timeout = 1.0  # the adjustment credit memo is saved, its answer lost
    for _ in range(3):
        sandbox.run_session()
    sandbox.faults.timeout = 0.0
    doc = post(sandbox, connector, v2, doc)
    (memo,) = sandbox.company.credit_memos.values()
    assert memo["Total"] == v1.computed.total - v2.computed.total
    assert any("CreditMemoQueryRq" in r for r in sandbox.requests)
    (entry,) = doc.engine.adjustments
    assert entry.external_id == memo["TxnID"] and entry.kind == "decrease"


def test_new_invoice_dated_in_a_closed_period_is_posted_whole_on_the_first_open_day(qbd):
    sandbox, connector = qbd
    sandbox.set_closing_date(date(2026, 11, 30))
    v1 = invoice_event(4100, payments=[payment(1, "10.00")])
    doc = post(sandbox, connector, v1)
    (inv,) = sandbox.company.invoices.values()
    assert inv["TxnDate"] == "2026-12-01" and inv["Total"] == v1.computed.total and inv["Other"] == "INV-004100"
    assert "2026-11-20 is in a closed period" in inv["Memo"]
    assert doc.engine.adjustments[0].kind == "redated"
    # The payment (received 2026-11-20) was re-dated too; later Mods keep the open-period date.
    (pay,) = sandbox.company.payments.values()
    assert pay["TxnDate"] == "2026-12-01"
    v2 = next_version(v1, lines=list(v1.lines)[:-1], payments=[payment(1, "10.00"), payment(2, "5.00")])
    post(sandbox, connector, v2, doc)
    (inv,) = sandbox.company.invoices.values()
    assert inv["Total"] == v2.computed.total and inv["TxnDate"] == "2026-12-01"
    assert sandbox.booked_invoices()[0].payments_applied == Decimal("15.00")
    assert connector.runtime.failures == []


def test_what_cannot_move_out_of_a_closed_period_is_a_dead_letter_not_retried_forever(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(4200, payments=[payment(1, "100.00")])
    doc = post(sandbox, connector, v1)
    sandbox.set_closing_date(date(2026, 11, 30))
    # The payment (dated 2026-11-20) is reversed after the close: QuickBooks refuses its deletion.
    deliver(connector, next_version(v1, payments=[payment(1, "100.00", status="reversed")]), doc)
    sync(sandbox)
    ((target, event, error),) = connector.runtime.failures
    assert isinstance(error, ClosedPeriodError) and error.platform_code == "3171"
    assert "closing date" in error.reason and event.version == 2
    assert sandbox.booked_invoices()[0].payments_applied == Decimal("100.00")
    sync(sandbox)  # nothing is retried by itself
    assert len(connector.runtime.failures) == 1


def test_closing_date_refusal_is_quickbooks_code_and_message(qbd):
    sandbox, connector = qbd
    sandbox.set_closing_date(date(2026, 11, 30))
    post(sandbox, connector, invoice_event(4300))
    (inv,) = sandbox.company.invoices.values()
    stale = qbxml.txn_del("Invoice", inv["TxnID"], "Void")
    (rs,) = qbxml.parse_response(sandbox.process(qbxml.document("13.0", [stale]))[0])
    assert rs["statusCode"] == 0  # dated 2026-12-01: open
    event = invoice_event(4301)
    add = mapping.invoice_write(event, inv["customer"], "X4301", mapping.invoice_lines(
        event, {ln.id: {"full_name": "Parts"} for ln in event.lines}, connector.mapping), connector.mapping,
        "Shop Tax Lines")
    (rs,) = qbxml.parse_response(sandbox.process(qbxml.document("13.0", [add]))[0])
    assert rs["statusCode"] == 3171 and rs["statusSeverity"] == "Error"
    assert "on or before the closing date of the company" in rs["statusMessage"]
    prefs = qbxml.parse_response(sandbox.process(qbxml.document("13.0", [qbxml.preferences_query()]))[0])
    assert prefs[0]["rets"][0]["AccountingPreferences"]["ClosingDate"] == "2026-11-30"


# --- the official spec --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qbxml_xsd(specs):
    xmlschema = pytest.importorskip("xmlschema")
    path = specs / "quickbooks-desktop" / "qbxml130" / "qbxmlops130.xsd"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return xmlschema.XMLSchema(str(path))


def test_every_request_of_these_flows_is_valid_qbxml130(qbd, qbxml_xsd):
    sandbox, connector = qbd
    v1 = invoice_event(refunds=[refund(3, 2, "289.95", "14.50")])
    doc = post(sandbox, connector, v1)
    v2 = next_version(v1, payments=[payment(1, "577.58")])
    doc = post(sandbox, connector, v2, doc)
    sandbox.set_closing_date(date(2026, 11, 30))
    v3 = next_version(v2, lines=list(v2.lines) + [line(6, "part", "Battery terminal", "2", "4.7500")])
    doc = post(sandbox, connector, v3, doc)
    v4 = next_version(v3, lines=list(v1.lines)[:-1])
    doc = post(sandbox, connector, v4, doc)
    post(sandbox, connector, invoice_event(5000, payments=[payment(7, "20.00")]))
    seen = set()
    for document in sandbox.requests:
        root = etree.fromstring(document.split("?>", 2)[2].encode())
        errors = [str(e.reason)[:200] for e in qbxml_xsd.iter_errors(root)]
        assert not errors, (errors, document[:600])
        seen.add(root.find("QBXMLMsgsRq")[0].tag)
    assert {"PreferencesQueryRq", "ReceivePaymentAddRq", "CreditMemoAddRq", "InvoiceAddRq", "TxnDelRq"} <= seen
    assert any("<SetCredit>" in r for r in sandbox.requests)
    # The check can fail: SetCredit without its AppliedAmount is refused by the schema.
    bad = qbxml.document("13.0", [mapping.credit_application("LWC1", "1", "2", "3", Decimal("1"))])
    bad = bad.replace("<AppliedAmount>1.00</AppliedAmount>", "")
    assert list(qbxml_xsd.iter_errors(etree.fromstring(bad.split("?>", 2)[2].encode())))
