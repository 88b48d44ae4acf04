"""Closed-period adjustments, platform-neutral: what the connectors' adjustment documents share.

When a platform refuses a change because the books are locked for the document's date, the change is posted
as an adjustment dated the first open day: the difference between what the platform holds for the invoice
(the original document plus every adjustment already posted) and what the shop's new version says, grouped by
posting key (e.g. "account|tax rate") as (net, tax) pairs. A positive total difference is an increase (an
invoice), a negative one a decrease (a credit note). Every adjustment is recorded in
``doc.extra["adjustments"]`` (a JSON list) with its effect on what the platform holds, so the next change
computes its difference from the right base and a retry never posts the same adjustment twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

from connectors.base import PermanentError

ZERO = Decimal("0.00")
Amounts = tuple[Decimal, Decimal]  # (net, tax)
Groups = dict[str, Amounts]
KEY = "adjustments"
K = TypeVar("K", bound=Hashable)


def line_difference(held: Iterable[tuple[int, Iterable[tuple[K, Decimal]]]], wanted: Iterable[tuple[K, Decimal]]
                    ) -> list[tuple[K, Decimal]]:
    """The lines an adjustment posts so that the platform holds ``wanted``, line by line (for platforms that
    compute tax per line themselves: Zoho Books, Odoo). ``held``: ``(sign, lines)`` of every document the
    platform holds for the invoice (+1 the original and each increase, -1 each decrease), a line being
    ``(key, amount)`` with ``key`` how it posts (account, taxes…). A line on both sides cancels out; one only
    the platform holds comes back negated."""
    diff = Counter(wanted)
    for sign, lines in held:
        for line in lines:
            diff[line] -= sign
    return [(key, amount if count > 0 else -amount) for (key, amount), count in sorted(diff.items())
            for _ in range(abs(count)) if amount]


def add(into: Groups, key: str, net: Decimal, tax: Decimal, sign: int = 1) -> Groups:
    held_net, held_tax = into.get(key, (ZERO, ZERO))
    into[key] = (held_net + sign * net, held_tax + sign * tax)
    return into


def grouped(rows: Iterable[tuple[str, Decimal, Decimal]], sign: int = 1) -> Groups:
    """Lines ``(key, net, tax)`` summed per posting key: what a document (or the shop's version) holds."""
    out: Groups = {}
    for key, net, tax in rows:
        add(out, key, net, tax, sign)
    return out


def held_documents(original_id: str, posted: Iterable[Any]) -> list[tuple[int, str, str]]:
    """What the platform holds for an invoice, as ``(sign, kind, external id)``: the original and every
    increase (+1, invoices), every decrease (-1, credit notes); a re-dating posted nothing of its own."""
    return [(1, "increase", original_id)] + [(1 if a.kind == "increase" else -1, a.kind, a.external_id)
                                             for a in posted if a.kind != "redated"]


def combine(*groups: Groups) -> Groups:
    out: Groups = {}
    for g in groups:
        for key, (net, tax) in g.items():
            add(out, key, net, tax)
    return out


def difference(held: Groups, wanted: Groups) -> Groups:
    """``wanted - held`` per key, without the keys that do not change."""
    out: Groups = {}
    for key in sorted(set(held) | set(wanted)):
        h_net, h_tax = held.get(key, (ZERO, ZERO))
        w_net, w_tax = wanted.get(key, (ZERO, ZERO))
        if w_net - h_net or w_tax - h_tax:
            out[key] = (w_net - h_net, w_tax - h_tax)
    return out


def totals(groups: Groups) -> Amounts:
    return (sum((n for n, _ in groups.values()), ZERO), sum((t for _, t in groups.values()), ZERO))


def direction(diff: Groups) -> Literal["increase", "decrease"]:
    """An increase (posted as an invoice) unless the total goes down (a credit note). A zero total that
    moves amounts between keys posts as an increase of zero."""
    net, tax = totals(diff)
    return "decrease" if net + tax < 0 else "increase"


def signed(diff: Groups, kind: str) -> Groups:
    """The document's own line amounts: a credit note carries the decrease as positive amounts."""
    sign = 1 if kind == "increase" else -1
    return {key: (sign * net, sign * tax) for key, (net, tax) in diff.items()}


def first_open_day(*lock_dates: date | None, today: date | None = None) -> date:
    """The day after the latest lock date; today when nothing is locked."""
    locks = [d for d in lock_dates if d is not None]
    return max(locks) + timedelta(days=1) if locks else (today or date.today())


def load(extra: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(extra.get(KEY, "[]"))


def record(extra: dict[str, str], entry: dict[str, Any]) -> None:
    entries = load(extra)
    entries.append(entry)
    extra[KEY] = json.dumps(entries, sort_keys=True)


def effect_of(entries: list[dict[str, Any]]) -> Groups:
    """What the recorded adjustments add to (or take from) what the platform holds, per key."""
    out: Groups = {}
    for entry in entries:
        for key, (net, tax) in (entry.get("effect") or {}).items():
            add(out, key, Decimal(net), Decimal(tax))
    return out


def encode(groups: Groups) -> dict[str, list[str]]:
    return {key: [str(net), str(tax)] for key, (net, tax) in sorted(groups.items())}


def next_sequence(entries: list[dict[str, Any]]) -> int:
    return sum(1 for e in entries if e.get("kind") in ("increase", "decrease")) + 1


MAX_ROUNDS = 10  # a retry finds at most a few adjustments an interrupted attempt posted; more means a loop


def settle(extra: dict[str, str], base: Groups, wanted: Groups, *, platform: str, version: int, original: str | None,
           reason: str, find: Callable[[int], tuple[str, Any] | None],
           post: Callable[[str, int, Groups], tuple[Any, Groups]],
           found_effect: Callable[[str, Any, Groups], Groups | None],
           describe: Callable[[str, Any], dict[str, Any]],
           recorded: Callable[[dict[str, Any]], None],
           postable: Callable[[Groups], Groups] = lambda diff: diff) -> tuple[Groups, dict[str, Any] | None]:
    """Post the difference between what the platform holds (``base`` plus every recorded adjustment) and what
    the shop's version says (``wanted``) as one adjustment, and record it in ``extra``.

    Each round looks for the adjustment numbered with the next sequence first (``find``: an interrupted
    attempt may have posted it); one found is recorded with its effect (``found_effect``; None when the callback
    recorded something else itself) and the next round looks again; otherwise the difference is posted
    (``post(kind, seq, diff)`` → the posted document and its effect; ``signed`` gives the document's own
    amounts). Returns what the platform holds afterwards and the entry posted (None: nothing differed). Never
    loops forever: after ``MAX_ROUNDS`` it is a PermanentError."""
    for _ in range(MAX_ROUNDS):
        entries = load(extra)
        held = combine(base, effect_of(entries))
        diff = postable(difference(held, wanted))
        if not diff:
            return held, None
        seq = next_sequence(entries)
        found = find(seq)
        if found is not None:
            kind, posted = found
            effect = found_effect(kind, posted, diff)
            if effect is None:
                continue
        else:
            kind = direction(diff)
            posted, effect = post(kind, seq, diff)
        net, tax = totals(effect)
        entry = {"kind": kind, **describe(kind, posted), "total": str(abs(net + tax)), "tax": str(abs(tax)),
                 "version": str(version), "original": original, "reason": reason[:200], "effect": encode(effect)}
        record(extra, entry)
        recorded(entry)
        if found is None:
            return combine(held, effect), entry
    raise PermanentError(f"{platform}: closed-period adjustments did not converge; see doc.extra['adjustments']")
