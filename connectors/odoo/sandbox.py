"""A local Odoo (external XML-RPC API) for the demo and the tests.

Built from the official field table ``$LEDGERWIRE_SPECS_DIR/odoo/account-move-fields.md`` (read at start
when present: every field name, type, selection value and x2many command the server receives for
account.move, account.move.line and account.payment.register is checked against it) and Odoo's documented
behaviour (odoo/odoo account_move.py, account_payment_register.py, odoo/service): ``/xmlrpc/2/common``
``authenticate`` → uid (False on bad credentials) and ``/xmlrpc/2/object`` ``execute_kw``; Faults as Odoo's
RPC layer builds them (1 = traceback of any other exception, 2 = UserError/ValidationError/MissingError
message, 3 = "Access Denied", 4 = AccessError); customer invoices created in draft, ``action_post``
(name assigned, totals computed, lock date checked), editing a posted move refused until ``button_draft``
(which unreconciles its payments), ``button_cancel`` only from draft; tax computed from account.tax
percentages with the company's rounding method (round_per_line, or round_globally), price and quantity
rounded to the "Product Price"/"Product Unit of Measure" decimal precisions; the payment register wizard
(context active_model/active_ids) reconciling the payment with the invoice (amount_residual,
payment_state); payments reset to draft and cancelled; credit notes (out_refund).
The company's lock date (``set_lock_date``; read as res.company.fiscalyear_lock_date) refuses posting,
resetting to draft and registering or resetting payments dated on or before it. Invoice lines are readable
as account.move.line records (price_subtotal / price_total); price-included sales taxes (price_include)
take their share out of the price (each tax = price x rate / (1 + sum of included rates), rounded per line).

Odoo has no request-rate quota of its own; ``faults`` injects 500s, 429s (as a front proxy answers) and
timeouts (write applied, answer withheld). ``serialization_failures`` makes the next N writes fail as
PostgreSQL's "could not serialize access" surfaces through Odoo. Books are kept in memory.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.odoo import wire
from connectors.odoo.spec import FieldTable
from connectors.sandbox_kit import BookedInvoice, Faults, RunningServer

CENT = Decimal("0.01")
READ_METHODS = {"search_read", "read", "search", "search_count", "fields_get", "name_search"}
DB_NAME = "ledgerwire"
LOGIN = "ledgerwire-sync@example.com"

# Models the official table does not describe: the fields this sandbox knows of them (from odoo/odoo base
# and account models), for writes and reads.
OTHER_FIELDS: dict[str, set[str]] = {
    "res.partner": {"name", "ref", "email", "phone", "customer_rank", "is_company", "street", "active"},
    "account.account": {"code", "name", "account_type"},
    "account.tax": {"name", "amount", "amount_type", "type_tax_use", "price_include"},
    "account.journal": {"name", "code", "type"},
    "account.analytic.account": {"name"},
    "product.product": {"name", "default_code", "type", "sale_ok"},
    "res.company": {"name", "fiscalyear_lock_date", "currency_id"},
    "res.currency": {"name", "active"},
    "decimal.precision": {"name", "digits"},
    "account.partial.reconcile": {"debit_move_id", "credit_move_id", "amount"},
    "account.payment": {"amount", "date", "journal_id", "partner_id", "memo", "state", "payment_type",
                        "reconciled_invoice_ids"},
}


class OdooFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def user_error(message: str) -> OdooFault:
    return OdooFault(2, message)


def app_error(exc_type: str, message: str) -> OdooFault:
    # Odoo answers any other exception with fault code 1 and the formatted traceback.
    return OdooFault(1, "Traceback (most recent call last):\n  File \"/odoo/odoo/service/model.py\", line 62, in "
                        f"retrying\n    result = func()\n{exc_type}: {message}")


def missing(model: str, record_id: Any) -> OdooFault:
    return user_error(f"Record does not exist or has been deleted.\n(Record: {model}({record_id},), User: 2)")


def _round(value: Decimal, digits: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


@dataclass
class Database:
    api_keys: dict[str, tuple[int, str]] = field(default_factory=dict)  # api key -> (uid, login)
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 1
    clock: datetime = datetime(2026, 11, 20, 9, 0, 0)
    rounding_method: str = "round_per_line"  # res.company.tax_calculation_rounding_method
    lock_date: date | None = None  # res.company.fiscalyear_lock_date
    sequences: dict[str, int] = field(default_factory=dict)

    def table(self, model: str) -> dict[int, dict[str, Any]]:
        return self.records.setdefault(model, {})

    def new(self, model: str, vals: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        record = {"id": self.next_id, **vals, "write_date": self.tick()}
        self.table(model)[record["id"]] = record
        return record

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def get(self, model: str, record_id: Any) -> dict[str, Any]:
        record = self.table(model).get(record_id) if isinstance(record_id, int) else None
        if record is None:
            raise missing(model, record_id)
        return record

    def precision(self, name: str) -> int:
        return next((r["digits"] for r in self.table("decimal.precision").values() if r["name"] == name), 2)


class Sandbox:
    """Odoo as a local server. ``faults`` injects 500s, 429s, timeouts and slow answers."""

    def __init__(self, faults: Faults | None = None, specs_dir: str | None = None) -> None:
        self.faults = faults or Faults()
        self.spec = FieldTable.load(specs_dir)  # None when the specs directory is absent
        self.db = Database()
        self.requests: list[tuple[str, str, list, dict]] = []  # (model, method, args, kwargs) of execute_kw
        self.authentications = 0
        self.serialization_failures = 0
        self._lock = threading.RLock()
        self.app = Starlette(routes=[Route("/xmlrpc/2/common", self._common, methods=["POST"]),
                                     Route("/xmlrpc/2/object", self._object, methods=["POST"])])

    # -- the Sandbox protocol --
    def serve(self, port: int | None = None) -> RunningServer:
        return RunningServer(self.app, port=port).start()

    def seed_credentials(self) -> dict[str, Any]:
        with self._lock:
            db = self.db
            if not db.table("account.account"):
                for code, name, kind in (("400000", "Product Sales", "income"), ("400100", "Labour Income", "income"),
                                         ("400200", "Fees and Sublet", "income"),
                                         ("210500", "Core Deposits Held", "liability_current")):
                    db.new("account.account", {"code": code, "name": name, "account_type": kind})
                for name, amount in (("State sales tax 6.25%", "6.25"), ("County tax 1%", "1"), ("GST 5%", "5"),
                                     ("PST 7%", "7")):
                    db.new("account.tax", {"name": name, "amount": Decimal(amount), "amount_type": "percent",
                                           "type_tax_use": "sale", "price_include": False})
                db.new("account.tax", {"name": "Purchase VAT 10%", "amount": Decimal("10"), "amount_type": "percent",
                                       "type_tax_use": "purchase", "price_include": False})
                for name, code, kind in (("Customer Invoices", "INV", "sale"), ("Bank", "BNK1", "bank"),
                                         ("Cash", "CSH1", "cash"), ("Card Clearing", "CARD", "bank"),
                                         ("North Invoices", "INVN", "sale")):
                    db.new("account.journal", {"name": name, "code": code, "type": kind})
                for name in ("Main St", "Northside"):
                    db.new("account.analytic.account", {"name": name})
                # The shop prices to 4 decimals and counts to 3: the database is configured accordingly
                # (Odoo's defaults are 2 and 2; check_mapping reports a database that is not).
                db.new("decimal.precision", {"name": "Product Price", "digits": 4})
                db.new("decimal.precision", {"name": "Product Unit of Measure", "digits": 3})
                db.new("product.product", {"name": "Labour hour"})
                # Currencies: the company's (USD) and the ones activated for multi-currency; GBP is known but
                # not active, which Odoo refuses on a move.
                for code, active in (("USD", True), ("CAD", True), ("EUR", True), ("GBP", False)):
                    db.new("res.currency", {"name": code, "active": active})
                for days in (30, 60):
                    db.new("account.payment.term", {"name": f"{days} Days"})
                # Price-included variants of the sales taxes, for tax-inclusive shop invoices.
                for name, amount in (("State sales tax 6.25% incl.", "6.25"), ("County tax 1% incl.", "1"),
                                     ("GST 5% incl.", "5"), ("PST 7% incl.", "7")):
                    db.new("account.tax", {"name": name, "amount": Decimal(amount), "amount_type": "percent",
                                           "type_tax_use": "sale", "price_include": True})
            key = secrets.token_hex(20)
            db.api_keys[key] = (2, LOGIN)
        return {"api_key": key}

    def _ids(self, model: str, **match: Any) -> int:
        return next(r["id"] for r in self.db.table(model).values() if all(r.get(k) == v for k, v in match.items()))

    def target_config(self, name: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            if not self.db.table("account.account"):
                self.seed_credentials()
            acc = {code: self._ids("account.account", code=code) for code in ("400000", "400100", "400200", "210500")}
            tax = {n: self._ids("account.tax", name=full) for n, full in (
                ("STATE", "State sales tax 6.25%"), ("COUNTY", "County tax 1%"), ("GST", "GST 5%"), ("PST", "PST 7%"))}
            journal = {c: self._ids("account.journal", code=c) for c in ("BNK1", "CSH1", "CARD")}
            analytic = {n: self._ids("account.analytic.account", name=n) for n in ("Main St", "Northside")}
        return {
            "name": name, "platform": "odoo", "base_url": base_url,
            # A local sandbox has no HTTP-worker shortage: allow more calls per second than the default.
            "settings": {"db": DB_NAME, "login": LOGIN, "requests_per_second": 40, "concurrency": 4},
            "mapping": {
                "income_accounts": {"part": str(acc["400000"]), "labour": str(acc["400100"]),
                                    "sublet": str(acc["400200"]), "fee": str(acc["400200"]),
                                    "discount": str(acc["400000"]), "core_charge": str(acc["210500"]),
                                    "core_return": str(acc["210500"])},
                "tax_codes": {k: str(v) for k, v in tax.items()},
                "payment_accounts": {"card": str(journal["CARD"]), "cash": str(journal["CSH1"]),
                                     "check": str(journal["BNK1"]), "eft": str(journal["BNK1"])},
                "location_tracking": {"MAIN": f"analytic:{analytic['Main St']}",
                                      "NORTH": f"analytic:{analytic['Northside']}"},
            },
        }

    def rate_limit_breaches(self) -> int:
        """0: Odoo enforces no request rate, quota or concurrency cap of its own (the connector's 10/s is
        self-imposed, kept for the server's workers), so no request can breach a platform limit here."""
        return 0

    def booked_invoices(self) -> list[BookedInvoice]:
        with self._lock:
            out = []
            for move in self.db.table("account.move").values():
                if move["move_type"] != "out_invoice":
                    continue
                live = [p for p in self._payments_of(move["id"])]
                out.append(BookedInvoice(
                    number=move.get("payment_reference") or "", external_id=str(move["id"]),
                    voided=move["state"] == "cancel", total=move["amount_total"], tax_total=move["amount_tax"],
                    line_count=len(move["_lines"]), payments_applied=sum((p["amount"] for p in live), Decimal("0")),
                    payment_count=len(live), currency=self._public("account.move", move, ["currency_id"])[
                        "currency_id"][1] if move.get("currency_id") else None))
            return out

    def set_lock_date(self, lock: date | None) -> None:
        """The company's lock date (res.company.fiscalyear_lock_date): entries dated on or before it are refused."""
        with self._lock:
            self.db.lock_date = lock

    def records(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.db.table(model).values()]

    def writes(self) -> list[tuple[str, str, list, dict]]:
        return [r for r in self.requests if r[1] not in READ_METHODS]

    # -- HTTP --
    async def _read_call(self, request: Request) -> tuple[tuple, str | None] | Response:
        try:
            return wire.decode(await request.body())
        except Exception as exc:  # noqa: BLE001 - any parse error is the client's
            return self._fault(app_error("xml.parsers.expat.ExpatError", str(exc)))

    def _fault(self, fault: OdooFault) -> Response:
        return Response(wire.encode_fault(fault.code, fault.message), media_type="text/xml")

    def _ok(self, value: Any) -> Response:
        return Response(wire.encode_response(value), media_type="text/xml")

    async def _common(self, request: Request) -> Response:
        call = await self._read_call(request)
        if isinstance(call, Response):
            return call
        params, method = call
        if method == "version":
            return self._ok({"server_version": "19.0", "server_version_info": [19, 0, 0, "final", 0, ""],
                             "protocol_version": 1})
        if method != "authenticate" or len(params) != 4:
            return self._fault(app_error("NameError", f"method {method!r} not found in service 'common'"))
        db, login, key, _ = params
        self.authentications += 1
        entry = self.db.api_keys.get(key)
        return self._ok(entry[0] if db == DB_NAME and entry and entry[1] == login else False)

    async def _object(self, request: Request) -> Response:
        call = await self._read_call(request)
        if isinstance(call, Response):
            return call
        params, method = call
        if method != "execute_kw" or len(params) not in (6, 7):
            return self._fault(app_error("NameError", f"method {method!r} not found in service 'object'"))
        db, uid, key, model, model_method, args = params[:6]
        kwargs = params[6] if len(params) == 7 else {}
        entry = self.db.api_keys.get(key)
        if db != DB_NAME or entry is None or entry[0] != uid:
            return self._fault(OdooFault(3, "Access Denied"))
        is_write = model_method not in READ_METHODS
        decided = self.faults.draw() if is_write else None
        if decided == "429":
            return Response("<html><body><h1>429 Too Many Requests</h1></body></html>", status_code=429,
                            headers={"Retry-After": "1"}, media_type="text/html")
        if decided == "500":
            return Response("<html><body><h1>500 Internal Server Error</h1></body></html>", status_code=500,
                            media_type="text/html")
        if self.faults.slow_s:
            await asyncio.sleep(self.faults.slow_s)
        with self._lock:
            self.requests.append((model, model_method, args, kwargs))
            try:
                if is_write and self.serialization_failures > 0:
                    self.serialization_failures -= 1
                    raise app_error("psycopg2.errors.SerializationFailure",
                                    "could not serialize access due to concurrent update")
                self._validate(model, model_method, args, kwargs)
                response = self._ok(self._execute(model, model_method, list(args), dict(kwargs)))
            except OdooFault as fault:
                response = self._fault(fault)
        if decided == "timeout":
            await self.faults.hang()  # applied, but the answer never arrives in time
        return response

    # -- validation against the official table (and the sandbox's own list for other models) --
    def _validate(self, model: str, method: str, args: list, kwargs: dict) -> None:
        problems = self.spec.check_call(model, method, args, kwargs) if self.spec else []
        known = OTHER_FIELDS.get(model)
        if known is not None:
            if method == "create":
                records = args[0] if isinstance(args[0], list) else [args[0]]
                names = [n for vals in records for n in vals]
            elif method == "write":
                names = list(args[1])
            elif method == "search_read":
                names = [t[0] for t in args[0] if isinstance(t, list)] + list(kwargs.get("fields") or [])
            else:
                names = []
            problems += [f"Invalid field {n!r} on model {model!r}" for n in names if n not in known and n != "id"]
        if problems:
            raise app_error("ValueError", "; ".join(problems))

    # -- the ORM --
    def _execute(self, model: str, method: str, args: list, kwargs: dict) -> Any:
        context = kwargs.get("context") or {}
        if model == "res.company":
            self._company()
        if method == "search_read":
            return self._search_read(model, args[0] if args else kwargs.get("domain", []), kwargs)
        if method == "read":
            return [self._public(model, self.db.get(model, i), args[1] if len(args) > 1 else kwargs.get("fields"))
                    for i in args[0]]
        if method == "search":
            return [r["id"] for r in self._search(model, args[0])]
        if method == "search_count":
            return len(self._search(model, args[0]))
        handler = getattr(self, f"_{model.replace('.', '_')}_{method}", None)
        if handler is not None:
            return handler(args, context)
        if method == "create" and model in OTHER_FIELDS:
            return self._generic_create(model, args)
        if method == "write" and model in OTHER_FIELDS:
            for record_id in args[0]:
                record = self.db.get(model, record_id)
                record.update(args[1])
                record["write_date"] = self.db.tick()
            return True
        raise app_error("AttributeError", f"The method '{method}' does not exist on the model '{model}'")

    def _company(self) -> None:
        """The one company, its lock date as Odoo stores it ('YYYY-MM-DD' or False)."""
        companies = self.db.table("res.company")
        if not companies:
            usd = next((c["id"] for c in self.db.table("res.currency").values() if c["name"] == "USD"), False)
            self.db.new("res.company", {"name": "Ledgerwire Auto Electric", "currency_id": usd})
        for company in companies.values():
            company["fiscalyear_lock_date"] = self.db.lock_date.isoformat() if self.db.lock_date else False

    def _generic_create(self, model: str, args: list) -> Any:
        records = args[0] if isinstance(args[0], list) else [args[0]]
        ids = [self.db.new(model, dict(vals))["id"] for vals in records]
        return ids if isinstance(args[0], list) else ids[0]

    def _search(self, model: str, domain: list) -> list[dict[str, Any]]:
        terms = [t for t in domain if isinstance(t, list)]
        return [r for r in sorted(self.db.table(model).values(), key=lambda r: r["id"])
                if all(_match(r.get(f), op, v) for f, op, v in terms)]

    def _search_read(self, model: str, domain: list, kwargs: dict) -> list[dict[str, Any]]:
        found = self._search(model, domain)
        if str(kwargs.get("order", "")).strip().lower() == "id desc":
            found.reverse()
        if kwargs.get("limit"):
            found = found[: int(kwargs["limit"])]
        return [self._public(model, r, kwargs.get("fields")) for r in found]

    def _public(self, model: str, record: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
        names = fields or [k for k in record if not k.startswith("_")]
        out = {}
        for name in names:
            value = record.get(name, False)
            if model == "account.move" and name == "invoice_line_ids":
                value = [line["id"] for line in record.get("_lines", [])]
            elif model == "account.move" and name == "line_ids":  # journal items: the receivable line too
                value = [line["id"] for line in record.get("_lines", [])] + ([record["_term"]] if "_term" in record else [])
            elif model == "account.move.line" and name == "tax_ids":
                value = [i for cmd in value or [] if cmd[0] == 6 for i in cmd[2]]
            if name.endswith("_id") and isinstance(value, int) and name != "id":
                comodel = {"partner_id": "res.partner", "journal_id": "account.journal",
                           "reversed_entry_id": "account.move", "account_id": "account.account",
                           "currency_id": "res.currency"}.get(name)
                label = (self.db.table(comodel).get(value) or {}).get("name", str(value)) if comodel else str(value)
                value = [value, label]  # many2one reads as [id, display_name]
            out[name] = value if value is not None else False
        return out

    # account.move
    def _lines_from_commands(self, move: dict[str, Any], commands: list) -> None:
        lines = move.setdefault("_lines", [])
        for cmd in commands:
            code = cmd[0]
            if code == 5:
                for old in lines:
                    self.db.table("account.move.line").pop(old["id"], None)
                lines.clear()
            elif code == 0:
                vals = dict(cmd[2])
                self.db.get("account.account", vals.get("account_id"))
                for tax_cmd in vals.get("tax_ids") or []:
                    if tax_cmd[0] == 6:
                        for tax_id in tax_cmd[2]:
                            self.db.get("account.tax", tax_id)
                for analytic_id in (vals.get("analytic_distribution") or {}):
                    self.db.get("account.analytic.account", int(analytic_id))
                if vals.get("product_id"):
                    self.db.get("product.product", vals["product_id"])
                self.db.next_id += 1
                vals.update({"id": self.db.next_id, "move_id": move["id"]})
                self.db.table("account.move.line")[vals["id"]] = vals
                lines.append(vals)
            elif code == 2:
                gone = next((ln for ln in lines if ln["id"] == cmd[1]), None)
                if gone is None:
                    raise missing("account.move.line", cmd[1])
                lines.remove(gone)
                self.db.table("account.move.line").pop(gone["id"], None)
            else:
                raise app_error("NotImplementedError", f"command {code} is not supported by the sandbox")

    def _compute(self, move: dict[str, Any]) -> None:
        price_digits = self.db.precision("Product Price")
        qty_digits = self.db.precision("Product Unit of Measure")
        untaxed, per_line_tax = Decimal("0"), Decimal("0")
        global_tax: dict[int, Decimal] = {}
        for line in move["_lines"]:
            qty = _round(Decimal(line.get("quantity", Decimal("1"))), qty_digits)
            price = _round(Decimal(line.get("price_unit", Decimal("0"))), price_digits)
            discount = Decimal(line.get("discount") or 0)
            line["quantity"], line["price_unit"] = qty, price
            base = _round(qty * price * (1 - discount / 100), 2)
            taxes = [self.db.get("account.tax", tax_id) for tax_cmd in line.get("tax_ids") or []
                     for tax_id in (tax_cmd[2] if tax_cmd[0] == 6 else [])]
            line_tax = Decimal("0")
            included = [t for t in taxes if t.get("price_include")]
            if included:
                # Price-included percentages (account.tax compute_all): the price holds the taxes; each one is
                # its share of the total included, base = price / (1 + sum of included rates), the base being
                # what is left of the price once the (per line rounded) taxes are taken out.
                rates = sum((t["amount"] / 100 for t in included), Decimal("0"))
                for tax in included:
                    line_tax += _round(base * (tax["amount"] / 100) / (1 + rates), 2)
                base -= line_tax
            line["price_subtotal"] = base
            for tax in taxes:
                if tax.get("price_include"):
                    continue
                rate = tax["amount"] / 100
                if self.db.rounding_method == "round_per_line":
                    line_tax += _round(base * rate, 2)
                else:
                    global_tax[tax["id"]] = global_tax.get(tax["id"], Decimal("0")) + base * rate
            line["price_total"] = base + line_tax
            untaxed += base
            per_line_tax += line_tax
        tax = per_line_tax + sum((_round(v, 2) for v in global_tax.values()), Decimal("0"))
        move["amount_untaxed"], move["amount_tax"], move["amount_total"] = untaxed, tax, untaxed + tax
        self._residual(move)

    def _payments_of(self, move_id: int) -> list[dict[str, Any]]:
        return [p for p in self.db.table("account.payment").values()
                if move_id in p.get("reconciled_invoice_ids", []) and p["state"] not in ("draft", "canceled")]

    def _partials_of(self, move: dict[str, Any]) -> list[dict[str, Any]]:
        """account.partial.reconcile records on the move's receivable line (credit notes applied to it)."""
        return [p for p in self.db.table("account.partial.reconcile").values()
                if move.get("_term") in (p["debit_move_id"], p["credit_move_id"])]

    def _residual(self, move: dict[str, Any]) -> None:
        applied = sum((p["_applied"].get(move["id"], Decimal("0")) for p in self._payments_of(move["id"])), Decimal("0"))
        applied += sum((p["amount"] for p in self._partials_of(move)), Decimal("0"))
        move["amount_residual"] = move["amount_total"] - applied if move["state"] == "posted" else move["amount_total"]
        if move["state"] != "posted" or move["move_type"] != "out_invoice":
            move["payment_state"] = "not_paid"
        elif move["amount_residual"] <= 0:
            move["payment_state"] = "paid"
        else:
            move["payment_state"] = "partial" if applied else "not_paid"

    def _check_lock(self, move: dict[str, Any]) -> None:
        lock = self.db.lock_date
        moved = move.get("invoice_date") or move.get("date")
        if lock and moved and date.fromisoformat(str(moved)[:10]) <= lock:
            raise user_error("You cannot add/modify entries prior to and inclusive of the lock date "
                             f"{lock.strftime('%m/%d/%Y')}. Check the company settings or ask someone with the "
                             "'Adviser' role")

    def _account_move_create(self, args: list, context: dict) -> Any:
        records = args[0] if isinstance(args[0], list) else [args[0]]
        ids = []
        for vals in records:
            vals = dict(vals)
            move_type = vals.get("move_type", "entry")
            if move_type not in ("out_invoice", "out_refund"):
                raise user_error(f"The sandbox books customer invoices and credit notes only, not {move_type!r}.")
            if vals.get("partner_id"):
                self.db.get("res.partner", vals["partner_id"])
            if vals.get("journal_id"):
                journal = self.db.get("account.journal", vals["journal_id"])
                if journal["type"] != "sale":
                    raise user_error("The chosen journal has a type that is not compatible with your invoice type. "
                                     "Sales operations should go to 'sale' type journals.")
            if vals.get("invoice_payment_term_id"):
                self.db.get("account.payment.term", vals["invoice_payment_term_id"])
            if vals.get("currency_id") and not self.db.get("res.currency", vals["currency_id"]).get("active"):
                raise user_error("The currency of the entry is not active: activate it in Accounting > "
                                 "Configuration > Currencies.")
            commands = vals.pop("invoice_line_ids", [])
            move = self.db.new("account.move", {
                "name": "/", "state": "draft", "ref": False, "payment_reference": False, "invoice_date": False,
                "invoice_date_due": False, "partner_id": False, "reversed_entry_id": False, **vals,
                "move_type": move_type, "date": vals.get("invoice_date") or self.db.clock.date().isoformat(),
                "_lines": []})
            self._lines_from_commands(move, commands)
            self._compute(move)
            ids.append(move["id"])
        return ids if isinstance(args[0], list) else ids[0]

    def _account_move_write(self, args: list, context: dict) -> bool:
        for move_id in args[0]:
            move = self.db.get("account.move", move_id)
            vals = dict(args[1])
            if move["state"] == "posted" and set(vals) - {"ref", "narration", "payment_reference"}:
                self._check_lock(move)
                raise user_error("You cannot modify a posted entry of this journal because it is in strict mode. "
                                 "Reset it to draft first.")
            if move["state"] == "cancel":
                raise user_error("You cannot modify a cancelled entry. Reset it to draft first.")
            if "move_type" in vals and vals["move_type"] != move["move_type"]:
                raise user_error("You cannot change the type of an invoice.")
            if vals.get("partner_id"):
                self.db.get("res.partner", vals["partner_id"])
            commands = vals.pop("invoice_line_ids", None)
            move.update(vals)
            if "invoice_date" in vals:
                move["date"] = vals["invoice_date"] or move["date"]
            if commands is not None:
                self._lines_from_commands(move, commands)
            self._compute(move)
            move["write_date"] = self.db.tick()
        return True

    def _account_move_action_post(self, args: list, context: dict) -> bool:
        for move_id in args[0]:
            move = self.db.get("account.move", move_id)
            if move["state"] != "draft":
                raise user_error("The entry %s (id %s) is already posted." % (move["name"], move_id))
            if not move.get("partner_id"):
                raise user_error("The field 'Customer' is required, please complete it to validate the Customer Invoice.")
            if not move["_lines"]:
                raise user_error("You need to add a line before posting.")
            if move["amount_total"] < 0:
                raise user_error("You cannot validate an invoice with a negative total amount. You should create a "
                                 "credit note instead. Use the action menu to transform it into a credit note or refund.")
            if not move.get("invoice_date"):
                move["invoice_date"] = self.db.clock.date().isoformat()
                move["date"] = move["invoice_date"]
            self._check_lock(move)
            if move["name"] == "/":
                prefix = "INV" if move["move_type"] == "out_invoice" else "RINV"
                year = move["date"][:4]
                n = self.db.sequences[f"{prefix}{year}"] = self.db.sequences.get(f"{prefix}{year}", 0) + 1
                move["name"] = f"{prefix}/{year}/{n:05d}"
            move["state"] = "posted"
            if "_term" not in move:  # the receivable (payment term) journal item, reconciled against
                self.db.next_id += 1
                move["_term"] = self.db.next_id
                self.db.table("account.move.line")[move["_term"]] = {"id": move["_term"], "move_id": move["id"],
                                                                     "display_type": "payment_term"}
            self._compute(move)
            move["write_date"] = self.db.tick()
        return False

    def _account_move_button_draft(self, args: list, context: dict) -> bool:
        for move_id in args[0]:
            move = self.db.get("account.move", move_id)
            if move["state"] not in ("posted", "cancel"):
                raise user_error("Only posted/cancelled journal entries can be reset to draft.")
            self._check_lock(move)
            for payment in self._payments_of(move_id):  # button_draft removes the move's reconciliation
                payment["reconciled_invoice_ids"] = [i for i in payment["reconciled_invoice_ids"] if i != move_id]
                payment["_applied"].pop(move_id, None)
                payment["write_date"] = self.db.tick()
            self._unreconcile(self._partials_of(move))
            move["state"] = "draft"
            self._compute(move)
            move["write_date"] = self.db.tick()
        return False

    def _account_move_button_cancel(self, args: list, context: dict) -> bool:
        for move_id in args[0]:
            move = self.db.get("account.move", move_id)
            if move["state"] != "draft":
                raise user_error("Only draft journal entries can be cancelled.")
            move["state"] = "cancel"
            self._compute(move)
            move["write_date"] = self.db.tick()
        return False

    def _account_move_js_assign_outstanding_line(self, args: list, context: dict) -> bool:
        """Reconcile an outstanding credit (a posted credit note's receivable line) with the invoice, for as much
        as both have open; an account.partial.reconcile records it."""
        (move_id,), line_id = args[0], args[1]
        move = self.db.get("account.move", move_id)
        line = self.db.get("account.move.line", line_id)
        credit = self.db.get("account.move", line["move_id"])
        if move["state"] != "posted" or credit["state"] != "posted" or line.get("display_type") != "payment_term":
            raise user_error("You can only reconcile posted entries.")
        amount = min(move["amount_residual"], credit["amount_residual"])
        if amount <= 0:
            raise user_error("You are trying to reconcile some entries that are already reconciled.")
        self.db.new("account.partial.reconcile", {"debit_move_id": move["_term"], "credit_move_id": line_id,
                                                  "amount": amount})
        for changed in (move, credit):
            self._residual(changed)
            changed["write_date"] = self.db.tick()
        return True

    def _unreconcile(self, partials: list[dict[str, Any]]) -> None:
        for partial in partials:
            del self.db.table("account.partial.reconcile")[partial["id"]]
            for line_id in (partial["debit_move_id"], partial["credit_move_id"]):
                move = self.db.get("account.move", self.db.get("account.move.line", line_id)["move_id"])
                self._residual(move)
                move["write_date"] = self.db.tick()

    def _account_partial_reconcile_unlink(self, args: list, context: dict) -> bool:
        self._unreconcile([self.db.get("account.partial.reconcile", i) for i in args[0]])
        return True

    def _account_move_unlink(self, args: list, context: dict) -> bool:
        for move_id in args[0]:
            move = self.db.get("account.move", move_id)
            if move["state"] == "posted" or move["name"] != "/":
                raise user_error("You cannot delete an entry which has been posted once.")
            del self.db.table("account.move")[move_id]
        return True

    # account.payment.register (transient) and account.payment
    def _active_moves(self, context: dict) -> list[dict[str, Any]]:
        if context.get("active_model") != "account.move" or not context.get("active_ids"):
            raise user_error("The register payment wizard should only be called on account.move or "
                             "account.move.line records.")
        moves = [self.db.get("account.move", i) for i in context["active_ids"]]
        if any(m["state"] != "posted" for m in moves):
            raise user_error("You can only register payment for posted journal entries.")
        return moves

    def _account_payment_register_create(self, args: list, context: dict) -> Any:
        moves = self._active_moves(context)
        vals = dict(args[0] if not isinstance(args[0], list) else args[0][0])
        if vals.get("journal_id"):
            journal = self.db.get("account.journal", vals["journal_id"])
            if journal["type"] not in ("bank", "cash"):
                raise user_error("The journal of a payment must be a bank or cash journal.")
        else:
            vals["journal_id"] = self._ids("account.journal", type="bank")
        vals.setdefault("amount", sum((m["amount_residual"] for m in moves), Decimal("0")))
        vals.setdefault("payment_date", self.db.clock.date().isoformat())
        vals.setdefault("communication", moves[0]["name"])
        vals["_moves"] = [m["id"] for m in moves]
        record = self.db.new("account.payment.register", vals)
        return record["id"] if not isinstance(args[0], list) else [record["id"]]

    def _account_payment_register_action_create_payments(self, args: list, context: dict) -> Any:
        created = []
        for wizard_id in args[0]:
            wizard = self.db.get("account.payment.register", wizard_id)
            moves = [self.db.get("account.move", i) for i in wizard["_moves"]]
            if any(m["state"] != "posted" for m in moves):
                raise user_error("You can only register payment for posted journal entries.")
            if all(m["amount_residual"] <= 0 for m in moves):
                raise user_error("You can't register a payment because there is nothing left to pay on the selected "
                                 "journal items.")
            amount = Decimal(wizard["amount"])
            if amount <= 0:
                raise user_error("The payment amount must be strictly positive.")
            self._check_lock({"date": wizard["payment_date"]})  # the payment's journal entry is posted
            applied, left = {}, amount
            for move in moves:
                take = min(left, move["amount_residual"])
                applied[move["id"]] = take
                left -= take
            payment = self.db.new("account.payment", {
                "amount": amount, "date": wizard["payment_date"], "journal_id": wizard["journal_id"],
                "partner_id": moves[0]["partner_id"], "memo": wizard["communication"], "state": "in_process",
                "payment_type": "outbound" if moves[0]["move_type"] == "out_refund" else "inbound",  # money back
                "reconciled_invoice_ids": [m["id"] for m in moves], "_applied": applied})
            for move in moves:
                self._residual(move)
                move["write_date"] = self.db.tick()  # reconciling changes the invoice (payment_state)
            created.append(payment["id"])
        action = {"name": "Payments", "type": "ir.actions.act_window", "res_model": "account.payment",
                  "context": {"create": False}}
        if len(created) == 1:
            action.update({"view_mode": "form", "res_id": created[0]})
        else:
            action.update({"view_mode": "list,form", "domain": [["id", "in", created]]})
        return action

    def _account_payment_action_draft(self, args: list, context: dict) -> bool:
        for payment_id in args[0]:
            payment = self.db.get("account.payment", payment_id)
            if payment["state"] == "draft":  # its journal entry is a draft already: button_draft refuses
                raise user_error("Only posted/cancelled journal entries can be reset to draft.")
            self._check_lock(payment)  # button_draft of its journal entry
            moves = payment["reconciled_invoice_ids"]
            payment.update({"state": "draft", "reconciled_invoice_ids": [], "_applied": {}, "write_date": self.db.tick()})
            for move_id in moves:
                move = self.db.get("account.move", move_id)
                self._residual(move)
                move["write_date"] = self.db.tick()
        return False

    def _account_payment_action_cancel(self, args: list, context: dict) -> bool:
        for payment_id in args[0]:
            payment = self.db.get("account.payment", payment_id)
            if payment["state"] != "draft":
                raise user_error("Only draft payments can be cancelled.")
            payment.update({"state": "canceled", "write_date": self.db.tick()})
        return False


def _match(value: Any, op: str, wanted: Any) -> bool:
    if isinstance(value, list) and value and isinstance(value[0], int) and op in ("=", "!="):
        value = value[0]
    if op == "=":
        return value == wanted or (wanted is False and value in (None, False))
    if op == "!=":
        return value != wanted
    if op == "in":
        return value in wanted
    if op == "not in":
        return value not in wanted
    if op == "=ilike":
        return isinstance(value, str) and isinstance(wanted, str) and value.lower() == wanted.lower()
    if op == "ilike":
        return isinstance(value, str) and str(wanted).lower() in value.lower()
    raise app_error("ValueError", f"Invalid leaf operator {op!r}")
