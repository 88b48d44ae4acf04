"""Configuration errors for people: one line per problem, naming the file, the target (by name) and the field;
never a traceback — `config check`, `config check --online` and `run` alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ledgerwire(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=120)


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


@pytest.fixture
def three_targets(tmp_path):
    def write(third_target: dict, **top) -> Path:
        config = {"postgres": {"dsn": "postgresql://nobody@127.0.0.1:1/none"}, **top, "targets": [
            {"name": "xero-a", "platform": "xero"},
            {"name": "zoho-b", "platform": "zoho-books", "settings": {"organization_id": "1"}},
            {"name": "qbo-main", "platform": "quickbooks-online", **third_target},
        ]}
        path = tmp_path / "ledgerwire.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path
    return write


def test_broken_yaml_is_one_line_with_line_and_column(tmp_path):
    path = tmp_path / "ledgerwire.yml"
    path.write_text("kafka:\n  bootstrap_servers: kafka:9092\n targets: [\n")
    for command in (("config", "check", str(path)), ("run", "--config", str(path))):
        result = ledgerwire(*command)
        _no_traceback(result)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{path}: line 3, column 2: invalid YAML"), lines


def test_a_wrong_type_in_a_targets_mapping_names_the_target_and_the_field(three_targets):
    path = three_targets({"settings": {"realm_id": "1"}, "mapping": {"income_accounts": ["79", "80"],
                                                                    "discount_posting": "sometimes"}})
    result = ledgerwire("config", "check", str(path))
    _no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}: target 'qbo-main' (targets[2]): mapping.income_accounts: Input should be a valid dictionary",
        f"{path}: target 'qbo-main' (targets[2]): mapping.discount_posting: Input should be 'line' or "
        "'discount_account' (got 'sometimes')",
    ]


def test_platform_settings_errors_name_the_target(three_targets):
    path = three_targets({"settings": {"realmid": "1"}})
    result = ledgerwire("config", "check", str(path))
    assert result.returncode == 2
    assert f"{path}: target 'qbo-main' (targets[2]): settings.realmid: Extra inputs are not permitted" in \
        result.stderr.splitlines()


def test_config_check_fails_on_missing_or_unreadable_credentials_naming_the_target(three_targets, tmp_path):
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()
    path = three_targets({"settings": {"realm_id": "1"}, "credentials_file": str(unreadable)})
    config = json.loads(path.read_text())
    config["targets"][0]["credentials_file"] = str(tmp_path / "missing.json")
    config["targets"][1]["credentials_env"] = "LW_TEST_UNSET_CREDENTIALS"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "LW_TEST_UNSET_CREDENTIALS"}
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "config", "check", str(path)], cwd=REPO,
                            capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=60)
    _no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}: target 'xero-a': credentials_file {tmp_path / 'missing.json'}: No such file or directory",
        f"{path}: target 'zoho-b': credentials_env LW_TEST_UNSET_CREDENTIALS is not set",
        f"{path}: target 'qbo-main': credentials_file {unreadable}: Is a directory",
    ]


def test_config_check_online_never_tracebacks_on_incomplete_credentials(three_targets, tmp_path):
    empty = tmp_path / "creds.json"
    empty.write_text("{}")
    path = three_targets({"settings": {"realm_id": "1"}, "credentials_file": str(empty),
                          "base_url": "http://127.0.0.1:1"})
    config = json.loads(path.read_text())
    config["targets"] = config["targets"][2:]
    path.write_text(json.dumps(config))
    result = ledgerwire("config", "check", str(path), "--online")
    _no_traceback(result)
    assert result.returncode == 1
    out = [line for line in result.stdout.splitlines() if line.startswith("qbo-main:")]
    assert len(out) == 1, result.stdout + result.stderr


def test_run_with_a_missing_credentials_file_is_one_line(three_targets, tmp_path):
    path = three_targets({"settings": {"realm_id": "1"}, "credentials_file": str(tmp_path / "gone.json")})
    from daemon.app import seed_credentials
    from daemon.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        seed_credentials(load_config(path), runtime=None)
    assert info.value.lines == [f"target 'qbo-main': credentials_file {tmp_path / 'gone.json'}: No such file or directory"]


def test_a_stall_bound_shorter_than_a_targets_slow_request_is_refused():
    """A partition worker shows progress before each platform request: a request (and its token renewal) may
    last its request timeout, so a stall bound under twice that would restart a daemon that is only slow."""
    import pytest
    from pydantic import ValidationError

    from daemon.config import AppConfig

    with pytest.raises(ValidationError, match="request_timeout_s"):
        AppConfig.model_validate({"kafka": {"call_timeout_s": 5}, "liveness": {"stall_timeout_s": 30},
                                  "targets": [{"name": "books", "platform": "xero", "request_timeout_s": 20}]})
