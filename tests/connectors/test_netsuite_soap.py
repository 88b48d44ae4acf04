"""NetSuite SuiteTalk SOAP (2023_2): every envelope the connector sends validated against NetSuite's official WSDL
and XSDs (``$LEDGERWIRE_SPECS_DIR/netsuite/suitetalk-soap/``, read here at test time with xmlschema), the check
shown to refuse bad bodies, the sandbox's answers valid against the same XSDs, and the platform's own rules: the
token passport (HMAC-SHA256, nonce used once, timestamp window), the account's concurrency limit
(``WS_REQUEST_BLOCKED``), statusDetail codes classified, upsert by external id, the shop's tax per line kept."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from datetime import date
from decimal import Decimal

import httpx
import pytest
from lxml import etree

from connectors.base import AuthError, ClosedPeriodError, DocumentState, PermanentError, RateLimitedError
from connectors.engine_state import DocKind
from connectors.netsuite_soap import Sandbox
from connectors.netsuite_soap.client import SOAP_NS, classify, token_passport
from connectors.sandbox_kit import Faults
from connectors.testing import dead_lettered_before_any_write, refund
from connectors.testing import (GST, PST, MemoryContext, MemoryEntities, connectors_on, deliver, invoice_event, line,
                                next_version, payment, tax_inclusive_event)
from daemon.canonical import Refund

xmlschema = pytest.importorskip("xmlschema")
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


@pytest.fixture(scope="module")
def schema(specs):
    """The schema NetSuite's WSDL ``types`` import (46 XSDs): what SuiteTalk reads requests with."""
    path = specs / "netsuite" / "suitetalk-soap" / "netsuite.wsdl"
    if not path.exists():
        pytest.skip(f"{path} not found: set LEDGERWIRE_SPECS_DIR")
    types = etree.parse(str(path)).find(f"{{{WSDL_NS}}}types/{{http://www.w3.org/2001/XMLSchema}}schema")
    return xmlschema.XMLSchema(etree.tostring(types).decode(), base_url=str(path.parent) + "/")


def problems(schema, envelope: bytes) -> list[str]:
    """Why an envelope's headers or body element break the XSDs ([] when valid)."""
    root = etree.fromstring(envelope)
    assert root.tag == f"{{{SOAP_NS}}}Envelope"
    parts = [*root.findall(f"{{{SOAP_NS}}}Header/*"), *root.find(f"{{{SOAP_NS}}}Body")]
    return [str(e.reason or e) for part in parts for e in schema.iter_errors(etree.tostring(part).decode())]


@pytest.fixture
def netsuite():
    sandbox = Sandbox(concurrency_limit=5)
    with connectors_on(sandbox, "netsuite") as build:
        connector = build()
        sent: list[httpx.Request] = []
        answers: list[httpx.Response] = []
        connector.http.client.event_hooks["request"].append(sent.append)
        connector.http.client.event_hooks["response"].append(lambda r: (r.read(), answers.append(r)))
        yield sandbox, connector, sent, answers


def test_every_envelope_sent_and_answered_is_valid_against_the_xsds(netsuite, schema):
    sandbox, connector, sent, answers = netsuite
    entities = MemoryEntities()
    paid_back = refund(3, 1, "10.00", "0.50").model_copy(update={"payment_id": 1})  # a CustomerRefund
    v1 = invoice_event(7001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50"), paid_back])
    doc = deliver(connector, entities, v1)
    assert connector.find(DocKind.REFUND_PAYMENT, "LWP3") != []
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[], refunds=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status in ("voided", "deleted")
    moved = v1.customer.model_copy(update={"phone": "555-0199"})
    deliver(connector, entities, invoice_event(7002, customer=moved))  # the customer is updated
    sandbox.lock_periods(date(2026, 11, 30))
    closed = invoice_event(7003)
    deliver(connector, entities, closed)  # re-dated into December, A/R locked through November
    assert connector.find(DocKind.CREDIT_APPLICATION, "LWR2") == []
    assert connector.find(DocKind.REFUND_PAYMENT, "LWP3") == []  # taken back with the refund: deleted
    assert any(b"CustomerRefund" in r.content for r in sent if r.headers["SOAPAction"] == "upsert")
    operations = {r.headers["SOAPAction"] for r in sent}
    assert operations == {"upsert", "update", "delete", "get", "search", "getAll"}
    for request in sent:
        assert problems(schema, request.content) == [], request.content[:400]
    for response in answers:
        body = etree.fromstring(response.content).find(f"{{{SOAP_NS}}}Body")
        assert [str(e.reason) for e in schema.iter_errors(etree.tostring(body[0]).decode())] == []


@pytest.mark.parametrize("spoil", ["unknown element", "wrong type", "no signature"])
def test_the_xsd_check_refuses_bad_bodies(netsuite, schema, spoil):
    sandbox, connector, sent, _ = netsuite
    deliver(connector, MemoryEntities(), invoice_event(7010))
    upsert = next(r.content for r in sent if r.headers["SOAPAction"] == "upsert" and b"Invoice" in r.content)
    assert problems(schema, upsert) == []
    root = etree.fromstring(upsert)
    record = root.find(f"{{{SOAP_NS}}}Body")[0][0]
    if spoil == "unknown element":
        etree.SubElement(record, f"{{{record[0].nsmap.get(record[0].prefix) or ''}}}discountCode").text = "X"
    elif spoil == "wrong type":
        amount = next(e for e in record.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "amount")
        amount.text = "twelve dollars"
    else:
        signature = next(e for e in root.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "signature")
        signature.getparent().remove(signature)
    bad = etree.tostring(root)
    assert problems(schema, bad) != []
    # The sandbox refuses it too, as SuiteTalk does: a SAXException fault, permanent (sending it again cannot help).
    answer = httpx.post(str(connector.http.client.base_url).rstrip("/"), content=bad, headers={"SOAPAction": "upsert"})
    assert answer.status_code == 500 and b"SAXException" in answer.content
    assert type(classify(answer)) is PermanentError


def test_token_passport_signature_is_hmac_sha256_of_the_documented_base_string():
    cred = {"consumer_key": "ck", "consumer_secret": "cs", "token_id": "tk", "token_secret": "ts"}
    passport = token_passport(cred, "1234567_SB1", nonce="n0nce42", timestamp=1700000000)
    expected = base64.b64encode(hmac.new(b"cs&ts", b"1234567_SB1&ck&tk&n0nce42&1700000000", hashlib.sha256).digest())
    assert passport["signature"] == {"_value_1": expected.decode(), "algorithm": "HMAC-SHA256"}
    assert (passport["account"], passport["consumerKey"], passport["token"]) == ("1234567_SB1", "ck", "tk")


def test_a_replayed_nonce_a_stale_timestamp_and_revoked_tokens_are_refused(netsuite):
    sandbox, connector, sent, _ = netsuite
    deliver(connector, MemoryEntities(), invoice_event(7020))
    replay = httpx.post(str(connector.http.client.base_url).rstrip("/"), content=sent[0].content,
                        headers={"SOAPAction": sent[0].headers["SOAPAction"]})
    assert replay.status_code == 500 and b"INVALID_LOGIN_ATTEMPT" in replay.content
    assert isinstance(classify(replay), AuthError)
    connector.client.clock = lambda: time.time() - 3600  # an hour-old timestamp
    with pytest.raises(AuthError):
        connector.read_invoice("1")
    connector.client.clock = time.time
    sandbox.revoke_tokens()
    with pytest.raises(AuthError):
        connector.deliver(invoice_event(7021), DocumentState(), MemoryContext("netsuite", invoice_event(7021)))


def test_the_account_concurrency_limit_answers_ws_request_blocked():
    sandbox = Sandbox(faults=Faults(slow_s=1.0), concurrency_limit=1)  # slow answers: a request holds the slot
    with connectors_on(sandbox, "netsuite", request_timeout_s=3, paced=False, concurrency=4) as build:
        connector = build()
        held = threading.Thread(target=connector.read_invoice, args=("1001",))
        held.start()
        deadline = time.monotonic() + 5
        while sandbox.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sandbox.in_flight == 1
        with pytest.raises(RateLimitedError) as raised:
            connector.read_invoice("1002")
        held.join()
    assert raised.value.platform_code == "WS_REQUEST_BLOCKED" and sandbox.rate_limit_breaches() == 1


def test_status_detail_codes_are_classified(netsuite):
    sandbox, connector, _, _ = netsuite
    doc = deliver(connector, MemoryEntities(), invoice_event(7040, payments=[payment(4, "50.00")]))
    with pytest.raises(PermanentError) as raised:  # an item the account does not have
        deliver(build_unknown_item(connector), MemoryEntities(), invoice_event(7041))
    assert raised.value.platform_code == "INVALID_KEY_OR_REF"
    with pytest.raises(PermanentError) as raised:  # deleting an invoice a payment is applied to
        connector._delete("invoice", doc.external_id)
    assert raised.value.platform_code == "CANT_DELETE_TRANS"
    sandbox.lock_periods(date(2026, 11, 30))
    with pytest.raises(ClosedPeriodError) as raised:
        connector.update_invoice(invoice_event(7040), _posting(doc), connector_ref(doc))
    assert raised.value.platform_code == "TRAN_PERIOD_CLOSED"
    assert connector.books_closed_through() == date(2026, 11, 30)
    answer = httpx.Response(429, headers={"Retry-After": "1"}, content=sandbox._fault(
        "Server.userException", "blocked", "exceededConcurrentRequestLimitFault", "WS_REQUEST_BLOCKED").body)
    assert isinstance(classify(answer), RateLimitedError) and classify(answer).retry_after == 1


def build_unknown_item(connector):
    connector.mapping = connector.mapping.model_copy(update={"items": {**connector.mapping.items, "labour": "999"}})
    return connector


def _paid_back(sandbox, connector, sent):
    """An invoice paid by card and a refund the shop paid back: (the event, the document, the CustomerRefund upsert)."""
    paid_back = refund(8, 1, "20.00", "1.00").model_copy(update={"payment_id": 1})
    v1 = invoice_event(7015, payments=[payment(1, "677.58")])
    entities = MemoryEntities()
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, refunds=[paid_back])
    doc = deliver(connector, entities, v2, doc)
    upsert = next(r.content for r in sent if r.headers["SOAPAction"] == "upsert" and b"CustomerRefund" in r.content)
    return v2, doc, entities, upsert


@pytest.mark.parametrize("spoil", ["unknown element", "doc not a long"])
def test_the_xsd_check_refuses_a_bad_customer_refund(netsuite, schema, spoil):
    sandbox, connector, sent, _ = netsuite
    _, _, _, upsert = _paid_back(sandbox, connector, sent)
    assert problems(schema, upsert) == []
    root = etree.fromstring(upsert)
    record = root.find(f"{{{SOAP_NS}}}Body")[0][0]
    if spoil == "unknown element":  # a payment's field: a customer refund's total is what it applies
        etree.SubElement(record, f"{{{record[0].nsmap.get(record[0].prefix) or ''}}}payment").text = "21.00"
    else:
        doc = next(e for e in record.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "doc")
        doc.text = "LWR8"
    bad = etree.tostring(root)
    assert problems(schema, bad) != []
    answer = httpx.post(str(connector.http.client.base_url).rstrip("/"), content=bad, headers={"SOAPAction": "upsert"})
    assert answer.status_code == 500 and b"SAXException" in answer.content


def test_a_paid_back_refund_is_a_customer_refund_applied_to_its_credit_memo(netsuite):
    """Money out from the card's account, the credit memo left with nothing to apply, the invoice untouched; the
    sandbox refuses a refund of more than is left, of another customer's credit, of an invoice, without an account;
    the credit memo cannot be deleted while refunded; the refund taken back deletes the CustomerRefund."""
    sandbox, connector, sent, _ = netsuite
    v2, doc, entities, _ = _paid_back(sandbox, connector, sent)
    (memo_id, memo), = [(i, t) for i, t in sandbox.transactions.items() if t["type"] == "creditMemo"]
    (back_id, back), = [(i, t) for i, t in sandbox.transactions.items() if t["type"] == "customerRefund"]
    assert (memo["total"], sandbox.credit_left(memo_id), back["total"], back["account"]["internalId"]) == (
        Decimal("21.00"), Decimal("0.00"), Decimal("21.00"), "3")  # card: the card clearing account
    assert connector.read_invoice(doc.external_id).balance == 0
    customer = connector.client.type("core", "RecordRef")
    record = connector.client.type("customers", "CustomerRefund")

    def refund_of(doc_id: str, **fields):
        body = {"externalId": "LWP-bad", "tranDate": "2026-11-20T00:00:00", "customer": customer(internalId=doc.customer_id),
                "account": customer(internalId="1"), "applyList": {"apply": [{"doc": int(doc_id), "apply": True,
                                                                               "amount": "0.01"}]}} | fields
        return record(**{k: v for k, v in body.items() if v is not None})

    other = connector.create_customer(v2.customer.model_copy(update={"id": 999, "name": "Someone else"}), "r").external_id
    for bad, code in [(refund_of(memo_id), "USER_ERROR"),  # nothing left on the memo
                      (refund_of(memo_id, customer=customer(internalId=other)), "USER_ERROR"),
                      (refund_of(doc.external_id), "INVALID_KEY_OR_REF"),  # an invoice is not a credit
                      (refund_of(memo_id, account=None), "USER_ERROR"),
                      (refund_of(memo_id, account=customer(internalId="99")), "INVALID_KEY_OR_REF")]:
        with pytest.raises(PermanentError) as refused:
            connector.client.write("upsert", record=bad)
        assert refused.value.platform_code == code
    with pytest.raises(PermanentError) as refused:
        connector.client.write("delete", baseRef=customer(internalId=memo_id, type="creditMemo"))
    assert refused.value.platform_code == "CANT_DELETE_TRANS"
    assert [r.external_id for r in connector.find(DocKind.REFUND_PAYMENT, "LWP8")] == [back_id]
    deliver(connector, entities, next_version(v2, refunds=[]), doc)
    assert connector.find(DocKind.REFUND_PAYMENT, "LWP8") == [] and sandbox.transactions[back_id]["deleted"]


def _posting(doc):
    from connectors.engine import Posting

    return Posting(request_id="r", customer_id=doc.customer_id)


def connector_ref(doc):
    from connectors.base import ExternalRef

    return ExternalRef(external_id=doc.external_id, token=doc.token)


def test_upsert_by_external_id_makes_a_retried_create_one_record(netsuite):
    sandbox, connector, _, _ = netsuite
    event = invoice_event(7050)
    doc = deliver(connector, MemoryEntities(), event)
    again = connector.create_invoice(event, _posting(doc))  # the create sent a second time
    assert again.external_id == doc.external_id and len([b for b in sandbox.booked_invoices() if b.number == event.number]) == 1
    (found,) = connector.find(DocKind.INVOICE, connector.reference(DocKind.INVOICE, event))
    assert found.external_id == doc.external_id and found.amount == event.computed.total


def test_the_shops_tax_per_line_is_kept_where_netsuite_would_round_otherwise(netsuite):
    sandbox, connector, _, _ = netsuite
    event = tax_inclusive_event(7060)  # 0.10 with 0.01 GST + 0.01 PST: 12 % of 0.08 would be 0.01
    doc = deliver(connector, MemoryEntities(), event)
    held = connector.read_invoice(doc.external_id)
    assert (held.total, held.tax_total) == (event.computed.total, event.computed.tax_total)
    upsert = next(args for op, args in sandbox.requests if op == "upsert" and args["record"]["_type"] == "Invoice")
    lines = upsert["record"]["itemList"]["item"]
    assert [ln["tax1Amt"] for ln in lines] == ["5.00", "1.07", "0.02"] and "rate" not in lines[0]


def test_search_answers_body_fields_only_unless_asked(netsuite):
    sandbox, connector, _, _ = netsuite
    event = invoice_event(7070)
    deliver(connector, MemoryEntities(), event)
    internal_id = next(b.external_id for b in sandbox.booked_invoices() if b.number == event.number)
    with sandbox._lock:
        body_only = sandbox._out(internal_id, sandbox.transactions[internal_id], body_only=True)
        full = sandbox._out(internal_id, sandbox.transactions[internal_id], body_only=False)
    assert body_only.itemList is None and len(full.itemList.item) == 5


def test_a_partly_taxed_refund_is_split_and_carries_the_shops_tax(netsuite):
    """A refund whose tax is not its whole amount's (10.00 with 0.30 GST): the shared mapping splits it into a
    taxed and an untaxed line; the taxed one carries the shop's tax, so the credit memo is the refund's total."""
    sandbox, connector, _, _ = netsuite
    event = invoice_event(7080, refunds=[refund(8, 1, "10.00", "0.30")])
    deliver(connector, MemoryEntities(), event)
    (memo,) = [m for m in sandbox.credit_memos() if m["externalId"] == "LWR8"]
    assert [(ln["amount"], ln["tax"]) for ln in memo["lines"]] == [(Decimal("6.00"), Decimal("0.30")),
                                                                    (Decimal("4.00"), Decimal("0"))]
    assert memo["total"] == Decimal("10.30") and sum(memo["applyList"].values()) == Decimal("10.30")


# -- currencies (issue #20) --

def _upserts(sandbox: Sandbox, record_type: str) -> list[dict]:
    return [args["record"] for op, args in sandbox.requests if op == "upsert" and args["record"]["_type"] == record_type]


def test_an_invoice_in_another_currency_goes_in_it_on_its_customer_which_is_made_to_take_it(netsuite, schema):
    """The currency RecordRef by internal id (getAll of the currency records: the one whose ``symbol`` is the ISO
    code), no exchangeRate (NetSuite applies its own); CAD added to the customer's currencyList (replaceAll
    false); the payment and the credit memo in CAD too; every envelope valid against the XSDs."""
    sandbox, connector, sent, answers = netsuite
    entities = MemoryEntities()
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"  # the base currency
    deliver(connector, entities, invoice_event(7080))
    assert _upserts(sandbox, "Invoice")[-1]["currency"]["internalId"] == "1"
    event = invoice_event(7081, currency="CAD", payments=[payment(1, "50.00")], refunds=[refund(1, 2, "10.00", "0.50")])
    deliver(connector, entities, event)
    customer_updates = [args["record"] for op, args in sandbox.requests if op == "update" and args["record"]["_type"] == "Customer"]
    assert len(customer_updates) == 1 and customer_updates[0]["currencyList"]["replaceAll"] == "false"
    assert customer_updates[0]["currencyList"]["currency"]["currency"]["internalId"] == "3"
    for record_type in ("Invoice", "CustomerPayment", "CreditMemo"):
        record = _upserts(sandbox, record_type)[-1]
        assert record["currency"]["internalId"] == "3" and "exchangeRate" not in record, record_type
    invoice_id = next(b.external_id for b in sandbox.booked_invoices() if b.number == event.number)
    assert money_of(connector.read_invoice(invoice_id).raw["exchangeRate"]) == Decimal("0.73")  # NetSuite's rate
    assert [b.currency for b in sandbox.booked_invoices() if b.number == event.number] == ["CAD"]
    customer = next(iter(sandbox.customers.values()))
    assert customer["currency"] == {"internalId": "1"} and customer["currencyList"] == ["3"]
    assert "getAll" in {r.headers["SOAPAction"] for r in sent}
    for request in sent:
        assert problems(schema, request.content) == [], request.content[:400]
    for response in answers:
        body = etree.fromstring(response.content).find(f"{{{SOAP_NS}}}Body")
        assert [str(e.reason) for e in schema.iter_errors(etree.tostring(body[0]).decode())] == []


def money_of(text) -> Decimal:
    return Decimal(str(text))


def test_an_invoice_in_a_currency_netsuite_does_not_have_is_dead_lettered_before_any_write(netsuite):
    sandbox, connector, _, _ = netsuite
    dead_lettered_before_any_write(connector, MemoryEntities(), lambda: sandbox.requests, invoice_event(7082),
                                   invoice_event(7083, currency="EUR"), "EUR.*not set up in NetSuite")


def test_the_home_currency_of_a_oneworld_target_is_its_subsidiarys(netsuite):
    sandbox, connector, _, _ = netsuite
    connector.currencies.settings = connector.settings.model_copy(update={"subsidiary_id": "1"})
    assert connector.currencies.home() == "USD"
    connector.mapping = connector.mapping.model_copy(update={"home_currency": "CAD"})
    assert connector.home_currency() == "CAD"  # the target's mapping overrides what NetSuite says


def test_the_sandbox_refuses_a_currency_the_customer_does_not_take_and_one_the_account_lacks(netsuite):
    sandbox, connector, _, _ = netsuite
    deliver(connector, MemoryEntities(), invoice_event(7084))
    customer_id = next(iter(sandbox.customers))
    from connectors.netsuite_common import mapping as records

    cad = records.invoice_record(invoice_event(7085, currency="CAD"), customer_id,
                                 connector.currencies.settings_for("CAD"), connector.mapping)
    with pytest.raises(PermanentError, match="currency reference key 3") as refused:
        connector._upsert(cad, line_taxes=[Decimal("0")] * len(cad.item))
    assert refused.value.platform_code == "INVALID_KEY_OR_REF"
    with pytest.raises(PermanentError) as refused:
        connector.add_customer_currency(customer_id, "99")
    assert refused.value.platform_code == "INVALID_KEY_OR_REF"
