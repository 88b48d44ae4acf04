"""The fold state changelog: one record per touched invoice, and state written one record per row still restores.

Since issue #21 (round 4) an invoice's header, child rows and version are one ``i:<invoice id>`` record instead
of one ``r:<table>:<id>`` record per row and a ``v:<invoice id>`` record (a 13-row invoice transaction was 14
produce calls). A fold-state topic an older release wrote holds those per-row keys; a fold of this release
restores them, writes invoice records on top (read after them: the topic has one partition, compaction keeps
offset order) and must end in exactly the state of a fold that never restarted.
"""

from __future__ import annotations

import random

import pytest

from daemon.canonical import encode_invoice_event
from daemon.source.fold import Mirror, SourceTransaction, encode_state
from tests.test_fold_golden import FIXED_NOW, _changes, _extra_transactions, _fixed
from tests.test_fold_properties import OPS, ShopModel, apply_op

PER_INVOICE_TABLES = ("invoices", "invoice_lines", "line_taxes", "payments", "refunds")


def _workload(seed: int, ops: int, more_ops: int = 0) -> tuple[list[SourceTransaction], list[SourceTransaction]]:
    """The source transactions of ``ops`` operations, refunds and vehicles, ``ops`` more; then those of
    ``more_ops`` further operations."""
    rng = random.Random(seed)
    model = ShopModel()
    for _ in range(ops):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    _extra_transactions(model, rng)
    for _ in range(ops):  # after the refunds and vehicles: edits, moved payments, deleted lines and invoices
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    first = _changes(model)
    for _ in range(more_ops):
        apply_op(model, rng.choice(OPS), rng.randint(0, 1000))
    return first, _changes(model)[len(first):]


def _mirror() -> Mirror:
    mirror = Mirror()
    mirror.now = lambda: FIXED_NOW
    return mirror


def _fold(mirror: Mirror, transactions: list[SourceTransaction], changelog: dict[str, bytes | None]) -> list[bytes]:
    """Fold like the runner (apply, build, end the batch, write the changelog); the payloads emitted."""
    emitted = []
    for tx in transactions:
        for invoice_id in sorted(mirror.apply(tx)):
            built = mirror.build_encoded(invoice_id, tx)
            if built is not None:
                emitted.append(built.payload)
        mirror.end_batch()
        for key, value in mirror.changelog():
            changelog.pop(key, None)  # the compacted topic: the latest value per key, in write order
            changelog[key] = value
    return emitted


def _restored(changelog: dict[str, bytes | None]) -> Mirror:
    mirror = _mirror()
    for key, value in changelog.items():
        mirror.restore(key, value)
    return mirror


def _per_row_changelog(mirror: Mirror) -> dict[str, bytes | None]:
    """The state as a release before invoice records left it on the compacted topic: every row under its own key
    (its compact array) and every version under ``v:``."""
    out: dict[str, bytes | None] = {}
    for table, rows in mirror.rows.items():
        for pk in rows:
            out[f"r:{table}:{pk}"] = rows.raw(pk)
    for invoice_id, (version, content) in mirror.versions.items():
        out[f"v:{invoice_id}"] = encode_state({"version": version, "hash": content})
    return out


def _assert_same_state(restored: Mirror, live: Mirror) -> None:
    assert restored.row_counts() == live.row_counts()
    for table, rows in live.rows.items():
        assert {pk: rows.raw(pk) for pk in rows} == {pk: restored.rows[table].raw(pk) for pk in restored.rows[table]}
    for table, index in live.by_invoice.items():
        for invoice_id in live.rows["invoices"]:
            assert restored.by_invoice[table].get(invoice_id) == index.get(invoice_id)
    assert dict(restored.versions.items()) == dict(live.versions.items())
    for invoice_id in live.rows["invoices"]:
        a, b = live.current_event(invoice_id), restored.current_event(invoice_id)
        assert (a is None) == (b is None)
        if a is not None:
            assert encode_invoice_event(_fixed(a)) == encode_invoice_event(_fixed(b))


def test_an_invoice_transaction_is_one_state_record_not_one_per_row():
    transactions, _ = _workload(11, 150)
    changelog: dict[str, bytes | None] = {}
    mirror = _mirror()
    records = row_changes = 0
    for tx in transactions:
        touched = mirror.apply(tx)
        for invoice_id in sorted(touched):
            mirror.build_encoded(invoice_id, tx)
        mirror.end_batch()
        written = list(mirror.changelog())
        row_changes += len(tx.changes)
        records += len(written)
        for key, value in written:
            kind, _, rest = key.partition(":")
            assert kind in ("r", "i")
            if kind == "r":
                # Only reference rows (or a row of no invoice) keep their own key.
                assert rest.split(":")[0] not in PER_INVOICE_TABLES or value is None
            else:
                assert value is not None  # an invoice record is never a tombstone: it keeps the version
            changelog.pop(key, None)
            changelog[key] = value
    assert records * 2 < row_changes  # 96f000c wrote one record per row change and one per version
    _assert_same_state(_restored(changelog), mirror)


def test_state_written_one_record_per_row_restores_and_invoice_records_supersede_it():
    transactions, more = _workload(5, 200, 60)
    half = len(transactions) // 2
    live = _mirror()
    live_emitted = _fold(live, transactions, {})

    before_upgrade = _mirror()
    emitted = _fold(before_upgrade, transactions[:half], {})
    changelog = _per_row_changelog(before_upgrade)  # what the older release's fold left on the topic
    upgraded = _restored(changelog)
    _assert_same_state(upgraded, before_upgrade)
    # The second half (payments moved between invoices, lines and invoices deleted) writes invoice records after
    # the per-row keys; a restart then reads both, in that order.
    emitted += _fold(upgraded, transactions[half:], changelog)
    assert emitted == live_emitted
    assert any(key.startswith("i:") for key in changelog)
    assert any(key.startswith("r:invoice_lines:") for key in changelog)  # stale per-row keys still there
    restarted = _restored(changelog)
    _assert_same_state(restarted, live)

    # And a fold restored from the mixed topic goes on exactly as the one that never restarted.
    assert more
    tail_changelog = dict(changelog)
    assert _fold(restarted, more, tail_changelog) == _fold(live, more, {})
    _assert_same_state(_restored(tail_changelog), live)


def test_an_invoice_record_of_another_format_is_refused():
    mirror = _mirror()
    with pytest.raises(ValueError, match="format"):
        mirror.restore("i:7", b"[99,null,null,null,[],[],[],[]]")
