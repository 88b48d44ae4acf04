"""Key files: `ledgerwire secret-key --out FILE` creates them 0600 (never overwriting one); the daemon refuses a
key file group or others can read, with a one-line error."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from daemon.config import ConfigError
from daemon.sink.ledger import load_secret_key

REPO = Path(__file__).resolve().parent.parent


def ledgerwire(*args: str) -> subprocess.CompletedProcess:
    # A permissive umask, as a login shell often has: the key file must still come out 0600.
    return subprocess.run(["sh", "-c", 'umask 022; exec "$@"', "sh", sys.executable, "-m", "daemon.cli", *args],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=60)


def test_secret_key_out_writes_a_0600_file_and_never_overwrites(tmp_path):
    key_file = tmp_path / "secret.key"
    result = ledgerwire("secret-key", "--out", str(key_file))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes().strip()
    Fernet(key)  # a valid key
    assert key.decode() not in result.stdout  # the key itself is not echoed
    again = ledgerwire("secret-key", "--out", str(key_file))
    assert again.returncode == 1 and "not overwritten" in again.stderr
    assert key_file.read_bytes().strip() == key
    assert load_secret_key(key_file) == key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_group_or_world_readable_key_file_is_refused_in_one_line(tmp_path, mode):
    key_file = tmp_path / "secret.key"
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_secret_key(key_file)
    assert info.value.lines == [f"secret key file {key_file} is readable by group or others (mode {mode:04o}); "
                                f"run: chmod 600 {key_file}"]


def test_run_refuses_a_readable_key_file_without_a_traceback(tmp_path):
    key_file = tmp_path / "secret.key"
    key_file.write_bytes(Fernet.generate_key())
    key_file.chmod(0o644)
    config = tmp_path / "ledgerwire.yml"
    config.write_text(json.dumps({"secret_key_file": str(key_file),
                                  "postgres": {"dsn": "postgresql://nobody@127.0.0.1:1/none"}}))
    result = ledgerwire("run", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"secret key file {key_file} is readable by group")
