"""Chaos on the real stack: while a generated workload runs, the daemon is SIGKILLed at random points
(20+ times), the Kafka broker is restarted once, and the platform sandbox answers with 500s, 429s,
timeouts (after applying the write) and slow responses. At the end every invoice exists exactly once
with its final version, every payment is applied once, and the test prints what it checked."""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime

import psycopg
import pytest

from connectors.quickbooks_online import Sandbox
from connectors.sandbox_kit import Faults, free_port
from daemon.localstack import stack
from daemon.localstack.verify import compare, expected_from_db
from tests.conftest import background_workload
from tests.test_end_to_end import start_daemon

pytestmark = pytest.mark.stack


def test_chaos_kills_broker_restart_and_a_flaky_platform(shop, tmp_path, report):
    """Issue #13's closing check too: after the broker restart nobody touches Debezium. If it stalls (the old
    task holds the slot, or RUNNING without publishing) the daemon sees its heartbeats stop and restarts the
    task through Connect's REST API; the pipeline recovers without a human."""
    import json

    import yaml

    rng = random.Random(20261124)
    sandbox = Sandbox(faults=Faults(error_500=0.04, error_429=0.04, timeout=0.03, slow_s=0.02, hang_s=4.0, seed=9))
    server = sandbox.serve()
    _, config_file = shop.sandbox_config(sandbox, server.url, tmp_path, "chaos", http_port=free_port(),
                                         request_timeout_s=1.5)
    document = yaml.safe_load(config_file.read_text())
    document["source"].update(connect_url=shop.stack.connect_url, shop_dsn=shop.shop_dsn, slot_name=shop.name,
                              health={"interval_s": 2, "heartbeat_stale_s": 15, "restart_spacing_s": 90,
                                      "max_restarts": 6})
    config_file.write_text(yaml.safe_dump(document))
    log_path = tmp_path / "daemon.log"
    kills = 0
    kafka_back_at = first_post_after = None
    connector = f"{shop.name}-source"
    with open(log_path, "ab") as log_file, psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
        daemon = start_daemon(config_file, log_file)
        writer, counts = background_workload(conn, seed=8, count=260, rate_per_s=12)
        booked_at_return = 0
        while kills < 21:
            time.sleep(rng.uniform(0.4, 2.2))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            kills += 1
            if kills == 10:
                stack.restart_kafka(shop.stack)  # the broker goes away and comes back, data kept; no human after
                kafka_back_at, kafka_back_wall = time.monotonic(), time.time()
                booked_at_return = len(sandbox.booked_invoices())
            if kafka_back_at and first_post_after is None and len(sandbox.booked_invoices()) > booked_at_return:
                first_post_after = time.monotonic() - kafka_back_at
            daemon = start_daemon(config_file, log_file)
        writer.join(180)
        sandbox.faults.error_500 = sandbox.faults.error_429 = sandbox.faults.timeout = 0.0  # the platform recovers
        deadline = time.monotonic() + 240
        comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
        while time.monotonic() < deadline and not comparison.ok:
            if first_post_after is None and len(sandbox.booked_invoices()) > booked_at_return:
                first_post_after = time.monotonic() - kafka_back_at
            time.sleep(1)  # a polling interval for the comparison below, which is the condition waited on
            comparison = compare(expected_from_db(conn), sandbox.booked_invoices())
        recovered_after = time.monotonic() - kafka_back_at
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    server.stop()
    booked = sandbox.booked_invoices()
    payments = [p for p in sandbox.entities("Payment") if not p.get("_deleted")]
    references = [p["PaymentRefNum"] for p in payments]
    restarts, detected_after = [], None
    for line in log_path.read_text(errors="replace").splitlines():
        if '"source_connector_restarted"' in line or '"source_slot_holder_terminated"' in line:
            restarts.append(json.loads(line).get("reason", "slot_held_by_dead_task"))
        if detected_after is None and '"source_unhealthy"' in line:
            at = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")).timestamp()
            detected_after = at - kafka_back_wall if at >= kafka_back_wall else detected_after
    if not comparison.ok:
        connect_log = shop.stack.logs / "connect.log"
        pytest.fail(f"books differ: {comparison.problems()}\nsource connector: "
                    f"{stack.connector_state(shop.stack, connector)} after daemon restarts {restarts}\n"
                    f"connect.log tail: {connect_log.read_text(errors='replace')[-3000:] if connect_log.exists() else '-'}\n"
                    f"daemon log tail: {log_path.read_text(errors='replace')[-4000:]}")
    assert len(references) == len(set(references)), "a payment was applied twice"
    assert kafka_back_at is not None and kills >= 20
    report(f"chaos: {kills} SIGKILLs, 1 broker restart with no human action on Debezium "
           f"(the daemon acted {len(restarts)} time(s): {restarts}; source unhealthy logged "
           f"{detected_after if detected_after is None else round(detected_after, 1)} s after Kafka's return); first invoice posted "
           f"{first_post_after if first_post_after is None else round(first_post_after, 1)} s after Kafka's "
           f"return, books whole {recovered_after:.0f} s after it; checked {comparison.issued} issued invoices "
           f"(each exactly once), {comparison.voided} voids, {comparison.payments_checked} payments (each applied "
           f"once), {len(booked)} documents; workload {counts}")


def test_four_connectors_two_daemons_one_group_and_a_resync_during_the_run(shop, tmp_path, capsys, report):
    """Issue #19's closing check (the parts owned by the sink): QuickBooks Online, Xero, Zoho Books and Odoo are
    targets of the same daemon configuration; TWO daemon processes run it in one consumer group per target, a
    workload with payments, refunds, edits and voids runs, and a `resync` of the period is run for every target
    while deliveries are under way. Every target ends with every invoice exactly once and every payment once,
    and no sandbox counted a rate-limit breach."""
    from datetime import date, timedelta

    from connectors import odoo, quickbooks_online, xero, zoho_books
    from daemon import cli
    from tests.test_multi_target_stack import books_until_they_match, multi_target_config, patient_source

    modules = {"qbo": quickbooks_online, "xero": xero, "zoho": zoho_books, "odoo": odoo}
    sandboxes = {name: module.Sandbox(**getattr(module, "LOCAL_SANDBOX_OPTIONS", {})) for name, module in modules.items()}
    servers = {name: sandbox.serve() for name, sandbox in sandboxes.items()}
    config, config_file = multi_target_config(shop, tmp_path, sandboxes, servers, free_port(),
                                              source=patient_source(shop))
    second_file = tmp_path / "ledgerwire-2.yml"
    second_file.write_text(config_file.read_text().replace(f"port: {config.http.port}", f"port: {free_port()}"))
    today = date.today()
    period = ["--since", str(today - timedelta(days=40)), "--until", str(today + timedelta(days=1))]
    resyncs: dict[str, tuple[int, str]] = {}
    resync_problems: dict[str, list[str]] = {}
    comparisons = {}
    exit_codes = []
    try:
        with open(tmp_path / "daemon-1.log", "ab") as log_1, open(tmp_path / "daemon-2.log", "ab") as log_2, \
                psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            daemons = [start_daemon(config_file, log_1), start_daemon(second_file, log_2)]
            writer, counts = background_workload(conn, seed=27, count=200, rate_per_s=10)
            # The resync runs while the workload is still being written and delivered.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(sandboxes["odoo"].booked_invoices()) < 15:
                time.sleep(0.5)
            for name in modules:
                capsys.readouterr()
                code = cli.main(["resync", "--config", str(config_file), "--target", name, *period])
                out = capsys.readouterr().out
                resyncs[name] = (code, out.strip().splitlines()[-1])
                resync_problems[name] = [ln for ln in out.splitlines() if " FAILED " in ln or " skipped " in ln]
            writer.join(180)
            comparisons = books_until_they_match(conn, sandboxes, 240)
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
            exit_codes = [daemon.wait(90) for daemon in daemons]
    finally:
        for server in servers.values():
            server.stop()
    problems = {name: c.problems() for name, c in comparisons.items() if not c.ok}
    assert not problems, f"books differ: {problems}; resyncs {resyncs} {resync_problems}"
    assert all(code == 0 for code, _ in resyncs.values()), resync_problems
    assert exit_codes == [0, 0]
    qbo_refs = [p["PaymentRefNum"] for p in sandboxes["qbo"].entities("Payment") if not p.get("_deleted")]
    assert len(qbo_refs) == len(set(qbo_refs)), "a QuickBooks payment was applied twice"
    breaches = {"qbo": sandboxes["qbo"].window.breaches + sandboxes["qbo"].batch_window.breaches,
                "xero": sandboxes["xero"].minute_window.breaches + sandboxes["xero"].day_window.breaches,
                "zoho": sandboxes["zoho"].window.breaches + sandboxes["zoho"].daily.breaches}
    assert breaches == {"qbo": 0, "xero": 0, "zoho": 0}, breaches
    first = comparisons["qbo"]
    report(f"4 targets ({', '.join(modules)}) x 2 daemon processes in one group, resync of the period during the run "
           f"({'; '.join(f'{n}: {out}' for n, (_, out) in resyncs.items())}): on every target {first.issued} issued "
           f"invoices exactly once, {first.voided} voids, {first.payments_checked} payments once each; 0 lost, 0 "
           f"duplicated; rate-limit breaches {breaches}; workload {counts}")
