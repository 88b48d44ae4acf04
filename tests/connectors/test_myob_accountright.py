"""MYOB AccountRight API v2: every request the connector sends validated against the field table from MYOB's
official SDK (``$LEDGERWIRE_SPECS_DIR/myob-accountright/SOURCE.md``, read at test time), the validator shown
to reject bad bodies, and the platform's own rules (API key / version / company-file headers, rotating refresh
tokens, 8 calls/s answered with MYOB's 403 RateLimitError, RowVersion → 409, MYOB's error body, the lock period,
one item invoice for parts and labour, credits as negative service invoices).

MYOB publishes no schema: SOURCE.md holds two markdown tables (the item invoice and its lines: field, type,
required) and field lists in prose (service lines, customer cards, customer payments, credit settlements). The
validator is built from that text: field names (``X.UID`` = a link ``{"UID": guid}``, ``X[]`` = an array,
``X {a, b, …}`` = an object, ``…`` = more fields exist), types (``string(n)``, ``DateTime "format"``, ``Guid``,
``decimal``, ``bool``, ``enum A / B``), bold required flags and read-only rows. Stricter than MYOB (whose
serializer ignores unknown members): a field SOURCE.md does not name is refused, so a misspelt field fails here.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import jsonmoney
from connectors.base import (
    AuthError,
    ClosedPeriodError,
    PermanentError,
    RateLimitedError,
    ReauthorizationRequired,
    RetryableError,
    StaleTokenError,
)
from connectors.engine_state import DocKind
from connectors.myob_accountright import Sandbox, mapping
from connectors.myob_accountright.client import classify
from connectors.testing import dead_lettered_before_any_write, refund, paid_then_goodwill
from connectors.testing import GST, PST, MemoryEntities, connectors_on, deliver, invoice_event, line, next_version, payment
from daemon.canonical import Customer, LineTax
from daemon.config import MappingConfig

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# --- the field table, read from SOURCE.md ----------------------------------------------------------------


@dataclass
class Field:
    kind: str = "any"  # string | datetime | guid | decimal | bool | int | enum | link | object | array | any
    max_length: int | None = None
    pattern: re.Pattern[str] | None = None
    values: tuple[str, ...] = ()
    required: bool = False
    read_only: bool = False
    fields: dict[str, "Field"] = field(default_factory=dict)  # object / array members
    open: bool = False  # SOURCE.md says "…": more members exist than it names
    alias: bool = False  # the foreign-currency twin of a field (``UnitPrice (UnitPriceForeign)``): never required


def _split(text: str) -> list[str]:
    """Top-level comma-separated pieces (commas inside {}, () or [] stay)."""
    pieces, depth, current = [], 0, ""
    for char in text:
        depth += char in "{([" and 1 or (-1 if char in "})]" else 0)
        if char == "," and depth == 0:
            pieces.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in pieces + [current.strip()] if p]


def _datetime(quoted: str) -> re.Pattern[str]:
    """``"YYYY-MM-DD HH:MM:SS"`` → the regular expression of that format."""
    return re.compile("^" + re.sub(r"[YMDHS]+", lambda m: rf"\d{{{len(m.group())}}}", quoted) + "$")


def _typed(type_text: str, spec: Field) -> Field:
    type_text = type_text.strip()
    if m := re.match(r"string\((\d+)\)", type_text):
        spec.kind, spec.max_length = "string", int(m.group(1))
    elif m := re.match(r'DateTime "([^"]+)"', type_text):
        spec.kind, spec.pattern = "datetime", _datetime(m.group(1))
    elif m := re.match(r"enum\s+(.+)", type_text):
        spec.kind, spec.values = "enum", tuple(v.strip() for v in m.group(1).split("/"))
    elif type_text in ("Guid", "decimal", "bool", "string", "int", "object", "array"):
        spec.kind = {"Guid": "guid"}.get(type_text, type_text)
    return spec


def parse_fields(text: str, types: list[str] | None = None) -> tuple[dict[str, Field], bool]:
    """A SOURCE.md field list → (fields, open)."""
    out: dict[str, Field] = {}
    pieces = _split(text)
    is_open = any(p.strip() in ("…", "...") for p in pieces)
    for n, piece in enumerate(p for p in pieces if p.strip() not in ("…", "...")):
        m = re.match(r"([A-Z][A-Za-z0-9]*)(\.UID)?(\[\])?(?:-(\d))?\s*(.*)$", piece, re.S)
        if m is None:
            continue
        name, is_link, is_array, upto, rest = m.groups()
        spec = _typed(types[n], Field()) if types and n < len(types) else Field()
        names = [name] if not upto else [name[:-1] + str(i) for i in range(int(name[-1]), int(upto) + 1)]
        if is_link:
            spec = Field(kind="link", fields={"UID": Field(kind="guid", required=True)})
        rest = rest.strip()
        if rest.startswith("enum "):  # PaymentIsDue enum A/B/C… (a trailing "…": more values exist)
            spec.kind, spec.values = "enum", tuple(re.split(r"\s*/\s*", rest[5:]))
        elif rest.startswith("{"):  # an object's members
            spec.kind = "array" if is_array else "object"
            spec.fields, spec.open = parse_fields(rest[1:rest.rindex("}")])
        elif rest.startswith("("):
            inner = rest[1:rest.index(")")] if ")" in rest else rest[1:]
            if inner.startswith("enum "):
                spec.kind, spec.values = "enum", tuple(re.split(r"\s*/\s*", inner[5:].rstrip("…")))
            elif re.fullmatch(r"[A-Z][A-Za-z]+(/[A-Z][A-Za-z]+)+…?", inner):  # Type (Invoice/Order/Purged)
                spec.kind, spec.values = "enum", tuple(inner.rstrip("…").split("/"))
            elif is_array:  # Addresses[] (Location int, Street, …)
                spec.kind = "array"
                spec.fields, spec.open = parse_fields(re.sub(r"\b([A-Z]\w*) int\b", r"\1", inner))
                if "Location" in spec.fields:
                    spec.fields["Location"].kind = "int"
            elif m2 := re.match(r"[a-z ]+,\s*(\d+)$", inner):  # DisplayID (card id, 15)
                spec.kind, spec.max_length = "string", int(m2.group(1))
            elif inner.startswith("or "):  # CompanyName (or IsIndividual + FirstName/LastName)
                for other in re.findall(r"[A-Z][A-Za-z]+", inner):
                    out[other] = Field(kind="bool" if other.startswith("Is") else "string")
            elif re.fullmatch(r"[A-Z][A-Za-z]+", inner) and inner.startswith(name):  # UnitPrice (UnitPriceForeign)
                out[inner] = dataclasses.replace(spec, alias=True)
        elif is_array:
            spec.kind = "array"
        for each in names:
            out[each] = copy.deepcopy(spec)
    return out, is_open


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the markdown table that follows ``heading``."""
    after = text[text.index(heading):]
    rows = []
    for row in after.splitlines()[1:]:
        if not row.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if cells[0] not in ("field", "---"):
            rows.append(cells)
    return rows


def _from_table(rows: list[list[str]]) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for name_cell, type_cell, flag_cell in rows:
        types = [t for t in _split(type_cell)] or None
        parsed, _ = parse_fields(name_cell, types if types and len(types) == len(_split(name_cell)) else (
            [type_cell] if type_cell else None))
        for name, spec in parsed.items():
            if spec.kind not in ("link", "object", "array") or type_cell in ("object", "array"):
                spec = _typed(type_cell, spec) if types and len(types) == 1 and spec.kind in ("any", "enum") else spec
            spec.required = not spec.alias and bool(re.search(r"\*\*(yes|required)\*\*", flag_cell))
            spec.read_only = "read-only" in flag_cell
            if name == "Lines":
                spec.kind = "array"
            fields[name] = spec
    return fields


@dataclass
class Resource:
    fields: dict[str, Field]
    open: bool = False
    updatable: bool = True  # PUT of the whole object with UID + RowVersion


class FieldTable:
    """The request bodies SOURCE.md describes, per resource path."""

    def __init__(self, text: str) -> None:
        header = _from_table(_table(text, "Item invoice (POST"))
        item_line = _from_table(_table(text, "Item invoice line ("))
        service = re.search(r"use ServiceInvoiceLine: (.+?)\.\n", text, re.S).group(1)
        service_line, _ = parse_fields(service)
        for name, spec in service_line.items():  # the types the line table gives the same members
            if name in item_line and spec.kind != "link":
                service_line[name] = copy.deepcopy(item_line[name])
        service_line["Date"] = dataclasses.replace(header["Date"], required=False)
        # InvoiceLine.cs (the table's base contract) is the base of the service line too: Type; the income
        # account takes the item's place, so it is required where Item.UID is.
        service_line["Type"] = copy.deepcopy(item_line["Type"])
        service_line["Account"].required = True
        for name in ("Total", "TaxCode"):
            service_line[name].required = True
        customer, customer_open = parse_fields(re.search(r"Customer \(POST …/Contact/Customer\) — [^:]+: (.+?)\.\n\n",
                                                         text, re.S).group(1))
        customer["CompanyName"].kind = "string"
        paying, _ = parse_fields(re.search(r"CustomerPayment\.cs, CustomerPaymentLine\.cs: (.+?)\.\n", text, re.S).group(1))
        settling, _ = parse_fields(re.search(r"Sale/CreditSettlement \(([^)]+)\)", text).group(1))
        # SDK CreditSettlement.cs / CreditSettlementLine.cs members SOURCE.md's one-line summary leaves out.
        settling.update(Customer=Field(kind="link", fields={"UID": Field(kind="guid", required=True)}),
                        Date=copy.deepcopy(header["Date"]), Memo=Field(kind="string"))
        settling["Lines"] = Field(kind="array", required=True, fields={
            "Type": Field(kind="enum", values=("Invoice", "Order")), "AmountApplied": Field(kind="decimal"),
            "Sale": Field(kind="link", fields={"UID": Field(kind="guid", required=True)})})
        for name in ("Date", "Customer", "Invoices"):
            paying[name] = copy.deepcopy(header[name]) if name != "Invoices" else paying[name]
        refunding, _ = parse_fields(re.search(r"Sale/CreditRefund\s+\(([^)]+)\)", text).group(1))
        # SOURCE.md names the four members a credit refund needs; SDK CreditRefund.cs's other members, typed.
        refunding.update(Date=copy.deepcopy(header["Date"]), Amount=Field(kind="decimal", required=True),
                         Customer=Field(kind="link", fields={"UID": Field(kind="guid", required=True)}),
                         Memo=Field(kind="string", max_length=255), Payee=Field(kind="string"),
                         Number=Field(kind="string"), ChequePrinted=Field(kind="bool"))
        for name in ("Invoice", "Account"):
            refunding[name].required = True
        # Multi-currency members (SDK Version2 contracts; SOURCE.md names ForeignCurrency.UID and CurrencyExchangeRate
        # on the invoice and ForeignCurrency on the card, untyped): the rate a ``decimal?``; the foreign twins of
        # the amounts (``TotalForeign`` on InvoiceLine.cs, the service line's ``UnitPriceForeign``, the payment's
        # ``AmountReceivedForeign`` and its lines' ``AmountAppliedForeign``) never required.
        def link() -> Field:
            return Field(kind="link", fields={"UID": Field(kind="guid", required=True)})

        header["CurrencyExchangeRate"] = Field(kind="decimal")
        customer["ForeignCurrency"] = link()
        service_line |= {"TotalForeign": Field(kind="decimal", alias=True), "UnitPriceForeign": Field(kind="decimal",
                                                                                                        alias=True)}
        paying |= {"ForeignCurrency": link(), "CurrencyExchangeRate": Field(kind="decimal"),
                   "AmountReceivedForeign": Field(kind="decimal", alias=True)}
        paying["Invoices"].fields["AmountAppliedForeign"] = Field(kind="decimal", alias=True)
        settling["ForeignCurrency"] = link()
        refunding |= {"ForeignCurrency": link(), "CurrencyExchangeRate": Field(kind="decimal")}
        item_header = copy.deepcopy(header)
        item_header["Lines"].fields = item_line
        service_header = copy.deepcopy(header)
        service_header["Lines"].fields = service_line
        self.resources = {"Sale/Invoice/Item": Resource(item_header), "Sale/Invoice/Service": Resource(service_header),
                          "Contact/Customer": Resource(customer, customer_open),
                          "Sale/CustomerPayment": Resource(paying, updatable=False),
                          "Sale/CreditSettlement": Resource(settling, updatable=False),
                          "Sale/CreditRefund": Resource(refunding, updatable=False)}
        self.routes = re.search(r"\{company_file_id\}/Sale/Invoice/\{([^}]+)\}", text).group(1).split("|")

    def problems(self, method: str, resource: str, body: Any) -> list[str]:
        spec = self.resources.get(resource)
        if spec is None:
            return [f"{resource} is not a resource SOURCE.md describes"]
        if method == "DELETE":
            return [] if body is None else ["a DELETE carries no body"]
        if method == "PUT" and not spec.updatable:
            return [f"{resource} is not updated by PUT"]
        if not isinstance(body, dict):
            return ["the body is not a JSON object"]
        fields = dict(spec.fields)
        out = []
        if method == "PUT":  # Conventions: PUT requires UID and RowVersion
            fields |= {"UID": Field(kind="guid", required=True), "RowVersion": Field(kind="string", required=True)}
        return out + _check(body, fields, spec.open, "")


def _check(body: dict[str, Any], fields: dict[str, Field], is_open: bool, at: str) -> list[str]:
    out = []
    for name, value in body.items():
        spec = fields.get(name)
        where = f"{at}{name}"
        if spec is None:
            if not is_open:
                out.append(f"{where}: not a field SOURCE.md names")
            continue
        if spec.read_only:
            out.append(f"{where}: read-only")
        out += _value(value, spec, where)
    out += [f"{at}{name}: required" for name, spec in fields.items() if spec.required and body.get(name) is None]
    return out


def _value(value: Any, spec: Field, where: str) -> list[str]:
    kind = spec.kind
    if kind in ("link", "object"):
        return _check(value, spec.fields, spec.open, f"{where}.") if isinstance(value, dict) else [f"{where}: not an object"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        return [p for n, item in enumerate(value) for p in (
            _check(item, spec.fields, spec.open, f"{where}[{n}].") if spec.fields else [])]
    checks = {
        "string": lambda v: isinstance(v, str) and (spec.max_length is None or len(v) <= spec.max_length),
        "datetime": lambda v: isinstance(v, str) and bool(spec.pattern and spec.pattern.match(v)),
        "guid": lambda v: isinstance(v, str) and bool(GUID.match(v)),
        "decimal": lambda v: isinstance(v, (int, Decimal)) and not isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "enum": lambda v: isinstance(v, str) and (v in spec.values or any(x.endswith("…") for x in spec.values)),
    }
    check = checks.get(kind)
    if check is None or check(value):
        return []
    detail = f"longer than {spec.max_length}" if kind == "string" and isinstance(value, str) else f"not a {kind}"
    return [f"{where}: {value!r} is {detail}" + (f" {spec.values}" if kind == "enum" else "")]


@pytest.fixture(scope="module")
def table(specs: Path) -> FieldTable:
    return FieldTable((specs / "myob-accountright" / "SOURCE.md").read_text())


# --- the connector on its sandbox ---------------------------------------------------------------------------


class Captured:
    """Every request a connector sends (an httpx event hook on its client)."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def requests(self, prefix: str) -> list[tuple[str, str, dict[str, str], Any, httpx.Headers]]:
        return [(r.method, r.url.path.split(prefix, 1)[-1].strip("/"), dict(r.url.params),
                 jsonmoney.loads(r.content) if r.content else None, r.headers) for r in self.sent]


@pytest.fixture
def myob():
    sandbox = Sandbox(per_second_limit=200)
    with connectors_on(sandbox, "myob") as build:
        connector = build()
        captured = Captured()
        connector.http.client.event_hooks["request"].append(captured)
        yield sandbox, connector, captured


def _every_kind_of_write(sandbox, connector) -> None:
    """Create (card, item invoice, payment, credit, settlement), edit, remove a payment, release the
    settlement, delete; a card update; then a locked period: a re-dated create, a decrease and an increase."""
    entities = MemoryEntities()
    v1 = invoice_event(5001, payments=[payment(1, "100.00")], refunds=[refund(2, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v1)
    v2 = next_version(v1, lines=list(v1.lines)[:4] + [line(6, "part", "Relay", "2", "11.20", taxes=(GST, PST))],
                      payments=[])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, status="void"), doc)
    assert doc.status == "voided"
    moved = v1.customer.model_copy(update={"phone": "555-0199", "billing_address": "9 Depot Rd"})
    deliver(connector, entities, invoice_event(5004, customer=moved))  # the card is updated
    sandbox.set_lock_period(date(2026, 12, 1))
    late = deliver(connector, entities, invoice_event(5002))  # dated 2026-11-20: posted on 2026-12-01
    assert late.engine.posted_on == date(2026, 12, 1)
    sandbox.set_lock_period(None)
    v1 = invoice_event(5003)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_period(date(2026, 12, 1))
    v2 = next_version(v1, lines=list(v1.lines)[:2])
    doc = deliver(connector, entities, v2, doc)  # a decrease: a credit
    doc = deliver(connector, entities, next_version(v2, lines=list(v1.lines)), doc)  # an increase
    assert [a.kind for a in doc.engine.adjustments] == ["decrease", "increase"]
    sandbox.set_lock_period(None)
    paid = invoice_event(5005, payments=[payment(1, "677.58")])
    doc = deliver(connector, entities, paid)
    paid_back = next_version(paid, refunds=[refund(4, 2, "20.00", "1.00").model_copy(update={"payment_id": 1})])
    doc = deliver(connector, entities, paid_back, doc)  # a credit refund pays the credit back
    deliver(connector, entities, next_version(paid_back, refunds=[]), doc)  # taken back: the refund deleted


def _template(path: str) -> str:
    return re.sub(r"/[0-9a-f]{8}-[0-9a-f-]{27}", "/{UID}", path)


def test_every_request_matches_the_sdk_field_table(myob, table):
    sandbox, connector, captured = myob
    _every_kind_of_write(sandbox, connector)
    sent = captured.requests(connector.settings.company_file_id)
    seen = {(method, _template(path)) for method, path, *_ in sent}
    for expected in [("POST", "Contact/Customer"), ("PUT", "Contact/Customer/{UID}"), ("POST", "Sale/Invoice/Item"),
                     ("PUT", "Sale/Invoice/Item/{UID}"), ("DELETE", "Sale/Invoice/Item/{UID}"),
                     ("POST", "Sale/CustomerPayment"), ("DELETE", "Sale/CustomerPayment/{UID}"),
                     ("POST", "Sale/Invoice/Service"), ("POST", "Sale/CreditSettlement"),
                     ("DELETE", "Sale/CreditSettlement/{UID}"), ("POST", "Sale/CreditRefund"),
                     ("DELETE", "Sale/CreditRefund/{UID}"), ("GET", "Company/Preferences"),
                     ("GET", "Contact/Customer"), ("GET", "Sale/Invoice/Item/{UID}")]:
        assert expected in seen, f"{expected} never sent"
    assert "Item" in table.routes and "Service" in table.routes  # the layouts SOURCE.md's URL convention names
    writes = [(method, path, query, body) for method, path, query, body, _ in sent if method != "GET"]
    problems = {f"{method} {path}": found for method, path, query, body in writes
                if (found := table.problems(method, _template(path).removesuffix("/{UID}"), body))}
    assert not problems
    assert all(query == ({"returnBody": "true"} if method != "DELETE" else {}) for method, _, query, _ in writes)
    # MYOB's headers on every API request (SDK ApiRequestHelper.SetStandardHeaders).
    cred = connector.runtime.credentials("myob").get()
    cftoken = base64.b64encode(f"{cred['company_file_username']}:{cred['company_file_password']}".encode()).decode()
    for *_, headers in sent:
        assert headers["x-myobapi-key"] == cred["client_id"] and headers["x-myobapi-version"] == "v2"
        assert headers["x-myobapi-cftoken"] == cftoken and headers["authorization"].startswith("Bearer ")


def test_the_field_table_check_rejects_bad_bodies(table):
    good = {"Number": "INV-1", "Date": "2026-11-20 00:00:00", "Customer": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"},
            "IsTaxInclusive": False, "Terms": {"PaymentIsDue": "InAGivenNumberOfDays", "BalanceDueDate": 30},
            "Lines": [{"Type": "Transaction", "Description": "Labour", "ShipQuantity": Decimal("1.5"),
                       "UnitPrice": Decimal("120.00"), "Total": Decimal("180.00"),
                       "Item": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3302"},
                       "TaxCode": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3303"}}]}
    assert table.problems("POST", "Sale/Invoice/Item", good) == []

    def bad(change, expected: str, resource: str = "Sale/Invoice/Item", method: str = "POST", body=None) -> None:
        body = copy.deepcopy(body or good)
        change(body)
        found = table.problems(method, resource, body)
        assert any(expected in p for p in found), (expected, found)

    bad(lambda b: b.pop("Date"), "Date: required")
    bad(lambda b: b.update(Number="INV-0000000001234"), "Number: 'INV-0000000001234' is longer than 13")
    bad(lambda b: b.update(Date="2026-11-20"), "Date: '2026-11-20' is not a datetime")
    bad(lambda b: b.update(Customer={"UID": "77"}), "Customer.UID: '77' is not a guid")
    bad(lambda b: b.update(Customer={"Name": "Dana"}), "Customer.UID: required")
    bad(lambda b: b.update(TotalAmount=Decimal("1")), "TotalAmount: read-only")
    bad(lambda b: b.update(Memo="x"), "Memo: not a field SOURCE.md names")
    bad(lambda b: b["Lines"][0].pop("TaxCode"), "Lines[0].TaxCode: required")
    bad(lambda b: b["Lines"][0].pop("Item"), "Lines[0].Item: required")
    bad(lambda b: b["Lines"][0].update(Total="180.00"), "Lines[0].Total: '180.00' is not a decimal")
    bad(lambda b: b["Lines"][0].update(Type="Comment"), "Lines[0].Type: 'Comment' is not a enum")
    bad(lambda b: b["Lines"][0].update(Account={"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3304"}, Qty=1), "Lines[0].Qty")
    bad(lambda b: b.update(IsTaxInclusive="false"), "IsTaxInclusive: 'false' is not a bool")
    # Terms' members and PaymentIsDue's values are open in SOURCE.md ("…"): only a non-string is refused there.
    bad(lambda b: b.update(Terms={"PaymentIsDue": 3}), "Terms.PaymentIsDue: 3 is not a enum")
    # PUT needs UID and RowVersion; the service layout posts on accounts, never items.
    bad(lambda b: None, "UID: required", method="PUT")
    service = copy.deepcopy(good)
    service["Lines"] = [{"Type": "Transaction", "Description": "Refund", "Total": Decimal("-20.00"),
                         "Account": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3305"},
                         "TaxCode": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3303"}}]
    assert table.problems("POST", "Sale/Invoice/Service", service) == []
    bad(lambda b: b["Lines"][0].pop("Account"), "Lines[0].Account: required", "Sale/Invoice/Service", body=service)
    bad(lambda b: b["Lines"][0].update(ShipQuantity=Decimal(1)), "Lines[0].ShipQuantity: not a field",
        "Sale/Invoice/Service", body=service)
    card = {"CompanyName": "Dana", "IsIndividual": False, "DisplayID": "LWC77", "IsActive": True,
            "Addresses": [{"Location": 1, "Email": "d@example.com", "Phone1": "555"}],
            "SellingDetails": {"TaxCode": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3303"}}}
    assert table.problems("POST", "Contact/Customer", card) == []
    bad(lambda b: b.update(DisplayID="LWC1234567890123"), "DisplayID: 'LWC1234567890123' is longer than 15",
        "Contact/Customer", body=card)
    bad(lambda b: b["Addresses"][0].update(Mobile="555"), "Addresses[0].Mobile: not a field", "Contact/Customer",
        body=card)
    bad(lambda b: b["Addresses"][0].update(Location="1"), "Addresses[0].Location: '1' is not a int",
        "Contact/Customer", body=card)
    receipt = {"DepositTo": "Account", "Account": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3306"},
               "Customer": {"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}, "Date": "2026-11-20 00:00:00",
               "AmountReceived": Decimal("10"), "PaymentMethod": "card", "Memo": "LWP1",
               "Invoices": [{"UID": "3f2504e0-4f89-11d3-9a0c-0305e82c3307", "AmountApplied": Decimal("10"),
                             "Type": "Invoice"}]}
    assert table.problems("POST", "Sale/CustomerPayment", receipt) == []
    bad(lambda b: b.update(DepositTo="Bank"), "DepositTo: 'Bank' is not a enum", "Sale/CustomerPayment", body=receipt)
    bad(lambda b: b["Invoices"][0].update(Type="Bill"), "Invoices[0].Type: 'Bill' is not a enum",
        "Sale/CustomerPayment", body=receipt)
    bad(lambda b: None, "is not updated by PUT", "Sale/CustomerPayment", "PUT", body=receipt)
    credit_refund = mapping.credit_refund_payload(
        invoice_event(5010, payments=[payment(1, "50.00")]), refund(4, 2, "20.00", "1.00").model_copy(
            update={"payment_id": 1}), "3f2504e0-4f89-11d3-9a0c-0305e82c3308", "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        Decimal("21.00"), date(2026, 11, 20), "LWRP4",
        MappingConfig(payment_accounts={"card": "3f2504e0-4f89-11d3-9a0c-0305e82c3306"}))
    assert table.problems("POST", "Sale/CreditRefund", credit_refund) == []
    bad(lambda b: b.pop("Account"), "Account: required", "Sale/CreditRefund", body=credit_refund)
    bad(lambda b: b.update(Amount="21.00"), "Amount: '21.00' is not a decimal", "Sale/CreditRefund", body=credit_refund)
    bad(lambda b: b.update(RefundMethod="card"), "RefundMethod: not a field", "Sale/CreditRefund", body=credit_refund)
    bad(lambda b: None, "is not updated by PUT", "Sale/CreditRefund", "PUT", body=credit_refund)
    assert table.problems("POST", "Inventory/Item", {}) == ["Inventory/Item is not a resource SOURCE.md describes"]
    cad = "3f2504e0-4f89-11d3-9a0c-0305e82c3309"
    foreign = good | {"ForeignCurrency": {"UID": cad}, "CurrencyExchangeRate": Decimal("0.73"),
                      "Lines": [good["Lines"][0] | {"TotalForeign": Decimal("180.00"), "UnitPriceForeign": Decimal("120.00")}]}
    assert table.problems("POST", "Sale/Invoice/Item", foreign) == []
    bad(lambda b: b.update(ForeignCurrency={"UID": "CAD"}), "ForeignCurrency.UID: 'CAD' is not a guid", body=foreign)
    bad(lambda b: b.update(ForeignCurrency="CAD"), "ForeignCurrency: not an object", body=foreign)
    bad(lambda b: b.update(CurrencyExchangeRate="0.73"), "CurrencyExchangeRate: '0.73' is not a decimal", body=foreign)
    bad(lambda b: b.update(CurrencyCode="CAD"), "CurrencyCode: not a field", body=foreign)
    bad(lambda b: b["Lines"][0].update(TotalForeign="180"), "Lines[0].TotalForeign: '180' is not a decimal", body=foreign)
    foreign_receipt = receipt | {"ForeignCurrency": {"UID": cad}, "CurrencyExchangeRate": Decimal("0.73"),
                                 "AmountReceivedForeign": Decimal("10"),
                                 "Invoices": [receipt["Invoices"][0] | {"AmountAppliedForeign": Decimal("10")}]}
    assert table.problems("POST", "Sale/CustomerPayment", foreign_receipt) == []
    bad(lambda b: b["Invoices"][0].update(AmountForeign=Decimal("10")), "Invoices[0].AmountForeign: not a field",
        "Sale/CustomerPayment", body=foreign_receipt)


# --- the sandbox's platform rules ------------------------------------------------------------------------------


def _api(connector, path: str = "Contact/Customer", **headers: str | None) -> httpx.Response:
    """A GET with the connector's headers, some replaced (None = left out)."""
    signed: dict[str, str] = {}
    connector.http.auth.apply(signed)
    sent = {k.lower(): v for k, v in signed.items()}
    sent.update({k.replace("_", "-"): v for k, v in headers.items() if v is not None})
    for name in [k.replace("_", "-") for k, v in headers.items() if v is None]:
        sent.pop(name, None)
    return httpx.get(f"{connector.target.base_url}/{connector.settings.company_file_id}/{path}", headers=sent)


def test_the_api_key_version_and_company_file_user_are_required(myob):
    _, connector, _ = myob
    assert _api(connector).status_code == 200
    missing_key = _api(connector, **{"x-myobapi-key": None})
    assert missing_key.status_code == 403 and missing_key.json()["Errors"][0]["Name"] == "DeveloperInactive"
    assert isinstance(classify(missing_key), ReauthorizationRequired)
    assert _api(connector, **{"x-myobapi-version": None}).status_code == 400
    wrong_user = _api(connector, **{"x-myobapi-cftoken": base64.b64encode(b"Administrator:guess").decode()})
    assert wrong_user.status_code == 401 and isinstance(classify(wrong_user), ReauthorizationRequired)
    expired = _api(connector, authorization="Bearer at-unknown")
    assert expired.status_code == 401 and type(classify(expired)) is AuthError


def test_refresh_tokens_rotate_and_the_old_one_dies(myob):
    sandbox, connector, _ = myob
    store = connector.runtime.credentials("myob")
    deliver(connector, MemoryEntities(), invoice_event(5200))
    first = store.get()["refresh_token"]
    sandbox.issuer.expire_all()  # 20-minute access tokens: the next call refreshes
    deliver(connector, MemoryEntities(), invoice_event(5201))
    assert store.get()["refresh_token"] != first
    answer = httpx.post(connector.settings.token_url, data={
        "grant_type": "refresh_token", "refresh_token": first, "client_id": store.get()["client_id"],
        "client_secret": store.get()["client_secret"]})
    assert answer.status_code == 400 and answer.json() == {"error": "invalid_grant"}


def test_eight_calls_a_second_answered_with_myobs_403_rate_limit_error():
    sandbox = Sandbox()  # MYOB's documented 8 calls/s
    with connectors_on(sandbox, "myob", requests_per_second=1000) as build:
        connector = build()
        with pytest.raises(RateLimitedError) as raised:
            for _ in range(12):
                connector.books_closed_through()
        assert raised.value.status == 403 and raised.value.platform_code == "RateLimitError"
        assert raised.value.retry_after == 1 and sandbox.rate_limit_breaches() >= 1


def test_the_connectors_limiter_keeps_under_eight_a_second():
    sandbox = Sandbox()
    with connectors_on(sandbox, "myob") as build:  # the default: 8/s
        connector = build()
        for _ in range(20):
            connector.books_closed_through()
        assert sandbox.rate_limit_breaches() == 0


def test_a_stale_row_version_is_a_409_and_the_engine_rereads(myob):
    sandbox, connector, _ = myob
    entities = MemoryEntities()
    v1 = invoice_event(5300)
    doc = deliver(connector, entities, v1)
    body = mapping.invoice_payload(v1, doc.customer_id, {}, connector.mapping) | {
        "UID": doc.external_id, "RowVersion": "1"}
    with pytest.raises(StaleTokenError) as raised:
        connector.client.write("PUT", f"/Sale/Invoice/Item/{doc.external_id}", body)
    assert raised.value.status == 409
    # A payment moves the invoice's RowVersion on: the update after it re-reads and goes through.
    v2 = next_version(v1, payments=[payment(1, "50.00")])
    doc = deliver(connector, entities, v2, doc)
    doc = deliver(connector, entities, next_version(v2, lines=list(v1.lines)[:3]), doc)
    (booked,) = [b for b in sandbox.booked_invoices() if b.number == v1.number]
    assert booked.line_count == 3 and booked.payments_applied == Decimal("50.00")


@pytest.mark.parametrize(("status", "name", "message", "kind"), [
    (401, "OAuthTokenIsInvalid", "The supplied OAuth token (Bearer) is not valid", AuthError),
    (403, "RateLimitError", "API key has exceeded the daily rate limit", RateLimitedError),
    (403, "DeveloperInactive", "API key is missing or inactive", ReauthorizationRequired),
    (409, "ConcurrencyConflict", "stale", StaleTokenError),
    (400, "BusinessEvent_DateOccured_InLockPeriod", "locked", ClosedPeriodError),
    (400, "Required", "Date is required", PermanentError),
    (400, "TransactionsCannotBeDeleted", "Transactions cannot be deleted and must be reversed", PermanentError),
    (500, "InternalError", "boom", RetryableError),
])
def test_myobs_error_body_is_classified(status, name, message, kind):
    body = {"Errors": [{"Name": name, "Message": message, "AdditionalDetails": "", "ErrorCode": 0,
                        "Severity": "Error", "LearnMore": None}]}
    error = classify(httpx.Response(status, json=body))
    assert type(error) is kind and error.platform_code == name and message in error.reason
    if kind is RateLimitedError:
        assert error.retry_after == 3600  # the daily limit: no Retry-After from MYOB
    assert classify(httpx.Response(502, text="<html>bad gateway</html>")) is None  # the default rules apply


def test_parts_and_labour_post_as_one_item_invoice_on_the_kinds_items(myob):
    sandbox, connector, _ = myob
    event = invoice_event(5400)
    doc = deliver(connector, MemoryEntities(), event)
    (invoice,) = sandbox.records("Sale/Invoice/Item")
    items = connector.mapping.items
    assert [ln["Item"]["UID"] for ln in invoice["Lines"]] == [
        items[k] for k in ("labour", "part", "core_charge", "labour", "fee")]
    assert invoice["Lines"][1]["Description"] == "ALT-140R Alternator, reman 140A"
    assert (invoice["TotalAmount"], invoice["TotalTax"]) == (event.computed.total, event.computed.tax_total)
    assert invoice["CustomerPurchaseOrderNumber"] == event.number and event.job.number in invoice["JournalMemo"]
    assert doc.engine.tax_difference is None
    assert sandbox.records("Sale/Invoice/Service") == []


def test_a_refund_is_a_negative_service_invoice_applied_by_a_credit_settlement(myob):
    sandbox, connector, _ = myob
    v1 = invoice_event(5500, refunds=[refund(3, 1, "20.00", "1.00")])
    doc = deliver(connector, MemoryEntities(), v1)
    (credit,) = sandbox.records("Sale/Invoice/Service")
    assert (credit["Number"], credit["TotalAmount"], credit["Status"]) == ("LWR3", Decimal("-21.00"), "Closed")
    assert credit["Lines"][0]["Account"]["UID"] == connector.mapping.income_accounts["labour"]
    (settlement,) = sandbox.records("Sale/CreditSettlement")
    assert settlement["CreditAmount"] == Decimal("21.00") and settlement["Lines"][0]["Sale"]["UID"] == doc.external_id
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("21.00")


def test_a_money_line_keeps_the_shops_tax_where_myob_computes_it():
    rules = MappingConfig(tax_codes={"GST": "g", "GST+PST": "gp", "none": "n"})
    gst = (LineTax(**GST, amount=Decimal("0")),)
    lines = mapping.money_lines("Adjustment", "acct", Decimal("100.00"), Decimal("3.00"), gst, rules, -1)
    assert [(ln["Total"], ln["TaxCode"]["UID"]) for ln in lines] == [(Decimal("-60.00"), "g"), (Decimal("-40.00"), "n")]
    both = (LineTax(**GST, amount=Decimal("0")), LineTax(**PST, amount=Decimal("0")))
    (one,) = mapping.money_lines("Relay", "acct", Decimal("22.40"), Decimal("2.69"), both, rules, 1)
    assert (one["Total"], one["TaxCode"]["UID"]) == (Decimal("22.40"), "gp")  # 1.12 GST + 1.57 PST


def test_a_long_shop_number_is_shortened_and_found_by_the_whole_number(myob):
    sandbox, connector, _ = myob
    assert mapping.number("INV-MAIN-000001") == "INVMAIN000001"  # 15 characters; punctuation dropped
    long_one, twin = invoice_event(5600, number="WO-2026-000123-BAY4"), invoice_event(5601, number="WO-2026-000123-BAY5")
    docs = [deliver(connector, MemoryEntities(), e) for e in (long_one, twin)]
    invoices = sandbox.records("Sale/Invoice/Item")
    assert [len(i["Number"]) for i in invoices] == [13, 13] and invoices[0]["Number"] != invoices[1]["Number"]
    assert [i["CustomerPurchaseOrderNumber"] for i in invoices] == [long_one.number, twin.number]
    for event, doc in zip((long_one, twin), docs):
        assert [r.external_id for r in connector.find(DocKind.INVOICE, event.number)] == [doc.external_id]


def test_lists_are_read_page_by_page(myob):
    sandbox, connector, _ = myob
    connector.client.settings = connector.settings.model_copy(update={"page_size": 2})
    entities = MemoryEntities()
    for n in range(5):
        deliver(connector, entities, invoice_event(5700 + n, number="INV-PAGED"))
    assert len(connector.find(DocKind.INVOICE, "INV-PAGED")) == 5


def test_a_bookkeepers_card_is_used_but_another_shop_customers_never(myob):
    sandbox, connector, _ = myob
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    cf = next(iter(sandbox.files.values()))
    uid = "3f2504e0-4f89-11d3-9a0c-0305e82c3399"
    cf.tables["Contact/Customer"][uid] = {"UID": uid, "CompanyName": "Dana Whitfield", "DisplayID": "*None",
                                          "RowVersion": "1"}
    assert deliver(connector, MemoryEntities(), invoice_event(5800)).customer_id == uid
    cf.tables["Contact/Customer"][uid]["DisplayID"] = "LWC78"  # now another shop customer's card
    other = invoice_event(5801, customer=Customer(id=79, name="Dana Whitfield"))
    assert deliver(connector, MemoryEntities(), other).customer_id != uid


def test_a_name_with_a_quote_and_an_and_is_matched_by_odata(myob):
    sandbox, connector, _ = myob
    # matching the bookkeeper's own record is configured, never the default (issue #20)
    connector.mapping = connector.mapping.model_copy(update={"customer_match": ["email", "name"]})
    cf = next(iter(sandbox.files.values()))
    uid = "3f2504e0-4f89-11d3-9a0c-0305e82c3398"
    cf.tables["Contact/Customer"][uid] = {"UID": uid, "CompanyName": "O'Brien and Sons", "DisplayID": "*None",
                                          "RowVersion": "1"}
    event = invoice_event(5850, customer=Customer(id=90, name="O'Brien and Sons"))
    assert deliver(connector, MemoryEntities(), event).customer_id == uid


def test_money_dated_in_the_lock_period_posts_on_the_first_open_day(myob):
    sandbox, connector, _ = myob
    entities = MemoryEntities()
    v1 = invoice_event(5900)
    doc = deliver(connector, entities, v1)
    sandbox.set_lock_period(date(2026, 12, 1))  # the payment (Nov 20) and the return (Nov 20) are locked
    v2 = next_version(v1, payments=[payment(1, "100.00")], refunds=[refund(3, 2, "289.95", "14.50")])
    doc = deliver(connector, entities, v2, doc)
    (receipt,) = sandbox.records("Sale/CustomerPayment")
    (credit,) = sandbox.records("Sale/Invoice/Service")
    (settlement,) = sandbox.records("Sale/CreditSettlement")
    assert receipt["Date"] == credit["Date"] == "2026-12-01 00:00:00" and settlement["Date"] >= "2026-12-01"
    assert connector.read_invoice(doc.external_id).balance == v1.computed.total - Decimal("100.00") - Decimal("304.45")


def test_a_file_that_must_reverse_refuses_the_delete_with_a_clear_error(myob):
    sandbox, connector, _ = myob
    entities = MemoryEntities()
    v1 = invoice_event(6000)
    doc = deliver(connector, entities, v1)
    next(iter(sandbox.files.values())).must_reverse = True
    with pytest.raises(PermanentError) as refused:
        deliver(connector, entities, next_version(v1, status="void"), doc)
    assert refused.value.platform_code == "TransactionsCannotBeDeleted" and "must be reversed" in refused.value.reason


def test_the_sandbox_validates_as_the_sdk_table_says(myob):
    _, connector, _ = myob
    client = connector.client

    def post(path: str, body: dict) -> dict:
        with pytest.raises(PermanentError) as refused:
            client.write("POST", path, body)
        assert refused.value.status == 400
        return refused.value.detail[0]

    card = client.write("POST", "/Contact/Customer", mapping.customer_payload(
        Customer(id=1, name="Val"), connector.mapping))
    tax = connector.mapping.tax_codes["none"]
    line_ok = {"Type": "Transaction", "ShipQuantity": 1, "UnitPrice": Decimal("10.00"), "Total": Decimal("10.00"),
               "Item": {"UID": connector.mapping.items["labour"]}, "TaxCode": {"UID": tax}}
    assert post("/Sale/Invoice/Item", {"Customer": {"UID": card["UID"]}, "Lines": [line_ok]}) == {
        "Name": "Required", "Message": "Date is required", "AdditionalDetails": "Date", "ErrorCode": 100,
        "Severity": "Error", "LearnMore": None}
    header = {"Date": "2026-11-20 00:00:00", "Customer": {"UID": card["UID"]}}
    assert post("/Sale/Invoice/Item", header | {"Lines": [{**line_ok, "Total": "ten"}]})["ErrorCode"] == 50
    assert post("/Sale/Invoice/Item", header | {"Lines": [{**line_ok, "TaxCode": {}}]})["Message"] == (
        "Lines[1].TaxCode.UID is required")
    assert post("/Sale/Invoice/Item", header | {"Number": "N" * 14, "Lines": [line_ok]})["AdditionalDetails"] == "Number"
    assert post("/Sale/Invoice/Item", header | {"Date": "20/11/2026", "Lines": [line_ok]})["Name"] == "SerializationError"


def test_the_mapping_check_reads_every_uid_from_the_company_file(myob):
    _, connector, _ = myob
    assert connector.check_mapping() == []
    connector.mapping = connector.mapping.model_copy(update={
        "items": {**connector.mapping.items, "labour": "3f2504e0-4f89-11d3-9a0c-0305e82c3397"},
        "tax_codes": {**connector.mapping.tax_codes, "GST": connector.mapping.income_accounts["part"]}})
    assert connector.check_mapping() == [
        "items.labour: Item '3f2504e0-4f89-11d3-9a0c-0305e82c3397' not found",
        f"tax_codes.GST: TaxCode '{connector.mapping.income_accounts['part']}' not found"]


def test_the_target_config_is_ready_before_any_credentials_are_seeded():
    """The demo asks for the target config first, then seeds the credentials."""
    sandbox = Sandbox()
    config = sandbox.target_config("demo", "http://127.0.0.1:1")
    assert config["settings"]["company_file_id"] in sandbox.files and config["mapping"]["items"]["labour"]


def test_a_refund_paid_back_is_a_credit_refund_that_leaves_nothing_of_the_credit(myob):
    """MYOB's ``Sale/CreditRefund`` from the refunded payment's account takes the credit to 0; the sandbox refuses
    more than is left; deleting it gives the credit back. A goodwill refund's tax is on the main taxed line's code."""
    sandbox, connector, _ = myob
    v1, goodwill, doc = paid_then_goodwill(connector, 5800)
    (credit,) = sandbox.records("Sale/Invoice/Service")
    assert (credit["TotalAmount"], credit["TotalTax"], credit["BalanceDueAmount"]) == (
        Decimal("-42.00"), Decimal("-2.00"), Decimal("0.00"))
    (paid_back,) = sandbox.records("Sale/CreditRefund")
    assert (paid_back["Invoice"]["UID"], paid_back["Amount"], paid_back["Memo"], paid_back["Account"]["UID"]) == (
        credit["UID"], Decimal("42.00"), "LWRP9", connector.mapping.payment_accounts["card"])
    assert [r.external_id for r in connector.find(DocKind.REFUND_PAYMENT, "LWRP9")] == [paid_back["UID"]]
    assert connector.read_invoice(doc.external_id).balance == 0
    again = {k: paid_back[k] for k in ("Invoice", "Account", "Customer", "Date", "Memo")} | {"Amount": Decimal("1.00")}
    with pytest.raises(PermanentError, match="more than the credit available"):
        connector.client.write("POST", "/Sale/CreditRefund", again)
    connector.client.write("DELETE", f"/Sale/CreditRefund/{paid_back['UID']}")
    assert sandbox.records("Sale/Invoice/Service")[0]["BalanceDueAmount"] == Decimal("-42.00")


# --- currencies (issue #20) ------------------------------------------------------------------------------------


def _posted(sandbox, resource: str) -> list[dict]:
    return [body for method, path, body in sandbox.requests if method == "POST" and path == resource]


def test_an_invoice_in_another_currency_goes_on_the_customers_card_for_it_at_myobs_rate(myob, table):
    """CAD at a USD file: a card per currency (``LWCCAD<id>``, ForeignCurrency CAD), the invoice, its payment, its
    credit and settlement, and the money paid back all in CAD on that card, at MYOB's own CurrencyRate, the amounts
    in the *Foreign fields MYOB reads; read back in CAD."""
    sandbox, connector, captured = myob
    entities = MemoryEntities()
    assert connector.home_currency() == "USD"  # the target's: MYOB's API does not name the file's currency
    (cad,) = [c for c in sandbox.records("GeneralLedger/Currency") if c["Code"] == "CAD"]
    paid_back = refund(2, 2, "10.00", "0.50").model_copy(update={"payment_id": 1})
    event = invoice_event(5900, currency="CAD", payments=[payment(1, "100.00")],
                          refunds=[refund(1, 1, "20.00", "1.00"), paid_back])
    doc = deliver(connector, entities, event)
    cards = {c["DisplayID"]: c for c in sandbox.records("Contact/Customer")}
    twin = cards[f"LWCCAD{event.customer.id}"]
    assert twin["CompanyName"] == f"{event.customer.name} [CAD]" and twin["ForeignCurrency"]["UID"] == cad["UID"]
    assert f"LWC{event.customer.id}" in cards  # the engine's home-currency card, untouched by CAD
    (sale,) = _posted(sandbox, "Sale/Invoice/Item")
    assert (sale["ForeignCurrency"], sale["CurrencyExchangeRate"], sale["Customer"]) == (
        {"UID": cad["UID"]}, Decimal("0.730000"), {"UID": twin["UID"]})
    assert all(ln["TotalForeign"] == ln["Total"] for ln in sale["Lines"])
    (receipt,) = _posted(sandbox, "Sale/CustomerPayment")
    assert (receipt["ForeignCurrency"], receipt["AmountReceivedForeign"], receipt["Invoices"][0]["AmountAppliedForeign"]
            ) == ({"UID": cad["UID"]}, Decimal("100.00"), Decimal("100.00"))
    for body in [*_posted(sandbox, "Sale/Invoice/Service"), *_posted(sandbox, "Sale/CreditSettlement"),
                 *_posted(sandbox, "Sale/CreditRefund")]:
        assert body["ForeignCurrency"] == {"UID": cad["UID"]} and body["Customer"] == {"UID": twin["UID"]}
    assert len(_posted(sandbox, "Sale/CreditSettlement")) == 1 and len(_posted(sandbox, "Sale/CreditRefund")) == 1
    (booked,) = sandbox.booked_invoices()
    assert (booked.currency, booked.total, booked.payments_applied) == ("CAD", event.computed.total, Decimal("100.00"))
    held = connector.read_invoice(doc.external_id)
    assert held.total == event.computed.total and held.raw["TotalAmount"] == (event.computed.total * cad[
        "CurrencyRate"]).quantize(Decimal("0.01"))  # USD at MYOB's rate; the engine reads CAD
    assert held.balance == event.computed.total - Decimal("100.00") - Decimal("21.00")
    sent = captured.requests(connector.settings.company_file_id)
    assert not {f"{m} {p}": f for m, p, _, b, _ in sent if m != "GET"
                if (f := table.problems(m, _template(p).removesuffix("/{UID}"), b))}
    deliver(connector, entities, invoice_event(5901, currency="CAD"))  # the card is found again, not made twice
    assert [c["DisplayID"] for c in sandbox.records("Contact/Customer")].count(f"LWCCAD{event.customer.id}") == 1


def test_a_renamed_customers_currency_card_follows_the_shop(myob):
    """Issue #20: the shop customer's CAD card was created once and never updated, so after a rename and a new email
    CAD sales kept going to a card under the old name (the home card was updated). It follows the shop now."""
    sandbox, connector, _ = myob
    entities = MemoryEntities()
    first = invoice_event(5950, currency="CAD")
    deliver(connector, entities, first)
    renamed = first.customer.model_copy(update={"name": "Northside Fleet", "email": "ap@northside.example"})
    deliver(connector, entities, invoice_event(5951, currency="CAD", customer=renamed))
    twins = [c for c in sandbox.records("Contact/Customer") if c["DisplayID"] == f"LWCCAD{first.customer.id}"]
    assert len(twins) == 1 and twins[0]["CompanyName"] == "Northside Fleet [CAD]"
    assert twins[0]["Addresses"][0]["Email"] == "ap@northside.example"
    assert {s["Customer"]["UID"] for s in _posted(sandbox, "Sale/Invoice/Item")} == {twins[0]["UID"]}


def test_a_home_currency_invoice_goes_as_before_without_currency_fields(myob):
    sandbox, connector, captured = myob
    deliver(connector, MemoryEntities(), invoice_event(5910, payments=[payment(1, "50.00")]))
    for body in [*_posted(sandbox, "Sale/Invoice/Item"), *_posted(sandbox, "Sale/CustomerPayment")]:
        assert not {k for k in body if "Currency" in k or k.endswith("Foreign")}
        assert not {k for ln in body.get("Lines", []) + body.get("Invoices", []) for k in ln if k.endswith("Foreign")}
    assert not any("GeneralLedger/Currency" in r.url.path for r in captured.sent)


def test_an_invoice_in_a_currency_the_file_does_not_hold_is_dead_lettered_before_any_write(myob):
    sandbox, connector, _ = myob
    dead_lettered_before_any_write(connector, MemoryEntities(), lambda: sandbox.requests, invoice_event(5920),
                                   invoice_event(5921, currency="EUR"), "EUR.*no currency EUR")


def test_the_sandbox_holds_a_cards_currency_and_a_foreign_sales_rate(myob):
    """MYOB's rules the connector relies on: a sale is in its card's currency, a foreign one carries a rate, a
    currency must be the file's; amounts are typed."""
    sandbox, connector, _ = myob
    client = connector.client
    (cad,) = [c for c in sandbox.records("GeneralLedger/Currency") if c["Code"] == "CAD"]
    home = client.write("POST", "/Contact/Customer", mapping.customer_payload(Customer(id=1, name="Val"), connector.mapping))
    foreign = client.write("POST", "/Contact/Customer", mapping.customer_payload(Customer(id=2, name="Vic"), connector.mapping)
                           | {"DisplayID": "LWCCAD2", "ForeignCurrency": {"UID": cad["UID"]}})
    line_ok = {"Type": "Transaction", "ShipQuantity": 1, "Total": Decimal("10.00"), "TotalForeign": Decimal("10.00"),
               "Item": {"UID": connector.mapping.items["labour"]}, "TaxCode": {"UID": connector.mapping.tax_codes["none"]}}
    sale = {"Date": "2026-11-20 00:00:00", "Customer": {"UID": foreign["UID"]}, "ForeignCurrency": {"UID": cad["UID"]},
            "CurrencyExchangeRate": Decimal("0.73"), "Lines": [line_ok]}

    def refused(body: dict, path: str = "/Sale/Invoice/Item") -> dict:
        with pytest.raises(PermanentError) as caught:
            client.write("POST", path, body)
        return caught.value.detail[0]

    assert refused(sale | {"Customer": {"UID": home["UID"]}})["AdditionalDetails"] == "ForeignCurrency"
    assert refused({k: v for k, v in sale.items() if k != "ForeignCurrency"})["AdditionalDetails"] == "ForeignCurrency"
    assert refused({k: v for k, v in sale.items() if k != "CurrencyExchangeRate"})["Message"] == (
        "CurrencyExchangeRate is required")
    assert refused(sale | {"ForeignCurrency": {"UID": str(uuid.uuid4())}})["ErrorCode"] == 150
    assert refused(sale | {"CurrencyExchangeRate": "seventy"})["Name"] == "SerializationError"
    assert refused(sale | {"Lines": [{k: v for k, v in line_ok.items() if k != "TotalForeign"}]})["Message"] == (
        "Lines[1].TotalForeign is required")
    made = client.write("POST", "/Sale/Invoice/Item", sale)
    assert (made["TotalAmountForeign"], made["TotalAmount"], made["ForeignCurrency"]["Code"]) == (
        Decimal("10.00"), Decimal("7.30"), "CAD")
    with pytest.raises(PermanentError, match="currency cannot be changed"):
        client.write("PUT", f"/Contact/Customer/{foreign['UID']}", {k: v for k, v in foreign.items() if k != "URI"}
                     | {"ForeignCurrency": None})
