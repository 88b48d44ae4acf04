"""The fold's garbage-collector setting (``fold_runner.tune_gc``, issue #21): what the imports allocated is frozen
once, young objects are collected every ``GC_YOUNG_THRESHOLD`` allocations, and a second call (a fold rebuilt after
a transient failure calls ``run`` again) freezes nothing more — its predecessor's garbage stays collectable."""

from __future__ import annotations

import gc

from daemon.source import fold_runner


def test_tune_gc_freezes_once_and_raises_the_young_threshold() -> None:
    fold_runner.tune_gc()
    assert gc.get_threshold()[0] == fold_runner.GC_YOUNG_THRESHOLD
    frozen = gc.get_freeze_count()
    assert frozen > 0
    garbage = [[] for _ in range(1000)]  # tracked containers made after the first call
    fold_runner.tune_gc()
    assert gc.get_freeze_count() == frozen
    assert gc.is_tracked(garbage[0])


def test_the_fold_tunes_the_collector_when_it_starts(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fold_runner, "tune_gc", lambda: calls.append("tuned"))
    monkeypatch.setattr(fold_runner.metrics, "init_fold", lambda tables: None)

    class Stopped:
        def is_set(self) -> bool:
            return True

    runner = fold_runner.FoldRunner.__new__(fold_runner.FoldRunner)
    runner.stop = Stopped()
    runner.progress = fold_runner.Progress()
    runner.run()
    assert calls == ["tuned"]
