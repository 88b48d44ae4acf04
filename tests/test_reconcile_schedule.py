"""Issue #13 (5): reconciliation runs inside the daemon on each target's schedule, so its gauge is real; off by
default for platforms with a daily request quota, on request for them."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from pydantic import BaseModel

from connectors.registry import connector_class
from daemon import metrics
from daemon.config import AppConfig
from daemon.operations import bookkeeping


class NoQuota(BaseModel):
    requests_per_minute: float = 500


class DailyQuota(BaseModel):
    requests_per_day: float = 5000


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_reconciliation_runs_on_schedule_and_sets_its_gauge(monkeypatch):
    config = AppConfig.model_validate({"targets": [
        {"name": "books", "platform": "quickbooks-online", "reconcile": {"interval_s": 3600, "period_days": 3}},
        {"name": "quota", "platform": "xero"},
        {"name": "quota-on", "platform": "xero", "reconcile": {"enabled": True, "interval_s": 7200}}]})
    calls = []

    def fake_reconcile(cfg, ledger, connector, target, since, until, location=None, patience=None):
        calls.append((target.name, (until - since).days))
        metrics.RECONCILE_MISMATCHES.labels(target.name, "missing").set(2)
        return [{"kind": "missing"}, {"kind": "missing"}]

    monkeypatch.setattr(bookkeeping, "reconcile_differences", fake_reconcile)
    clock = Clock()
    schedule = bookkeeping.ReconcileSchedule(
        config, ledger=None, stop=threading.Event(), clock=clock,
        connectors={"books": SimpleNamespace(settings=NoQuota()), "quota": SimpleNamespace(settings=DailyQuota()),
                    "quota-on": SimpleNamespace(settings=DailyQuota())})
    assert set(schedule.connectors) == {"books", "quota-on"}  # a daily quota: off unless asked for
    assert schedule.run_due() == []
    clock.now += 300  # the first round soon after start
    assert schedule.run_due() == ["books", "quota-on"] and calls == [("books", 4), ("quota-on", 8)]
    assert metrics.RECONCILE_MISMATCHES.labels("books", "missing")._value.get() == 2
    assert metrics.RECONCILE_LAST_RUN.labels("books")._value.get() > 0
    clock.now += 3600
    assert schedule.run_due() == ["books"]  # then every interval, per target
    clock.now += 3600
    assert schedule.run_due() == ["books", "quota-on"]


def test_platforms_with_a_daily_quota_are_the_ones_reconciliation_is_off_for():
    def has_daily_quota(platform: str) -> bool:
        return "requests_per_day" in connector_class(platform).settings_model.model_fields

    assert all(has_daily_quota(p) for p in ("xero", "zoho-books", "sage-accounting"))
    assert not any(has_daily_quota(p) for p in ("quickbooks-online", "odoo"))
