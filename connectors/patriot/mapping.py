"""Canonical invoice → what Patriot's import files and the bookkeeper's worksheet hold (pure functions).

Every invoice is split into *streams*, each with a state that the exports move forward: the invoice itself
(``inv:<id>``: its content hash, or ``void``), each payment (``pay:<invoice>:<id>``: the amount deposited),
each refund (``ref:<invoice>:<id>``: the amount paid back) and the customer (``cust:<id>``: a digest).
``plan`` turns (state already in sealed files → state the shop has now) into the rows that take the books
from one to the other; nothing here knows about files or the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from daemon.canonical import Customer, InvoiceEvent, InvoiceStatus, PaymentStatus

# Patriot's documented layouts (SOURCE.md): customer import and bank-transaction import, header row first.
CUSTOMER_COLUMNS = ("Business Name", "First Name", "Last Name", "Address 1", "Address 2", "City", "State", "Zip",
                    "Email", "Phone", "Notes")
BANK_COLUMNS = ("Post Date", "Description", "Amount")
WORKSHEET_COLUMNS = ("Export", "Period", "Action", "Invoice", "Shop invoice id", "Date", "Customer", "Status",
                     "Subtotal", "Tax", "Total", "Amount", "Reference", "Line count", "Lines", "Flags")

_US_LAST_LINE = re.compile(r"^(?P<city>[^,]+),\s*(?P<state>[A-Z]{2})\s+(?P<zip>\d{5}(?:-\d{4})?)$")
_PHONE_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Desired:
    """A stream's state in the shop now (None: nothing should be in Patriot) and the facts its rows carry."""

    state: str | None
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sealed:
    """A stream's state as the last sealed export left it, and that row's facts."""

    state: str | None
    facts: dict[str, str]


@dataclass(frozen=True)
class Row:
    """One line to export. ``file`` is where it goes besides the worksheet: ``bank``, ``customers`` or ``''``."""

    stream: str
    file: str
    state: str | None
    facts: dict[str, str]


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _digest(facts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def us_date(day: date) -> str:
    return day.strftime("%m/%d/%Y")


def customer_facts(customer: Customer, limit: int) -> dict[str, str]:
    """Patriot's customer import row. Nothing is silently cut: a field over ``limit`` characters is shortened
    in its column and written whole in Notes and in ``flags``; an address that is not a US address (Patriot
    takes US addresses only) stays out of the address columns and goes to Notes, flagged."""
    notes: list[str] = [f"Ledgerwire customer {customer.id}"]
    flags: list[str] = []
    row = dict.fromkeys(CUSTOMER_COLUMNS, "")

    def put(column: str, text: str) -> None:
        if len(text) > limit:
            notes.append(f"Full {column.lower()}: {text}")
            flags.append(f"{column} over {limit} characters (full text in Notes)")
        row[column] = text[:limit]

    first, _, last = customer.name.strip().rpartition(" ")
    if customer.is_fleet or not first:
        put("Business Name", customer.name.strip())
    else:
        put("First Name", first)
        put("Last Name", last)
    if customer.billing_address:
        lines = [part.strip() for part in re.split(r"[\n;]+", customer.billing_address) if part.strip()]
        match = _US_LAST_LINE.match(lines[-1]) if len(lines) >= 2 else None
        if match:
            put("Address 1", lines[0])
            put("Address 2", ", ".join(lines[1:-1]))
            put("City", match["city"].strip())
            row["State"], row["Zip"] = match["state"], match["zip"]
        else:
            notes.append(f"Address (not imported: Patriot accepts US addresses only): {' / '.join(lines)}")
            flags.append("address not a US address: key it in by hand or leave it out")
    if customer.email:
        emails = [e.strip() for e in re.split(r"[,;\s]+", customer.email) if e.strip()]
        row["Email"] = emails[0]
        if len(emails) > 1:
            notes.append(f"Other e-mail addresses: {', '.join(emails[1:])}")
            flags.append("more than one e-mail address (one per row in Patriot; others in Notes)")
    if customer.phone:
        extension = _PHONE_EXTENSION.search(customer.phone)
        row["Phone"] = customer.phone[: extension.start()] if extension else customer.phone
        if extension:
            notes.append(f"Phone extension: {extension.group(1)}")
            flags.append("phone extension moved to Notes (Patriot takes phones without extensions)")
    row["Notes"] = "; ".join(notes)
    return row | {"_name": customer.name, "_flags": "; ".join(flags)}


def desired_states(event: InvoiceEvent, limit: int) -> dict[str, Desired]:
    """Every stream of ``event`` with the state the shop has now."""
    issued = event.status == InvoiceStatus.ISSUED
    number, inv = event.number, str(event.invoice_id)
    common = {"invoice": number, "invoice_id": inv, "customer": event.customer.name}
    lines = "; ".join(
        f"{line.quantity.normalize():f} x {line.part_number + ' ' if line.part_number else ''}{line.description}"
        f" @ {line.unit_price.normalize():f} = {_money(line.amount)}"
        + "".join(f" + {t.code} {_money(t.amount)}" for t in line.taxes) for line in event.lines)
    flags = []
    if event.currency != "USD":
        flags.append(f"currency {event.currency}: Patriot keeps US dollars")
    if event.totals_mismatch:
        flags.append(f"shop's stored total {_money(event.stored.total)} differs from its lines")
    invoice_facts = common | {
        "date": us_date(event.issue_date) if event.issue_date else "", "status": "issued" if issued else "void",
        "subtotal": _money(event.stored.subtotal), "tax": _money(event.stored.tax_total),
        "total": _money(event.stored.total), "line_count": str(len(event.lines)), "lines": lines,
        "reference": f"job {event.job.number}" if event.job else "", "flags": "; ".join(flags)}
    state = _digest(invoice_facts) if issued else (None if event.status == InvoiceStatus.DRAFT else "void")
    states = {f"inv:{inv}": Desired(state, invoice_facts)}
    for payment in event.payments:
        received = payment.status == PaymentStatus.RECEIVED
        states[f"pay:{inv}:{payment.id}"] = Desired(_money(payment.amount) if received else None, common | {
            "id": f"P{payment.id}", "date": us_date(payment.received_at.date()), "method": payment.method,
            "reference": payment.reference or ""})
    for refund in event.refunds:
        states[f"ref:{inv}:{refund.id}"] = Desired(_money(refund.amount), common | {
            "id": f"R{refund.id}", "date": us_date(refund.created_at.date()), "method": refund.kind,
            "reference": refund.reason or ""})
    customer = customer_facts(event.customer, limit)
    states[f"cust:{event.customer.id}"] = Desired(_digest(customer), customer)
    return states


def _bank(stream: str, state: str | None, facts: dict[str, str], action: str, amount: str, day: str) -> Row:
    what = {"deposit": f"Payment {facts['id']}", "reversal": f"Reversal of payment {facts['id']}",
            "refund": f"Refund {facts['id']}", "refund cancelled": f"Refund {facts['id']} cancelled"}[action]
    description = f"{what} for invoice {facts['invoice']}"
    return Row(stream, "bank", state, facts | {"action": action, "amount": amount, "date": day,
                                               "description": description})


def plan(stream: str, desired: Desired | None, sealed: Sealed | None, exported: bool, today: date) -> list[Row]:
    """The rows that take ``stream`` from its sealed state to ``desired``. ``exported``: the invoice is (or is
    about to be) in Patriot; while it is not, none of its money goes out either (a draft, or an invoice voided
    before any export, leaves no trace)."""
    before = sealed.state if sealed else None
    after = desired.state if desired and (exported or stream.startswith("cust:")) else None
    if stream.startswith("inv:") and after == "void" and before is None:
        after = None  # never keyed in: nothing to void
    if after == before:
        return []
    kind = stream.split(":", 1)[0]
    if kind == "inv":
        if after is None:
            return []  # an exported invoice cannot become a draft again in the shop
        action = "void invoice" if after == "void" else ("new invoice" if before in (None, "void")
                                                         else "changed invoice")
        return [Row(stream, "", after, desired.facts | {"action": action})]
    if kind == "cust":
        action = "add customer" if before is None else "update customer"
        return [Row(stream, "customers" if before is None else "", after, desired.facts | {"action": action})]
    rows: list[Row] = []
    undo, do = ("reversal", "deposit") if kind == "pay" else ("refund cancelled", "refund")
    sign = Decimal(1) if kind == "pay" else Decimal(-1)
    if before is not None:
        assert sealed is not None
        rows.append(_bank(stream, None, sealed.facts, undo, _money(-sign * Decimal(before)), us_date(today)))
    if after is not None:
        assert desired is not None
        rows.append(_bank(stream, after, desired.facts, do, _money(sign * Decimal(after)), desired.facts["date"]))
    return rows
