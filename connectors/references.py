"""The natural references every connector on the engine gives the documents it creates (issue #12), so that
a retry finds what an interrupted attempt made: ``LW<payment id>`` for a payment, ``LWR<refund id>`` for a
refund's credit note, ``<invoice number>-A<n>`` / ``-C<n>`` for a closed-period adjustment (an increase is an
invoice, a decrease a credit note). ``EngineConnector.reference`` uses these; a platform with other limits
(length, characters) overrides it. Also the digest of a customer payload, the issue and due dates, codes
shortened to a platform's field length, and the rule for a value longer than a platform's documented limit
(``fitted``)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any, TypeVar

import structlog

from connectors.base import PermanentError
from daemon.canonical import Customer, InvoiceEvent, InvoiceLine, LineKind, Refund

T = TypeVar("T")
log = structlog.get_logger(__name__)

# What a line kind is called on a platform's item, product or line when nothing more specific names it.
LINE_KIND_NAMES = {LineKind.PART: "Parts", LineKind.LABOUR: "Labour", LineKind.SUBLET: "Sublet",
                   LineKind.FEE: "Shop fees", LineKind.DISCOUNT: "Discount", LineKind.CORE_CHARGE: "Core charge",
                   LineKind.CORE_RETURN: "Core return"}
PAYMENT_PREFIX = "LW"
REFUND_PREFIX = "LWR"
SETTLEMENT_PREFIX = "LWP"
_CLAIM = re.compile(r"\(#(\d+)\)$")


def customer_label(customer_id: object, name: str, limit: int) -> str:
    """A customer's name at a platform where names are unique: ``<name> (#<shop customer id>)``, so two shop
    customers of the same name stay apart and ours are told from the bookkeeper's own. Where it must be cut to
    ``limit``, the name is cut, never the "(#id)" that keeps two customers apart (issue #20)."""
    suffix = f" (#{customer_id})"
    return f"{name[:max(limit - len(suffix), 0)]}{suffix}"


def match_customer(customer: Customer, keys: Iterable[str], search: Callable[[str, str], Iterable[T]],
                   owner: Callable[[T], str | None]) -> T | None:
    """The bookkeeper's record of a shop customer, by the target's ``customer_match`` keys in order (``email``,
    ``phone``, ``name``; a key the customer has no value for is skipped): the first record ``search(key, value)``
    finds that no OTHER shop customer owns (``owner``: the shop customer id a record carries, None for the
    bookkeeper's own) — two shop customers with the same name or email never merge."""
    values = {"email": customer.email, "phone": customer.phone, "name": customer.name}
    for key in keys:
        for row in search(key, values[key]) if values.get(key) else ():
            if owner(row) in (None, str(customer.id)):
                return row
    return None


def claimed_by(label: object) -> str | None:
    """The shop customer id a ``customer_label`` carries; None for a record the bookkeeper made."""
    match = _CLAIM.search(str(label or ""))
    return match.group(1) if match else None


def payment_reference(payment_id: object) -> str:
    return f"{PAYMENT_PREFIX}{payment_id}"


def refund_reference(refund_id: object) -> str:
    return f"{REFUND_PREFIX}{refund_id}"


def settlement_reference(refund_id: object) -> str:
    """The refund payment (money paid back) that settles a refund's credit note."""
    return f"{SETTLEMENT_PREFIX}{refund_id}"


def refund_method(event: InvoiceEvent, refund: Refund) -> str | None:
    """The payment method of the payment a refund pays back (``refund.payment_id``): its mapped account is
    where the money goes out from."""
    return next((p.method for p in event.payments if p.id == refund.payment_id), None)


def refund_account(event: InvoiceEvent, refund: Refund, mapping: Any, platform: str, what: str = "account") -> str:
    """The account ``mapping.payment_accounts`` names for the method of the payment a refund pays back: the
    money paid back goes out of where it came in; refused when none is named (never a guessed account)."""
    method = refund_method(event, refund)
    account = mapping.payment_accounts.get(method or "")
    if not account:
        raise PermanentError(f"mapping.payment_accounts names no {platform} {what} for payment method {method!r} "
                             f"(refund {refund.id} pays back payment {refund.payment_id})")
    return account


def main_taxed_line(event: InvoiceEvent, refund: Refund) -> InvoiceLine | None:
    """A refund without a line that carries tax (a goodwill refund) is taxed like the invoice's largest taxed
    line, so its tax is posted as tax, not folded into an untaxed amount (issue #20); None when untaxed."""
    if refund.line_id is not None or not refund.tax_amount:
        return None
    taxed = [ln for ln in event.lines if ln.taxes and ln.amount > 0]
    return max(taxed, key=lambda ln: ln.amount, default=None)


def adjustment_tag(kind: str, sequence: int) -> str:
    """``A<n>`` for an increase, ``C<n>`` for a decrease."""
    return f"{'A' if kind == 'increase' else 'C'}{sequence}"


def adjustment_key(key: str) -> tuple[str, int]:
    """The engine's adjustment key ``"increase:2"`` as (kind, sequence)."""
    kind, _, sequence = key.partition(":")
    return kind, int(sequence)


def adjustment_number(number: str, sequence: int, kind: str) -> str:
    return f"{number}-{adjustment_tag(kind, sequence)}"


def is_increase(reference: str) -> bool:
    """Whether an adjustment reference (``…-A<n>``) names an increase (an invoice), not a credit note."""
    return reference.rsplit("-", 1)[-1].startswith("A")


def payload_digest(payload: dict[str, Any]) -> str:
    """What the platform holds of a customer, digested: a change means an update."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def issued_on(event: InvoiceEvent) -> date:
    """The invoice's date: the shop's issue date, else the day the version was emitted."""
    return event.issue_date or event.emitted_at.date()


def terms_due_date(event: InvoiceEvent, issued: date | None = None) -> date | None:
    """Fleet customers: the due date from their payment terms (counted from ``issued``, default the shop's
    issue date); everyone else: the shop's due date."""
    issued = issued or event.issue_date
    if event.customer.payment_terms_days and issued:
        return issued + timedelta(days=event.customer.payment_terms_days)
    return event.due_date


def short_code(value: str, limit: int, keep: int, digest: int = 8) -> str:
    """``value`` where a platform's code field holds ``limit`` characters; a longer one as its first ``keep``
    characters, ``~`` and a hash of the whole (stable: every invoice finds the same record)."""
    if len(value) <= limit:
        return value
    return f"{value[:keep]}~{hashlib.sha256(value.encode()).hexdigest()[:digest]}"


def fitted(value: str, limit: int, field: str, notes: list[str], **ids: object) -> str:
    """The length rule, written once (issue #20): a value longer than the platform's documented limit is cut to it,
    never silently — its full text is added to ``notes`` (the caller puts them in the record's memo or note field)
    and a log line names the field and both lengths, never the text (a customer's name or phone is PII)."""
    if len(value) <= limit:
        return value
    notes.append(f"{field} in full: {value}")
    log.info("value_cut_to_platform_limit", field=field, length=len(value), limit=limit, **ids)
    return value[:limit]
