"""QuickBooks Desktop: the connector queues, the simulated Web Connector plays QBWC's side of the SOAP
conversation against the connector's ASGI app, and the simulated company file answers qbXML. Every qbXML
document is validated against Intuit's qbxmlops130.xsd and qbxmlops160.xsd (the version the Web Connector
reports) and every SOAP envelope against the WSDL's schema."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import pytest
from lxml import etree

from connectors.base import PermanentError, DocumentState
from connectors.quickbooks_desktop import CONNECTOR, Sandbox, mapping, numbering, qbxml, soap
from connectors.quickbooks_desktop.qwc import render_qwc
from connectors.testing import MemoryContext, MemoryEntities, MemoryRuntime, invoice_event, line, next_version, payment
from daemon.canonical import Customer, Location, Refund
from daemon.config import TargetConfig


@pytest.fixture
def qbd():
    return make_qbd()


def make_qbd(qbxml_version="13.0"):
    # schema checks are done by the tests below (and by the sandbox in e2e)
    sandbox = Sandbox(validate=False, qbxml_version=qbxml_version)
    credentials = sandbox.seed_credentials()
    target = TargetConfig.model_validate(sandbox.target_config("qbd", "http://127.0.0.1"))
    connector = CONNECTOR(target, MemoryRuntime({"qbd": credentials}))
    sandbox.attach(connector.asgi_app())
    return sandbox, connector


def deliver(connector, event, doc=None):
    return connector.deliver(event, doc or DocumentState(), MemoryContext("qbd", event, MemoryEntities()))


def sync(sandbox, sessions=5):
    for _ in range(sessions):
        if sandbox.run_session()["result"] == "none":
            return
    raise AssertionError(f"work left after {sessions} sessions: {sandbox.sessions[-3:]}")


def only(sandbox, number):
    docs = [b for b in sandbox.booked_invoices() if b.number == number]
    assert len(docs) == 1, docs
    return docs[0]


def test_deliver_only_queues(qbd):
    sandbox, connector = qbd
    event = invoice_event()
    doc = deliver(connector, event)
    assert doc.status == "queued" and doc.delivered_version == 1 and doc.payload_hash == event.content_hash()
    assert sandbox.booked_invoices() == [] and sandbox.requests == []


def test_round_trip_edit_pay_reverse_refund_void_with_exact_totals(qbd):
    sandbox, connector = qbd
    v1 = invoice_event(number="INV-NORTH-000123", location=Location(id=2, code="NORTH", name="North"))
    doc = deliver(connector, v1)
    sync(sandbox)
    booked = only(sandbox, "INV-NORTH-000123")
    assert (booked.total, booked.tax_total, booked.line_count) == (Decimal("677.58"), Decimal("30.13"), 5)
    (inv,) = sandbox.company.invoices.values()
    assert inv["RefNumber"] == "NORTH000123" and inv["class"] == "North" and inv["PONumber"] == "J-01001"

    lines = list(v1.lines)
    lines[1] = line(2, "part", "Alternator, reman 160A", "1", "319.9500", part_number="ALT-160R")
    v2 = next_version(v1, lines=lines + [line(6, "part", "Battery terminal", "2", "4.7500")],
                      payments=[payment(1, "300.00")])
    doc = deliver(connector, v2, doc)
    sync(sandbox)
    booked = only(sandbox, v1.number)
    assert booked.total == v2.computed.total == Decimal("719.06") and booked.tax_total == Decimal("32.11")
    assert booked.line_count == 6 and booked.payments_applied == Decimal("300.00")

    # The payment moved the invoice's EditSequence: the next Mod meets 3200, re-reads, and succeeds.
    v3 = next_version(v2, lines=list(v2.lines)[:-1], payments=[payment(1, "300.00"), payment(2, "409.08", "cash")])
    doc = deliver(connector, v3, doc)
    sync(sandbox)
    ops = [s for s in sandbox.requests if "InvoiceQueryRq" in s]
    assert ops, "a stale EditSequence is re-read with InvoiceQuery"
    booked = only(sandbox, v1.number)
    assert booked.total == Decimal("709.08") and booked.payments_applied == Decimal("709.08")
    assert booked.payment_count == 2

    # Reversal and a refund (credit memo, once; the invoice total is unchanged).
    refund = Refund(id=9, kind="return", amount=Decimal("45.00"), tax_amount=Decimal("0"), line_id=3,
                    reason="Core returned", created_at=v3.emitted_at)
    v4 = next_version(v3, payments=[payment(1, "300.00"), payment(2, "409.08", "cash", status="reversed")],
                      refunds=[refund])
    doc = deliver(connector, v4, doc)
    sync(sandbox)
    v5 = next_version(v4)
    doc = deliver(connector, v5, doc)
    sync(sandbox)
    booked = only(sandbox, v1.number)
    assert booked.payments_applied == Decimal("300.00") and booked.payment_count == 1
    assert booked.total == Decimal("709.08")
    assert len(sandbox.company.credit_memos) == 1
    (memo,) = sandbox.company.credit_memos.values()
    assert memo["Total"] == Decimal("45.00") and memo["Other"] == v1.number

    # Void: payments removed first (TxnDel), then TxnVoid.
    v6 = next_version(v5, status="void", payments=[payment(1, "300.00", status="reversed")])
    deliver(connector, v6, doc)
    sync(sandbox)
    booked = only(sandbox, v1.number)
    assert booked.voided and booked.payment_count == 0 and booked.total == Decimal("709.08")
    assert len(sandbox.company.customers) == 1


def test_lost_answers_never_post_twice(qbd):
    sandbox, connector = qbd
    deliver(connector, invoice_event(3000))
    sync(sandbox)  # customer and items exist
    event = invoice_event(3001, payments=[payment(1, "100.00")])
    deliver(connector, event)
    sandbox.faults.timeout = 1.0  # every write is saved, then QBWC dies before receiveResponseXML
    results = [sandbox.run_session()["result"] for _ in range(3)]
    assert results[:2] == ["lost", "lost"]  # the InvoiceAdd's answer, then the ReceivePaymentAdd's
    sandbox.faults.timeout = 0.0
    sync(sandbox)
    booked = only(sandbox, event.number)
    assert booked.payment_count == 1 and booked.payments_applied == Decimal("100.00")
    assert any("<RefNumber>INV003001</RefNumber>" in r and "InvoiceQueryRq" in r for r in sandbox.requests)
    assert any("ReceivePaymentQueryRq" in r for r in sandbox.requests)


def test_lost_answer_for_a_new_customer_creates_it_once(qbd):
    sandbox, connector = qbd
    sandbox.faults.timeout = 1.0
    deliver(connector, invoice_event(3100))
    assert sandbox.run_session()["result"] == "lost"  # CustomerAdd saved, answer lost
    sandbox.faults.timeout = 0.0
    for n in range(4):  # more first invoices of the same new customer
        deliver(connector, invoice_event(3101 + n))
    sync(sandbox)
    assert len(sandbox.company.customers) == 1
    assert len(sandbox.booked_invoices()) == 5


def test_error_saving_is_sent_again(qbd):
    sandbox, connector = qbd
    deliver(connector, invoice_event(3200))
    sandbox.faults.error_500 = 1.0  # 3180 on every write: nothing saved
    sandbox.run_session()
    assert sandbox.booked_invoices() == []
    sandbox.faults.error_500 = 0.0
    sync(sandbox)
    assert len(sandbox.booked_invoices()) == 1


def test_error_saving_on_every_session_is_dead_lettered_with_its_reason_not_sent_forever(qbd):
    """A write QuickBooks never saves (3180 every time) cannot progress: after a bounded number of sessions it
    is a dead letter with QuickBooks' code and message, and the sessions stop carrying it."""
    from connectors.engine_pull import MAX_TRANSIENT_RUNS

    sandbox, connector = qbd
    deliver(connector, invoice_event(3210))
    sandbox.faults.error_500 = 1.0  # 3180 on every write, in every session
    for _ in range(MAX_TRANSIENT_RUNS + 2):
        sandbox.run_session()
    work = connector.queue.load(3210)
    assert work.failed_version == 1 and "3180" in work.failed_reason
    ((target, failed_event, error),) = connector.runtime.failures
    assert (target, failed_event.version, error.platform_code) == ("qbd", 1, "3180")
    assert isinstance(error, PermanentError) and f"{MAX_TRANSIENT_RUNS} sessions" in error.reason
    sent = len(sandbox.requests)
    sandbox.run_session()
    assert len(sandbox.requests) == sent  # nothing is sent for it any more
    assert sandbox.booked_invoices() == []


def test_error_saving_count_starts_again_after_progress(qbd):
    """3180 now and then, with writes saved in between, is not a stuck step: the invoice completes."""
    from connectors.engine_pull import MAX_TRANSIENT_RUNS

    sandbox, connector = qbd
    event = invoice_event(3220, payments=[payment(1, "100.00")])
    deliver(connector, event)
    for _ in range(MAX_TRANSIENT_RUNS + 3):  # every session: one write saved, then the next refused
        sandbox.faults.fault_at(2, "500")
        sandbox.run_session()
    sync(sandbox)
    assert connector.queue.load(3220).failed_version == 0 and connector.runtime.failures == []
    assert only(sandbox, event.number).payment_count == 1


def test_wrong_password_is_not_a_valid_user(qbd):
    sandbox, connector = qbd
    sandbox.password = "wrong"
    deliver(connector, invoice_event())
    assert sandbox.run_session()["result"] == "nvu"
    assert sandbox.booked_invoices() == []


def test_refusal_stops_the_invoice_with_quickbooks_message(qbd):
    sandbox, connector = qbd
    fixed = connector.mapping
    connector.mapping = connector.mapping.model_copy(update={"income_accounts": {"labour": "No Such Account"}})
    event = invoice_event(6000, lines=[line(1, "labour", "Diagnose", "1", "100.00")])
    deliver(connector, event)
    sandbox.run_session()
    work = connector.queue.load(6000)
    assert work.failed_version == 1 and "3140" in work.failed_reason and "No Such Account" in work.failed_reason
    # The refusal reaches the daemon's dead letters (the runtime), with QuickBooks' code and message.
    ((target, failed_event, error),) = connector.runtime.failures
    assert (target, failed_event.version, error.platform_code) == ("qbd", 1, "3140")
    assert isinstance(error, PermanentError) and "No Such Account" in error.reason

    # `dlq retry` queues the same version again once the bookkeeper fixed the account: it posts.
    connector.mapping = fixed
    deliver(connector, event)
    sync(sandbox)
    assert only(sandbox, event.number).total == event.computed.total
    assert connector.queue.load(6000).done_version == 1 and len(connector.runtime.failures) == 1

    doc = deliver(connector, next_version(event))
    assert "qbd_last_error" not in doc.extra or "3140" not in doc.extra["qbd_last_error"]


def test_tax_difference_is_reported(qbd):
    sandbox, connector = qbd
    for item in sandbox.company.items.values():
        if item["FullName"] == "Shop Tax Lines":
            item["tax_rate"] = Decimal("1.0")  # the bookkeeper set a rate on the invoice tax item
    event = invoice_event(7000)
    deliver(connector, event)
    sync(sandbox)
    doc = deliver(connector, next_version(event))
    # 1 % of the taxable lines (120 + 289.95 + 180 + 12.50 = 602.45) = 6.02 more than the shop's tax
    assert doc.extra["tax_difference"] == "6.02"


def test_concurrent_first_invoices_of_a_new_customer_create_it_once(qbd):
    from concurrent.futures import ThreadPoolExecutor

    sandbox, connector = qbd
    events = [invoice_event(8000 + n) for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda e: deliver(connector, e), events))
    sync(sandbox)
    assert len(sandbox.company.customers) == 1 and len(sandbox.booked_invoices()) == 6
    assert sum(1 for i in sandbox.company.items.values() if i["type"] != "ItemSalesTax") == 4


def test_ref_numbers_are_short_deterministic_and_collision_free(qbd):
    _, connector = qbd
    long_a, long_b = "INV-SOUTHWEST-000123", "INV-SOUTHWEST-000124"
    a = connector.queue.ref_number(long_a, numbering.ref_candidates(long_a))
    b = connector.queue.ref_number(long_b, numbering.ref_candidates(long_b))
    assert len(a) <= 11 and len(b) <= 11 and a != b
    assert connector.queue.ref_number(long_a, numbering.ref_candidates(long_a)) == a
    # A forced collision: the first candidate taken by another number gives the next one.
    taken = next(numbering.ref_candidates("INV-MAIN-000001"))
    connector.queue.ref_number("OTHER", iter([taken]))
    assert connector.queue.ref_number("INV-MAIN-000001", numbering.ref_candidates("INV-MAIN-000001")) != taken


def test_location_class_and_customer_change(qbd):
    sandbox, connector = qbd
    event = invoice_event(9000)
    doc = deliver(connector, event)
    sync(sandbox)
    changed = Customer(id=77, name="Dana Whitfield", email="dana@example.com", phone="555-0199")
    deliver(connector, next_version(event, customer=changed), doc)
    sync(sandbox)
    (customer,) = sandbox.company.customers.values()
    assert customer["Phone"] == "555-0199"
    (inv,) = sandbox.company.invoices.values()
    assert inv["class"] == "Main St"


def test_check_mapping_and_preview(qbd):
    sandbox, connector = qbd
    assert connector.check_mapping()[0].startswith("lists not synced")
    deliver(connector, invoice_event(9100))
    sync(sandbox)
    assert connector.check_mapping() == []
    connector.mapping = connector.mapping.model_copy(update={
        "income_accounts": {**connector.mapping.income_accounts, "labour": "999"},
        "tax_codes": {**connector.mapping.tax_codes, "GST": "Bogus Tax"}})
    problems = connector.check_mapping()
    assert "income_accounts.labour: account '999' not found" in problems
    assert any(p.startswith("tax_codes.GST") for p in problems)

    before = len(sandbox.requests)
    event = invoice_event(9200, customer=Customer(id=78, name="New Person"), payments=[payment(5, "10.00")])
    calls = connector.preview(event, DocumentState())
    assert len(sandbox.requests) == before and connector.queue.load(9200) is None
    ops = [etree.fromstring(c["body"].split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0].tag for c in calls]
    assert ops == ["CustomerAddRq", "InvoiceAddRq", "ReceivePaymentAddRq"]  # the writes (queries find nothing)
    assert "<ListID>&lt;new customer&gt;</ListID>" in calls[1]["body"]


def test_qwc_file():
    text = render_qwc(app_name="Ledgerwire (qbd)", app_url="https://books.example.com/connectors/qbd/qbwc",
                      username="ledgerwire", owner_id="{57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}",
                      file_id="{90A44FB5-33D9-4815-AC85-BC87A7E7D1EB}", run_every_minutes=5)
    root = etree.fromstring(text.encode())
    assert root.tag == "QBWCXML" and root.findtext("AppURL").endswith("/qbwc") and root.findtext("QBType") == "QBFS"
    assert root.findtext("Scheduler/RunEveryNMinutes") == "5"
    with pytest.raises(ValueError):
        render_qwc(app_name="x", app_url="http://books.example.com/qbwc", username="u",
                   owner_id="{57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}", file_id="{90A44FB5-33D9-4815-AC85-BC87A7E7D1EB}",
                   run_every_minutes=5)


# --- official spec checks --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qbxml_schemas(specs):
    """Intuit's qbxmlops130.xsd and qbxmlops160.xsd, by version."""
    xmlschema = pytest.importorskip("xmlschema")
    out = {}
    for version in ("13.0", "16.0"):
        tag = version.replace(".", "")
        path = specs / "quickbooks-desktop" / f"qbxml{tag}" / f"qbxmlops{tag}.xsd"
        if not path.exists():
            pytest.skip(f"{path} not found")
        out[version] = xmlschema.XMLSchema(str(path))
    return out


@pytest.fixture(scope="module")
def qbxml_xsd(qbxml_schemas):
    return qbxml_schemas["13.0"]


@pytest.fixture(scope="module")
def wsdl_schema(specs):
    xmlschema = pytest.importorskip("xmlschema")
    path = specs / "quickbooks-desktop" / "qbwc" / "TroubleshootWebServiceFS.wsdl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    schema = etree.parse(str(path)).find(".//{http://www.w3.org/2001/XMLSchema}schema")
    return xmlschema.XMLSchema(etree.tostring(schema).decode())


def qbxml_errors(schema, document, version="13.0"):
    assert f'<?qbxml version="{version}"?>' in document
    assert 'onError="continueOnError"' in document
    root = etree.fromstring(document.split("?>", 2)[2].encode())
    return [str(e.reason)[:200] for e in schema.iter_errors(root)]


@pytest.mark.parametrize("version", ["13.0", "16.0"])
def test_every_qbxml_request_is_valid_at_the_version_quickbooks_speaks(version, qbxml_schemas):
    """Issue #20: the Web Connector reports 13 (or 16); every document goes out at that version (never a newer
    one: the target allows up to 16.0) and is valid against that version's qbxmlops XSD."""
    sandbox, connector = make_qbd(version)
    qbxml_xsd = qbxml_schemas[version]
    v1 = invoice_event(payments=[payment(1, "100.00")])
    doc = deliver(connector, v1)
    sync(sandbox)
    refund = Refund(id=3, kind="return", amount=Decimal("289.95"), tax_amount=Decimal("14.50"), line_id=2,
                    created_at=v1.emitted_at)
    v2 = next_version(v1, lines=list(v1.lines)[:3], payments=[payment(1, "100.00", status="reversed"),
                                                              payment(2, "50.00")], refunds=[refund])
    doc = deliver(connector, v2, doc)
    deliver(connector, invoice_event(2, customer=Customer(id=77, name="Dana Whitfield", phone="555-0100")))
    sync(sandbox)
    deliver(connector, next_version(v2, status="void", payments=[]), doc)
    sync(sandbox)
    # Closed books: a new invoice dated in the closed period (PreferencesQuery, then re-dated), and a change
    # to a posted one (an adjustment invoice, then an adjustment credit memo).
    v3 = invoice_event(3, payments=[payment(8, "20.00")])
    doc3 = deliver(connector, v3)
    sync(sandbox)
    sandbox.set_closing_date(date(2026, 11, 30))
    deliver(connector, invoice_event(4))
    v4 = next_version(v3, lines=list(v3.lines) + [line(9, "fee", "Disposal", "1", "5.00")])
    doc3 = deliver(connector, v4, doc3)
    sync(sandbox)
    deliver(connector, next_version(v4, lines=list(v3.lines)[:2]), doc3)
    sync(sandbox)
    assert connector.runtime.failures == []
    seen = set()
    for document in sandbox.requests:
        assert not qbxml_errors(qbxml_xsd, document, version), document[:500]
        seen.add(etree.fromstring(document.split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0].tag)
    assert {"CustomerQueryRq", "CustomerAddRq", "ItemQueryRq", "ItemServiceAddRq", "ItemNonInventoryAddRq",
            "ItemOtherChargeAddRq", "InvoiceAddRq", "InvoiceModRq", "ReceivePaymentAddRq", "TxnDelRq", "TxnVoidRq",
            "CreditMemoAddRq", "CustomerModRq", "AccountQueryRq", "PreferencesQueryRq"} <= seen
    assert any("<SetCredit>" in r for r in sandbox.requests)  # a credit memo applied to its invoice
    assert any("<Other>A1-INV-000003</Other>" in r for r in sandbox.requests)
    assert any("<Other>C2-INV-000003</Other>" in r for r in sandbox.requests)
    calls = connector.preview(invoice_event(5, customer=Customer(id=90, name="P")), DocumentState())
    for call in calls:
        assert not qbxml_errors(qbxml_xsd, call["body"], version)


def test_the_xsd_check_rejects_what_quickbooks_would_refuse(qbxml_xsd):
    good = qbxml.document("13.0", [qbxml.txn_del("Invoice", "1-1", "Void")])
    assert not qbxml_errors(qbxml_xsd, good)
    too_long = qbxml.document("13.0", [qbxml.query("Invoice", ref_number="X", lines=True)]).replace(
        "<RefNumber>X</RefNumber>", "<RefNumber>X</RefNumber><Bogus/>")
    bad_amount = good.replace("<TxnVoidType>Invoice</TxnVoidType>", "<TxnVoidType>Nope</TxnVoidType>")
    event = invoice_event()
    add = mapping.invoice_write(event, "1", "INV-TOO-LONG-1", mapping.invoice_lines(
        event, {ln.id: {"list_id": "2"} for ln in event.lines}, TargetConfig(name="x", platform="x").mapping),
        TargetConfig(name="x", platform="x").mapping, "Tax")
    for bad in (too_long, bad_amount, qbxml.document("13.0", [add])):
        assert qbxml_errors(qbxml_xsd, bad)


def test_soap_conversation_matches_the_wsdl(qbd, wsdl_schema):
    sandbox, connector = qbd
    deliver(connector, invoice_event())
    sync(sandbox)
    operations = []
    for request, response in sandbox.soap_log:
        for envelope in (request, response):
            root = etree.fromstring(envelope)
            assert etree.QName(root).namespace == soap.SOAP_NS
            body = root.find(f"{{{soap.SOAP_NS}}}Body")[0]
            assert etree.QName(body).namespace == soap.TNS
            errors = list(wsdl_schema.iter_errors(body))
            assert not errors, (etree.QName(body).localname, [str(e.reason) for e in errors[:2]])
        operations.append(etree.QName(etree.fromstring(request).find(f"{{{soap.SOAP_NS}}}Body")[0]).localname)
    assert operations[:4] == ["serverVersion", "clientVersion", "authenticate", "sendRequestXML"]
    first = operations[:operations.index("closeConnection") + 1]
    assert "receiveResponseXML" in first and first.count("authenticate") == 1
    # The check can fail: a misspelt element is refused.
    bad = etree.fromstring(soap.envelope("authenticate", [("strUser", "x")])).find(f"{{{soap.SOAP_NS}}}Body")[0]
    assert list(wsdl_schema.iter_errors(bad))


def _rename_after_posting(sandbox, connector, invoice_id, forget_entity):
    event = invoice_event(invoice_id)
    doc = deliver(connector, event)
    sync(sandbox)
    if forget_entity:  # the entity map lost (a resync, another daemon's database): only QuickBooks knows the record
        connector.queue.entities.pop(("customer", str(event.customer.id)))
    renamed = Customer(id=event.customer.id, name="Dana Okafor-Whitfield", email="dana.o@example.com", phone="555-0142")
    sent = len(sandbox.requests)
    deliver(connector, next_version(event, customer=renamed), doc)
    return renamed, sent


@pytest.mark.parametrize("forget_entity", [False, True])
def test_customer_rename_finds_the_record_by_its_list_id_or_shop_id_never_its_new_name(qbd, forget_entity):
    """Issue #20: a renamed customer is modified in place (found by its stored ListID, or by the shop id its name
    ends with when the entity map is gone) — never looked up under the new name QuickBooks does not know, never
    duplicated — and the session ends."""
    sandbox, connector = qbd
    renamed, sent = _rename_after_posting(sandbox, connector, 9300, forget_entity)
    sync(sandbox, sessions=2)
    new_requests = sandbox.requests[sent:]
    assert len(new_requests) < 10, len(new_requests)  # a handful of requests, not a query loop
    assert not any(f"<FullName>{mapping.customer_name(renamed)}</FullName>" in r for r in new_requests)
    (customer,) = sandbox.company.customers.values()
    assert (customer["Name"], customer["Email"], customer["Phone"]) == (
        mapping.customer_name(renamed), "dana.o@example.com", "555-0142")
    assert connector.queue.load(9300).done_version == 2


def test_queued_is_not_done_until_the_web_connector_confirms_it(qbd):
    """Issue #20: the sink's lag for a pull platform read 0 while every queued invoice starved; what the Web
    Connector has not confirmed yet is counted (``unconfirmed``, published as ledgerwire_pull_unconfirmed_invoices)."""
    sandbox, connector = qbd
    assert connector.unconfirmed() == 0
    deliver(connector, invoice_event(9400))
    deliver(connector, invoice_event(9401))
    assert connector.unconfirmed() == 2
    sync(sandbox)
    assert connector.unconfirmed() == 0


def test_tax_inclusive_invoice_is_posted_with_the_tax_included_setting_and_the_shops_total(qbd):
    """Issue #20: tax-included line amounts went out as net with the tax added on top (234.99 became 248.82)."""
    from connectors.testing import tax_inclusive_event

    sandbox, connector = qbd
    event = tax_inclusive_event(9500)
    deliver(connector, event)
    sync(sandbox)
    booked = only(sandbox, event.number)
    assert booked.total == Decimal("127.50") and booked.tax_total == Decimal("6.09")
    (write,) = [r for r in sandbox.requests if "<InvoiceAddRq" in r]
    assert "<IsTaxIncluded>true</IsTaxIncluded>" in write


def test_fleet_terms_and_the_due_date_they_give(qbd):
    """Issue #20: fleet terms (TermsRef) were not sent and an empty due date stayed empty."""
    sandbox, connector = qbd
    connector.mapping = connector.mapping.model_copy(update={"payment_terms": {30: "Net 30"}})
    fleet = Customer(id=91, name="Harbour Freight Fleet", is_fleet=True, payment_terms_days=30)
    event = invoice_event(9600, customer=fleet, due_date=None, issue_date=date(2026, 3, 2))
    request = connector.preview(event, DocumentState())[-1]["body"]
    assert "<TermsRef><FullName>Net 30</FullName></TermsRef><DueDate>2026-04-01</DueDate>" in request


def test_refund_tax_goes_out_on_each_of_its_components(qbd):
    """Issue #20: a partial refund's tax (GST 2.50 + PST 3.50) went out as one GST 6.00 line."""
    from datetime import datetime, timezone

    from connectors.testing import GST, PST

    _, connector = qbd
    event = invoice_event(9700, lines=[line(1, "part", "Alternator", "1", "100.00", taxes=(GST, PST))])
    refund = Refund(id=12, kind="refund", amount=Decimal("50.00"), tax_amount=Decimal("6.00"), line_id=1,
                    created_at=datetime(2026, 3, 3, tzinfo=timezone.utc))
    request = etree.tostring(mapping.credit_memo_add(refund, event, "80-1", {"list_id": "90-1"}, connector.mapping,
                                                     "Shop Tax Lines"), encoding="unicode")
    taxes = [(ln.findtext("ItemRef/FullName"), ln.findtext("Amount"))
             for ln in etree.fromstring(request).iter("CreditMemoLineAdd") if ln.find("ItemRef/FullName") is not None]
    assert taxes == [(mapping.tax_item("GST", connector.mapping), "2.50"),
                     (mapping.tax_item("PST", connector.mapping), "3.50")]


def test_no_request_when_quickbooks_speaks_no_qbxml_version_we_do():
    """QuickBooks reporting qbXML 12.0: nothing is sent; the Web Connector shows why (getLastError)."""
    sandbox, connector = make_qbd("12.0")
    deliver(connector, invoice_event())
    summary = sandbox.run_session()
    assert summary["requests"] == 0 and "12.0" in summary["last_error"] and "13.0" in summary["last_error"]
    assert connector.unconfirmed() == 1  # still queued: a QuickBooks upgrade brings it up


def test_a_run_keeps_the_version_it_started_with():
    """The version is the run's: a Web Connector that dies right after QuickBooks answered a write, and a next
    session reporting another version, replay the run as it was (the write answered is never sent again, which
    at another version would be another request) and then speak the new version."""
    sandbox, connector = make_qbd("16.0")
    deliver(connector, invoice_event(payments=[payment(1, "100.00")]))
    ticket = connector._op_authenticate({"strUserName": sandbox.username, "strPassword": sandbox.password})[1][0]
    request = ""
    while "<InvoiceAddRq" not in request:  # carried and answered, up to the invoice; then QBWC dies
        request = connector._op_sendRequestXML({"ticket": ticket, "qbXMLMajorVers": "16", "qbXMLMinorVers": "0"})[1]
        response, hresult, message, _ = sandbox.process(request)
        connector._op_receiveResponseXML({"ticket": ticket, "response": response, "hresult": hresult,
                                          "message": message})
    sandbox.qbxml_version = "13.0"  # QuickBooks reinstalled at an older version before the next session
    sync(sandbox)
    assert connector.runtime.failures == []
    assert len(sandbox.company.customers) == 1
    (booked,) = sandbox.booked_invoices()
    assert booked.payments_applied == Decimal("100.00") and booked.payment_count == 1
    assert '<?qbxml version="13.0"?>' in sandbox.requests[-1]


def test_a_phone_or_company_name_over_the_limit_is_cut_visibly_with_the_full_text_in_notes(capsys):
    """Issue #20: CustomerAdd's Phone (21) and CompanyName (41): cut to the limit, never silently — the full text in
    the customer's Notes and a log line naming the field and the lengths (never the text: it is PII)."""
    name, phone = "Northern Lights Auto Electrical and Diesel Ltd", "+1 (555) 010-0199 ext. 4412"
    request = mapping.customer_write(Customer(id=77, name=name, phone=phone))
    assert request.findtext("CustomerAdd/CompanyName") == name[:41]
    assert request.findtext("CustomerAdd/Phone") == phone[:21]
    notes = request.findtext("CustomerAdd/Notes")
    assert name in notes and phone in notes
    logged = capsys.readouterr().out
    assert logged.count("value_cut_to_platform_limit") == 2 and phone not in logged and name not in logged
    short = mapping.customer_write(Customer(id=78, name="Dana", phone="555-0100"))
    assert short.find("CustomerAdd/Notes") is None


# --- issue #20: a refund paid back settles its credit memo ---------------------------------------------------

@pytest.mark.parametrize("version", ["13.0", "16.0"])
@pytest.mark.parametrize(("method", "request_tag", "account"), [
    ("card", "ARRefundCreditCardAddRq", "Undeposited Funds"), ("eft", "CheckAddRq", "Checking")])
def test_a_refund_paid_back_is_a_refund_applied_to_its_credit_memo(version, method, request_tag, account, qbxml_schemas):
    """A refund the shop paid back: money out of the refunded payment's account applied to the refund's credit
    memo — a card refund (ARRefundCreditCardAdd, RefundAppliedToTxnAdd) or a check to the customer
    (CheckAdd, ApplyCheckToTxnAdd) — leaving it no credit; valid at qbXML 13.0 and 16.0 (both define them); the
    refund taken back deletes it (TxnDel) and the memo's credit is open again."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    sandbox, connector = make_qbd(version)
    v1 = invoice_event(7300, payments=[payment(1, "100.00", method=method)])
    doc = deliver(connector, v1)
    sync(sandbox)
    v2 = next_version(v1, refunds=[paid_back_refund(8, 1, "20.00", "1.00", payment_id=1)])
    doc = deliver(connector, v2, doc)
    sync(sandbox)
    assert connector.runtime.failures == []
    company = sandbox.company
    (memo,) = company.credit_memos.values()
    (paid_back,) = company.refunds.values()
    assert (memo["Total"] - company.credit_used(memo["TxnID"]), paid_back["RefNumber"], paid_back["TotalAmount"]) == (
        Decimal("0"), "LWP8", memo["Total"])
    assert company.accounts[paid_back["account"]]["FullName"] == account
    sent = [r for r in sandbox.requests if f"<{request_tag}" in r]
    assert len(sent) == 1 and not qbxml_errors(qbxml_schemas[version], sent[0], version)
    assert only(sandbox, v1.number).payments_applied == Decimal("100.00")
    deliver(connector, next_version(v2, refunds=[]), connector.document(v1.invoice_id))
    sync(sandbox)
    assert not company.refunds and any(f"<TxnDelType>{request_tag[:-5]}</TxnDelType>" in r for r in sandbox.requests)


def test_the_xsd_and_the_sandbox_refuse_a_bad_refund_paid_back(qbxml_schemas):
    """Bad bodies: an ARRefundCreditCardAdd without the credit memo it refunds, a RefNumber over 11 characters
    (both refused by the XSD at 13.0 and 16.0); a check from an account that is not a bank account, and more than
    the memo's remaining credit (refused by the sandbox, QuickBooks' rules)."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    event = invoice_event(7310, payments=[payment(1, "100.00")])
    back = paid_back_refund(8, 1, "20.00", "1.00", payment_id=1)
    good = mapping.refund_settlement(back, event, "80-1", "90-1", Decimal("21.00"), "Undeposited Funds", "card")
    for version, schema in qbxml_schemas.items():
        document = qbxml.document(version, [good])
        assert not qbxml_errors(schema, document, version)
        no_memo = re.sub(r"<RefundAppliedToTxnAdd>.*</RefundAppliedToTxnAdd>", "", document)
        too_long = document.replace("<RefNumber>LWP8</RefNumber>", "<RefNumber>LWP8-TOO-LONG</RefNumber>")
        for bad in (no_memo, too_long):
            assert qbxml_errors(schema, bad, version)
    sandbox, connector = make_qbd()
    deliver(connector, invoice_event(7311, refunds=[paid_back_refund(9, 2, "10.00", "0.50")]))
    sync(sandbox)
    company = sandbox.company
    (memo,) = company.credit_memos.values()
    customer = memo["customer"]
    remaining = memo["Total"] - company.credit_used(memo["TxnID"])
    for account, method, amount in (("Undeposited Funds", "cash", Decimal("1.00")), ("Checking", "cash", Decimal("99.00")),
                                     ("Checking", "card", remaining + 1)):
        rq = mapping.refund_settlement(back, event, customer, memo["TxnID"], amount, account, method)
        rs, applied = company.process(rq, None)
        assert not applied and rs.get("statusCode") != "0", (account, method, amount)


# --- issue #20 item 2: currencies ------------------------------------------------------------------------------

def _request(document):
    return etree.fromstring(document.split("?>", 2)[2].encode()).find("QBXMLMsgsRq")[0]


def _writes(sandbox, since=0):
    return [_request(d) for d in sandbox.requests[since:]
            if re.search(r"<\w+(Add|Mod)Rq |<Txn(Del|Void)Rq ", d)]


@pytest.mark.parametrize("version", ["13.0", "16.0"])
def test_invoice_in_another_currency_posts_on_the_customer_for_that_currency_at_the_lists_rate(version, qbxml_schemas):
    """Issue #20: the home currency is read from PreferencesQuery's MultiCurrencyPreferences/HomeCurrencyRef (no
    mapping.home_currency). A CAD invoice goes to the shop customer's CAD customer (added with CurrencyRef CAD: a
    QuickBooks transaction is in its customer's currency, fixed once it has transactions), its InvoiceAdd, payment,
    credit memo and refund paid back carrying the Currency List's CAD ExchangeRate in the schema's place; the
    credit memo is applied on that customer; every document valid at the version QuickBooks speaks."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    sandbox, connector = make_qbd(version)
    assert connector.mapping.home_currency is None
    deliver(connector, invoice_event(7400))  # a USD one first: the shop customer's USD customer exists
    sync(sandbox)
    before = len(sandbox.requests)
    v1 = invoice_event(7401, currency="CAD", payments=[payment(1, "100.00", method="card")])
    doc = deliver(connector, v1)
    sync(sandbox)
    v2 = next_version(v1, refunds=[paid_back_refund(8, 1, "20.00", "1.00", payment_id=1),
                                   Refund(id=9, kind="return", amount=Decimal("10.00"), tax_amount=Decimal("0"),
                                          line_id=2, created_at=v1.emitted_at)])
    deliver(connector, v2, doc)
    sync(sandbox)
    assert connector.runtime.failures == [] and connector.home_currency() == "USD"
    company = sandbox.company
    cad = only(sandbox, v1.number)
    assert (cad.currency, cad.total, cad.payments_applied) == ("CAD", v1.computed.total, Decimal("100.00"))
    assert only(sandbox, "INV-007400").currency == "USD"
    twin = next(c for c in company.customers.values() if c["Name"].endswith(" [CAD]"))
    assert twin["Name"].endswith("#77 [CAD]") and company.currencies[twin["currency"]]["CurrencyCode"] == "CAD"
    home = next(c for c in company.customers.values() if c is not twin)
    assert company.currencies[home["currency"]]["CurrencyCode"] == "USD" and len(company.customers) == 2

    writes = _writes(sandbox, before)
    tags = [w.tag for w in writes]
    assert tags.count("CustomerAddRq") == 1 and {"InvoiceAddRq", "ReceivePaymentAddRq", "CreditMemoAddRq",
                                                 "ARRefundCreditCardAddRq"} <= set(tags)
    (customer_add,) = [w for w in writes if w.tag == "CustomerAddRq"]
    assert customer_add[0][-1].tag == "CurrencyRef" and customer_add.findtext("CustomerAdd/CurrencyRef/ListID") == \
        twin["currency"]
    for write in writes:
        body = write[0]
        if write.tag != "CustomerAddRq":
            assert body.findtext("CustomerRef/ListID") == twin["ListID"], write.tag
        if write.tag in ("InvoiceAddRq", "ReceivePaymentAddRq", "CreditMemoAddRq", "ARRefundCreditCardAddRq") and \
                body.findtext("TotalAmount") != "0.00":
            assert body.findtext("ExchangeRate") == "0.7412", write.tag
            before_rate = {"ReceivePaymentAdd": "TotalAmount", "ARRefundCreditCardAdd": "Memo"}.get(body.tag, "Other")
            assert body.find("ExchangeRate").getprevious().tag == before_rate
    assert all(m["customer"] == twin["ListID"] and m["ExchangeRate"] == Decimal("0.7412")
               for m in company.credit_memos.values())
    assert any(p.get("credits") and p["customer"] == twin["ListID"] for p in company.payments.values())
    for document in sandbox.requests:
        assert not qbxml_errors(qbxml_schemas[version], document, version), document[:400]
    # A preview (every query answered "nothing"): the CAD customer added, the invoice on it, no rate yet.
    calls = connector.preview(invoice_event(7402, currency="CAD", customer=Customer(id=91, name="P")), DocumentState())
    previewed = [_request(c["body"]) for c in calls]
    assert [r.tag for r in previewed] == ["CustomerAddRq", "CustomerAddRq", "InvoiceAddRq"]
    assert previewed[1].findtext("CustomerAdd/Name") == "P #91 [CAD]" and previewed[2].find(".//ExchangeRate") is None
    assert all(not qbxml_errors(qbxml_schemas[version], c["body"], version) for c in calls)


@pytest.mark.parametrize("version", ["13.0", "16.0"])
def test_a_foreign_invoices_edit_check_refund_and_closed_period_adjustment_stay_in_its_currency(version, qbxml_schemas):
    """The CAD invoice's InvoiceMod carries the rate too; a refund paid back by check (CheckAdd: in its bank
    account's currency, so no ExchangeRate) goes to the CAD customer; a change once the books are closed posts an
    adjustment InvoiceAdd on the CAD customer at the list's rate; all valid at the version QuickBooks speaks."""
    from tests.conformance.test_conformance import refund as paid_back_refund

    sandbox, connector = make_qbd(version)
    v1 = invoice_event(7440, currency="CAD", payments=[payment(1, "100.00", method="eft")])
    doc = deliver(connector, v1)
    sync(sandbox)
    v2 = next_version(v1, lines=list(v1.lines)[:4], refunds=[paid_back_refund(8, 1, "20.00", "1.00", payment_id=1)])
    doc = deliver(connector, v2, doc)
    sync(sandbox)
    sandbox.set_closing_date(date(2026, 11, 30))
    before = len(sandbox.requests)
    deliver(connector, next_version(v2, lines=list(v2.lines) + [line(9, "fee", "Disposal", "1", "5.00")]), doc)
    sync(sandbox)
    assert connector.runtime.failures == []
    company = sandbox.company
    (twin,) = [c for c in company.customers.values() if c["Name"].endswith("[CAD]")]
    writes = _writes(sandbox)
    mods = [w[0] for w in writes if w.tag == "InvoiceModRq"]  # a stale EditSequence (the payment) is sent again
    (check,) = [w[0] for w in writes if w.tag == "CheckAddRq"]
    (adjustment,) = [w[0] for w in _writes(sandbox, before) if w.tag == "InvoiceAddRq"]
    assert mods and all((mod.findtext("ExchangeRate"), mod.findtext("CustomerRef/ListID")) == ("0.7412", twin["ListID"])
                        for mod in mods)
    assert (check.find("ExchangeRate"), check.findtext("PayeeEntityRef/ListID")) == (None, twin["ListID"])
    assert (adjustment.findtext("ExchangeRate"), adjustment.findtext("CustomerRef/ListID")) == ("0.7412", twin["ListID"])
    assert adjustment.findtext("Other").startswith("A1-")
    assert {inv["currency"] for inv in company.invoices.values()} == {twin["currency"]}
    for document in sandbox.requests:
        assert not qbxml_errors(qbxml_schemas[version], document, version), document[:400]


def test_home_currency_invoice_is_sent_as_before(qbd):
    """An invoice in the home currency: the engine's customer, no CurrencyRef, no ExchangeRate, no Currency List
    read for it (only the home currency's code, once: kept in the target's entity store; MultiCurrencyPreferences
    comes with the closing date's PreferencesQuery)."""
    sandbox, connector = qbd
    for number in (7410, 7411):
        deliver(connector, invoice_event(number, currency="USD", payments=[payment(number, "50.00")]))
        sync(sandbox)
    assert connector.runtime.failures == []
    assert not any("ExchangeRate" in d or "<CurrencyRef>" in d for d in sandbox.requests)
    assert sum("<CurrencyQueryRq" in d for d in sandbox.requests) == 1
    prefs = [d for d in sandbox.requests if "<PreferencesQueryRq" in d]
    assert len(prefs) == 2 and all("MultiCurrencyPreferences" in d and "AccountingPreferences" in d for d in prefs)
    assert only(sandbox, "INV-007410").currency == "USD" and len(sandbox.company.customers) == 1


@pytest.mark.parametrize(("multicurrency", "currency", "reason"), [
    (False, "CAD", "books in USD only"), (True, "GBP", "GBP is not active"), (True, "JPY", "JPY is not in")])
def test_currency_the_company_file_cannot_take_is_dead_lettered_before_anything_is_written(
        qbd, multicurrency, currency, reason):
    """Multicurrency off (the home currency then comes from mapping.home_currency), or a currency not active in
    the Currency List: a dead letter naming the currency before the invoice or its money is written (the shop
    customer and items posted before are all QuickBooks holds)."""
    sandbox, connector = qbd
    sandbox.set_multicurrency(multicurrency)
    if not multicurrency:
        connector.mapping = connector.mapping.model_copy(update={"home_currency": "USD"})
    deliver(connector, invoice_event(7419))
    sync(sandbox)
    before, booked = len(sandbox.requests), sandbox.booked_invoices()
    event = invoice_event(7420, currency=currency, payments=[payment(1, "10.00")])
    deliver(connector, event)
    sandbox.run_session()
    ((_, failed, error),) = connector.runtime.failures
    assert failed.invoice_id == 7420 and isinstance(error, PermanentError)
    assert currency in error.reason and reason in error.reason
    assert _writes(sandbox, before) == [] and sandbox.booked_invoices() == booked
    assert connector.queue.load(7420).failed_version == 1


@pytest.mark.parametrize("version", ["13.0", "16.0"])
def test_the_xsd_and_the_sandbox_refuse_bad_currency_fields(version, qbxml_schemas):
    """Bad bodies: an ExchangeRate that is not a number, one out of the schema's order, a CurrencyRef on an
    InvoiceAdd (a transaction takes its customer's currency: qbXML has none), refused by the XSD; a customer in a
    currency the Currency List has not active, a customer's currency changed once it has transactions, and an
    ExchangeRate of 0, refused by the sandbox (QuickBooks' rules); a good CAD invoice is held in CAD at its rate."""
    schema = qbxml_schemas[version]
    event = invoice_event(7430)
    config = TargetConfig(name="x", platform="x").mapping
    add = mapping.invoice_write(event, "80-1", "INV7430", mapping.invoice_lines(
        event, {ln.id: {"list_id": "2"} for ln in event.lines}, config), config, "Tax")
    add[0].find("Other").addnext(etree.Element("ExchangeRate"))
    add[0].find("ExchangeRate").text = "1.3456"
    good = qbxml.document(version, [add])
    assert not qbxml_errors(schema, good, version)
    not_a_number = good.replace("<ExchangeRate>1.3456</ExchangeRate>", "<ExchangeRate>high</ExchangeRate>")
    misplaced = good.replace("<ExchangeRate>1.3456</ExchangeRate>", "").replace(
        "<Memo>", "<ExchangeRate>1.3456</ExchangeRate><Memo>")
    currency_ref = good.replace("<ExchangeRate>1.3456</ExchangeRate>",
                                "<ExchangeRate>1.3456</ExchangeRate><CurrencyRef><FullName>Canadian Dollar</FullName>"
                                "</CurrencyRef>")
    for bad in (not_a_number, misplaced, currency_ref):
        assert qbxml_errors(schema, bad, version)

    sandbox, _ = make_qbd(version)
    company = sandbox.company
    code_of = {c["CurrencyCode"]: c["ListID"] for c in company.currencies.values()}

    def customer_add(name, code):
        rq = mapping.customer_write(Customer(id=1, name=name))
        qbxml.ref(rq[0], "CurrencyRef", list_id=code_of[code])
        return company.process(rq, None)[0]

    refused = customer_add("Pound Customer", "GBP")
    assert refused.get("statusCode") == "3140" and "British Pound Sterling" in refused.get("statusMessage")
    cad = customer_add("Loonie Customer", "CAD")
    assert cad.get("statusCode") == "0"
    customer = cad[0].findtext("ListID")
    assert cad[0].findtext("CurrencyRef/FullName") == "Canadian Dollar"
    item = next(i for i in company.items.values() if i["type"] == "ItemSalesTax")["ListID"]
    add = mapping.invoice_write(event, customer, "INV7430", [
        {"item": {"list_id": item}, "desc": "x", "amount": Decimal("10.00")}], config, "Shop Tax Lines")
    add[0].find("Other").addnext(etree.Element("ExchangeRate"))
    add[0].find("ExchangeRate").text = "0"
    assert company.process(add, None)[0].get("statusCode") == "3210"
    add[0].find("ExchangeRate").text = "0.75"
    rs = company.process(add, None)[0]
    assert rs.get("statusCode") == "0" and rs[0].findtext("CurrencyRef/FullName") == "Canadian Dollar"
    assert rs[0].findtext("ExchangeRate") == "0.75" and only(sandbox, event.number).currency == "CAD"
    mod = mapping.customer_write(Customer(id=1, name="Loonie Customer"), customer, cad[0].findtext("EditSequence"))
    qbxml.ref(mod[0], "CurrencyRef", list_id=code_of["EUR"])
    assert company.process(mod, None)[0].get("statusCode") == "3210"
