"""``ledgerwire config check FILE --online`` against the QuickBooks Online sandbox (no Kafka, no ledger
database: the target's credentials_file is used and a rotated refresh token written back to it)."""

from __future__ import annotations

import json

import pytest
import yaml

from connectors.quickbooks_online import Sandbox
from daemon.cli import main


@pytest.fixture
def qbo_config(tmp_path):
    sandbox = Sandbox()
    server = sandbox.serve()
    seed = tmp_path / "qbo-credentials.json"
    seed.write_text(json.dumps(sandbox.seed_credentials()))

    def write(**mapping) -> str:
        target = sandbox.target_config("books", server.url) | {"credentials_file": str(seed)}
        target["mapping"] = {**target["mapping"], **mapping}
        path = tmp_path / "ledgerwire.yml"
        path.write_text(yaml.safe_dump({"postgres": {"dsn": "postgresql://nobody@127.0.0.1:1/none"},
                                        "targets": [target]}))
        return str(path)

    yield sandbox, seed, write
    server.stop()


def test_config_check_online_passes_when_everything_resolves(qbo_config, capsys):
    sandbox, seed, write = qbo_config
    before = json.loads(seed.read_text())["refresh_token"]
    assert main(["config", "check", write(), "--online"]) == 0
    out = capsys.readouterr().out
    assert "books: mapping resolves (quickbooks-online)" in out
    assert json.loads(seed.read_text())["refresh_token"] != before  # rotation kept: the seed stays usable
    assert not [r for r in sandbox.requests if r[0] == "POST"]  # read-only


def test_config_check_online_reports_what_is_missing_and_exits_1(qbo_config, capsys):
    sandbox, seed, write = qbo_config
    path = write(income_accounts={"labour": "999", "part": "1"}, tax_codes={"STATE": "13", "COUNTY": "404"})
    assert main(["config", "check", path, "--online"]) == 1
    out = capsys.readouterr().out
    assert "books: income_accounts.labour: account '999' not found" in out
    assert "books: tax_codes.COUNTY: tax rate/code '404' not found" in out
    # Without --online only the file is validated.
    assert main(["config", "check", path]) == 0
