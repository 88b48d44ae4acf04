"""A local NetSuite SuiteTalk SOAP (2023_2) service for the demo and the tests, built from NetSuite's WSDL and XSDs.

The XSDs (``$LEDGERWIRE_SPECS_DIR/netsuite/suitetalk-soap/``) are the contract: every request's header and body
elements are validated against them (libxml2) and refused as NetSuite's Axis refuses what it cannot read (HTTP 500
fault ``org.xml.sax.SAXException``); answers are written by zeep from the same WSDL. Modelled: token-based auth in
the ``tokenPassport`` header (account, consumer key, token, nonce used once, timestamp within 5 minutes, HMAC-SHA256
signature; a refusal is ``invalidCredentialsFault`` ``INVALID_LOGIN_ATTEMPT``), the account's concurrency limit
(``exceededConcurrentRequestLimitFault`` ``WS_REQUEST_BLOCKED``), ``add`` (``DUP_RCRD`` on a second record with an
external id), ``upsert`` by external id, sparse ``update`` (``itemList``/``applyList`` replaced per ``replaceAll``),
``delete``, ``get``, ``search`` (TransactionSearchBasic by type and externalId / tranId, CustomerSearchBasic by
externalId, email, phone or companyName, AccountingPeriodSearchBasic by arLocked; ``bodyFieldsOnly``), references
checked (``INVALID_KEY_OR_REF``), tax computed from each line's tax code (legacy tax, per line, half up), payments
and credit memos applied through ``applyList`` (never more than the invoice's amount remaining: ``USER_ERROR``),
customer refunds (``CustomerRefund``: money paid back) whose ``applyList`` names credit memos of their customer, never
more than a memo has left, its total what they apply, a transaction with anything applied refused deletion
(``CANT_DELETE_TRANS``), A/R-locked accounting periods refusing
transactions dated in them (``TRAN_PERIOD_CLOSED``), currencies (``getAll`` of the currency records, ``get`` of a
subsidiary: USD the base, CAD; a customer's primary ``currency`` the base one unless sent, its ``currencyList`` the
others it takes, merged unless ``replaceAll``; a transaction in its customer's primary currency unless sent,
refused ``INVALID_KEY_OR_REF`` in one the customer does not take, ``exchangeRate`` the currency's rate unless sent,
applied only to documents in its own currency). The statusDetail messages are the sandbox's own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import secrets
import threading
import time
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.netsuite_soap.client import NS, SOAP_NS, local, many, money, tree, wsdl_client
from connectors.netsuite_soap.settings import PORT_PATH
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer

ZERO, CENT = Decimal("0"), Decimal("0.01")
ACCOUNT = "1234567_SB1"
ITEMS = {"10": "Labour", "11": "Parts", "12": "Shop fees", "13": "Core deposit", "14": "Adjustment"}
TAX_CODES = {"5": Decimal("0.05"), "6": Decimal("0.07"), "7": Decimal("0.12"), "8": Decimal("0.0625"),
             "9": Decimal("0.01"), "10": Decimal("0.0725"), "-7": ZERO}  # -7: NetSuite's "not taxable"
ACCOUNTS = {"1": "Checking", "2": "Undeposited Funds", "3": "Card clearing"}
TRANSACTIONS = {"Invoice": "invoice", "CreditMemo": "creditMemo", "CustomerPayment": "customerPayment",
                "CustomerRefund": "customerRefund"}
# The account's currency records (``symbol``: the ISO code; ``exchangeRate``: the default rate to the base currency,
# a transaction sent without one takes it; no EUR) and its subsidiary, which books in USD.
CURRENCIES = {"1": {"name": "US Dollar", "symbol": "USD", "isBaseCurrency": True, "exchangeRate": Decimal("1")},
              "3": {"name": "Canadian Dollar", "symbol": "CAD", "isBaseCurrency": False, "exchangeRate": Decimal("0.73")}}
SUBSIDIARIES = {"1": {"name": "Main St Auto Electric", "currency": "1"}}
PAYERS = ("customerPayment", "customerRefund")  # transactions whose party is ``customer`` (the rest: ``entity``)
WRITES = {"add", "upsert", "update", "delete"}
CLOCK_SKEW_S = 300


def specs_dir() -> Path:
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", "../shared/specs")) / "netsuite" / "suitetalk-soap"


@lru_cache(maxsize=2)
def request_schema(wsdl: str) -> etree.XMLSchema:
    """The XSDs the WSDL's ``types`` import (libxml2: the sandbox checks every request with them)."""
    types = etree.parse(wsdl).find("{http://schemas.xmlsoap.org/wsdl/}types/{http://www.w3.org/2001/XMLSchema}schema")
    return etree.XMLSchema(etree.ElementTree(etree.fromstring(etree.tostring(types), base_url=Path(wsdl).as_uri())))


def envelope_problems(content: bytes, wsdl: str) -> list[str]:
    """Why a request is not one the XSDs accept ([] when it is): each header and the body's operation element."""
    try:
        envelope = etree.fromstring(content)
    except etree.XMLSyntaxError as exc:
        return [f"not XML: {exc}"]
    body = envelope.find(f"{{{SOAP_NS}}}Body")
    if body is None or len(body) != 1:
        return ["no single operation element in soapenv:Body"]
    schema, problems = request_schema(wsdl), []
    for element in [*envelope.findall(f"{{{SOAP_NS}}}Header/*"), body[0]]:
        if not schema.validate(etree.fromstring(etree.tostring(element))):
            problems += [e.message for e in schema.error_log]
    return problems


class Refused(Exception):
    """A ``platformCore:status isSuccess="false"`` answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def day_of(text: str | None) -> date | None:
    return date.fromisoformat(text[:10]) if text else None


class Sandbox:
    """NetSuite's SuiteTalk SOAP endpoint as a local server. ``faults`` injects 500s, 429s and timeouts (per write)."""

    def __init__(self, faults: Faults | None = None, concurrency_limit: int = 5) -> None:
        self.wsdl = str((specs_dir() / "netsuite.wsdl").resolve())
        self.soap = wsdl_client(self.wsdl)
        request_schema(self.wsdl)
        self.faults = faults or Faults()
        self.concurrency_limit, self.in_flight, self.breaches = concurrency_limit, 0, 0
        self.tokens: dict[tuple[str, str], tuple[str, str]] = {}  # (consumer key, token id) -> their secrets
        self.nonces: set[tuple[str, str]] = set()
        self.logins = 0
        self.customers: dict[str, dict[str, Any]] = {}
        self.transactions: dict[str, dict[str, Any]] = {}  # internal id -> record (+ "type", "deleted")
        self.requests: list[tuple[str, Any]] = []  # (operation, the operation element read) of writes
        self.locked_through: date | None = None
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self.app = Starlette(routes=[Route(PORT_PATH, self._endpoint, methods=["POST"])])

    # -- the kit's interface --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        cred = {"consumer_key": secrets.token_hex(32), "consumer_secret": secrets.token_hex(32),
                "token_id": secrets.token_hex(32), "token_secret": secrets.token_hex(32)}
        self.tokens[(cred["consumer_key"], cred["token_id"])] = (cred["consumer_secret"], cred["token_secret"])
        return cred

    def revoke_tokens(self) -> None:
        """The administrator revoked the integration's tokens (TBA tokens never expire otherwise)."""
        self.tokens.clear()

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {"name": name, "platform": "netsuite-soap", "base_url": f"{base_url}{PORT_PATH}",
                # one of the account's concurrent slots left to its other integrations (the limit is account-wide)
                "settings": {"account_id": ACCOUNT, "wsdl": self.wsdl, "concurrency": max(1, self.concurrency_limit - 1),
                             "adjustment_item_id": "14"},
                "mapping": {"items": {"labour": "10", "part": "11", "fee": "12", "sublet": "10", "discount": "11",
                                      "core_charge": "13", "core_return": "13"},
                            "tax_codes": {"GST": "5", "PST": "6", "GST+PST": "7", "STATE": "8", "COUNTY": "9",
                                          "COUNTY+STATE": "10", "none": "-7"},
                            "payment_accounts": {"card": "3", "cash": "1", "check": "1", "eft": "1"}}}

    def rate_limit_breaches(self) -> int:
        return self.breaches

    def lock_periods(self, through: date) -> None:
        """The accountant locks A/R for every accounting period (month) ending on or before ``through``."""
        self.locked_through = through if month_end(through) == through else through.replace(day=1) - timedelta(days=1)

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for internal_id, inv in self.transactions.items():
                if inv["type"] != "invoice" or inv.get("externalId", "").count("-"):
                    continue  # adjustments (``…-A<n>``) are documents of their own, not the shop's invoice
                payments = [a for a in self._applied_to(internal_id) if a[0]["type"] == "customerPayment"]
                out.append(BookedInvoice(
                    number=inv.get("tranId") or "", external_id=internal_id, voided=inv["deleted"],
                    total=inv["total"], tax_total=inv["taxTotal"], line_count=len(inv["lines"]),
                    payments_applied=sum((amount for _, amount in payments), ZERO), payment_count=len(payments),
                    currency=CURRENCIES[inv["currency"]["internalId"]]["symbol"]))
            return out

    def credit_memos(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t for t in self.transactions.values() if t["type"] == "creditMemo" and not t["deleted"]]

    # -- the SOAP endpoint --
    async def _endpoint(self, request: Request) -> Response:
        content = await request.body()
        problems = envelope_problems(content, self.wsdl)
        if problems:
            return self._fault("Server.userException", "org.xml.sax.SAXException: " + "; ".join(problems[:3]))
        envelope = etree.fromstring(content)
        operation_element = envelope.find(f"{{{SOAP_NS}}}Body")[0]
        operation = local(operation_element.tag)
        if request.headers.get("SOAPAction", "").strip('"') != operation:
            return self._fault("Server.userException", f"SOAPAction does not name the operation {operation}")
        passport = envelope.find(f"{{{SOAP_NS}}}Header/{{{NS['messages']}}}tokenPassport")
        if passport is None or not self._authentic(tree(passport)):
            return self._fault("Server.userException", "Invalid login attempt.", "invalidCredentialsFault",
                               "INVALID_LOGIN_ATTEMPT")
        with self._lock:
            self.in_flight += 1
            over = self.in_flight > self.concurrency_limit
            self.breaches += over
        try:
            if over:
                return self._fault("Server.userException", "Only one request may be made against a session at a time",
                                   "exceededConcurrentRequestLimitFault", "WS_REQUEST_BLOCKED")
            if self.faults.slow_s:  # a slow answer holds the account's slot while it is worked on
                await self.faults.hang(self.faults.slow_s)
            response, lost = self._operation(operation, tree(operation_element), envelope)
        finally:
            with self._lock:
                self.in_flight -= 1
        if lost:
            await self.faults.hang()  # applied, but the answer is lost on the way (NetSuite's slot is free again)
        return response

    def _authentic(self, passport: dict[str, Any]) -> bool:
        secrets_ = self.tokens.get((passport.get("consumerKey"), passport.get("token")))
        nonce, stamp = passport.get("nonce") or "", int(passport.get("timestamp") or 0)
        if secrets_ is None or passport.get("account") != ACCOUNT or abs(time.time() - stamp) > CLOCK_SKEW_S:
            return False
        base = "&".join([ACCOUNT, passport["consumerKey"], passport["token"], nonce, str(stamp)])
        expected = base64.b64encode(hmac.new(f"{secrets_[0]}&{secrets_[1]}".encode(), base.encode(),
                                             hashlib.sha256).digest()).decode()
        signature = passport.get("signature") or {}
        with self._lock:
            if not hmac.compare_digest(expected, signature.get("_text") or "") or (passport["token"], nonce) in self.nonces:
                return False
            self.nonces.add((passport["token"], nonce))
            self.logins += 1
        return signature.get("algorithm") == "HMAC-SHA256"

    def _operation(self, operation: str, args: dict[str, Any], envelope: etree._Element) -> tuple[Response, bool]:
        """The answer, and whether it is to be lost (the fault kit's "timeout": applied, then no answer in time)."""
        decided = None
        if operation in WRITES:
            self.requests.append((operation, args))
            decided = self.faults.draw()
            if decided == "500":
                return self._fault("Server.userException", "An unexpected error occurred.", "unexpectedErrorFault",
                                   "UNEXPECTED_ERROR"), False
            if decided == "429":
                return self._fault("Server.userException", "Request blocked: concurrent request limit exceeded",
                                   "exceededConcurrentRequestLimitFault", "WS_REQUEST_BLOCKED", status=429,
                                   headers={"Retry-After": "1"}), False
        preferences = envelope.find(f"{{{SOAP_NS}}}Header/{{{NS['messages']}}}searchPreferences")
        with self._lock:
            try:
                answer = getattr(self, f"_op_{operation}")(args, tree(preferences) if preferences is not None else {})
            except Refused as refusal:
                answer = {"status": self._status(refusal)}
            except AttributeError:
                answer = {"status": self._status(Refused("INVALID_WS_OPERATION", f"{operation} is not modelled"))}
            return self._answer(operation, answer), decided == "timeout"

    def _status(self, refusal: Refused | None = None) -> dict[str, Any]:
        if refusal is None:
            return {"isSuccess": True}
        return {"isSuccess": False, "statusDetail": [{"type": "ERROR", "code": refusal.code, "message": str(refusal)}]}

    def _answer(self, operation: str, answer: dict[str, Any]) -> Response:
        binding = self.soap.service._binding.get(operation)
        wrapper = {"add": "writeResponse", "upsert": "writeResponse", "update": "writeResponse",
                   "delete": "writeResponse", "get": "readResponse", "search": "searchResult",
                   "getAll": "getAllResult"}[operation]
        content = binding.output.serialize(**{wrapper: answer}).content
        return Response(etree.tostring(content, xml_declaration=True, encoding="utf-8"), media_type="text/xml; charset=utf-8")

    def _fault(self, code: str, text: str, element: str | None = None, detail_code: str | None = None, *,
               status: int = 500, headers: dict[str, str] | None = None) -> Response:
        detail = (f'<detail><platformFaults:{element} xmlns:platformFaults="{NS["faults"]}"><platformFaults:code>'
                  f'{detail_code}</platformFaults:code><platformFaults:message>{_escape(text)}</platformFaults:message>'
                  f'</platformFaults:{element}></detail>') if element else "<detail/>"
        body = (f'<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
                f"<soapenv:Fault><faultcode>soapenv:{code}</faultcode><faultstring>{_escape(text)}</faultstring>"
                f"{detail}</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
        return Response(body, status_code=status, media_type="text/xml; charset=utf-8", headers=headers)

    # -- operations --
    def _ref(self, internal_id: str, kind: str, external_id: str | None) -> Any:
        return self.soap.get_type(f"{{{NS['core']}}}RecordRef")(internalId=internal_id, externalId=external_id, type=kind)

    def _written(self, internal_id: str, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        return {"status": self._status(), "baseRef": self._ref(internal_id, kind, record.get("externalId"))}

    def _kind(self, record: dict[str, Any]) -> str:
        kind = {**TRANSACTIONS, "Customer": "customer"}.get(record.get("_type") or "")
        if kind is None:
            raise Refused("INVALID_RCRD_TYPE", f"record type {record.get('_type')} is not modelled")
        return kind

    def _table(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.customers if kind == "customer" else self.transactions

    def _by_external_id(self, kind: str, external_id: str | None) -> str | None:
        return next((i for i, r in self._table(kind).items() if external_id and r.get("externalId") == external_id
                     and r.get("type", "customer") == kind and not r.get("deleted")), None)

    def _op_add(self, args: dict[str, Any], _: Any) -> dict[str, Any]:
        record, kind = args["record"], self._kind(args["record"])
        if self._by_external_id(kind, record.get("externalId")):
            raise Refused("DUP_RCRD", "This record already exists")
        internal_id = str(next(self._ids))
        self._store(kind, internal_id, record, None)
        return self._written(internal_id, kind, record)

    def _op_upsert(self, args: dict[str, Any], _: Any) -> dict[str, Any]:
        record, kind = args["record"], self._kind(args["record"])
        if not record.get("externalId"):
            raise Refused("USER_ERROR", "upsert needs the record's externalId")
        internal_id = self._by_external_id(kind, record["externalId"])
        held = self._table(kind).get(internal_id) if internal_id else None
        internal_id = internal_id or str(next(self._ids))
        self._store(kind, internal_id, record, held)
        return self._written(internal_id, kind, record)

    def _op_update(self, args: dict[str, Any], _: Any) -> dict[str, Any]:
        record, kind = args["record"], self._kind(args["record"])
        internal_id = record.get("internalId") or self._by_external_id(kind, record.get("externalId"))
        held = self._table(kind).get(internal_id or "")
        if held is None or held.get("deleted") or held.get("type", "customer") != kind:
            raise Refused("INVALID_KEY_OR_REF", f"Invalid {kind} reference key {internal_id}.")
        self._store(kind, internal_id, record, held)
        return self._written(internal_id, kind, held)

    def _op_delete(self, args: dict[str, Any], _: Any) -> dict[str, Any]:
        ref = args["baseRef"]
        held = self.transactions.get(ref.get("internalId") or "")
        if held is None or held["deleted"] or held["type"] != ref.get("type"):
            raise Refused("INVALID_KEY_OR_REF", f"Invalid {ref.get('type')} reference key {ref.get('internalId')}.")
        self._open_period(held["tranDate"])
        if self._applied_to(ref["internalId"]):
            raise Refused("CANT_DELETE_TRANS", "This transaction cannot be deleted: payments or credits are applied to it.")
        held["deleted"] = True
        return self._written(ref["internalId"], held["type"], held)

    def _op_get(self, args: dict[str, Any], _: Any) -> dict[str, Any]:
        ref = args["baseRef"]
        kind = ref.get("type")
        if kind == "subsidiary" and ref.get("internalId") in SUBSIDIARIES:
            found = SUBSIDIARIES[ref["internalId"]]
            return {"status": self._status(), "record": self.soap.get_type(f"{{{NS['accounting']}}}Subsidiary")(
                internalId=ref["internalId"], name=found["name"], currency={"internalId": found["currency"]})}
        held = self._table(kind).get(ref.get("internalId") or "") if kind else None
        if held is None or held.get("deleted") or held.get("type", "customer") != kind:
            raise Refused("INVALID_KEY_OR_REF", f"Invalid {kind} reference key {ref.get('internalId')}.")
        return {"status": self._status(), "record": self._out(ref["internalId"], held, body_only=False)}

    def _op_getAll(self, args: dict[str, Any], _: Any) -> dict[str, Any]:  # noqa: N802 (the operation's name)
        if (args.get("record") or {}).get("recordType") != "currency":
            raise Refused("INVALID_RCRD_TYPE", f"getAll of {(args.get('record') or {}).get('recordType')} is not modelled")
        currency = self.soap.get_type(f"{{{NS['accounting']}}}Currency")
        records = [currency(internalId=i, name=c["name"], symbol=c["symbol"], isBaseCurrency=c["isBaseCurrency"],
                            isInactive=False, exchangeRate=c["exchangeRate"]) for i, c in CURRENCIES.items()]
        return {"status": self._status(), "totalRecords": len(records), "recordList": {"record": records}}

    def _op_search(self, args: dict[str, Any], preferences: dict[str, Any]) -> dict[str, Any]:
        search = args["searchRecord"]
        body_only = str(preferences.get("bodyFieldsOnly", "true")).lower() == "true"
        if search["_type"] == "AccountingPeriodSearchBasic":
            rows = self._periods() if str((search.get("arLocked") or {}).get("searchValue")).lower() == "true" else []
        elif search["_type"] == "CustomerSearchBasic":
            rows = [(i, c) for i, c in self.customers.items() if self._matches(search, c)]
        elif search["_type"] == "TransactionSearchBasic":
            kinds = {v.lstrip("_") for v in many((search.get("type") or {}).get("searchValue"))}
            rows = [(i, t) for i, t in self.transactions.items()
                    if not t["deleted"] and (not kinds or t["type"] in kinds) and self._matches(search, t)]
        else:
            raise Refused("INVALID_SRCH_TYPE", f"{search['_type']} is not modelled")
        records = [self._out(i, r, body_only) if isinstance(r, dict) else r for i, r in rows]
        return {"status": self._status(), "totalRecords": len(records), "pageSize": int(preferences.get("pageSize") or 1000),
                "totalPages": 1 if records else 0, "pageIndex": 1, "recordList": {"record": records}}

    def _matches(self, search: dict[str, Any], row: dict[str, Any]) -> bool:
        for name, condition in search.items():
            if name in ("_type", "type"):
                continue
            wanted = many(condition.get("searchValue"))
            if name == "externalId":
                if row.get("externalId") not in {w.get("externalId") for w in wanted}:
                    return False
            elif name in ("email", "phone", "companyName", "tranId", "entityId"):
                held = str(row.get(name) or "").lower()
                if condition.get("operator", "is") != "is" or held != str(wanted[0] or "").lower():
                    return False
            else:
                raise Refused("INVALID_SRCH_CRITERIA", f"search field {name} is not modelled")
        return True

    def _periods(self) -> list[tuple[str, Any]]:
        """The A/R-locked months: January of the lock's year up to the period the lock ends with."""
        period, out = self.soap.get_type(f"{{{NS['accounting']}}}AccountingPeriod"), []
        start = date(self.locked_through.year, 1, 1) if self.locked_through else None
        while start is not None and (end := month_end(start)) <= (self.locked_through or start):
            out.append((str(start.month), period(
                internalId=str(200 + start.month), periodName=start.strftime("%b %Y"), isQuarter=False, isYear=False,
                startDate=datetime(start.year, start.month, 1), endDate=datetime(end.year, end.month, end.day),
                arLocked=True, closed=False)))
            start = end + timedelta(days=1)
        return out

    # -- records --
    def _open_period(self, day: date | None) -> None:
        if day is not None and self.locked_through is not None and day <= self.locked_through:
            raise Refused("TRAN_PERIOD_CLOSED", f"The accounting period of {day} is closed for accounts receivable "
                                                f"(locked through {self.locked_through}).")

    def _store(self, kind: str, internal_id: str, record: dict[str, Any], held: dict[str, Any] | None) -> None:
        if kind == "customer":
            row = {**(held or {}), **{k: v for k, v in record.items() if k not in ("_type", "internalId", "currencyList")}}
            if not row.get("companyName") and str(row.get("isPerson")).lower() != "true":
                raise Refused("USER_ERROR", "Please enter value(s) for: Company Name")
            row["currency"] = {"internalId": self._currency_id(row.get("currency") or {"internalId": "1"})}
            sent = record.get("currencyList") or {}
            kept = [] if str(sent.get("replaceAll", "true")).lower() == "true" else (held or {}).get("currencyList", [])
            added = [self._currency_id(ln.get("currency") or {}) for ln in many(sent.get("currency"))]
            row["currencyList"] = list(dict.fromkeys([*kept, *added])) if "currencyList" in record else (
                (held or {}).get("currencyList", []))
            if any(c.get("entityId") == row.get("entityId") for i, c in self.customers.items() if i != internal_id):
                raise Refused("DUP_ENTITY", "This entity already exists.")
            self.customers[internal_id] = row
            return
        row = {**(held or {"type": kind, "deleted": False, "applyList": {}}),
               **{k: v for k, v in record.items() if k not in ("_type", "internalId", "itemList", "applyList")}}
        self._open_period(day_of(held and held.get("tranDate") if held else None))
        row["tranDate"] = day_of(record.get("tranDate") if "tranDate" in record else (held or {}).get("tranDate"))
        if row["tranDate"] is None:
            raise Refused("USER_ERROR", "Please enter value(s) for: Date")
        row["tranDate"] = row["tranDate"].isoformat()
        self._open_period(day_of(row["tranDate"]))
        party = (row.get("customer") if kind in PAYERS else row.get("entity")) or {}
        if party.get("internalId") not in self.customers:
            raise Refused("INVALID_KEY_OR_REF", f"Invalid entity reference key {party.get('internalId')}.")
        customer = self.customers[party["internalId"]]
        row["currency"] = {"internalId": self._currency_id(row.get("currency") or customer["currency"])}
        if row["currency"]["internalId"] not in {customer["currency"]["internalId"], *customer["currencyList"]}:
            raise Refused("INVALID_KEY_OR_REF", f"Invalid currency reference key {row['currency']['internalId']} for "
                                                f"entity {party['internalId']}.")
        row["exchangeRate"] = money(row.get("exchangeRate")) or CURRENCIES[row["currency"]["internalId"]]["exchangeRate"]
        if kind == "customerRefund":
            self._refund(internal_id, row, record, held)
        elif kind != "customerPayment":
            lines = self._lines(record, held)
            net = sum((ln["amount"] for ln in lines), ZERO)
            tax = sum((ln["tax"] for ln in lines), ZERO)
            row.update(lines=lines, subTotal=net, taxTotal=tax, total=net + tax)
        else:
            row["total"] = money(row.get("payment"))
            if not row["total"] or row["total"] <= 0:
                raise Refused("USER_ERROR", "Please enter value(s) for: Payment Amount")
            account = (row.get("account") or {}).get("internalId")
            if account and account not in ACCOUNTS:
                raise Refused("INVALID_KEY_OR_REF", f"Invalid account reference key {account}.")
        if "applyList" in record and kind != "customerRefund":
            row["applyList"] = self._apply(internal_id, row, record["applyList"])
        row["lastModifiedDate"] = datetime.now().isoformat(timespec="microseconds")
        self.transactions[internal_id] = row

    @staticmethod
    def _currency_id(ref: dict[str, Any]) -> str:
        if ref.get("internalId") not in CURRENCIES:
            raise Refused("INVALID_KEY_OR_REF", f"Invalid currency reference key {ref.get('internalId')}.")
        return ref["internalId"]

    def _same_currency(self, row: dict[str, Any], doc: str, target: dict[str, Any]) -> None:
        if target["currency"] != row["currency"]:
            raise Refused("USER_ERROR", f"The transaction {doc} is in another currency than this one.")

    def _lines(self, record: dict[str, Any], held: dict[str, Any] | None) -> list[dict[str, Any]]:
        if "itemList" not in record:
            return held["lines"] if held else []
        lines = []
        for ln in many(record["itemList"].get("item")):
            item, code = (ln.get("item") or {}).get("internalId"), (ln.get("taxCode") or {}).get("internalId")
            if item not in ITEMS or code not in TAX_CODES:
                raise Refused("INVALID_KEY_OR_REF", f"Invalid item or taxcode reference key {item}/{code}.")
            quantity, rate, amount = money(ln.get("quantity")) or Decimal(1), money(ln.get("rate")), money(ln.get("amount"))
            amount = cents(quantity * rate) if amount is None and rate is not None else amount
            if amount is None:
                raise Refused("USER_ERROR", "Please enter value(s) for: Amount")
            # A line's tax: the tax amount sent (``tax1Amt``, as a user may override it), else computed from its code.
            tax = money(ln.get("tax1Amt"))
            tax = cents(amount * TAX_CODES[code]) if tax is None else tax
            if TAX_CODES[code] == 0 and tax:
                raise Refused("USER_ERROR", f"Tax code {code} is not taxable: the line's tax must be 0.")
            lines.append({**ln, "amount": amount, "quantity": quantity, "taxCode": code, "tax": tax})
        if not lines:
            raise Refused("USER_ERROR", "You must enter at least one line item for this transaction.")
        return lines

    def _apply(self, internal_id: str, row: dict[str, Any], apply_list: dict[str, Any]) -> dict[str, Decimal]:
        """doc -> amount applied (payments and credit memos), checked against what each invoice has remaining."""
        applied = {} if str(apply_list.get("replaceAll", "true")).lower() == "true" else dict(row.get("applyList") or {})
        for line in many(apply_list.get("apply")):
            doc = str(line.get("doc"))
            target = self.transactions.get(doc)
            if target is None or target["deleted"] or target["type"] != "invoice":
                raise Refused("INVALID_KEY_OR_REF", f"Invalid apply doc reference key {doc}.")
            self._same_currency(row, doc, target)
            if str(line.get("apply", "true")).lower() != "true":
                applied.pop(doc, None)
                continue
            amount = money(line.get("amount")) or ZERO
            remaining = target["total"] - sum((a for src, a in self._applied_to(doc) if src is not row), ZERO)
            if amount <= 0 or amount > remaining:
                raise Refused("USER_ERROR", f"The amount applied ({amount}) exceeds the amount due ({remaining}).")
            applied[doc] = amount
        if sum(applied.values(), ZERO) > row["total"] - self._refunded(internal_id):  # paid back: not to apply
            raise Refused("USER_ERROR", "The total applied exceeds the transaction's amount.")
        return applied

    def _refund(self, internal_id: str, row: dict[str, Any], record: dict[str, Any], held: dict[str, Any] | None
                ) -> None:
        """A customer refund: out of a bank ``account``, its ``applyList`` refunding credit memos of its customer,
        never more than a memo has left to apply; its total is what it refunds."""
        account = (row.get("account") or {}).get("internalId")
        if account not in ACCOUNTS:
            raise Refused("INVALID_KEY_OR_REF" if account else "USER_ERROR",
                          f"Invalid account reference key {account}." if account else "Please enter value(s) for: Account")
        applied = dict(held["applyList"]) if held and "applyList" not in record else {}
        for line in many((record.get("applyList") or {}).get("apply")):
            doc = str(line.get("doc"))
            memo = self.transactions.get(doc)
            if memo is None or memo["deleted"] or memo["type"] != "creditMemo":
                raise Refused("INVALID_KEY_OR_REF", f"Invalid apply doc reference key {doc}.")
            if memo["entity"]["internalId"] != row["customer"]["internalId"]:
                raise Refused("USER_ERROR", "A customer refund can only refund the credits of its customer.")
            self._same_currency(row, doc, memo)
            if str(line.get("apply", "true")).lower() != "true":
                continue
            amount, left = money(line.get("amount")) or ZERO, self.credit_left(doc, but=internal_id)
            if not ZERO < amount <= left:
                raise Refused("USER_ERROR", f"The amount refunded ({amount}) exceeds the credit left ({left}).")
            applied[doc] = amount
        if not applied:
            raise Refused("USER_ERROR", "You must apply the refund to at least one credit.")
        row.update(applyList=applied, total=sum(applied.values(), ZERO))

    def _refunded(self, memo_id: str, but: str | None = None) -> Decimal:
        """What live customer refunds pay back of a credit memo."""
        return sum((t["applyList"].get(memo_id, ZERO) for i, t in self.transactions.items()
                    if i != but and t["type"] == "customerRefund" and not t["deleted"]), ZERO)

    def credit_left(self, memo_id: str, but: str | None = None) -> Decimal:
        """What of a credit memo is neither applied to an invoice nor refunded (its "unapplied" amount)."""
        memo = self.transactions[memo_id]
        return memo["total"] - sum(memo["applyList"].values(), ZERO) - self._refunded(memo_id, but)

    def _applied_to(self, doc: str) -> list[tuple[dict[str, Any], Decimal]]:
        return [(t, t["applyList"][doc]) for i, t in self.transactions.items()
                if not t["deleted"] and doc in (t.get("applyList") or {})]

    def _out(self, internal_id: str, row: dict[str, Any], body_only: bool) -> Any:
        if "type" not in row:
            customer = {k: v for k, v in row.items() if k in ("entityId", "companyName", "email", "phone", "isPerson",
                                                              "externalId", "currency")}
            currencies = {"currency": [{"currency": {"internalId": c}} for c in row["currencyList"]]}
            return self.soap.get_type(f"{{{NS['relationships']}}}Customer")(
                internalId=internal_id, **customer, **({"currencyList": currencies} if row["currencyList"] else {}))
        kind = row["type"]
        name = {v: k for k, v in TRANSACTIONS.items()}[kind]
        common = {"internalId": internal_id, "externalId": row.get("externalId"), "memo": row.get("memo"),
                  "tranDate": datetime.fromisoformat(row["tranDate"]), "currency": row["currency"],
                  "exchangeRate": row["exchangeRate"],
                  "lastModifiedDate": datetime.fromisoformat(row["lastModifiedDate"])}
        applied_here = sum((a for _, a in self._applied_to(internal_id)), ZERO)
        applied_out = sum(row["applyList"].values(), ZERO)
        if kind == "customerPayment":
            fields = {"customer": {"internalId": row["customer"]["internalId"]}, "payment": row["total"],
                      "applied": applied_out, "unapplied": row["total"] - applied_out}
        elif kind == "customerRefund":
            fields = {"customer": {"internalId": row["customer"]["internalId"]}, "total": row["total"],
                      "account": {"internalId": row["account"]["internalId"]}}
        else:
            fields = {"entity": {"internalId": row["entity"]["internalId"]}, "tranId": row.get("tranId"),
                      "subTotal": row["subTotal"], "taxTotal": row["taxTotal"], "total": row["total"]}
            if kind == "invoice":
                fields |= {"amountPaid": applied_here, "amountRemaining": row["total"] - applied_here,
                           "status": "Paid In Full" if applied_here >= row["total"] else "Open"}
            else:
                fields |= {"applied": applied_out, "unapplied": self.credit_left(internal_id)}
            if not body_only:
                fields["itemList"] = {"item": [{"item": {"internalId": ln["item"]["internalId"]}, "quantity": ln["quantity"],
                                                "amount": ln["amount"], "taxCode": {"internalId": ln["taxCode"]}, "tax1Amt": ln["tax"],
                                                "description": ln.get("description")} for ln in row["lines"]]}
        if row["applyList"] and not body_only:
            fields["applyList"] = {"apply": [{"doc": int(doc), "apply": True, "amount": amount}
                                             for doc, amount in row["applyList"].items()]}
        namespace = "sales" if kind == "invoice" else "customers"
        return self.soap.get_type(f"{{{NS[namespace]}}}{name}")(**common, **fields)


def month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
