"""The set-up leaves the host alone: scripts/bootstrap.sh installs only what is missing and never stops, disables
or kills anything; the local stack signals only processes it can prove it started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon.localstack import stack

REPO = Path(__file__).resolve().parent.parent
# Commands that stop, disable or kill: put on PATH as recorders, so a bootstrap that calls them is caught
# without anything on this shared machine really being stopped.
FORBIDDEN = ("pkill", "killall", "kill", "service", "systemctl", "invoke-rc.d")


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_stopping_the_stack_leaves_a_process_that_now_has_the_recorded_pid_alone(tmp_path):
    cfg = stack.StackConfig(home=tmp_path)
    with _sleeping() as stranger:
        # A pid file from a stack that died: its pid now belongs to someone else's process.
        (tmp_path / "kafka.pid").write_text(str(stranger.pid))
        identity = stack._process_identity(stranger.pid)  # noqa: SLF001
        (tmp_path / "connect.pid").write_text(json.dumps({**identity, "start_ticks": identity["start_ticks"] - 1}))
        stack._stop_pid(cfg, "kafka", timeout=2)  # noqa: SLF001
        stack._stop_pid(cfg, "connect", timeout=2)  # noqa: SLF001
        assert stranger.poll() is None, "a process the stack did not start was signalled"
        assert not (tmp_path / "kafka.pid").exists() and not (tmp_path / "connect.pid").exists()
        # Its own process (identity recorded at launch) is stopped.
        (tmp_path / "kafka.pid").write_text(json.dumps(identity))
        stack._stop_pid(cfg, "kafka", timeout=5)  # noqa: SLF001
        assert stranger.wait(5) is not None


def test_a_process_whose_command_line_read_empty_at_launch_is_still_stopped(tmp_path):
    """The full suite under load: `stack down` left the stack's own process running when its command line had
    read empty as it was recorded (the kernel answers nothing while a process's memory is briefly inaccessible):
    the empty recording never matched again. pid and start time identify the process; an empty command line on
    either side is no evidence against it."""
    cfg = stack.StackConfig(home=tmp_path)
    with _sleeping() as ours:
        identity = stack._process_identity(ours.pid)  # noqa: SLF001
        (tmp_path / "kafka.pid").write_text(json.dumps({**identity, "cmdline": []}))
        stack._stop_pid(cfg, "kafka", timeout=5)  # noqa: SLF001
        assert ours.wait(5) is not None


@contextlib.contextmanager
def _sleeping():
    """A process of this test's own, never left behind (killed by its pid if the test did not stop it)."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _path_without(tmp: Path, hidden: set[str], recorder: Path) -> str:
    """A PATH of one directory: links to every command of the current PATH but ``hidden`` (as on a machine
    missing that package), a recording ``apt-get``, and recorders for every stopping command."""
    farm = tmp / "bin"
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = farm / entry.name
            if entry.name in hidden or target.exists() or target.is_symlink():
                continue
            if os.access(entry.path, os.X_OK) and not entry.is_dir():
                target.symlink_to(entry.path)
    for name in (*FORBIDDEN, "apt-get"):
        stub = farm / name
        stub.unlink(missing_ok=True)
        # apt-get also records whether a policy-rc.d forbade service starts while it "installed".
        stub.write_text(f"#!/bin/sh\nprintf '%s %s policy=%s\\n' '{name}' \"$*\" "
                        f"\"$( [ -x /usr/sbin/policy-rc.d ] && /usr/sbin/policy-rc.d x start >/dev/null 2>&1; echo $?)\" "
                        f">> '{recorder}'\nexit 0\n")
        stub.chmod(0o755)
    return str(farm)


def _system_postgres_cluster():
    """(version, name) of a Debian-packaged PostgreSQL cluster, started by this test if it was down."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no Debian postgresql-common (pg_lsclusters) on this machine: no system cluster to keep alive")
    lines = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split("\n")
    clusters = [line.split() for line in lines if line.strip()]
    if not clusters:
        pytest.skip("no system PostgreSQL cluster exists (pg_lsclusters lists none)")
    version, name, _port, status = clusters[0][:4]
    started_here = False
    if status != "online":
        started = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, text=True)
        if started.returncode != 0:
            pytest.skip(f"cannot start the system PostgreSQL cluster {version}/{name}: {started.stderr.strip()}")
        started_here = True
    return version, name, started_here


def _cluster_online(version: str, name: str) -> bool:
    out = subprocess.run(["pg_lsclusters", "-h", version, name], capture_output=True, text=True).stdout.split()
    return len(out) >= 4 and out[3] == "online"


def test_bootstrap_twice_leaves_the_hosts_postgresql_and_prometheus_running(tmp_path):
    version, name, started_here = _system_postgres_cluster()
    decoy_binary = tmp_path / "prometheus"
    shutil.copy(shutil.which("sleep"), decoy_binary)
    decoy = subprocess.Popen([str(decoy_binary), "600"])
    recorder = tmp_path / "calls.log"
    recorder.touch()
    policy_before = Path("/usr/sbin/policy-rc.d").read_bytes() if Path("/usr/sbin/policy-rc.d").exists() else None
    venv = os.environ.get("LEDGERWIRE_VENV", str(REPO / ".venv"))
    try:
        _wait_for(lambda: Path(f"/proc/{decoy.pid}/comm").read_text().strip() == "prometheus", 10, "the decoy")
        # Run 1: a machine where Prometheus' package is missing (promtool hidden): the install path runs.
        missing = _path_without(tmp_path, {"promtool"}, recorder)
        first = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PATH": missing, "LEDGERWIRE_VENV": venv}, timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "installing prometheus" in first.stdout
        # Run 2: nothing missing (the real PATH, with the recorders still in front of it).
        recorders = tmp_path / "recorders"
        recorders.mkdir()
        for command in FORBIDDEN:
            os.symlink(tmp_path / "bin" / command, recorders / command)
        second = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "PATH": f"{recorders}{os.pathsep}{os.environ['PATH']}",
                                     "LEDGERWIRE_VENV": venv}, timeout=600)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "installing" not in second.stdout

        calls = recorder.read_text().splitlines()
        assert not [c for c in calls if c.split()[0] in FORBIDDEN], f"bootstrap stopped/killed something: {calls}"
        installs = [c for c in calls if c.startswith("apt-get install")]
        assert len(installs) == 1 and "prometheus" in installs[0].split()
        assert installs[0].endswith("policy=101"), f"services could start during the install: {installs}"
        assert decoy.poll() is None, "the host's prometheus process was killed"
        assert _cluster_online(version, name), "the system PostgreSQL cluster was stopped"
        policy_after = Path("/usr/sbin/policy-rc.d").read_bytes() if Path("/usr/sbin/policy-rc.d").exists() else None
        assert policy_after == policy_before, "bootstrap left the host's policy-rc.d changed"
    finally:
        decoy.kill()
        decoy.wait()
        if started_here:
            subprocess.run(["pg_ctlcluster", version, name, "stop"], capture_output=True)
