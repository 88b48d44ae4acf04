"""A local QuickFile (JSON API v1.2) for the demo and the tests.

Built from QuickFile's per-method schema pages (api.quickfile.co.uk/d/v1_2/<Method>, summarised with their field
table in ``quickfile/SOURCE.md``): ``POST /1_2/<area>/<method>`` with ``{"payload": {"Header", "Body"}}``; the
header's ``MessageType`` "Request", a ``SubmissionNumber`` refused when used before on the account (anti-replay),
``Authentication`` {``AccNumber``, ``MD5Value`` = md5(AccNumber + API key + SubmissionNumber), ``ApplicationID``
1-100 characters, registered for the account}; every body checked against the method's fields (required ones,
types, lengths, enumerations; fields the page does not name refused); ``Invoice_Create`` creating — or with
``InvoiceID`` updating, lines replaced — invoices QuickFile numbers itself, and credit notes (negative invoices
with a ``CreditNotes`` block: VOID reduces the parent's unpaid balance, HOLD moves a paid amount to the client's
account — QuickFile's forum post "Creating a Credit Note using the API"); ``Invoice_Get`` / ``Invoice_Search``
(ReturnCount 1-200, Offset, deleted invoices hidden unless ``ShowDeleted``), ``Invoice_Delete`` (payments become
client credit when ``DeleteAssociatedPayments`` is false), ``Client_Create`` / ``Client_Update`` /
``Client_Search``, ``Payment_Create`` (PAYMENT attributed to an invoice, PayMethod one of the account's codes),
``Payment_Delete``, ``Payment_Search``; the daily call limit per account (research notes: 1,000; no official
page states it) answered 429 with QuickFile's error body. Errors are ``{"Errors": [{"ErrorCode",
"ErrorMessage"}]}``; the codes and texts are the sandbox's own (QuickFile publishes no catalogue), as are the
shapes of the responses, ``Client_*`` and ``Payment_Delete`` bodies, which the pages' text did not keep.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors import jsonmoney
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer, WindowLimit

CENT, ZERO = Decimal("0.01"), Decimal("0")
PAY_METHODS = {"CASH", "CHEQUE", "BACS", "CCARD", "DCARD", "PAYPAL", "DD", "STO", "OTHER"}

# Field specs: "int", "num", "bool", "date", ("str", min, max), ("enum", values), a dict (object; "!" marks a
# required field), a one-element list (a repeated element, its maximum count second).
STR = ("str", 0, 5000)
TAX = {"!TaxName": ("str", 1, 50), "!TaxPercentage": "num", "TaxAmount": "num"}
SEARCH = {"!ReturnCount": ("int", 1, 200), "Offset": ("int", 0, None), "OrderDirection": ("enum", {"ASC", "DESC"}),
          "ShowDeleted": "bool"}
CLIENT = {"CompanyName": ("str", 1, 100), "AccountReference": ("str", 0, 20), "TermDays": ("int", 0, 365),
          "Address": {"Address1": ("str", 0, 100), "Address2": STR, "Town": STR, "Postcode": STR, "CountryISO": ("str", 2, 2)},
          "DefaultContact": {"FirstName": ("str", 0, 35), "Surname": ("str", 0, 35), "Email": ("str", 0, 100),
                             "Telephone": ("str", 0, 30)}}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Invoice_Create": {"!InvoiceData": {
        "InvoiceID": "int", "!InvoiceType": ("enum", {"INVOICE", "ESTIMATE", "RECURRING"}), "!ClientID": "int",
        "ClientContactName": STR, "ClientAddress": {"Address": STR, "CountryISO": ("str", 2, 2)},
        "Currency": ("str", 3, 3), "Discount": "num", "TermDays": ("int", 0, None), "Language": ("str", 2, 2),
        "InvoiceDescription": ("str", 2, 35), "Terms": STR, "Notes": STR,
        "Scheduling": {"!SingleInvoiceData": {"!IssueDate": "date", "PostDate": "date"}},
        "!ItemLines": {"!ItemLine": [{"ItemID": "int", "ItemName": ("str", 0, 50), "!ItemDescription": STR,
                                      "ItemNominalCode": ("str", 1, 10), "Tax1": TAX, "Tax2": TAX,
                                      "!UnitCost": "num", "!Qty": "num"}, 500]},
        "CreditNotes": {"!CreditNoteType": ("enum", {"VOID", "REFUND", "HOLD"}), "ParentInvoiceId": "int",
                        "PaidFromAccount": ("int", 1200, 1299)}}},
    "Invoice_Get": {"!InvoiceID": "int"},
    "Invoice_Search": {"!SearchParameters": SEARCH | {
        "OrderResultsBy": ("enum", {"InvoiceNumber", "IssueDate", "ClientName", "Total"}),
        "InvoiceType": ("enum", {"INVOICE", "ESTIMATE", "RECURRING"}), "InvoiceNumber": STR,
        "ClientDetails": {"ClientID": "int", "ClientName": STR}}},
    "Invoice_Delete": {"!InvoiceDetails": {"!InvoiceIDs": {"!InvoiceID": ["int", 250]},
                                           "DeleteAssociatedPayments": "bool"}},
    "Client_Create": {"!ClientDetails": CLIENT},
    "Client_Update": {"!ClientDetails": {"!ClientID": "int"} | CLIENT},
    "Client_Search": {"!SearchParameters": SEARCH | {
        "OrderResultsBy": ("enum", {"CreatedDate", "CompanyName"}), "CompanyName": STR, "FirstName": STR,
        "Surname": STR, "Email": STR, "Telephone": STR, "AccountReference": STR}},
    "Payment_Create": {"!PaymentDetails": {
        "!Designation": ("enum", {"CLIENT", "SUPPLIER"}), "!PaymentType": ("enum", {"PAYMENT", "CREDIT"}),
        "!PaymentDate": "date", "InvoiceID": "int", "!DesignatedTo": {"ClientID": "int", "SupplierID": "int"},
        "!Amount": "num", "Currency": ("str", 1, 3), "!PayMethod": ("str", 1, 35), "BankNominalCode": ("int", 0, None),
        "ApplyFromCredit": "bool", "SendConfirmation": "bool", "Notes": ("str", 0, 100)}},
    "Payment_Delete": {"!PaymentDetails": {"!PaymentID": "int"}},
    "Payment_Search": {"!SearchParameters": SEARCH | {
        "OrderResultsBy": ("enum", {"Amount", "PayDate"}), "ClientDetails": {"ClientID": "int", "ClientName": STR},
        "PayMethod": STR, "Type": ("enum", {"ALLOCATED", "UNALLOCATED"})}},
}
WRITES = {"Invoice_Create", "Invoice_Delete", "Client_Create", "Client_Update", "Payment_Create", "Payment_Delete"}
HEADER = {"!MessageType": ("enum", {"Request"}), "!SubmissionNumber": ("str", 1, 100), "DeviceID": ("str", 0, 100),
          "TestMode": "bool", "!Authentication": {"!AccNumber": ("str", 1, 50), "!MD5Value": ("str", 32, 32),
                                                   "!ApplicationID": ("str", 1, 100)}}


class QuickFileError(Exception):
    def __init__(self, message: str, code: str = "VALIDATION", status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def check(value: Any, spec: Any, where: str) -> None:
    """Refuse ``value`` unless it fits ``spec`` (see SCHEMAS)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise QuickFileError(f"{where}: an object is required")
        names = {k.lstrip("!"): k for k in spec}
        for key in value:
            if key not in names:
                raise QuickFileError(f"{where}.{key}: not an element of this schema")
        for name, key in names.items():
            if name not in value:
                if key.startswith("!"):
                    raise QuickFileError(f"{where}.{name}: mandatory field missing")
                continue
            check(value[name], spec[key], f"{where}.{name}")
        return
    if isinstance(spec, list):
        items = value if isinstance(value, list) else [value]
        if not items or len(items) > spec[1]:
            raise QuickFileError(f"{where}: 1 to {spec[1]} elements")
        for n, item in enumerate(items):
            check(item, spec[0], f"{where}[{n}]")
        return
    kind = spec[0] if isinstance(spec, tuple) else spec
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuickFileError(f"{where}: an integer is required")
        low, high = (spec[1], spec[2]) if isinstance(spec, tuple) else (None, None)
        if (low is not None and value < low) or (high is not None and value > high):
            raise QuickFileError(f"{where}: out of range")
    elif kind == "num":
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
            raise QuickFileError(f"{where}: a number is required")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise QuickFileError(f"{where}: true or false")
    elif kind == "date":
        try:
            date.fromisoformat(str(value))
        except ValueError:
            raise QuickFileError(f"{where}: a date (YYYY-MM-DD) is required") from None
    elif kind == "enum":
        if value not in spec[1]:
            raise QuickFileError(f"{where}: one of {sorted(spec[1])}")
    elif kind == "str":
        if not isinstance(value, str) or not spec[1] <= len(value) <= spec[2]:
            raise QuickFileError(f"{where}: a string of {spec[1]} to {spec[2]} characters")


def _money(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Account:
    number: str
    api_key: str
    applications: set[str]
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[int, dict[str, Any]] = field(default_factory=dict)
    payments: dict[int, dict[str, Any]] = field(default_factory=dict)
    submissions: set[str] = field(default_factory=set)
    ids: itertools.count = field(default_factory=lambda: itertools.count(100001))
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))


class Sandbox:
    """QuickFile as a local server. ``faults`` injects 500s, 429s and timeouts."""

    def __init__(self, faults: Faults | None = None, *, day_limit: int = 1000) -> None:
        self.faults = faults or Faults()
        self.day_limit = day_limit
        self.day_window = WindowLimit(day_limit, 86400.0)
        self.accounts: dict[str, Account] = {}
        self.requests: list[tuple[str, Any]] = []  # every write: (method, Body)
        self.submissions_seen = 0
        self._lock = threading.RLock()
        self.app = Starlette(routes=[Route("/1_2/{area}/{name}", self._call, methods=["POST"])])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        with self._lock:
            if not self.accounts:
                number = str(6130000000 + secrets.randbelow(99999))
                self.accounts[number] = Account(number, secrets.token_hex(16), {str(uuid.uuid4()).upper()})
            account = next(iter(self.accounts.values()))
            return {"account_number": account.number, "api_key": account.api_key,
                    "application_id": next(iter(account.applications))}

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        return {
            "name": name, "platform": "quickfile", "base_url": base_url,
            "settings": {"requests_per_day": self.day_limit, "requests_per_minute": 6000},
            "mapping": {"income_accounts": {"part": "4000", "labour": "4010", "fee": "4020", "sublet": "4010",
                                            "discount": "4000", "core_charge": "4000", "core_return": "4000"},
                        "core_account": "2150",
                        "tax_codes": {"GST": "GST", "PST": "PST", "STATE": "State", "COUNTY": "County", "VAT": "VAT"},
                        "payment_accounts": {"card": "1210", "cash": "1210", "check": "1210", "eft": "1200"}},
        }

    def rate_limit_breaches(self) -> int:
        return self.day_window.breaches

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for account in self.accounts.values():
                for inv in account.invoices.values():
                    if inv["CreditNotes"] is not None or inv["GrossAmount"] < 0:
                        continue
                    paid = [p["Amount"] for p in account.payments.values() if p["InvoiceID"] == inv["InvoiceID"]]
                    out.append(BookedInvoice(
                        number=inv["InvoiceDescription"], external_id=str(inv["InvoiceID"]), voided=inv["Deleted"],
                        total=inv["GrossAmount"], tax_total=inv["VatAmount"], line_count=len(inv["ItemLines"]),
                        payments_applied=sum(paid, ZERO), payment_count=len(paid)))
            return out

    def credit_notes(self) -> list[tuple[str, Decimal, Decimal]]:
        """(description, amount, credit still open) of every live credit note (a negative invoice)."""
        with self._lock:
            return [(i["InvoiceDescription"], -i["GrossAmount"], self._left(a, i)) for a in self.accounts.values()
                    for i in a.invoices.values() if i["GrossAmount"] < 0 and not i["Deleted"]]

    # -- plumbing: envelope, header, signature, limit, faults --
    async def _call(self, request: Request) -> Response:
        method = "_".join(p[:1].upper() + p[1:] for p in (request.path_params["area"], request.path_params["name"]))
        method = {m.lower(): m for m in SCHEMAS}.get(method.lower(), method)
        try:
            payload = jsonmoney.loads(await request.body())
            envelope = payload.get("payload") if isinstance(payload, dict) else None
            if not isinstance(envelope, dict) or set(envelope) - {"Header", "Body"}:
                raise QuickFileError("payload: Header and Body expected")
            if method not in SCHEMAS:
                raise QuickFileError(f"Unknown method {method}", "METHOD", 404)
            header = envelope.get("Header")
            check(header, HEADER, "Header")
            with self._lock:
                account = self._authenticate(header)
            if self.day_window.hit(account.number) is not None:
                raise QuickFileError("Daily API call limit exceeded for this account", "LIMIT", 429)
            body = envelope.get("Body")
            check(body, SCHEMAS[method], "Body")
        except ValueError:
            return self._error(QuickFileError("The request body is not valid JSON"))
        except QuickFileError as error:
            return self._error(error)
        decided = None
        if method in WRITES:
            self.requests.append((method, copy.deepcopy(body)))
            decided = self.faults.draw()
            if decided == "500":
                return self._error(QuickFileError("An unexpected error occurred", "SERVER", 500))
            if decided == "429":
                throttled = self._error(QuickFileError("Too many requests", "LIMIT", 429))
                throttled.headers["Retry-After"] = "1"
                return throttled
        with self._lock:
            try:
                answer = getattr(self, "_" + method.lower())(account, body)
                response = self._ok(method, header["SubmissionNumber"], answer)
            except QuickFileError as error:
                response = self._error(error)
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    def _authenticate(self, header: dict[str, Any]) -> Account:
        auth, submission = header["Authentication"], header["SubmissionNumber"]
        account = self.accounts.get(auth["AccNumber"])
        expected = hashlib.md5(f"{auth['AccNumber']}{account.api_key if account else ''}{submission}".encode()).hexdigest()
        if account is None or auth["MD5Value"].lower() != expected:
            raise QuickFileError("Authentication failed: account number or MD5 value is invalid", "AUTH", 401)
        if auth["ApplicationID"] not in account.applications:
            raise QuickFileError("Authentication failed: ApplicationID is not registered for this account", "AUTH", 401)
        if submission in account.submissions:
            raise QuickFileError("SubmissionNumber has already been used", "AUTH", 401)
        account.submissions.add(submission)
        self.submissions_seen += 1
        return account

    @staticmethod
    def _error(error: QuickFileError) -> Response:
        body = {"Errors": [{"ErrorCode": error.code, "ErrorMessage": str(error)}]}
        return Response(jsonmoney.dumps(body), status_code=error.status, media_type="application/json")

    @staticmethod
    def _ok(method: str, submission: str, body: dict[str, Any]) -> Response:
        answer = {method: {"Header": {"MessageType": "Response", "SubmissionNumber": submission}, "Body": body}}
        return Response(jsonmoney.dumps(answer), media_type="application/json")

    # -- the books --
    def _left(self, account: Account, credit: dict[str, Any]) -> Decimal:
        """A credit note's amount not used: zero once applied to its live parent (VOID) or held (HOLD)."""
        kind = (credit["CreditNotes"] or {}).get("CreditNoteType")
        parent = account.invoices.get((credit["CreditNotes"] or {}).get("ParentInvoiceId") or 0)
        paid_out = kind == "REFUND" and (credit["CreditNotes"] or {}).get("PaidFromAccount") is not None
        if kind == "HOLD" or paid_out or (kind == "VOID" and parent is not None and not parent["Deleted"]):
            return ZERO
        return -credit["GrossAmount"]

    def _outstanding(self, account: Account, inv: dict[str, Any]) -> Decimal:
        if inv["Deleted"]:
            return ZERO
        paid = sum((p["Amount"] for p in account.payments.values() if p["InvoiceID"] == inv["InvoiceID"]), ZERO)
        voided = sum((-c["GrossAmount"] for c in account.invoices.values() if not c["Deleted"] and c["CreditNotes"]
                      and c["CreditNotes"].get("CreditNoteType") == "VOID"
                      and c["CreditNotes"].get("ParentInvoiceId") == inv["InvoiceID"]), ZERO)
        return inv["GrossAmount"] - paid - voided if inv["GrossAmount"] > 0 else ZERO

    def _paid(self, account: Account, inv: dict[str, Any]) -> Decimal:
        paid = sum((p["Amount"] for p in account.payments.values() if p["InvoiceID"] == inv["InvoiceID"]), ZERO)
        # HOLD moved paid money to the client's account; REFUND with a parent paid it back out of a bank account
        held = sum((-c["GrossAmount"] for c in account.invoices.values() if not c["Deleted"] and c["CreditNotes"]
                    and c["CreditNotes"].get("CreditNoteType") in ("HOLD", "REFUND")
                    and c["CreditNotes"].get("ParentInvoiceId") == inv["InvoiceID"]), ZERO)
        return paid - held

    def _view(self, account: Account, inv: dict[str, Any]) -> dict[str, Any]:
        view = {k: copy.deepcopy(v) for k, v in inv.items() if k not in ("Deleted", "CreditNotes")}
        outstanding = self._outstanding(account, inv)
        view["OutstandingAmount"] = outstanding
        view["Status"] = "DELETED" if inv["Deleted"] else (
            "PAID" if inv["GrossAmount"] > 0 and outstanding == 0 else "SENT")
        return view

    def _invoice(self, account: Account, invoice_id: Any) -> dict[str, Any]:
        inv = account.invoices.get(invoice_id)
        if inv is None or inv["Deleted"]:
            raise QuickFileError(f"Invoice {invoice_id} not found", "NOT_FOUND")
        return inv

    def _invoice_create(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        data = body["InvoiceData"]
        if data["ClientID"] not in account.clients:
            raise QuickFileError(f"Client {data['ClientID']} not found", "NOT_FOUND")
        lines, net, vat = [], ZERO, ZERO
        for line in (data["ItemLines"]["ItemLine"] if isinstance(data["ItemLines"]["ItemLine"], list)
                     else [data["ItemLines"]["ItemLine"]]):
            amount = _money(Decimal(str(line["UnitCost"])) * Decimal(str(line["Qty"])))
            tax = sum((Decimal(str(t["TaxAmount"])) if "TaxAmount" in t else
                       _money(amount * Decimal(str(t["TaxPercentage"])) / 100)
                       for t in (line.get("Tax1"), line.get("Tax2")) if t), ZERO)
            lines.append(copy.deepcopy(line))
            net, vat = net + amount, vat + tax
        credit = data.get("CreditNotes")
        if credit is not None:
            if net + vat >= 0:
                raise QuickFileError("A credit note's total must be negative", "VALIDATION")
            parent = account.invoices.get(credit.get("ParentInvoiceId") or 0)
            if credit["CreditNoteType"] in ("VOID", "HOLD") and (parent is None or parent["Deleted"]):
                raise QuickFileError("ParentInvoiceId: invoice not found", "NOT_FOUND")
            if credit["CreditNoteType"] == "VOID" and -(net + vat) > self._outstanding(account, parent):
                raise QuickFileError("A VOID credit note cannot exceed the invoice's unpaid balance", "VALIDATION")
            if credit["CreditNoteType"] == "HOLD" and -(net + vat) > self._paid(account, parent):
                raise QuickFileError("A HOLD credit note cannot exceed the amount paid on the invoice", "VALIDATION")
            # The post: PaidFromAccount is "applicable to REFUND type credit notes" (the bank nominal code the
            # money is refunded from); a REFUND against an invoice "refunds a paid amount" of it.
            if "PaidFromAccount" in credit and credit["CreditNoteType"] != "REFUND":
                raise QuickFileError("PaidFromAccount: applicable to REFUND credit notes only", "VALIDATION")
            if credit["CreditNoteType"] == "REFUND" and credit.get("ParentInvoiceId"):
                if parent is None or parent["Deleted"]:
                    raise QuickFileError("ParentInvoiceId: invoice not found", "NOT_FOUND")
                if "PaidFromAccount" not in credit:
                    raise QuickFileError("PaidFromAccount: mandatory to refund a paid amount", "VALIDATION")
                if -(net + vat) > self._paid(account, parent):
                    raise QuickFileError("A REFUND credit note cannot exceed the amount paid on the invoice",
                                         "VALIDATION")
        fields = {"ClientID": data["ClientID"], "Currency": data.get("Currency", "GBP"),
                  "InvoiceDescription": data.get("InvoiceDescription") or lines[0]["ItemDescription"][:35],
                  "IssueDate": data.get("Scheduling", {}).get("SingleInvoiceData", {}).get("IssueDate"),
                  "TermDays": data.get("TermDays"), "Notes": data.get("Notes"), "ItemLines": lines,
                  "NetAmount": net, "VatAmount": vat, "GrossAmount": net + vat}
        if "InvoiceID" in data:  # an update: the lines are replaced
            inv = self._invoice(account, data["InvoiceID"])
            if inv["CreditNotes"] is not None:
                raise QuickFileError("A credit note cannot be edited", "VALIDATION")
            inv.update(fields)
            return {"InvoiceID": inv["InvoiceID"], "InvoiceNumber": inv["InvoiceNumber"]}
        invoice_id = next(account.ids)
        prefix = "CN" if credit is not None else "QF"
        account.invoices[invoice_id] = fields | {"InvoiceID": invoice_id, "InvoiceType": data["InvoiceType"],
                                                 "InvoiceNumber": f"{prefix}{next(account.numbers):05d}",
                                                 "Deleted": False, "CreditNotes": copy.deepcopy(credit)}
        return {"InvoiceID": invoice_id, "InvoiceNumber": account.invoices[invoice_id]["InvoiceNumber"]}

    def _invoice_get(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        return {"InvoiceDetails": self._view(account, self._invoice(account, body["InvoiceID"]))}

    def _invoice_search(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        q = body["SearchParameters"]
        rows = [self._view(account, i) for i in account.invoices.values()
                if (q.get("ShowDeleted") or not i["Deleted"]) and i["InvoiceType"] == q.get("InvoiceType", "INVOICE")
                and (not q.get("InvoiceNumber") or q["InvoiceNumber"].lower() in i["InvoiceNumber"].lower())
                and (not q.get("ClientDetails", {}).get("ClientID") or i["ClientID"] == q["ClientDetails"]["ClientID"])]
        return self._page(rows, q)

    def _invoice_delete(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        details = body["InvoiceDetails"]
        ids = details["InvoiceIDs"]["InvoiceID"]
        for invoice_id in ids if isinstance(ids, list) else [ids]:
            inv = self._invoice(account, invoice_id)
            for payment_id, p in list(account.payments.items()):
                if p["InvoiceID"] == invoice_id:
                    if details.get("DeleteAssociatedPayments"):
                        del account.payments[payment_id]
                    else:  # the money stays with the client as credit
                        p.update(InvoiceID=None, PaymentType="CREDIT")
            inv["Deleted"] = True
        return {"InvoiceIDs": {"InvoiceID": ids}}

    def _client_create(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        client_id = next(account.ids)
        account.clients[client_id] = copy.deepcopy(body["ClientDetails"]) | {"ClientID": client_id}
        return {"ClientID": client_id}

    def _client_update(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        details = body["ClientDetails"]
        if details["ClientID"] not in account.clients:
            raise QuickFileError(f"Client {details['ClientID']} not found", "NOT_FOUND")
        account.clients[details["ClientID"]].update(copy.deepcopy(details))
        return {"ClientID": details["ClientID"]}

    def _client_search(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        q = body["SearchParameters"]
        rows = []
        for c in account.clients.values():
            contact = c.get("DefaultContact") or {}
            if q.get("CompanyName") and q["CompanyName"].lower() not in str(c.get("CompanyName", "")).lower():
                continue  # "Search by partial company name"
            if q.get("AccountReference") and q["AccountReference"] != c.get("AccountReference"):
                continue
            if any(q.get(k) and q[k] != contact.get(k) for k in ("Email", "Telephone")):
                continue
            rows.append({"ClientID": c["ClientID"], "CompanyName": c.get("CompanyName"),
                         "AccountReference": c.get("AccountReference"), "Email": contact.get("Email"),
                         "Telephone": contact.get("Telephone")})
        return self._page(rows, q)

    def _payment_create(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        p = body["PaymentDetails"]
        if p["Designation"] != "CLIENT" or p["PaymentType"] != "PAYMENT" or "InvoiceID" not in p:
            raise QuickFileError("This sandbox records client payments attributed to an invoice only", "VALIDATION")
        if p["PayMethod"] not in PAY_METHODS:
            raise QuickFileError(f"PayMethod {p['PayMethod']} is not one of this account's codes", "VALIDATION")
        inv = self._invoice(account, p["InvoiceID"])
        amount = Decimal(str(p["Amount"]))
        if p["DesignatedTo"].get("ClientID") != inv["ClientID"]:
            raise QuickFileError("DesignatedTo.ClientID is not the invoice's client", "VALIDATION")
        if amount <= 0 or amount > self._outstanding(account, inv):
            raise QuickFileError("Amount must be positive and not exceed the invoice's unpaid balance", "VALIDATION")
        payment_id = next(account.ids)
        account.payments[payment_id] = {"PaymentID": payment_id, "InvoiceID": inv["InvoiceID"], "Amount": amount,
                                        "PaymentType": "PAYMENT", "PayMethod": p["PayMethod"],
                                        "PaymentDate": p["PaymentDate"], "Notes": p.get("Notes"),
                                        "ClientID": inv["ClientID"]}
        return {"PaymentID": payment_id}

    def _payment_delete(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        payment_id = body["PaymentDetails"]["PaymentID"]
        if account.payments.pop(payment_id, None) is None:
            raise QuickFileError(f"Payment {payment_id} not found", "NOT_FOUND")
        return {"PaymentID": payment_id}

    def _payment_search(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        q = body["SearchParameters"]
        rows = [copy.deepcopy(p) for p in account.payments.values()
                if q.get("Type") is None or (p["InvoiceID"] is not None) == (q["Type"] == "ALLOCATED")]
        return self._page(rows, q)

    @staticmethod
    def _page(rows: list[dict[str, Any]], q: dict[str, Any]) -> dict[str, Any]:
        offset = q.get("Offset", 0)
        page = rows[offset: offset + q["ReturnCount"]]
        return {"RecordsetCount": len(rows), "ReturnCount": len(page), "Record": page}


