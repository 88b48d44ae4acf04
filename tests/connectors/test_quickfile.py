"""QuickFile (JSON API v1.2): every request the connector sends checked against the field table and conventions
in ``$LEDGERWIRE_SPECS_DIR/quickfile/SOURCE.md`` (read at test time), each check proven by a bad body; the
sandbox's signature, anti-replay, daily limit and validation; the platform's mapping rules."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import DocumentState, PermanentError, RateLimitedError, ReauthorizationRequired, RetryableError
from connectors.quickfile import Sandbox
from connectors.quickfile.client import path
from connectors.quickfile.errors import classify
from connectors.testing import MemoryContext, MemoryEntities, connectors_on, invoice_event, next_version, payment
from daemon.canonical import Refund

SPECS = Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs")) / "quickfile" / "SOURCE.md"
# Fields SOURCE.md's table does not name, each with the official page that does.
METHODS_NAMED_ELSEWHERE = {"Payment_Delete": "api.quickfile.co.uk/method/Payment (research notes [F7])",
                           "Payment_Search": "api.quickfile.co.uk/d/v1_2/Payment_Search"}
NAMED_ELSEWHERE = {"CreditNotes": "community.quickfile.co.uk/t/creating-a-credit-note-using-the-api/23204"}


class SourceSpec:
    """What SOURCE.md states, read from the file: the Invoice_Create field table, header, methods, search rules."""

    def __init__(self, text: str) -> None:
        rows = [[cell.strip() for cell in row.strip().strip("|").split("|")]
                for row in text.splitlines() if row.startswith("| ") and row.count("|") == 4]
        self.fields: dict[str, tuple[str, str]] = {}
        for names, kind, notes in rows:
            if names == "field" or set(names) <= {"-", " "}:
                continue
            for name in re.findall(r"\b([A-Z][A-Za-z0-9]+)\b", names.split("{")[0]):
                self.fields[name] = (kind.strip(), notes.strip() + " " + names)
        self.line_fields = set(re.findall(r"ItemLine: ([^;]+);", text)[0].replace("{", ",").replace("}", "")
                               .replace(" ", "").split(","))
        # "Client_Create/Update/Search" names three methods.
        self.methods = {f"{area}_{name}" for area, names in re.findall(r"\b([A-Z][a-z]+)_([A-Z][A-Za-z/]+)", text)
                        for name in names.split("/") if name} | set(METHODS_NAMED_ELSEWHERE)
        self.header = re.search(r"Header: MessageType \"(\w+)\"", text).group(1)
        low, high = re.search(r"ReturnCount (\d+)[–-](\d+)", text).groups()
        self.return_count = (int(low), int(high))
        self.directions = set(re.search(r"OrderDirection (\w+)/(\w+)", text).groups())

    def lengths(self, name: str) -> tuple[int, int] | None:
        kind, notes = self.fields[name]
        ranged = re.search(r"(\d+)[–-](\d+)", kind)
        fixed = re.search(r"\((\d+)\)", kind + " " + notes)
        return (int(ranged[1]), int(ranged[2])) if ranged else (int(fixed[1]), int(fixed[1])) if fixed else None

    def check(self, url_path: str, envelope: dict[str, Any], api_key: str) -> None:
        match = re.fullmatch(r"/1_2/([a-z]+)/([a-z]+)", url_path)
        assert match, f"endpoint {url_path} is not /1_2/<area>/<method>"
        method = next((m for m in self.methods if m.lower() == f"{match[1]}_{match[2]}"), None)
        assert method, f"{url_path}: no such method in the docs index"
        assert set(envelope) == {"payload"} and set(envelope["payload"]) <= {"Header", "Body"}
        header = envelope["payload"]["Header"]
        assert header["MessageType"] == self.header and header["SubmissionNumber"]
        auth = header["Authentication"]
        assert set(auth) == {"AccNumber", "MD5Value", "ApplicationID"} and auth["ApplicationID"]
        assert auth["MD5Value"] == hashlib.md5(f"{auth['AccNumber']}{api_key}{header['SubmissionNumber']}".encode()
                                               ).hexdigest()
        body = envelope["payload"].get("Body") or {}
        search = body.get("SearchParameters")
        if search is not None:
            assert self.return_count[0] <= search["ReturnCount"] <= self.return_count[1]
            assert search.get("OrderDirection", "ASC") in self.directions
        if method == "Invoice_Create":
            self.check_invoice(body["InvoiceData"])

    def check_invoice(self, data: dict[str, Any]) -> None:
        for name, value in data.items():
            assert name in self.fields or name in NAMED_ELSEWHERE, f"InvoiceData.{name} is not in the table"
            if name not in self.fields:
                continue
            kind, notes = self.fields[name]
            if kind == "int":
                assert isinstance(value, int) and not isinstance(value, bool), f"{name} must be an int"
            if kind.startswith("enum") and "/" in kind:
                assert value in {v.strip() for v in kind.split(" ", 1)[1].split("/")}, f"{name}: {value!r}"
            if kind.startswith("string") or kind.startswith("ISO"):
                bounds = self.lengths(name)
                assert isinstance(value, str) and (not bounds or bounds[0] <= len(value) <= bounds[1]), name
        for line in data["ItemLines"]["ItemLine"]:
            assert set(line) <= self.line_fields, f"ItemLine fields {set(line) - self.line_fields} not named"
            for tax in (line.get("Tax1"), line.get("Tax2")):
                assert tax is None or set(tax) <= {"TaxName", "TaxPercentage", "TaxAmount"}
        assert set(data.get("Scheduling", {}).get("SingleInvoiceData", {})) <= {"IssueDate", "PostDate"}


@pytest.fixture(scope="module")
def spec() -> SourceSpec:
    return SourceSpec(SPECS.read_text())


def refund(refund_id: int, amount: str, tax: str, line_id: int = 1) -> Refund:
    from tests.conformance.test_conformance import RETURNED
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned", created_at=RETURNED)


@pytest.fixture
def wired():
    """A connector on a sandbox; every request it sends captured as (path, envelope)."""
    sandbox = Sandbox()
    with connectors_on(sandbox, "qf") as build:
        connector = build()
        sent: list[tuple[str, dict[str, Any]]] = []
        connector.http.client.event_hooks["request"].append(
            lambda request: sent.append((request.url.path, jsonmoney.loads(request.read()))))
        yield sandbox, connector, sent


def deliver(connector, event, doc=None, entities=None):
    return connector.deliver(event, doc or DocumentState(), MemoryContext("qf", event, entities or MemoryEntities()))


def test_every_request_matches_source_md(wired, spec):
    sandbox, connector, sent = wired
    entities = MemoryEntities()
    v1 = invoice_event(1, payments=[payment(1, "100.00")], refunds=[refund(2, "20.00", "1.00")])
    doc = deliver(connector, v1, entities=entities)
    doc = deliver(connector, next_version(v1, status="void"), doc, entities)
    key = connector.client.credentials.get()["api_key"]
    methods = {p for p, _ in sent}
    assert {"/1_2/invoice/create", "/1_2/payment/create", "/1_2/invoice/delete", "/1_2/client/create"} <= methods
    for url_path, envelope in sent:
        spec.check(url_path, envelope, key)
    assert doc.status in ("voided", "deleted")


def _invoice_envelope(wired) -> tuple[dict[str, Any], str]:
    sandbox, connector, sent = wired
    deliver(connector, invoice_event(3))
    envelope = next(e for p, e in sent if p == "/1_2/invoice/create")
    return envelope, connector.client.credentials.get()["api_key"]


@pytest.mark.parametrize("breaks", [
    lambda d: d.update(InvoiceDescription="X"),  # 2-35 characters
    lambda d: d.update(InvoiceDescription="X" * 36),
    lambda d: d.update(ClientID="100001"),  # int
    lambda d: d.update(InvoiceType="CREDIT"),  # INVOICE / ESTIMATE / RECURRING
    lambda d: d.update(Currency="USDX"),  # ISO 4217 (3)
    lambda d: d.update(Reference="INV-1"),  # not in the table
    lambda d: d["ItemLines"]["ItemLine"][0].update(LineTotal=1),  # not an ItemLine field
])
def test_the_table_validator_refuses_bad_invoice_bodies(wired, spec, breaks):
    envelope, key = _invoice_envelope(wired)
    spec.check("/1_2/invoice/create", envelope, key)  # the good one passes
    bad = copy.deepcopy(envelope)
    breaks(bad["payload"]["Body"]["InvoiceData"])
    with pytest.raises(AssertionError):
        spec.check("/1_2/invoice/create", bad, key)


@pytest.mark.parametrize("breaks", [
    lambda e: e["payload"]["Header"].update(MessageType="Response"),
    lambda e: e["payload"]["Header"]["Authentication"].update(MD5Value="0" * 32),
    lambda e: e["payload"]["Header"]["Authentication"].pop("ApplicationID"),
    lambda e: e["payload"]["Body"].update(SearchParameters={"ReturnCount": 201}),
    lambda e: e["payload"]["Body"].update(SearchParameters={"ReturnCount": 5, "OrderDirection": "UP"}),
])
def test_the_header_and_search_checks_refuse_bad_envelopes(wired, spec, breaks):
    envelope, key = _invoice_envelope(wired)
    bad = copy.deepcopy(envelope)
    breaks(bad)
    with pytest.raises(AssertionError):
        spec.check("/1_2/invoice/create", bad, key)
    with pytest.raises(AssertionError):
        spec.check("/1_2/invoice/frobnicate", envelope, key)  # not a method in the docs index


def _post(sandbox, server_url: str, method: str, body: dict[str, Any] | None, cred: dict[str, Any],
          submission: str = "s-1", key: str | None = None) -> httpx.Response:
    md5 = hashlib.md5(f"{cred['account_number']}{key or cred['api_key']}{submission}".encode()).hexdigest()
    header = {"MessageType": "Request", "SubmissionNumber": submission, "Authentication": {
        "AccNumber": cred["account_number"], "MD5Value": md5, "ApplicationID": cred["application_id"]}}
    return httpx.post(server_url + path(method), content=jsonmoney.dumps({"payload": {"Header": header} | (
        {"Body": body} if body is not None else {})}))


def test_sandbox_refuses_a_reused_submission_number_a_bad_signature_and_unknown_fields():
    sandbox = Sandbox()
    cred = sandbox.seed_credentials()
    server = sandbox.serve()
    try:
        search = {"SearchParameters": {"ReturnCount": 10}}
        assert _post(sandbox, server.url, "Client_Search", search, cred, "n-1").status_code == 200
        again = _post(sandbox, server.url, "Client_Search", search, cred, "n-1")
        assert again.status_code == 401 and isinstance(classify(again), RetryableError)
        forged = _post(sandbox, server.url, "Client_Search", search, cred, "n-2", key="wrong")
        assert forged.status_code == 401 and isinstance(classify(forged), ReauthorizationRequired)
        unknown = _post(sandbox, server.url, "Client_Create", {"ClientDetails": {"Nickname": "x"}}, cred, "n-3")
        assert unknown.status_code == 400 and "not an element" in unknown.json()["Errors"][0]["ErrorMessage"]
        assert isinstance(classify(unknown), PermanentError)
    finally:
        server.stop()


def test_sandbox_enforces_the_daily_call_limit_with_its_error_body():
    sandbox = Sandbox(day_limit=3)
    # The connector's own limiter would wait for tomorrow (it paces below the limit): raise it to see QuickFile's answer.
    with connectors_on(sandbox, "qf", requests_per_day=1000) as build:
        connector = build()
        for _ in range(3):
            connector.client.search("Client_Search", CompanyName="nobody")
        with pytest.raises(RateLimitedError) as raised:
            connector.client.search("Client_Search", CompanyName="nobody")
    assert raised.value.detail[0]["ErrorMessage"].startswith("Daily API call limit") and raised.value.retry_after > 0
    assert sandbox.rate_limit_breaches() == 1 and Sandbox().rate_limit_breaches() == 0


def test_errors_in_a_200_answer_are_refusals_not_successes():
    answer = httpx.Response(200, content=b'{"Errors": {"Error": [{"ErrorCode": "VALIDATION", '
                                         b'"ErrorMessage": "ClientID not found"}]}}')
    error = classify(answer)
    assert isinstance(error, PermanentError) and error.platform_code == "VALIDATION"


def test_a_refund_on_an_unpaid_invoice_is_a_void_credit_note_and_on_a_paid_one_held_on_account(wired):
    sandbox, connector, sent = wired
    unpaid = invoice_event(10, refunds=[refund(11, "20.00", "1.00")])
    doc = deliver(connector, unpaid)
    paid = invoice_event(12, payments=[payment(12, "677.58")], refunds=[refund(13, "20.00", "1.00")])
    deliver(connector, paid)
    kinds = {e["payload"]["Body"]["InvoiceData"]["InvoiceDescription"]:
             e["payload"]["Body"]["InvoiceData"]["CreditNotes"]["CreditNoteType"]
             for p, e in sent if p == "/1_2/invoice/create" and "CreditNotes" in e["payload"]["Body"]["InvoiceData"]}
    assert kinds == {"LWR11": "VOID", "LWR13": "HOLD"}
    assert connector.read_invoice(doc.external_id).balance == unpaid.computed.total - Decimal("21.00")
    assert sorted((n, t, left) for n, t, left in sandbox.credit_notes()) == [
        ("LWR11", Decimal("21.00"), Decimal("0")), ("LWR13", Decimal("21.00"), Decimal("0"))]


def test_a_long_shop_number_gets_a_deterministic_short_description(wired):
    sandbox, connector, _ = wired
    event = invoice_event(20, number="INV-" + "NORTH-BRANCH-" * 3 + "000020")
    deliver(connector, event)
    (booked,) = [b for b in sandbox.booked_invoices() if b.external_id]
    assert len(booked.number) == 35 and booked.number == connector.reference(
        __import__("connectors.engine_state", fromlist=["DocKind"]).DocKind.INVOICE, event)


# -- issue #17: a refund larger than what is owed; payments that change after a credit note --------------------


def _credit_parts(sent, reference: str) -> list[tuple[str, Decimal]]:
    """(CreditNoteType, gross) of every credit note sent under ``reference``, in the order sent."""
    parts = []
    for url_path, envelope in sent:
        data = envelope["payload"]["Body"].get("InvoiceData", {}) if url_path == "/1_2/invoice/create" else {}
        if data.get("InvoiceDescription") == reference and "CreditNotes" in data:
            (item,) = data["ItemLines"]["ItemLine"]
            gross = Decimal(str(item["UnitCost"])) + Decimal(str(item.get("Tax1", {}).get("TaxAmount", 0)))
            parts.append((data["CreditNotes"]["CreditNoteType"], -gross))
    return parts


def _live_credit(sandbox, reference: str) -> Decimal:
    return sum((t for n, t, _ in sandbox.credit_notes() if n == reference), Decimal("0"))


def test_a_refund_larger_than_what_is_owed_and_what_was_paid_is_split_void_then_hold(wired):
    """677.58 invoiced, 100.00 paid: a 630.00 refund is a VOID credit note for the 577.58 still owed and a
    HOLD one for the 52.42 of the payment it gives back (QuickFile refuses one HOLD note larger than the
    amount paid, or one VOID note larger than what is owed)."""
    from daemon.operations.resync import expected_balance

    sandbox, connector, sent = wired
    event = invoice_event(30, payments=[payment(30, "100.00")], refunds=[refund(31, "600.00", "30.00", line_id=2)])
    doc = deliver(connector, event)
    assert _credit_parts(sent, "LWR31") == [("VOID", Decimal("577.58")), ("HOLD", Decimal("52.42"))]
    assert _live_credit(sandbox, "LWR31") == Decimal("630.00")
    assert connector.read_invoice(doc.external_id).balance == expected_balance(event) == 0
    assert doc.refunds["31"].amount == Decimal("630.00") and doc.engine.intent is None


def test_a_full_payment_after_a_void_credit_note_is_posted_whole(wired):
    """A refund on an unpaid invoice took its amount off what is owed (VOID); the shop then takes the whole
    total: the payment goes in whole (QuickFile refuses a payment above what is owed), so the credit note is
    posted again after it, as money held on the client's account."""
    from daemon.operations.resync import expected_balance

    sandbox, connector, sent = wired
    entities = MemoryEntities()
    v1 = invoice_event(40, refunds=[refund(41, "20.00", "1.00")])
    doc = deliver(connector, v1, entities=entities)
    v2 = next_version(v1, payments=[payment(40, "677.58")])
    doc = deliver(connector, v2, doc, entities)
    (booked,) = [b for b in sandbox.booked_invoices() if b.external_id == doc.external_id]
    assert (booked.payment_count, booked.payments_applied) == (1, Decimal("677.58"))
    assert _credit_parts(sent, "LWR41") == [("VOID", Decimal("21.00")), ("HOLD", Decimal("21.00"))]
    assert _live_credit(sandbox, "LWR41") == Decimal("21.00")
    assert connector.read_invoice(doc.external_id).balance == expected_balance(v2) == 0


def test_a_payment_reversed_after_a_hold_credit_note_leaves_the_refund_off_the_balance(wired):
    """Paid in full and refunded (HOLD: the payment's 21.00 went to the client's account); the payment is
    reversed: the invoice owes its total less the refund, as reconcile expects."""
    from daemon.operations.resync import expected_balance

    sandbox, connector, sent = wired
    entities = MemoryEntities()
    v1 = invoice_event(50, payments=[payment(50, "677.58")], refunds=[refund(51, "20.00", "1.00")])
    doc = deliver(connector, v1, entities=entities)
    v2 = next_version(v1, payments=[payment(50, "677.58", status="reversed")])
    doc = deliver(connector, v2, doc, entities)
    assert _live_credit(sandbox, "LWR51") == Decimal("21.00")
    assert connector.read_invoice(doc.external_id).balance == expected_balance(v2) == Decimal("656.58")


# (refunds already posted, the new refund's amount and tax, the parts it is split into)
TWO_PARTS = ((), ("600.00", "30.00"), [Decimal("52.42"), Decimal("577.58")])  # VOID, HOLD
THREE_PARTS = ((("400.00", "20.00"),), ("400.00", "20.00"),  # the part refunded twice: VOID, HOLD, REFUND
               [Decimal("100.00"), Decimal("157.58"), Decimal("162.42")])


@pytest.mark.parametrize("split, lost", [(TWO_PARTS, 1), (TWO_PARTS, 2), (THREE_PARTS, 1), (THREE_PARTS, 2),
                                         (THREE_PARTS, 3)],
                         ids=["void-part-unanswered", "hold-part-unanswered", "of-three-void-part-unanswered",
                              "of-three-hold-part-unanswered", "of-three-refund-part-unanswered"])
def test_a_split_refund_whose_answer_was_lost_is_completed_never_duplicated(split, lost):
    """One part (VOID, HOLD or the independent REFUND) is applied and its answer lost: the next attempt finds
    what was made under the refund's reference and adds only what is missing, a HOLD part never above what
    was paid."""
    from connectors.base import UncertainOutcomeError

    earlier, (amount, tax), parts = split
    sandbox = Sandbox()
    sandbox.faults.hang_s = 1.5  # longer than the 1 s request timeout below: applied, then no answer
    with connectors_on(sandbox, "qf") as build:
        connector = build()
        connector.http.client.timeout = 1.0
        entities = MemoryEntities()
        v1 = invoice_event(60, payments=[payment(60, "100.00")],
                           refunds=[refund(58 + n, a, t, line_id=2) for n, (a, t) in enumerate(earlier)])
        doc = deliver(connector, v1, entities=entities)
        v2 = next_version(v1, refunds=[*v1.refunds, refund(61, amount, tax, line_id=2)])
        sandbox.faults.fault_at(lost)
        ctx = MemoryContext("qf", v2, entities)
        with pytest.raises(UncertainOutcomeError):
            connector.deliver(v2, doc, ctx)
        doc = connector.deliver(v2, ctx.checkpoints[-1], MemoryContext("qf", v2, entities, attempt=2))
        live = sorted(t for n, t, _ in sandbox.credit_notes() if n == "LWR61")
        assert live == parts
        assert connector.read_invoice(doc.external_id).balance == 0
        assert doc.refunds["61"].amount == Decimal(amount) + Decimal(tax)


@pytest.mark.parametrize("paid", ["0.00", "100.00"])
def test_a_second_refund_beyond_what_is_owed_and_paid_leaves_the_rest_as_client_credit(wired, paid):
    """Issue #17 (chaos run, invoice 12 v3): the same part refunded twice, 840.00 of refunds on a 677.58 invoice.
    The second refund's VOID part takes what is still owed, a HOLD part what was paid and not yet held; the rest
    was neither owed nor paid, so it cannot be a HOLD note (QuickFile refuses one larger than what was paid): it
    is an independent REFUND-type credit note (no parent invoice: "the equivalent of creating a negative
    invoice", QuickFile's post 23204), credit on the client's account as the other platforms leave it. Then the
    shop takes a payment: every note is posted again, split by what the invoice then holds."""
    from daemon.operations.resync import expected_balance

    sandbox, connector, sent = wired
    entities = MemoryEntities()
    payments = [payment(70, paid)] if Decimal(paid) else []
    v1 = invoice_event(70, payments=payments, refunds=[refund(71, "400.00", "20.00", line_id=2)])
    doc = deliver(connector, v1, entities=entities)
    v2 = next_version(v1, refunds=[*v1.refunds, refund(72, "400.00", "20.00", line_id=2)])
    doc = deliver(connector, v2, doc, entities)
    owed = Decimal("677.58") - Decimal(paid) - Decimal("420.00")
    held = Decimal(paid)
    assert _credit_parts(sent, "LWR72") == [(kind, amount) for kind, amount in (
        ("VOID", owed), ("HOLD", held), ("REFUND", Decimal("420.00") - owed - held)) if amount]
    independent = [e["payload"]["Body"]["InvoiceData"]["CreditNotes"] for p, e in sent if p == "/1_2/invoice/create"
                   and e["payload"]["Body"]["InvoiceData"].get("CreditNotes", {}).get("CreditNoteType") == "REFUND"]
    assert independent == [{"CreditNoteType": "REFUND"}]  # no parent, no bank account: nothing was paid out
    assert _live_credit(sandbox, "LWR72") == Decimal("420.00") and doc.engine.intent is None
    assert connector.read_invoice(doc.external_id).balance == expected_balance(v2) == 0

    v3 = next_version(v2, payments=[*payments, payment(73, str(Decimal("677.58") - Decimal(paid)))])
    sent.clear()
    doc = deliver(connector, v3, doc, entities)
    assert _credit_parts(sent, "LWR71") == [("HOLD", Decimal("420.00"))]
    assert _credit_parts(sent, "LWR72") == [("HOLD", Decimal("257.58")), ("REFUND", Decimal("162.42"))]
    assert _live_credit(sandbox, "LWR71") == _live_credit(sandbox, "LWR72") == Decimal("420.00")
    assert connector.read_invoice(doc.external_id).balance == expected_balance(v3) == 0



# -- issue #20: a refund paid back is a REFUND credit note paid out of the payment's bank ------------------------

# The CreditNotes block as QuickFile's post "Creating a Credit Note using the API" (NAMED_ELSEWHERE) defines it.
def credit_notes_problems(block: dict[str, Any]) -> list[str]:
    problems = [f"CreditNotes.{k}: not in the post" for k in set(block) - {"CreditNoteType", "ParentInvoiceId",
                                                                            "PaidFromAccount"}]
    if block.get("CreditNoteType") not in {"VOID", "REFUND", "HOLD"}:
        problems.append("CreditNoteType: mandatory, VOID / REFUND / HOLD")
    if "ParentInvoiceId" in block and not isinstance(block["ParentInvoiceId"], int):
        problems.append("ParentInvoiceId: the parent invoice's id")
    if "PaidFromAccount" in block:  # "Applicable to REFUND type credit notes … a bank nominal code (1200-1299)"
        if block.get("CreditNoteType") != "REFUND":
            problems.append("PaidFromAccount: applicable to REFUND credit notes")
        if not isinstance(block["PaidFromAccount"], int) or not 1200 <= block["PaidFromAccount"] <= 1299:
            problems.append("PaidFromAccount: a bank nominal code 1200-1299")
    return problems


def _paid_back(refund_id: int, amount: str, tax: str, payment_id: int) -> Refund:
    return refund(refund_id, amount, tax).model_copy(update={"payment_id": payment_id})


@pytest.mark.parametrize("bad, expected", [
    ({"CreditNoteType": "HOLD", "ParentInvoiceId": 1, "PaidFromAccount": 1210}, "applicable to REFUND"),
    ({"CreditNoteType": "REFUND", "PaidFromAccount": 1300}, "1200-1299"),
    ({"CreditNoteType": "REFUND", "PaidFromAccount": "1210"}, "1200-1299"),
    ({"ParentInvoiceId": 1}, "mandatory"),
])
def test_a_bad_credit_notes_block_is_refused_by_the_validator_and_the_sandbox(wired, bad, expected):
    sandbox, connector, sent = wired
    assert any(expected in p for p in credit_notes_problems(bad))
    paid = invoice_event(80, payments=[payment(80, "677.58")])
    doc = deliver(connector, paid)
    (_, envelope) = next((p, e) for p, e in sent if p == "/1_2/invoice/create")
    data = envelope["payload"]["Body"]["InvoiceData"]
    note = {"InvoiceType": "INVOICE", "ClientID": data["ClientID"], "InvoiceDescription": "LWR80",
            "ItemLines": {"ItemLine": [{"ItemDescription": "refund", "UnitCost": Decimal("-10"), "Qty": Decimal("1")}]},
            "CreditNotes": {k: (int(doc.external_id) if k == "ParentInvoiceId" else v) for k, v in bad.items()}}
    with pytest.raises(PermanentError):
        connector.client.call("Invoice_Create", {"InvoiceData": note}, write=True)


def test_a_refund_note_paid_out_cannot_exceed_what_was_paid_and_leaves_nothing_open():
    """The sandbox's REFUND against an invoice: money paid on it goes back out of a bank (PaidFromAccount
    mandatory), never more than was paid and not yet held or refunded; the note has nothing open after."""
    from connectors.quickfile.sandbox import QuickFileError
    sandbox = Sandbox()
    with connectors_on(sandbox, "qf") as build:
        connector = build()
        doc = deliver(connector, invoice_event(81, payments=[payment(81, "100.00")]))
        account = next(iter(sandbox.accounts.values()))
        client_id = account.invoices[int(doc.external_id)]["ClientID"]

        def note(gross: str, **block: Any) -> dict[str, Any]:
            return {"InvoiceData": {"InvoiceType": "INVOICE", "ClientID": client_id, "InvoiceDescription": "LWR81",
                                    "ItemLines": {"ItemLine": [{"ItemDescription": "refund", "Qty": Decimal("1"),
                                                                "UnitCost": -Decimal(gross)}]},
                                    "CreditNotes": {"CreditNoteType": "REFUND",
                                                    "ParentInvoiceId": int(doc.external_id)} | block}}
        with pytest.raises(QuickFileError, match="PaidFromAccount"):
            sandbox._invoice_create(account, note("10.00"))
        with pytest.raises(QuickFileError, match="cannot exceed the amount paid"):
            sandbox._invoice_create(account, note("100.01", PaidFromAccount=1210))
        sandbox._invoice_create(account, note("60.00", PaidFromAccount=1210))
        with pytest.raises(QuickFileError, match="cannot exceed the amount paid"):
            sandbox._invoice_create(account, note("40.01", PaidFromAccount=1210))
    assert sandbox.credit_notes() == [("LWR81", Decimal("60.00"), Decimal("0"))]


@pytest.mark.parametrize("paid", ["677.58", "300.00"])
def test_a_refund_paid_back_is_a_refund_note_paid_from_the_payments_bank(wired, spec, paid):
    """The shop paid 21.00 back on card (payment 90): the refund's credit is one REFUND note against the invoice
    paid out of card's bank (1210), nothing left open, what the customer owes unchanged (their money came back,
    not off their balance). A payment the shop takes later leaves it as it is (never a second credit); the refund
    taken back deletes the money out with its note."""
    sandbox, connector, sent = wired
    entities = MemoryEntities()
    v1 = invoice_event(90, payments=[payment(90, paid)])
    doc = deliver(connector, v1, entities=entities)
    v2 = next_version(v1, refunds=[_paid_back(91, "20.00", "1.00", payment_id=90)])
    doc = deliver(connector, v2, doc, entities)
    blocks = [e["payload"]["Body"]["InvoiceData"]["CreditNotes"] for p, e in sent if p == "/1_2/invoice/create"
              and "CreditNotes" in e["payload"]["Body"]["InvoiceData"]]
    assert all(credit_notes_problems(b) == [] for b in blocks), blocks
    for url_path, envelope in sent:
        spec.check(url_path, envelope, connector.client.credentials.get()["api_key"])
    assert blocks[-1] == {"CreditNoteType": "REFUND", "ParentInvoiceId": int(doc.external_id), "PaidFromAccount": 1210}
    assert [(t, left) for n, t, left in sandbox.credit_notes() if n == "LWR91"] == [(Decimal("21.00"), Decimal("0"))]
    owed = Decimal("677.58") - Decimal(paid)
    assert connector.read_invoice(doc.external_id).balance == owed and list(doc.engine.settlements) == ["91"]
    if owed:
        v3 = next_version(v2, payments=[*v2.payments, payment(92, "50.00")])
        doc = deliver(connector, v3, doc, entities)
        assert [(t, left) for n, t, left in sandbox.credit_notes() if n == "LWR91"] == [(Decimal("21.00"), Decimal("0"))]
        assert connector.read_invoice(doc.external_id).balance == owed - Decimal("50.00")
        v2 = v3
    doc = deliver(connector, next_version(v2, refunds=[]), doc, entities)
    assert [n for n, _, _ in sandbox.credit_notes() if n == "LWR91"] == [] and not doc.engine.settlements


def test_a_goodwill_refunds_tax_is_posted_as_tax_on_the_main_taxed_lines_code(wired):
    """Issue #20: a refund with no line that carries tax: its tax goes as Tax1 on the invoice's main taxed line's
    tax (GST here), the note's total amount + tax — before, the tax was dropped (a 40.00 note for 42.00)."""
    sandbox, connector, sent = wired
    goodwill = Refund(id=96, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"), line_id=None,
                      reason="Goodwill: late job", created_at=refund(1, "1", "0").created_at)
    deliver(connector, invoice_event(95, refunds=[goodwill]))
    (item,) = [e["payload"]["Body"]["InvoiceData"]["ItemLines"]["ItemLine"][0] for p, e in sent
               if p == "/1_2/invoice/create" and e["payload"]["Body"]["InvoiceData"]["InvoiceDescription"] == "LWR96"]
    assert item["Tax1"]["TaxName"] == "GST" and item["Tax1"]["TaxAmount"] == Decimal("-2.00")
    assert [t for n, t, _ in sandbox.credit_notes() if n == "LWR96"] == [Decimal("42.00")]
