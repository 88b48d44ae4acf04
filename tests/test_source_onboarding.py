"""Onboarding a shop database: `ledgerwire source init` / `source check`, and Debezium logging in with the
least-privilege role on the real stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from daemon.operations import source_setup as source

from daemon.localstack import stack

REPO = Path(__file__).resolve().parent.parent


def ledgerwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


@pytest.mark.stack
def test_source_check_passes_on_the_test_database_and_debezium_uses_the_replication_role(shop, report):
    checked = ledgerwire("source", "check", "--dsn", shop.shop_dsn)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("source ok")
    with psycopg.connect(shop.stack.dsn("postgres"), autocommit=True) as conn:
        slot_user = conn.execute(
            "SELECT r.usename FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
            "WHERE s.slot_name = %s", (shop.name,)).fetchone()
        role = conn.execute("SELECT rolsuper, rolreplication, rolcanlogin FROM pg_roles WHERE rolname = %s",
                            (source.DEFAULT_ROLE,)).fetchone()
    assert slot_user == (source.DEFAULT_ROLE,), f"the slot is streamed by {slot_user}"
    assert role == (False, True, True)
    report(f"source check ok on {shop.name}; Debezium streams the slot as {slot_user[0]} (not a superuser)")


@pytest.mark.stack
def test_source_check_names_every_missing_piece_then_init_fixes_them(local_stack):
    name = "onboard_check"
    with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute("DROP ROLE IF EXISTS onboard_role")
    dsn = local_stack.dsn(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(stack.SHOP_SCHEMA.read_text())  # the shop software's tables only
            conn.execute("CREATE PUBLICATION onboard_pub FOR TABLE invoices, jobs")
        before = ledgerwire("source", "check", "--dsn", dsn, "--role", "onboard_role", "--publication", "onboard_pub")
        assert before.returncode == 1
        lines = before.stdout.strip().splitlines()
        assert "table public.debezium_signal does not exist (run `ledgerwire source init`)" in lines
        assert "table public.payments: REPLICA IDENTITY is not FULL (ALTER TABLE public.payments REPLICA IDENTITY FULL)" in lines
        assert "publication onboard_pub does not include public.invoice_lines" in lines
        assert "role onboard_role does not exist (run `ledgerwire source init`)" in lines
        assert len(lines) == len(set(lines)) >= 10

        sql = ledgerwire("source", "init", "--dsn", dsn, "--role", "onboard_role", "--publication", "onboard_pub",
                         "--print-sql")
        assert sql.returncode == 0 and "REPLICATION NOSUPERUSER" in sql.stdout and "PASSWORD" not in sql.stdout
        init = ledgerwire("source", "init", "--dsn", dsn, "--role", "onboard_role", "--publication", "onboard_pub")
        assert init.returncode == 0, init.stdout + init.stderr
        again = ledgerwire("source", "init", "--dsn", dsn, "--role", "onboard_role", "--publication", "onboard_pub")
        assert again.returncode == 0, again.stdout + again.stderr  # idempotent
        assert source.check_source(dsn, source.SourceSpec(role="onboard_role", publication="onboard_pub")) == []
        with psycopg.connect(dsn, autocommit=True) as conn:
            published = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'onboard_pub'").fetchall()}
            assert published == set(source.SourceSpec().published_tables)
            conn.execute("ALTER ROLE onboard_role SUPERUSER")
        check = ("source", "check", "--dsn", dsn, "--role", "onboard_role", "--publication", "onboard_pub")
        assert ledgerwire(*check).stdout.strip().splitlines() == [
            "role onboard_role is a superuser; Debezium needs only LOGIN REPLICATION and SELECT"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER ROLE onboard_role NOSUPERUSER")
            conn.execute("REVOKE SELECT ON refunds FROM onboard_role")
        assert ledgerwire(*check).stdout.strip().splitlines() == ["role onboard_role lacks SELECT on public.refunds"]
    finally:
        with psycopg.connect(local_stack.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute("DROP ROLE IF EXISTS onboard_role")
