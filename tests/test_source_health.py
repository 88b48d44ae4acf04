"""Issue #13 (1, 2): the source verdict tells a quiet shop from a stalled connector, and the self-healing
restarts the Connect task only when the runbook's answer is mechanical, within its budget."""

from __future__ import annotations

from daemon import metrics
from daemon.config import AppConfig
from daemon.source.health import ConnectorState, SelfHeal, SlotState, SourceHealth, judge

CONFIG = AppConfig.model_validate({"source": {"topic_prefix": "shop", "connect_url": "http://connect:8083",
                                              "shop_dsn": "postgresql://watcher@shop/shop",
                                              "health": {"heartbeat_stale_s": 60, "max_restarts": 2,
                                                         "restart_window_s": 3600, "restart_spacing_s": 120}}})
RUNNING = ConnectorState(name="shop-source", reachable=True, state="RUNNING", tasks=[(0, "RUNNING")])
FAILED = ConnectorState(name="shop-source", reachable=True, state="RUNNING", tasks=[(0, "FAILED")])
HELD = SlotState(name="ledgerwire", exists=True, active=True, active_pid=4242, lag_bytes=123_456)


def health(connector, heartbeat_age_s, last_change_age_s=5.0, slot=HELD) -> SourceHealth:
    verdict, cause = judge(CONFIG, connector, slot, heartbeat_age_s, last_change_age_s)
    return SourceHealth(verdict=verdict, cause=cause, heartbeat_age_s=heartbeat_age_s,
                        last_change_age_s=last_change_age_s, connector=connector, slot=slot)


def test_a_quiet_shop_is_told_apart_from_a_stalled_connector():
    quiet = health(RUNNING, heartbeat_age_s=4, last_change_age_s=3600)
    assert quiet.verdict == "quiet" and quiet.cause.startswith("quiet shop") and quiet.stall_age_s == 0
    stalled = health(RUNNING, heartbeat_age_s=400, last_change_age_s=3600)
    assert stalled.verdict == "stalled" and "no heartbeat for 400s" in stalled.cause
    assert "held by pid 4242" in stalled.cause and "123,456 bytes behind" in stalled.cause
    assert stalled.stall_age_s == 400  # a change made since the last heartbeat cannot have been posted
    assert health(RUNNING, heartbeat_age_s=2).verdict == "flowing"
    assert health(FAILED, heartbeat_age_s=400).verdict == "failed"
    assert health(ConnectorState(name="shop-source", reachable=False), 400).verdict == "unknown"
    assert health(RUNNING, heartbeat_age_s=None).verdict == "unknown"
    assert "heartbeat.interval.ms" in health(RUNNING, heartbeat_age_s=None).cause


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_self_heal_restarts_a_stalled_or_failed_task_within_its_budget_then_asks_for_a_person():
    clock, restarted, terminated = Clock(), [], []
    heal = SelfHeal(CONFIG, restart=lambda url, name: restarted.append(name),
                    terminate=lambda dsn, slot, pid: terminated.append((slot, pid)) or True, clock=clock)
    before = metrics.SOURCE_CONNECTOR_RESTARTS.labels("shop-source", "no_heartbeat")._value.get()
    assert heal.consider(health(RUNNING, heartbeat_age_s=90)) is None  # just started: one bound's grace
    clock.now += 60
    assert heal.consider(health(RUNNING, heartbeat_age_s=4, last_change_age_s=3600)) is None  # quiet: leave it
    assert heal.consider(health(RUNNING, heartbeat_age_s=90)) == "no_heartbeat"
    clock.now += 30
    assert heal.consider(health(RUNNING, heartbeat_age_s=120)) is None  # the restart gets time to work
    clock.now += 30  # a stale bound after the restart, before the next restart is due (spacing 120 s)
    # The same walsender still holds the slot after the restart: the old task's connection is orphaned; the
    # daemon ends that backend (the new task, retrying the slot, takes it) instead of restarting again.
    assert heal.consider(health(RUNNING, heartbeat_age_s=240)) == "slot_held_by_dead_task"
    assert terminated == [("ledgerwire", 4242)] and restarted == ["shop-source"]
    clock.now += 300
    assert heal.consider(health(FAILED, heartbeat_age_s=540)) is None  # budget (2 per hour) spent
    assert heal.exhausted and metrics.SOURCE_SELF_HEAL_EXHAUSTED._value.get() == 1
    assert restarted == ["shop-source"]
    assert metrics.SOURCE_CONNECTOR_RESTARTS.labels("shop-source", "no_heartbeat")._value.get() == before + 1
    assert heal.consider(health(RUNNING, heartbeat_age_s=3)) is None and not heal.exhausted
    assert metrics.SOURCE_SELF_HEAL_EXHAUSTED._value.get() == 0
    clock.now += 3600  # the window slid: the budget is back
    assert heal.consider(health(RUNNING, heartbeat_age_s=90)) == "no_heartbeat"


def test_every_connector_config_we_write_sends_heartbeats():
    """The verdict needs Debezium's heartbeats: the compose file, `source register` and the local stack (which
    had them off) all set heartbeat.interval.ms and the heartbeat action query."""
    import json
    from pathlib import Path

    from daemon.localstack import stack
    from daemon.operations.source_setup import HEARTBEAT_QUERY, debezium_connector_config

    compose = json.loads((Path(__file__).resolve().parent.parent / "compose" / "debezium-connector.json").read_text())
    registered = debezium_connector_config(host="db", port=5432, dbname="shop", topic_prefix="shop")
    local = stack.debezium_connector_config(stack.StackConfig())
    for config in (compose, registered, local):
        assert int(config["heartbeat.interval.ms"]) > 0 and config["heartbeat.action.query"] == HEARTBEAT_QUERY
