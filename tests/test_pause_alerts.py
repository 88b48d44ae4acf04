"""The shipped alert rules' unit tests (issue #19: a target paused for re-authorisation and a restarted sink
loop alert): ``promtool test rules`` on grafana/alerts/ledgerwire-rules.test.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ALERTS = Path(__file__).resolve().parent.parent / "grafana" / "alerts"


def assert_promtool_rule_tests_pass(test_file: str) -> None:
    """``promtool test rules`` on one of grafana/alerts/*.test.yml (skipped where promtool is not installed)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/bootstrap.sh installs it)")
    result = subprocess.run([promtool, "test", "rules", test_file], cwd=ALERTS, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pause_and_restart_alerts_fire_as_specified():
    assert_promtool_rule_tests_pass("ledgerwire-rules.test.yml")
