"""The fold's Prometheus counters count every row event and totals mismatch once, though they are added per batch.

Since issue #21 round 6 ``Mirror.apply`` keeps its counts and ``Mirror.flush_metrics`` (the runner calls it once
per consumed batch; ``changelog()`` calls it too) adds them: a counter's lock per transaction was ~0.6 µs of each
row event's fold.
"""

from __future__ import annotations

import random
from decimal import Decimal

from daemon import metrics
from daemon.source.fold import Mirror
from tests.test_fold_golden import _changes
from tests.test_fold_properties import OPS, ShopModel, apply_op


def _value(counter) -> float:
    return counter._value.get()  # noqa: SLF001 - the client's own value holder


def test_row_events_and_mismatches_are_counted_once_each_when_flushed():
    rng = random.Random(7)
    model = ShopModel()
    for _ in range(60):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    for invoice_id in sorted(model.tables["invoices"])[:3]:  # stored totals the lines do not add up to
        model.begin()
        model.update("invoices", invoice_id, total=Decimal("0.01"))
        model.commit()
    transactions = _changes(model)
    expected: dict[tuple[str, str], int] = {}
    for tx in transactions:
        for change in tx.changes:
            expected[(change.table, change.op)] = expected.get((change.table, change.op), 0) + 1
    before = {key: _value(metrics.CDC_EVENTS.labels(*key)) for key in expected}
    mismatches_before = _value(metrics.FOLD_TOTALS_MISMATCH)

    mirror = Mirror()
    for tx in transactions:
        for invoice_id in sorted(mirror.apply(tx)):
            mirror.build_encoded(invoice_id, tx)
        mirror.end_batch()
    counted = {key: _value(metrics.CDC_EVENTS.labels(*key)) - before[key] for key in expected}
    assert counted == dict.fromkeys(expected, 0)  # nothing added before the flush

    mirror.flush_metrics()
    assert {key: _value(metrics.CDC_EVENTS.labels(*key)) - before[key] for key in expected} == expected
    mirror.flush_metrics()  # nothing new: nothing added twice
    assert {key: _value(metrics.CDC_EVENTS.labels(*key)) - before[key] for key in expected} == expected
    mismatches = _value(metrics.FOLD_TOTALS_MISMATCH) - mismatches_before
    assert mismatches == built_with_mismatch(transactions) >= 3


def built_with_mismatch(transactions) -> int:
    """Invoice builds whose computed totals differ from the stored ones, counted from the events themselves."""
    mirror = Mirror()
    count = 0
    for tx in transactions:
        for invoice_id in sorted(mirror.apply(tx)):
            header = mirror._row("invoices", invoice_id)  # noqa: SLF001
            record = None if header is None else mirror._invoice_record(invoice_id, header, False)  # noqa: SLF001
            count += bool(record and record["totals_mismatch"])
            mirror.build_encoded(invoice_id, tx)
        mirror.end_batch()
    return count


def test_the_changelog_adds_what_was_counted():
    rng = random.Random(11)
    model = ShopModel()
    for _ in range(10):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    transactions = _changes(model)
    key = (transactions[0].changes[0].table, transactions[0].changes[0].op)
    before = _value(metrics.CDC_EVENTS.labels(*key))
    mirror = Mirror()
    mirror.apply(transactions[0])
    list(mirror.changelog())
    assert _value(metrics.CDC_EVENTS.labels(*key)) - before == sum(
        1 for c in transactions[0].changes if (c.table, c.op) == key)
