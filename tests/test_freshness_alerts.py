"""Issue #13 (5): the freshness, source-heartbeat, slot and stuck-component alerts fire as specified (and not for
a target waiting for its schedule or paused): ``promtool test rules`` on grafana/alerts/ledgerwire-freshness.test.yml."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.test_pause_alerts import ALERTS


def test_freshness_source_slot_and_stuck_alerts_fire_as_specified():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/bootstrap.sh installs it)")
    result = subprocess.run([promtool, "test", "rules", "ledgerwire-freshness.test.yml"], cwd=ALERTS,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
