"""FreshBooks: every request the connector sends validated against the field table in
``$LEDGERWIRE_SPECS_DIR/freshbooks/SOURCE.md`` (FreshBooks publishes no machine-readable spec; the table comes
from FreshBooks' own Node SDK serialisers), the validator shown to refuse bad bodies, and the platform's rules
(account id discovery, 12-hour tokens with single-use refresh tokens, FreshBooks' error bodies, Credit payments
drawn on the client's credit, pages capped at 100, the camelCase line tax fields).

The validator is built by reading SOURCE.md at test time: the resource paths and body envelopes from its
"Conventions", the invoice and line tables, and the field lists of the client, payment and credit note
paragraphs. Stricter than FreshBooks (which does not say what it does with unknown fields): a field the table
does not list is refused, so a misspelt or snake_cased ``tax_name1`` fails here. One fact is not in SOURCE.md
and is taken from the same SDK: the credit note envelope is ``credit_notes`` (CreditNote.ts
``transformCreditNoteRequest``).
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import AuthError, PermanentError, RateLimitedError, RetryableError
from connectors.freshbooks import Sandbox, mapping
from connectors.freshbooks.client import classify
from connectors.testing import GST, PST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment
from daemon.canonical import Refund
from daemon.config import MappingConfig

SPECS = Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs"))
SOURCE = SPECS / "freshbooks" / "SOURCE.md"
ANY = "any"


def _names(cell: str) -> list[str]:
    """``po_number, notes, terms`` / ``bus_phone/mob_phone`` / ``taxName1, taxAmount1`` → field names."""
    cell = re.sub(r"\([^)]*\)", "", cell.replace("`", "").replace("[]", ""))
    return [n for n in re.split(r"[,/\s]+", cell) if re.fullmatch(r"\w+\*?", n)]


def _type(text: str) -> str:
    text = text.strip().lower()
    for prefix, kind in (("money", "money"), ("int", "int"), ("date", "date"), ("array", "array"), ("bool", "bool"),
                         ("number", "number"), ("enum", "string"), ("string / number", "name/rate"),
                         ("string", "string")):
        if text.startswith(prefix):
            return kind
    return ANY


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows (header and rule left out) of the first markdown table after ``heading``."""
    rows: list[list[str]] = []
    for row in text.split(heading, 1)[1].splitlines()[1:]:
        if not row.startswith("|"):
            if rows:
                break
            continue
        rows.append([c.strip() for c in row.strip().strip("|").split("|")])
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


def _paragraph(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n\n", 1)[0]


class SourceTable:
    """The requests FreshBooks' SDK can send, as SOURCE.md tabulates them."""

    def __init__(self, text: str) -> None:
        conventions = _paragraph(text, "Conventions (APIClient.ts)")
        paths = re.search(r"Resource paths embed the account id:(.*?)\n- ", conventions, re.S).group(1)
        self.resources = [p.split("[")[0].rsplit("{accountId}/", 1)[-1].strip("/")
                          for p in re.findall(r"`([^`]+)`", paths)]
        envelopes = re.findall(r'`\{"(\w+)": \{\.\.\.\}\}`', conventions)
        self.envelopes = dict(zip(("invoices/invoices", "users/clients", "payments/payments"), envelopes))
        self.envelopes["credit_notes/credit_notes"] = "credit_notes"  # the SDK's CreditNote.ts (not in SOURCE.md)
        self.fields: dict[str, dict[str, str]] = {}
        self.required: dict[str, set[str]] = {}
        self.enums: dict[tuple[str, str], set[str]] = {}
        invoice: dict[str, str] = {}
        self.required["invoice"] = set()
        self.put_only: set[str] = set()
        for name_cell, type_cell, req, notes in _table(text, "Field table — invoice create"):
            for name in _names(name_cell):
                invoice[name] = _type(type_cell)
                if req.startswith("yes"):
                    self.required["invoice"].add(name)
            self.put_only |= {n for n in re.findall(r"`(\w+)", notes) if n.startswith(("action_", "email_"))}
        self.fields["invoice"] = invoice | {n: "bool" if n.startswith("action_") else ANY for n in self.put_only}
        self.line: dict[str, str] = {}
        for name_cell, type_cell, _notes in _table(text, "Invoice line (models/Line.ts"):
            kind = _type(type_cell)
            for name in _names(name_cell):
                self.line[name] = ("string" if "Name" in name else "number") if kind == "name/rate" else kind
        client = _paragraph(text, "Client create (POST")
        self.fields["client"] = {n: ANY for n in _names(client.split(":", 1)[1].split("all optional in the model;")[1])}
        self.required["client"] = set()
        pay = _paragraph(text, "Payment create (POST").split("`transformPaymentRequest`):", 1)[1]
        enum = re.search(r"\(enum: ([^)]*)\)", pay)
        self.enums[("payment", "type")] = {v.strip() for v in enum.group(1).split(",")}
        pay = pay.replace(enum.group(0), "")
        self.fields["payment"], self.required["payment"] = {}, set()
        for item in [i.strip(" .\n") for i in pay.split(",")]:
            name = item.split()[0]
            self.fields["payment"][name] = "money" if " Money" in item else "date" if "YYYY-MM-DD" in item else ANY
            if "required" in item:
                self.required["payment"].add(name)
        notes = re.search(r"models/CreditNote\.ts \(([^)]*)\)", text).group(1)
        self.fields["credit_notes"] = {n: ANY for n in _names(notes.replace("…", ""))} | {"lines": "array"}
        self.required["credit_notes"] = set()

    def problems(self, method: str, path: str, body: Any) -> list[str]:
        match = re.fullmatch(r"/accounting/account/[^/]+/(\w+/\w+)(?:/(\d+))?", path.split("?")[0])
        if not match or match.group(1) not in self.resources:
            return [f"{path}: not a resource path in SOURCE.md"]
        resource, key = match.groups()
        if method == "GET":
            return [] if body is None else ["a GET with a body"]
        if (method == "POST") == (key is not None):
            return [f"{method} {path}: POST creates on the collection, PUT updates a member"]
        envelope = self.envelopes.get(resource)
        if envelope is None or not isinstance(body, dict) or list(body) != [envelope]:
            return [f"the body must be wrapped as {{{envelope!r}: …}}"]
        fields = body[envelope]
        if method == "PUT" and set(fields) == {"vis_state"}:  # delete (the SDK's ``delete``)
            return [] if fields["vis_state"] in (0, 1) else ["vis_state must be 0 or 1"]
        out = [f"{envelope}.{name} is required" for name in self.required[envelope] if method == "POST" and name not in fields]
        for name, value in fields.items():
            if not self.known(envelope, name) or (name in self.put_only and method == "POST"):
                out.append(f"{envelope}.{name} is not in the SDK's request fields")
                continue
            out += self._check(f"{envelope}.{name}", self.fields[envelope].get(name, ANY), value)
            if (envelope, name) in self.enums and value not in self.enums[(envelope, name)]:
                out.append(f"{envelope}.{name}: {value!r} is not one of the enum's values")
            if name == "lines":
                for n, line in enumerate(value if isinstance(value, list) else []):
                    out += [f"{envelope}.lines[{n}].{k} is not a line field" for k in line if k not in self.line]
                    out += [p for k, v in line.items() if k in self.line
                            for p in self._check(f"{envelope}.lines[{n}].{k}", self.line[k], v)]
        return out

    def known(self, envelope: str, name: str) -> bool:
        """Listed, or under a listed prefix (``s_*``: the shipping address fields)."""
        return name in self.fields[envelope] or any(
            f.endswith("*") and name.startswith(f[:-1]) for f in self.fields[envelope])

    @staticmethod
    def _check(where: str, kind: str, value: Any) -> list[str]:
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool), "bool": lambda v: isinstance(v, bool),
              "array": lambda v: isinstance(v, list), "string": lambda v: isinstance(v, str),
              "number": lambda v: isinstance(v, (int, float, Decimal)) and not isinstance(v, bool),
              "date": lambda v: isinstance(v, str) and _is_date(v), "money": _is_money, ANY: lambda v: True}[kind]
        return [] if ok(value) else [f"{where}: {value!r} is not {kind}"]


def _is_date(value: str) -> bool:
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def _is_money(value: Any) -> bool:
    """``{amount: string, code: string}``: amounts are decimal STRINGS."""
    if not isinstance(value, dict) or set(value) - {"amount", "code"} or not isinstance(value.get("amount"), str):
        return False
    try:
        Decimal(value["amount"])
    except InvalidOperation:
        return False
    return isinstance(value.get("code", ""), str)


@pytest.fixture(scope="module")
def table() -> SourceTable:
    if not SOURCE.exists():
        pytest.skip(f"FreshBooks' SOURCE.md not found under {SPECS} (set LEDGERWIRE_SPECS_DIR)")
    return SourceTable(SOURCE.read_text())


@pytest.fixture
def fb():
    sandbox = Sandbox(minute_limit=6000)
    with connectors_on(sandbox, "fb") as build:
        yield sandbox, build()


def refund(refund_id: int, line_id: int, amount: str, tax: str) -> Refund:
    return Refund(id=refund_id, kind="return", amount=Decimal(amount), tax_amount=Decimal(tax), line_id=line_id,
                  reason="Part returned unused", created_at=datetime(2026, 11, 22, tzinfo=timezone.utc))


# -- the validator, built from SOURCE.md, and shown to refuse bad bodies --

def test_the_validator_is_read_from_source_md(table):
    assert table.resources[:4] == ["invoices/invoices", "users/clients", "payments/payments", "credit_notes/credit_notes"]
    assert table.required["invoice"] == {"customerid", "create_date"}
    assert table.required["payment"] == {"invoiceid", "amount", "date"}
    assert table.line["taxName1"] == "string" and table.line["taxAmount2"] == "number"
    assert table.line["unit_cost"] == "money" and "action_mark_as_sent" in table.put_only
    assert "Bank Transfer" in table.enums[("payment", "type")] and table.known("client", "s_city")
    assert table.known("client", "note") and not table.known("client", "reference")


GOOD_INVOICE = {"invoice": {"customerid": 7, "create_date": "2026-11-20", "invoice_number": "INV-1",
                            "lines": [{"name": "Labour", "qty": Decimal("1.5"),
                                       "unit_cost": {"amount": "120.00", "code": "USD"},
                                       "taxName1": "GST", "taxAmount1": Decimal("5")}]}}
PATH = "/accounting/account/xZ12/invoices/invoices"


def _bad(body_fields: dict[str, Any] | None = None, line_fields: dict[str, Any] | None = None, drop: str = "",
         envelope: str = "invoice") -> dict[str, Any]:
    invoice = {**GOOD_INVOICE["invoice"], **(body_fields or {})}
    invoice["lines"] = [{**GOOD_INVOICE["invoice"]["lines"][0], **(line_fields or {})}]
    invoice.pop(drop, None)
    return {envelope: invoice}


@pytest.mark.parametrize("body, complaint", [
    (_bad(drop="customerid"), "invoice.customerid is required"),
    (_bad({"create_date": "20/11/2026"}), "invoice.create_date"),
    (_bad({"customerid": "7"}), "invoice.customerid"),
    (_bad({"invoice_total": "12.00"}), "invoice.invoice_total is not in"),
    (_bad(line_fields={"tax_name1": "GST"}), "lines[0].tax_name1 is not a line field"),  # camelCase only
    (_bad(line_fields={"unit_cost": {"amount": Decimal("120.00")}}), "lines[0].unit_cost"),  # a string amount
    (_bad(line_fields={"taxAmount1": "5%"}), "lines[0].taxAmount1"),
    (_bad({"action_mark_as_sent": True}), "action_mark_as_sent is not in"),  # a PUT's, not a create's
    (_bad(envelope="invoices"), "wrapped"),
])
def test_the_validator_refuses_bad_bodies(table, body, complaint):
    assert table.problems("POST", PATH, GOOD_INVOICE) == []
    found = table.problems("POST", PATH, jsonmoney.loads(jsonmoney.dumps(body)))
    assert any(complaint in p for p in found), found


def test_the_validator_refuses_bad_payments_and_paths(table):
    good = {"payment": {"invoiceid": 3, "amount": {"amount": "10.00"}, "date": "2026-11-20", "type": "Cash"}}
    payments = "/accounting/account/xZ12/payments/payments"
    assert table.problems("POST", payments, good) == []
    assert table.problems("POST", payments, {"payment": {**good["payment"], "type": "Card"}})
    assert table.problems("POST", payments, {"payment": {k: v for k, v in good["payment"].items() if k != "date"}})
    assert table.problems("POST", "/accounting/account/xZ12/sales/invoices", good)
    assert table.problems("PUT", payments, good)  # a PUT names its member


# -- every request the connector sends, checked --

def test_every_request_of_a_whole_life_matches_the_table(fb, table):
    sandbox, connector = fb
    entities = MemoryEntities()
    v1 = invoice_event(5001, payments=[payment(1, "100.00", method="cash")], refunds=[refund(11, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    lines = [line(1, "labour", "Diagnose", "1", "120.00", taxes=(GST, PST)), line(2, "part", "Relay", "2", "11.20")]
    v2 = next_version(v1, lines=lines, payments=[payment(1, "100.00", method="cash", status="reversed")], refunds=[])
    doc = deliver(connector, entities, v2, doc)
    deliver(connector, entities, next_version(v2, status="void"), doc)
    methods = [m for m, _, _ in sandbox.requests]
    assert {"POST", "PUT"} <= set(methods) and len(sandbox.requests) >= 8
    for method, path, body in sandbox.requests:
        assert table.problems(method, f"/accounting/account/x{path}", body) == [], (method, path, body)


def test_a_life_books_as_freshbooks_would(fb):
    sandbox, connector = fb
    entities = MemoryEntities()
    event = invoice_event(5002, payments=[payment(1, "100.00")], refunds=[refund(12, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, event)
    (booked,) = sandbox.booked_invoices()
    assert (booked.total, booked.tax_total, booked.line_count) == (event.computed.total, event.computed.tax_total, 5)
    (invoice,) = sandbox.records("invoices/invoices")
    assert invoice["v3_status"] == "partial"  # issued (mark as sent), then paid in part
    assert invoice["lines"][0]["taxName1"] == "GST" and invoice["lines"][0]["taxAmount1"] == Decimal("5")
    credit = [p for p in sandbox.records("payments/payments") if p["type"] == "Credit"]
    assert [(p["amount"]["amount"], p["from_credit"]) for p in credit] == [("304.45", True)]
    assert connector.read_invoice(doc.external_id).balance == event.computed.total - Decimal("404.45")
    assert doc.engine.tax_difference is None


# -- the sandbox behaves like FreshBooks --

def test_account_id_found_through_users_me_and_tokens_rotate(fb):
    sandbox, connector = fb
    assert connector.client.account() == next(iter(sandbox.accounts))
    credentials = connector.http.auth.credentials.get()
    assert credentials["access_token_expires_at"] - datetime.now(timezone.utc).timestamp() > 11.9 * 3600
    seeded = sandbox.seed_credentials()
    form = {"grant_type": "refresh_token", "client_id": seeded["client_id"], "client_secret": seeded["client_secret"],
            "refresh_token": seeded["refresh_token"]}
    token_url = f"{connector.http.client.base_url}/auth/oauth/token"
    first, again = httpx.post(token_url, data=form), httpx.post(token_url, data=form)
    assert first.status_code == 200 and first.json()["expires_in"] == 12 * 3600
    assert first.json()["refresh_token"] != seeded["refresh_token"]
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # single use


def test_an_expired_token_answers_freshbooks_401_and_is_refreshed(fb):
    sandbox, connector = fb
    response = httpx.get(f"{connector.http.client.base_url}/auth/api/v1/users/me",
                         headers={"Authorization": "Bearer at-nothing"})
    assert response.status_code == 401 and response.json()["error"] == "unauthenticated"
    assert isinstance(classify(response), AuthError)
    connector.client.account()
    sandbox.issuer.expire_all()
    before = sandbox.issuer.refresh_count
    deliver(connector, MemoryEntities(), invoice_event(5003))
    assert sandbox.issuer.refresh_count == before + 1


def test_rate_limit_is_answered_with_429_and_retry_after():
    sandbox = Sandbox(minute_limit=3)
    with connectors_on(sandbox, "fb") as build:
        client = build().client
        client.account()  # the identity call is not counted against the account
        token = client.http.auth.credentials.get()["access_token"]
        answers = [httpx.get(f"{client.http.client.base_url}{client.path('users/clients')}",
                             headers={"Authorization": f"Bearer {token}"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1 and sandbox.rate_limit_breaches() == 1
    refused = classify(answers[3])
    assert isinstance(refused, RateLimitedError) and refused.retry_after >= 1


def test_freshbooks_error_bodies_are_classified():
    def answer(status: int, body: Any, **headers: str) -> httpx.Response:
        return httpx.Response(status, content=jsonmoney.dumps(body), headers=headers)

    invalid = classify(answer(422, {"response": {"errors": [{"errno": 2000, "field": "customerid",
                                                             "message": "This field is required.", "object": "invoice"}]}}))
    assert isinstance(invalid, PermanentError) and invalid.platform_code == "2000" and "customerid" in invalid.reason
    newer = classify(answer(400, {"code": 3, "message": "Invalid", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "1004",
         "metadata": {"message": "Invalid field", "field": "amount"}}]}))
    assert isinstance(newer, PermanentError) and newer.platform_code == "1004"
    throttled = classify(answer(429, {"response": {"errors": [{"errno": 1003, "message": "Too many"}]}}, **{"Retry-After": "7"}))
    assert isinstance(throttled, RateLimitedError) and throttled.retry_after == 7
    assert isinstance(classify(answer(503, {"response": {"errors": [{"errno": 1000, "message": "down"}]}})), RetryableError)


def test_the_sandbox_refuses_what_freshbooks_refuses(fb):
    sandbox, connector = fb
    client = connector.client
    with pytest.raises(PermanentError) as raised:
        client.write("POST", "invoices/invoices", None, {"invoice": {"create_date": "2026-11-20"}})
    assert raised.value.platform_code == "2000" and "customerid" in raised.value.reason
    made = client.write("POST", "users/clients", None, {"client": {"organization": "A"}})
    with pytest.raises(PermanentError, match="unit_cost"):  # Money amounts are strings
        client.write("POST", "invoices/invoices", None, _bad({"customerid": made["id"]}, {"unit_cost": {"amount": 5}}))
    doc = deliver(connector, MemoryEntities(), invoice_event(5004))
    with pytest.raises(PermanentError) as raised:  # a Credit payment needs credit on the client
        client.write("POST", "payments/payments", None, mapping.credit_payment_payload("1", doc.external_id,
                                                                                       Decimal("5.00"), date(2026, 11, 21)))
    assert "credit" in raised.value.reason


def test_pages_are_capped_at_100(fb):
    sandbox, connector = fb
    client = connector.client
    for n in range(105):
        client.write("POST", "users/clients", None, {"client": {"organization": f"Fleet {n}"}})
    first = httpx.get(f"{connector.http.client.base_url}{client.path('users/clients')}", params={"per_page": 500},
                      headers={"Authorization": f"Bearer {client.http.auth.credentials.get()['access_token']}"})
    result = first.json()["response"]["result"]
    assert (len(result["clients"]), result["pages"], result["total"]) == (100, 2, 105)
    assert len(client.list("users/clients")) == 105


def test_twins_never_merge_and_the_bookkeepers_client_is_adopted(fb):
    sandbox, connector = fb
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    client = connector.client
    mine = client.write("POST", "users/clients", None, {"client": {"organization": "Pat Fox", "email": "pat@example.com"}})
    event = invoice_event(5005, customer=invoice_event().customer.model_copy(update={"id": 900, "name": "Pat Fox",
                                                                                      "email": "pat@example.com"}))
    doc = deliver(connector, MemoryEntities(), event)
    assert doc.customer_id == str(mine["id"])  # a client the bookkeeper made, matched by email: adopted
    # Two shop customers with one name and email: the first one's client (ours, note LWC902) is never the second's.
    first = event.customer.model_copy(update={"id": 902, "name": "Sam Lee", "email": "sam@example.com"})
    docs = [deliver(connector, MemoryEntities(), invoice_event(5006 + n, customer=first.model_copy(update={"id": 902 + n})))
            for n in range(2)]
    assert docs[0].customer_id != docs[1].customer_id
    notes = sorted(c["note"].split(" ")[0] for c in sandbox.records("users/clients") if c["organization"] == "Sam Lee")
    assert notes == ["LWC902", "LWC903"]


# -- mapping rules --

def test_line_taxes_are_camelcase_names_and_percent_rates():
    event = invoice_event(5010, lines=[line(1, "part", "Fuse", "2", "1.25", taxes=(GST, PST))])
    body = mapping.invoice_payload(event, "42", MappingConfig(tax_codes={"GST": "GST", "PST": "PST"}))["invoice"]
    (ln,) = body["lines"]
    assert (ln["taxName1"], ln["taxAmount1"], ln["taxName2"], ln["taxAmount2"]) == ("GST", Decimal("5"), "PST", Decimal("7"))
    assert ln["unit_cost"] == {"amount": "1.25", "code": "USD"} and body["customerid"] == 42
    assert body["po_number"] == event.job.number and body["due_offset_days"] == 30
    ten = line(1, "fee", "Levy", "1", "1.00", taxes=(dict(GST, rate=Decimal("0.10")),))
    levy = mapping.invoice_payload(invoice_event(5013, lines=[ten]), "42", MappingConfig(tax_codes={"GST": "G"}))
    assert b'"taxAmount1":10}' in jsonmoney.dumps(levy).replace(b" ", b"")  # a plain number, never 1E+1
    with pytest.raises(PermanentError, match="tax_codes"):
        mapping.invoice_payload(event, "42", MappingConfig(tax_codes={"GST": "GST"}))
    three = dict(GST, code="HST", tax_rate_id=3)
    with pytest.raises(PermanentError, match="at most two"):
        mapping.invoice_payload(invoice_event(5011, lines=[line(1, "fee", "X", "1", "1.00", taxes=(GST, PST, three))]),
                                "42", MappingConfig(tax_codes={"GST": "G", "PST": "P", "HST": "H"}))


def test_tax_inclusive_lines_go_as_one_unit_at_their_net_amount():
    from connectors.testing import tax_inclusive_event

    body = mapping.invoice_payload(tax_inclusive_event(5012), "1", MappingConfig(tax_codes={"GST": "G", "PST": "P"}))
    assert [(ln["qty"], ln["unit_cost"]["amount"]) for ln in body["invoice"]["lines"]] == [
        (Decimal("1"), "100.00"), (Decimal("1"), "21.33"), (Decimal("1"), "0.08")]


def test_payments_carry_our_reference_and_freshbooks_types():
    body = mapping.payment_payload(payment(3, "25.00", method="eft"), "77")["payment"]
    assert body == {"invoiceid": 77, "amount": {"amount": "25.00"}, "date": "2026-11-20", "type": "Bank Transfer",
                    "note": "LW3 shop payment"}
    assert mapping.payment_payload(payment(4, "1.00", method="voucher"), "77")["payment"]["type"] == "Other"


def test_a_refund_taken_back_has_its_credit_released_and_its_credit_note_deleted(fb):
    sandbox, connector = fb
    entities = MemoryEntities()
    v1 = invoice_event(5020, refunds=[refund(21, 2, "20.00", "1.00")])
    doc = deliver(connector, entities, v1)
    (note,) = sandbox.records("credit_notes/credit_notes")
    with pytest.raises(PermanentError, match="in use"):  # FreshBooks' credit is drawn on: not deletable yet
        connector.client.write("PUT", "credit_notes/credit_notes", str(note["id"]), {"credit_notes": {"vis_state": 1}})
    doc = deliver(connector, entities, next_version(v1, refunds=[]), doc)
    assert sandbox.records("credit_notes/credit_notes") == [] and doc.refunds["21"].status == "voided"
    assert [p for p in sandbox.records("payments/payments") if p["type"] == "Credit"] == []
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total


def test_a_goodwill_refund_is_credited_with_the_main_taxed_lines_taxes(fb, table):
    """Issue #20: a refund without a line that carries tax is a credit note taxed like the invoice's largest taxed
    line (FreshBooks computes the tax from the named tax and rate): 40.00 + 2.00 GST, never 40.00 untaxed; its
    request matches SOURCE.md's table."""
    sandbox, connector = fb
    goodwill = Refund(id=17, kind="refund", amount=Decimal("40.00"), tax_amount=Decimal("2.00"), line_id=None,
                      reason="Goodwill: late job", created_at=datetime(2026, 11, 22, tzinfo=timezone.utc))
    event = invoice_event(5090, refunds=[goodwill])
    (ln,) = mapping.credit_note_payload(event, goodwill, "42", connector.mapping)["credit_notes"]["lines"]
    assert (ln["taxName1"], ln["taxAmount1"], "taxName2" in ln) == (connector.mapping.tax_codes["GST"], Decimal("5"), False)
    deliver(connector, MemoryEntities(), event)
    (_, path, body), = [r for r in sandbox.requests if "credit_notes" in r[1] and r[0] == "POST"]
    assert table.problems("POST", f"/accounting/account/x{path}", body) == []
    untaxed = Refund(**{**goodwill.model_dump(), "tax_amount": Decimal("0")})
    assert "taxName1" not in mapping.credit_note_payload(event, untaxed, "42", connector.mapping)["credit_notes"]["lines"][0]
