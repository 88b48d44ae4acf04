"""Issue #13 (5): the freshness, source-heartbeat, slot and stuck-component alerts fire as specified (and not for
a target waiting for its schedule or paused): ``promtool test rules`` on grafana/alerts/ledgerwire-freshness.test.yml."""

from __future__ import annotations

from tests.test_pause_alerts import assert_promtool_rule_tests_pass


def test_freshness_source_slot_and_stuck_alerts_fire_as_specified():
    assert_promtool_rule_tests_pass("ledgerwire-freshness.test.yml")
