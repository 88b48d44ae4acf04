"""KashFlow (SOAP): every envelope the connector sends validated against the schema inside KashFlow's official
WSDL (``$LEDGERWIRE_SPECS_DIR/kashflow/KashFlow.wsdl``, read here at test time with xmlschema), the check shown to
refuse bad bodies, and the platform's own rules: ``Status`` "NO" answers classified (never an uncertain outcome),
the user name and password in every call and never in a preview, AutoAuthIP renewing the API IP list, look-ups
by the shop's number (KashFlow numbers invoices itself) before any create after an uncertain outcome, credit
notes as negative invoices applied by ``applyCreditNoteToInvoice``."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from lxml import etree

from connectors.engine_state import DocKind
from connectors.base import AuthError, PermanentError, RetryableError, UncertainOutcomeError
from connectors.kashflow import Sandbox, mapping
from connectors.kashflow.client import SOAP_NS, classify
from connectors.base import DocumentState
from connectors.testing import refund, paid_then_goodwill
from connectors.testing import GST, PST, MemoryContext, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment
from daemon.config import MappingConfig

xmlschema = pytest.importorskip("xmlschema")
WSDL = "http://schemas.xmlsoap.org/wsdl/"


@pytest.fixture(scope="module")
def schema(specs):
    """The XML schema of KashFlow's WSDL ``types``: what its .asmx service reads requests with."""
    path = specs / "kashflow" / "KashFlow.wsdl"
    if not path.exists():
        pytest.skip(f"{path} not found: set LEDGERWIRE_SPECS_DIR")
    types = etree.parse(str(path)).find(f"{{{WSDL}}}types/{{http://www.w3.org/2001/XMLSchema}}schema")
    assert types.get("targetNamespace") == "KashFlow"
    return xmlschema.XMLSchema(etree.tostring(types).decode())


def problems(schema, envelope: bytes) -> list[str]:
    root = etree.fromstring(envelope)
    assert root.tag == f"{{{SOAP_NS}}}Envelope"
    (operation,) = root.find(f"{{{SOAP_NS}}}Body")
    return [str(e.reason) for e in schema.iter_errors(etree.tostring(operation).decode())]


@pytest.fixture
def kashflow():
    sandbox = Sandbox()
    with connectors_on(sandbox, "kashflow") as build:
        connector = build()
        sent: list[httpx.Request] = []
        connector.http.client.event_hooks["request"].append(sent.append)
        yield sandbox, connector, sent


def test_every_envelope_the_connector_sends_is_valid_against_the_wsdl(kashflow, schema):
    sandbox, connector, sent = kashflow
    entities = MemoryEntities()
    v1 = invoice_event(6001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status in ("voided", "deleted")
    moved = v1.customer.model_copy(update={"phone": "555-0199", "billing_address": "9 Depot Rd"})
    deliver(connector, entities, invoice_event(6002, customer=moved))  # the customer is updated
    paid = invoice_event(6003, payments=[payment(3, "677.58")])
    doc = deliver(connector, entities, paid)
    paid_back = next_version(paid, refunds=[refund(4, 2, "20.00", "1.00").model_copy(update={"payment_id": 3})])
    doc = deliver(connector, entities, paid_back, doc)  # a negative payment on the credit note: the money out
    assert [r.amount for r in connector.find(DocKind.REFUND_PAYMENT, "LWP4")] == [Decimal("21.00")]
    deliver(connector, entities, next_version(paid_back, refunds=[]), doc)  # taken back: the payment deleted
    assert connector.check_mapping() == []
    # The look-ups a retry after an uncertain outcome makes (by our references).
    assert [r.amount for r in connector.find(DocKind.INVOICE, "INV-006002")] == [invoice_event(6002).computed.total]
    assert connector.find(DocKind.PAYMENT, "LW1") == [] and connector.find(DocKind.CREDIT_APPLICATION, "LWR2") == []
    actions = {r.headers["SOAPAction"].strip('"') for r in sent}
    for operation in ("InsertCustomer", "UpdateCustomer", "GetCustomer", "InsertInvoice_TypeDefined",
                      "UpdateInvoice_TypeDefined", "GetInvoice_TypeDefined", "GetInvoicesByDateRange", "GetInvoicePaymentsByDateRange",
                      "GetInvoicePayment", "DeleteInvoice",
                      "InsertInvoicePayment", "DeleteInvoicePayment", "applyCreditNoteToInvoice", "GetVATRates"):
        assert f"KashFlow/{operation}" in actions, f"{operation} never sent"
    found = {r.headers["SOAPAction"]: p for r in sent if (p := problems(schema, r.content))}
    assert not found
    # The API user name and password travel in every call (KashFlow has no session or token).
    assert all(b"<ns0:UserName>" in r.content and b"<ns0:Password>" in r.content for r in sent)


def test_the_wsdl_check_refuses_bad_bodies(kashflow, schema):
    _, connector, _ = kashflow
    line_args = mapping.money_line("Relay", 4000, Decimal("2"), Decimal("11.20"), Decimal("5"), Decimal("1.12"))
    good = connector.client.envelope("InsertInvoiceLine", InvoiceID=1, InvLine=connector._typed("InvoiceLine", line_args))
    assert problems(schema, good) == []

    def edited(change) -> bytes:
        root = etree.fromstring(good)
        change(root.find(f".//{{KashFlow}}InvLine"))
        return etree.tostring(root)

    def drop(name):  # a value-type element the schema requires
        return lambda node: node.remove(node.find(f"{{KashFlow}}{name}"))

    def retype(node):
        node.find("{KashFlow}Quantity").text = "two"

    def unknown(node):
        etree.SubElement(node, "{KashFlow}Discount").text = "1"

    def moved(node):  # the schema's sequence order
        node.append(node.find("{KashFlow}Quantity"))

    for change in (drop("Quantity"), drop("ChargeType"), retype, unknown, moved):
        assert problems(schema, edited(change)), change


def test_the_sandbox_refuses_an_envelope_its_wsdl_does_not_allow_and_the_client_calls_it_permanent(kashflow):
    sandbox, connector, _ = kashflow
    good = connector.client.envelope("GetInvoice_TypeDefined", InvoiceNumber=1001)
    bad = good.replace(b"<ns0:InvoiceNumber>1001<", b"<ns0:InvoiceNumber>INV-1<")
    answer = connector.http.client.post(str(connector.http.client.base_url).rstrip("/"), content=bad, headers={
        "Content-Type": "text/xml", "SOAPAction": '"KashFlow/GetInvoice_TypeDefined"'})
    assert answer.status_code == 500 and b"Server was unable to read request" in answer.content
    assert type(classify(answer)) is PermanentError


def test_a_status_no_answer_is_a_refusal_not_an_uncertain_outcome(kashflow):
    sandbox, connector, _ = kashflow
    bad = MemoryEntities()
    connector.mapping = connector.mapping.model_copy(update={"income_accounts": {"part": "9999", "labour": "9999",
                                                                                  "fee": "9999", "core_charge": "9999"}})
    connector.mapping = connector.mapping.model_copy(update={"core_account": None})
    with pytest.raises(PermanentError, match="Invalid nominal code 9999") as refused:
        deliver(connector, bad, invoice_event(6010))
    assert not isinstance(refused.value, UncertainOutcomeError)
    assert [n for n in sandbox.invoices.values()] == []


def test_a_wrong_password_is_an_auth_error(kashflow):
    sandbox, connector, _ = kashflow
    sandbox.users = {user: "changed" for user in sandbox.users}
    with pytest.raises(AuthError, match="Incorrect username or password"):
        connector.client.call("GetVATRates")


def test_a_lapsed_ip_authorisation_is_renewed_once_by_autoauthip(kashflow):
    sandbox, connector, sent = kashflow
    sandbox.forget_ips()
    assert connector.client.call("GetVATRates")["BasicDataset"]
    assert sandbox.auto_authorisations == 1
    assert [r.headers["SOAPAction"] for r in sent] == ['"KashFlow/GetVATRates"', '"KashFlow/AutoAuthIP"',
                                                       '"KashFlow/GetVATRates"']
    sandbox.forget_ips()
    connector.client.credentials.update({"auto_auth_key": None})
    with pytest.raises(AuthError, match="not authorised"):  # no AutoAuthKey given: the user must list the IP
        connector.client.call("GetVATRates")


def test_a_timed_out_insert_is_found_by_the_shops_number_before_any_new_create(kashflow):
    sandbox, connector, sent = kashflow
    entities = MemoryEntities()
    v1 = invoice_event(6020)
    sandbox.faults.fault_at(2, "timeout")  # the customer, then the invoice: applied, its answer lost
    sandbox.faults.hang_s = 3
    first = MemoryContext(connector.target.name, v1, entities)
    with pytest.raises((UncertainOutcomeError, RetryableError)):
        connector.deliver(v1, DocumentState(), first)
    assert first.checkpoints[-1].engine.intent is not None  # the create's intent was open when the answer was lost
    doc = deliver(connector, entities, v1, first.checkpoints[-1], attempt=2)
    booked = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert len(booked) == 1 and doc.external_id == booked[0].external_id
    assert sum(1 for r in sent if r.headers["SOAPAction"] == '"KashFlow/InsertInvoice_TypeDefined"') == 1


def test_kashflow_numbers_the_invoice_and_keeps_the_shops_number_as_reference(kashflow):
    sandbox, connector, _ = kashflow
    doc = deliver(connector, MemoryEntities(), invoice_event(6030))
    held = sandbox.invoices[int(doc.external_id)]
    assert held["InvoiceNumber"] == 1001 and held["CustomerReference"] == "INV-006030"
    assert held["NetAmount"] + held["VATAmount"] == invoice_event(6030).computed.total


def test_a_refund_is_a_negative_invoice_applied_to_the_invoice(kashflow):
    sandbox, connector, _ = kashflow
    v1 = invoice_event(6040, refunds=[refund(3, 2, "289.95", "14.50")])
    doc = deliver(connector, MemoryEntities(), v1)
    (credit,) = sandbox.credit_notes()
    assert credit["CustomerReference"] == "LWR3" and credit["NetAmount"] + credit["VATAmount"] == Decimal("-304.45")
    invoice = sandbox.invoices[int(doc.external_id)]
    assert invoice["AmountPaid"] == Decimal("304.45") and credit["AmountPaid"] == Decimal("-304.45")
    assert [b.payment_count for b in sandbox.booked_invoices()] == [0]  # a credit is not a receipt


def test_a_refund_paid_back_is_a_negative_payment_on_its_credit_note(kashflow, schema):
    """KashFlow settles a credit note by a negative payment on it ("Refunds & Credit Notes"): out of the refunded
    payment's bank account, the credit note left with nothing; the sandbox refuses a positive one, or more than is
    left; the envelope is the WSDL's ``InsertInvoicePayment``. A goodwill refund's VAT is at the main line's rate."""
    sandbox, connector, sent = kashflow
    v1, goodwill, doc = paid_then_goodwill(connector, 6050)
    (credit,) = sandbox.credit_notes()
    assert (credit["NetAmount"], credit["VATAmount"], credit["AmountPaid"]) == (
        Decimal("-40.00"), Decimal("-2.00"), Decimal("-42.00"))
    assert credit["Lines"]["InvoiceLine"][0]["VatRate"] == Decimal(connector.mapping.tax_codes["GST"])
    (out,) = [p for p in sandbox.payments.values() if p["PayInvoice"] == credit["InvoiceNumber"]]
    assert (out["PayAmount"], out["PayNote"], out["PayAccount"]) == (
        Decimal("-42.00"), "LWP9", int(connector.mapping.payment_accounts["card"]))
    assert connector.read_invoice(doc.external_id).balance == 0  # the invoice keeps its payment
    (envelope,) = [r.content for r in sent if r.headers["SOAPAction"] == '"KashFlow/InsertInvoicePayment"'
                   and b"LWP9" in r.content]
    assert problems(schema, envelope) == []
    assert problems(schema, envelope.replace(b"<ns0:PayAmount>-42.00<", b"<ns0:PayAmount>minus 42<"))
    again = mapping.refund_payment_args(v1, goodwill, credit["InvoiceNumber"], Decimal("1.00"), "LWP9",
                                        connector.mapping, connector.settings.pay_method)
    with pytest.raises(PermanentError, match="no more than the credit left"):
        connector.client.call("InsertInvoicePayment", write=True, InvoicePayment=connector._typed("Payment", again))
    connector.client.call("DeleteInvoicePayment", write=True, InvoicePaymentNumber=out["PayID"])
    assert sandbox.credit_notes()[0]["AmountPaid"] == 0
    with pytest.raises(PermanentError, match="negative payment"):  # money in is no refund of a credit note
        connector.client.call("InsertInvoicePayment", write=True, InvoicePayment=connector._typed(
            "Payment", again | {"PayAmount": Decimal("1.00")}))


def test_a_line_with_two_tax_components_uses_the_combined_rate_and_the_shops_amounts():
    mapped = MappingConfig(income_accounts={"part": "4000"}, tax_codes={"GST+PST": "12"})
    relay = line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))
    body = mapping.invoice_line(relay, invoice_event(1, lines=[relay]), mapped)
    assert (body["VatRate"], body["VatAmount"], body["Rate"], body["Quantity"], body["ChargeType"]) == (
        Decimal("12"), sum(t.amount for t in relay.taxes), Decimal("11.20"), Decimal("2"), 4000)
    with pytest.raises(PermanentError, match="no KashFlow VAT rate"):
        mapping.invoice_line(line(7, "part", "Fuse", "1", "2.00"), invoice_event(1), mapped)


def test_a_preview_records_the_calls_without_the_password(kashflow):
    sandbox, connector, _ = kashflow
    planned = connector.preview(invoice_event(6050, payments=[payment(1, "50.00")]), DocumentState(), MemoryEntities())
    assert [p["path"] for p in planned] == ["InsertCustomer", "InsertInvoice_TypeDefined", "InsertInvoicePayment"]
    password = connector.client.credentials.get()["password"]
    assert password not in repr(planned) and not sandbox.invoices


def test_the_mapping_check_names_a_vat_rate_the_account_lacks(kashflow):
    _, connector, _ = kashflow
    connector.mapping = connector.mapping.model_copy(update={"tax_codes": {"GST": "5", "HST": "13"}})
    assert connector.check_mapping() == ["mapping.tax_codes['HST'] = 13: no such VAT rate in this KashFlow account"]


def test_a_soap_fault_500_is_transient_and_a_429_rate_limited():
    fault = (f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body><soap:Fault><faultcode>soap:Server</faultcode>'
             "<faultstring>Server was unable to process request. ---&gt; Timeout expired.</faultstring>"
             "</soap:Fault></soap:Body></soap:Envelope>").encode()
    assert type(classify(httpx.Response(500, content=fault))) is RetryableError
    limited = classify(httpx.Response(429, headers={"Retry-After": "3"}, content=b"Too many requests"))
    assert limited.retry_after == 3


# --- issue #20 item 2: currencies ------------------------------------------------------------------------------

def _writes(sandbox, since=0, operation=None):
    return [args for op, args in sandbox.requests[since:] if operation in (None, op)]


def _invoice_bodies(sent):
    """Each Invoice_TypeDefined sent (inserts and updates): {element: text} of its header."""
    out = []
    for r in sent:
        if r.headers["SOAPAction"].strip('"') in ("KashFlow/InsertInvoice_TypeDefined", "KashFlow/UpdateInvoice_TypeDefined"):
            (body,) = [n for n in etree.fromstring(r.content).iter() if n.tag in ("{KashFlow}Inv_TD", "{KashFlow}InvTD")]
            out.append({etree.QName(n).localname: n.text for n in body if etree.QName(n).localname != "Lines"})
    return out


def test_invoice_in_another_currency_carries_its_code_and_kashflows_rate(kashflow, schema):
    """Issue #20: the account's own currency is GetCurrencies' default (no mapping.home_currency); a CAD invoice,
    its update and its credit note carry CurrencyCode CAD and KashFlow's ExchangeRate for CAD (the WSDL's
    Invoice_TypeDefined fields); its payment and the refund paid back go on the document (a Payment has no currency
    of its own); the customer stays the shop customer's one KashFlow customer; every envelope valid."""
    sandbox, connector, sent = kashflow
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(6100))  # USD first
    assert connector.mapping.home_currency is None and connector.home_currency() == "USD"
    v1 = invoice_event(6101, currency="CAD", payments=[payment(1, "100.00")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4], refunds=[
        refund(2, 2, "20.00", "1.00"), refund(3, 3, "10.00", "0.50").model_copy(update={"payment_id": 1})])
    deliver(connector, entities, v2, doc)
    bodies = _invoice_bodies(sent)
    usd, cad = bodies[0], bodies[1:]
    assert "CurrencyCode" not in usd and usd["ExchangeRate"] == "0"  # as before: the account's own currency
    assert len(cad) == 4 and all((b["CurrencyCode"], b["ExchangeRate"]) == ("CAD", "1.3642") for b in cad)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert (booked.currency, booked.payments_applied) == ("CAD", Decimal("100.00"))
    assert [b.currency for b in sandbox.booked_invoices() if b.number == "INV-006100"] == ["USD"]
    assert {n["CurrencyCode"] for n in sandbox.credit_notes()} == {"CAD"} and len(sandbox.credit_notes()) == 2
    assert len(sandbox.customers) == 1
    assert any(p["PayAmount"] < 0 and p["PayNote"] == "LWP3" for p in sandbox.payments.values())
    found = {r.headers["SOAPAction"]: p for r in sent if (p := problems(schema, r.content))}
    assert not found


def test_a_currency_kashflow_cannot_take_is_dead_lettered_before_the_invoice_is_written(kashflow):
    """A currency not set up in Settings > Currencies, or one without a rate: a PermanentError naming it, before
    anything of the invoice is written (the shop customer, already there, is all KashFlow holds)."""
    sandbox, connector, _ = kashflow
    entities = MemoryEntities()
    deliver(connector, entities, invoice_event(6110))
    before = len(sandbox.requests)
    with pytest.raises(PermanentError, match="GBP.*not set up"):
        deliver(connector, entities, invoice_event(6111, currency="GBP", payments=[payment(1, "10.00")]))
    sandbox.set_currencies({"USD": Decimal("1"), "CAD": Decimal("0")})
    with pytest.raises(PermanentError, match="no exchange rate for CAD"):
        deliver(connector, entities, invoice_event(6112, currency="CAD"))
    assert _writes(sandbox, before) == [] and len(sandbox.invoices) == 1


def test_the_wsdl_and_the_sandbox_refuse_bad_currency_fields(kashflow, schema):
    """Bad bodies: an ExchangeRate that is not a decimal, a currency element the WSDL does not define (refused by
    the WSDL's schema); a currency not set up, a foreign invoice without a rate, a credit note applied to an
    invoice in another currency (refused by the sandbox, KashFlow's Status "NO")."""
    sandbox, connector, _ = kashflow
    deliver(connector, MemoryEntities(), invoice_event(6120))
    customer = next(iter(sandbox.customers))
    base = mapping.invoice_args(invoice_event(6121), str(customer), connector.mapping)
    good = connector.client.envelope("InsertInvoice_TypeDefined", Inv_TD=connector._typed(
        "Invoice_TypeDefined", base | {"CurrencyCode": "CAD", "ExchangeRate": Decimal("1.3642")}))
    assert problems(schema, good) == []
    assert problems(schema, good.replace(b"<ns0:ExchangeRate>1.3642<", b"<ns0:ExchangeRate>high<"))
    assert problems(schema, good.replace(b"<ns0:CurrencyCode>CAD</ns0:CurrencyCode>",
                                         b"<ns0:Currency>CAD</ns0:Currency>"))

    def insert(**fields):
        return connector.client.call("InsertInvoice_TypeDefined", write=True,
                                     Inv_TD=connector._typed("Invoice_TypeDefined", base | fields))

    with pytest.raises(PermanentError, match="GBP is not set up"):
        insert(CurrencyCode="GBP", ExchangeRate=Decimal("0.79"))
    with pytest.raises(PermanentError, match="exchange rate is required"):
        insert(CurrencyCode="CAD")
    cad = insert(CurrencyCode="CAD", ExchangeRate=Decimal("1.3642"))
    assert sandbox.invoices[cad]["CurrencyCode"] == "CAD"
    credit = connector.client.call("InsertInvoice_TypeDefined", write=True, Inv_TD=connector._typed(
        "Invoice_TypeDefined", mapping.credit_note_args(invoice_event(6121), refund(5, 2, "10.00", "0.50"),
                                                        str(customer), connector.mapping)))
    with pytest.raises(PermanentError, match="not in the invoice's currency"):
        connector.client.call("applyCreditNoteToInvoice", write=True, InvoiceID=sandbox.invoices[cad]["InvoiceDBID"],
                              CreditNoteID=sandbox.invoices[credit]["InvoiceDBID"])
