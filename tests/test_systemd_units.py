"""The systemd units: `systemd-analyze verify` passes on ledgerwire.service and on an instance of the template
ledgerwire@.service; both read config and secrets as credentials, which the configuration resolves."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "deploy" / "systemd"
INSTALLED = "/opt/ledgerwire/venv/bin/ledgerwire"


def _ledgerwire_executable() -> str:
    candidates = [Path(sys.executable).parent / "ledgerwire", REPO / ".venv" / "bin" / "ledgerwire"]
    found = [str(c) for c in candidates if c.exists()] + [shutil.which("ledgerwire") or ""]
    if not found[0]:
        pytest.skip("no ledgerwire executable to stand in for the installed one (run `make bootstrap`)")
    return found[0]


@pytest.mark.parametrize("unit, instance", [("ledgerwire.service", "ledgerwire.service"),
                                            ("ledgerwire@.service", "ledgerwire@shop-north.service")])
def test_systemd_analyze_verify_passes(tmp_path, unit, instance):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd; scripts/bootstrap.sh installs it)")
    # verify checks that ExecStart's program exists: the install path is this checkout's own entry point here.
    text = (UNITS / unit).read_text()
    assert INSTALLED in text
    (tmp_path / unit).write_text(text.replace(INSTALLED, _ledgerwire_executable()))
    if instance != unit:
        (tmp_path / instance).symlink_to(tmp_path / unit)
    result = subprocess.run([analyze, "verify", str(tmp_path / instance)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    if result.returncode != 0 and "System has not been booted with systemd" in result.stderr:
        pytest.skip(f"systemd-analyze cannot run in this container: {result.stderr.strip()}")
    problems = [line for line in result.stderr.splitlines() if str(tmp_path) in line or "ledgerwire" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_units_read_config_and_secrets_as_credentials_and_the_template_is_per_shop():
    unit = (UNITS / "ledgerwire.service").read_text()
    template = (UNITS / "ledgerwire@.service").read_text()
    for line in ("LoadCredential=ledgerwire.yml:/etc/ledgerwire/ledgerwire.yml",
                 "LoadCredential=secret-key:/etc/ledgerwire/secret.key", "--config %d/ledgerwire.yml",
                 "DynamicUser=yes"):
        assert line in unit
    for line in ("LoadCredential=ledgerwire.yml:/etc/ledgerwire/%i/ledgerwire.yml",
                 "LoadCredential=secret-key:/etc/ledgerwire/%i/secret.key", "StateDirectory=ledgerwire/%i",
                 "EnvironmentFile=-/etc/ledgerwire/%i/env", "--config %d/ledgerwire.yml"):
        assert line in template
    assert "ReadWritePaths=/var/lib/ledgerwire" not in template


def test_relative_files_in_the_config_are_credentials_beside_it(tmp_path, monkeypatch):
    """As the service sees it: $CREDENTIALS_DIRECTORY holds ledgerwire.yml, secret-key and the seeds."""
    from cryptography.fernet import Fernet

    from daemon.config import load_config
    from daemon.sink.ledger import load_secret_key

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "secret-key").write_bytes(Fernet.generate_key())
    (credentials / "secret-key").chmod(0o400)
    (credentials / "qbo-main.json").write_text("{}")
    (credentials / "ledgerwire.yml").write_text(yaml.safe_dump({
        "http": {"host": "0.0.0.0"},
        "targets": [{"name": "qbo-main", "platform": "quickbooks-online", "credentials_file": "qbo-main.json"}]}))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.delenv("LEDGERWIRE_SECRET_KEY", raising=False)
    monkeypatch.chdir("/")
    config = load_config(credentials / "ledgerwire.yml")
    assert config.targets[0].credentials_file == credentials / "qbo-main.json"
    assert config.http.host == "0.0.0.0"
    assert load_secret_key(config.secret_key_file) == (credentials / "secret-key").read_bytes()
