"""TransactionAssembler.ready() looks at the heads of its queues, not at every pending transaction.

On a loaded machine the invoice lines topic was read tens of seconds behind the small topics: thousands of
transactions waited for their lines, and ready() sorted all of them twice per consumed batch (round 4 of
bench/RESULTS.md: that doubled the fold's CPU). The releases themselves are unchanged (the property tests).
"""

from __future__ import annotations

from daemon.source.decode import TxMarker
from daemon.source.fold import TransactionAssembler
from tests.test_fold_properties import ShopModel, apply_op, debezium_records


class CountingDict(dict):
    """A dict that counts walks over its values."""

    walks = 0

    def values(self):
        CountingDict.walks += 1
        return super().values()


def _fed(assembler: TransactionAssembler, topics: dict, skip: str) -> dict:
    positions: dict = {}
    for topic, records in topics.items():
        if topic == skip:
            continue
        for r in records:
            (assembler.add_marker if isinstance(r, TxMarker) else assembler.add_change)(r)
            positions[(r.topic, 0)] = r.offset + 1
    return positions


def test_ready_does_not_walk_every_pending_transaction():
    model = ShopModel()
    for n in range(300):
        apply_op(model, "new_invoice", n)
    topics = debezium_records(model)
    now = [0.0]
    assembler = TransactionAssembler(timeout_s=30, clock=lambda: now[0])
    assembler.pending = CountingDict()
    positions = _fed(assembler, topics, skip="shop.public.invoice_lines")  # every transaction waits for its lines
    assert len(assembler.pending) == 301  # with the model's set-up transaction (location, customer: complete)
    CountingDict.walks = 0
    for _ in range(50):  # one call per consumed batch while the lines topic lags
        assert [tx.completion for tx in assembler.ready(positions)] in ([], ["complete"])
    assert len(assembler.pending) == 300
    assert CountingDict.walks == 0
    now[0] = 31.0  # past the bounded wait: every one is released, in END order
    released = assembler.ready(positions)
    assert [tx.completion for tx in released] == ["timed_out"] * 300
    assert [tx.end_offset for tx in released] == sorted(tx.end_offset for tx in released)
    assert not assembler.pending and assembler.buffered_events == 0


def test_a_transaction_past_the_wait_before_its_first_change_is_released_once_it_has_one():
    model = ShopModel()
    apply_op(model, "new_invoice", 1)
    topics = debezium_records(model)
    now = [0.0]
    assembler = TransactionAssembler(timeout_s=30, clock=lambda: now[0])
    change = topics["shop.public.invoices"][0]
    begin = next(r for r in topics["shop.transaction"] if r.status == "BEGIN" and r.xid == change.xid)
    assembler.add_marker(begin)  # BEGIN only: no END, no change yet
    now[0] = 31.0
    assert assembler.ready({}) == []  # nothing to release: no change
    assembler.add_change(change)
    released = assembler.ready({})
    assert [(tx.xid, tx.completion, len(tx.changes)) for tx in released] == [(begin.xid, "timed_out", 1)]
