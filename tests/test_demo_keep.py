"""`ledgerwire demo --keep`: what it leaves behind is safe (no plaintext credentials, a 0600 key, a ready
ledgerwire.yml), the sandbox's books are readable with curl, and `stack down --demo` stops the kept demo."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from connectors.quickbooks_online import Sandbox
from daemon.localstack import stack
from daemon.cli import build_parser
from daemon.config import load_config
from daemon.localstack.demo import DEMO_CREDENTIALS_ENV, books_app, drop_credential_seed, write_demo_config
from connectors.sandbox_kit import RunningServer


SECRET_WORDS = ("token", "secret", "password", "key")


def _secrets(document: dict) -> list[str]:
    """The credential document's secret values (tokens, client secret, passwords, API keys)."""
    return [value for name, value in document.items()
            if isinstance(value, str) and len(value) >= 8 and any(w in name.lower() for w in SECRET_WORDS)]


def test_the_demo_leaves_no_plaintext_credentials_and_a_ready_config(tmp_path, monkeypatch):
    monkeypatch.delenv(DEMO_CREDENTIALS_ENV, raising=False)
    sandbox = Sandbox()
    sandbox.server = sandbox.serve()
    try:
        workdir = tmp_path / "work"
        workdir.mkdir()
        path = write_demo_config(stack.StackConfig(home=tmp_path / "stack"), sandbox, "quickbooks-online", workdir)
        seed = json.loads(os.environ[DEMO_CREDENTIALS_ENV])
        config = load_config(path)
        assert config.targets[0].credentials_env == DEMO_CREDENTIALS_ENV and config.targets[0].credentials_file is None
        key = config.secret_key_file
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        drop_credential_seed(path)
        ready = yaml.safe_load(path.read_text())
        assert "credentials_env" not in ready["targets"][0]
        load_config(path)  # still a valid configuration for the ops commands
        secrets = _secrets(seed)
        assert secrets
        for file in path.parent.rglob("*"):
            if file.is_file():
                text = file.read_bytes().decode(errors="replace")
                assert not [s for s in secrets if s in text], f"{file} holds a credential in plaintext"
    finally:
        sandbox.server.stop()


def test_the_sandbox_books_page_is_plain_json(tmp_path):
    class Books:
        def booked_invoices(self):
            from decimal import Decimal

            from connectors.sandbox_kit import BookedInvoice

            return [BookedInvoice(number="INV-1", external_id="1", voided=False, total=Decimal("10.50"),
                                  tax_total=Decimal("0.50"), line_count=1, payments_applied=Decimal("0"),
                                  payment_count=0)]

    listener = RunningServer(books_app(Books())).start()
    try:
        answer = httpx.get(f"{listener.url}/", timeout=5).json()
        assert answer["live"] == 1 and answer["invoices"][0]["number"] == "INV-1"
        assert answer["invoices"][0]["total"] == "10.50"
    finally:
        listener.stop()


def test_stack_down_stops_the_kept_demo_by_its_identity(tmp_path):
    cfg = stack.StackConfig(home=tmp_path)
    kept = subprocess.Popen(["sleep", "300"])
    try:
        # A real demo records its pid once it runs; right after fork the child may not have exec'd `sleep` yet
        # (its command line is still the test's, which the identity check rightly refuses).
        cmdline = Path(f"/proc/{kept.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        stack.record_process(cfg, "demo", kept.pid)
        stack.down(cfg)
        assert kept.wait(10) is not None
        assert not (tmp_path / "demo.pid").exists()
    finally:
        if kept.poll() is None:
            kept.kill()
            kept.wait()


def test_keep_is_the_documented_option():
    args = build_parser().parse_args(["demo", "--keep"])
    assert args.keep
    assert build_parser().parse_args(["demo", "--keep-stack"]).keep  # the old spelling still works
