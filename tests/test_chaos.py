"""Chaos on the real stack: while a generated workload runs, the daemon is SIGKILLed at random points
(20+ times), the Kafka broker is restarted once, and the platform sandbox answers with 500s, 429s,
timeouts (after applying the write) and slow responses. At the end every invoice exists exactly once
with its final version, every payment is applied once, and the test prints what it checked."""

from __future__ import annotations

import importlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest
import yaml

from connectors.quickbooks_online import Sandbox
from connectors.registry import PLATFORM_PACKAGES, known_platforms
from connectors.sandbox_kit import Faults, free_port
from daemon.localstack import generator, stack
from daemon.operations import offsets
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


# Connectors this test found defects in that are not fixed yet: they stay out of the run (named in its report)
# until fixed, so the run keeps proving the rest. Found on 2026-11-29 in the first run with fifteen targets.
KNOWN_DEFECTS: dict[str, str] = {
}


def _sandbox_modules() -> dict[str, Any]:
    """Every registered connector whose package is present (connectors that land later join by themselves), less
    those with a known defect this test found."""
    return {platform: importlib.import_module(PLATFORM_PACKAGES[platform]) for platform in known_platforms()
            if platform not in KNOWN_DEFECTS}


def _operator(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """A `ledgerwire` command as an operator runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=timeout_s)


def _wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5) -> float:
    """Wait until ``condition()`` holds; returns the seconds it took, fails naming ``what`` at the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


def test_every_connector_two_daemons_one_group_a_fold_rewind_and_resyncs_during_the_run(shop, tmp_path, report):
    """Issue #19's closing check. Every registered connector is a target of ONE daemon configuration, all at once;
    TWO daemon processes run it (one consumer group per target, one fold group); while a workload with payments,
    refunds, edits and voids runs, the operator rewinds the fold to the start of the source topics (`offsets
    reset --target fold --to-earliest`: the README's rule is to stop the daemons running the fold first, so both
    are stopped, the reset is applied and both start again) and then runs a `resync` of the period for every
    target while deliveries are under way. At the end every target holds every issued invoice exactly once with
    its total, tax and payments (read back from its sandbox and compared with the shop database), `reconcile`
    finds no difference on any target (its expected balance counts the refunds' credit), nothing was
    dead-lettered, and no sandbox counted a request over the platform's limits."""
    from tests.test_multi_target_stack import books_until_they_match, multi_target_config, patient_source

    started = time.monotonic()
    durations: dict[str, float] = {}
    modules = _sandbox_modules()
    targets = list(modules)  # target name = platform name
    sandboxes = {name: module.Sandbox(**getattr(module, "LOCAL_SANDBOX_OPTIONS", {})) for name, module in modules.items()}
    servers = {name: sandbox.serve() for name, sandbox in sandboxes.items()}
    # The workload shrinks with the number of targets, so CI's run time stays about the same as connectors land.
    operations = max(90, 900 // len(targets))
    http_ports, web_connector_ports = (free_port(), free_port()), (free_port(), free_port())
    config, config_file = multi_target_config(shop, tmp_path, sandboxes, servers, http_ports[0],
                                              source=patient_source(shop), web_connector={"port": web_connector_ports[0]})
    first = yaml.safe_load(config_file.read_text())
    for target in first["targets"]:  # the README's rule: with N processes, each gets 1/N of a concurrency cap
        if "concurrency" in target["settings"]:
            target["settings"]["concurrency"] = max(1, target["settings"]["concurrency"] // 2)
    config_file.write_text(yaml.safe_dump(first))
    second = yaml.safe_load(config_file.read_text())
    second["http"]["port"], second["web_connector"]["port"] = http_ports[1], web_connector_ports[1]
    second_file = tmp_path / "ledgerwire-2.yml"
    second_file.write_text(yaml.safe_dump(second))
    config_files = (config_file, second_file)
    pulled = [name for name, sandbox in sandboxes.items() if hasattr(sandbox, "attach")]
    for name in pulled:  # pull platforms: the simulated Web Connector polls the first daemon's endpoint
        sandboxes[name].attach(f"http://127.0.0.1:{web_connector_ports[0]}/connectors/{name}/qbwc")
        sandboxes[name].start_polling(0.5)
    today = date.today()
    period = ["--since", str(today - timedelta(days=40)), "--until", str(today + timedelta(days=1))]
    logs = [tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"]
    resyncs: dict[str, subprocess.CompletedProcess] = {}
    reconciles: dict[str, subprocess.CompletedProcess] = {}
    comparisons: dict = {}
    exit_codes: dict[str, list[int]] = {}

    started_daemons: list[subprocess.Popen] = []  # every daemon this test started, stopped in ``finally`` too

    def start_both(log_files) -> list[subprocess.Popen]:
        both = [start_daemon(file, log) for file, log in zip(config_files, log_files)]
        started_daemons.extend(both)
        return both

    def stop_both(daemons, phase: str) -> None:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        exit_codes[phase] = [daemon.wait(90) for daemon in daemons]

    try:
        with open(logs[0], "ab") as log_1, open(logs[1], "ab") as log_2, \
                psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            daemons = start_both((log_1, log_2))
            # The generator's usual mix with refunds three times as often: reconcile checks their credit on every target.
            mix = generator.Workload.DEFAULT_MIX | {"refund": 3}
            writer, counts = background_workload(conn, seed=27, count=operations, rate_per_s=6, mix=mix)
            durations["first deliveries on every target"] = _wait_for(
                lambda: all(len(s.booked_invoices()) >= 5 for s in sandboxes.values()), 180,
                "five invoices on every target")

            # The fold rewind, as the README says to do it: stop the daemons running the fold, reset, start them.
            phase = time.monotonic()
            stop_both(daemons, "before the fold reset")
            _wait_for(lambda: offsets.group_members(config, config.kafka.fold_group) == 0, 60, "the fold group empties")
            fold_reset = _operator("offsets", "reset", "--config", str(config_file), "--target", "fold", "--to-earliest")
            assert fold_reset.returncode == 0, fold_reset.stdout + fold_reset.stderr
            daemons = start_both((log_1, log_2))
            durations["fold rewind (stop, reset, start)"] = time.monotonic() - phase
            booked_at_reset = {name: len(s.booked_invoices()) for name, s in sandboxes.items()}

            # A resync of the period for every target while deliveries are under way (one operator shell each).
            phase = time.monotonic()
            running = {name: subprocess.Popen([sys.executable, "-m", "daemon.cli", "resync", "--config",
                                               str(config_file), "--target", name, *period], stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
                       for name in targets}
            for name, process in running.items():
                out, _ = process.communicate(timeout=300)
                resyncs[name] = subprocess.CompletedProcess(process.args, process.returncode, out, "")
            durations["resyncs (all targets at once)"] = time.monotonic() - phase
            writer.join(300)

            phase = time.monotonic()
            comparisons = books_until_they_match(conn, sandboxes, 240)
            durations["books match after the workload"] = time.monotonic() - phase
            refunds = conn.execute("SELECT count(*) FROM refunds r JOIN invoices i ON i.id = r.invoice_id "
                                   "WHERE i.status = 'issued'").fetchone()[0]
            phase = time.monotonic()
            for name in targets:
                reconciles[name] = _operator("reconcile", "--config", str(config_file), "--target", name, *period)
            durations["reconcile (every target)"] = time.monotonic() - phase
            stop_both(daemons, "at the end")
        with psycopg.connect(shop.ledger_dsn, autocommit=True) as ledger:
            dead = ledger.execute("SELECT target, error_class, reason FROM dead_letters ORDER BY id").fetchall()
    finally:
        for daemon in started_daemons:  # a failure mid-run must not leave daemons behind (they hold the stack)
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(30)
        for name in pulled:
            sandboxes[name].stop_polling()
        for server in servers.values():
            server.stop()
    durations["whole test"] = time.monotonic() - started

    def tail(path, n=3000) -> str:
        return path.read_text(errors="replace")[-n:]

    outcomes = {name: (r.stdout.strip().splitlines() or ["(no output)"])[-1] for name, r in resyncs.items()}
    problems = {name: c.problems() for name, c in comparisons.items() if not c.ok}
    assert not problems, (f"books differ: {problems}\nresyncs: {outcomes}\ndead letters: {dead[:10]}\n"
                          f"daemon-1 log tail: {tail(logs[0])}\ndaemon-2 log tail: {tail(logs[1])}")
    assert dead == [], f"dead-lettered: {dead[:10]}"
    failed_resyncs = {name: r.stdout[-2000:] for name, r in resyncs.items() if r.returncode != 0}
    assert not failed_resyncs, failed_resyncs
    differences = {name: r.stdout[-2000:] + r.stderr[-1000:] for name, r in reconciles.items() if r.returncode != 0}
    assert not differences, f"reconcile found differences: {differences}"
    assert all(code == 0 for codes in exit_codes.values() for code in codes), exit_codes
    breaches = {name: sandbox.rate_limit_breaches() for name, sandbox in sandboxes.items()}
    assert all(count == 0 for count in breaches.values()), f"rate limits exceeded: {breaches}"
    assert refunds > 0, f"the workload made no refund to check: {counts}"
    assert all(c.issued > 10 and c.payments_checked > 5 for c in comparisons.values()), \
        {name: (c.issued, c.payments_checked) for name, c in comparisons.items()}
    figures = "; ".join(f"{name}: {c.issued} invoices exactly once, {c.voided} voids, {c.payments_checked} payments "
                        f"once each, {len(sandboxes[name].booked_invoices())} documents, {booked_at_reset[name]} "
                        f"posted before the fold reset, resync '{outcomes[name]}', reconcile 0 differences, "
                        f"{breaches[name]} breaches" for name, c in comparisons.items())
    report(f"{len(targets)} targets ({', '.join(targets)}) in one configuration x 2 daemon processes in one group, "
           f"fold reset to the earliest offsets and a resync of the period of every target during the run; "
           f"{refunds} refunds on issued invoices (checked by reconcile's balance); 0 lost, 0 duplicated, 0 dead "
           f"letters, exit codes {exit_codes}; {figures}; workload {counts}; durations "
           + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in durations.items())
           + "".join(f"; left out for a known defect: {name} ({why})" for name, why in KNOWN_DEFECTS.items()))
