"""``ledgerwire`` — the command line: the service, the demo, the local stack and the ops commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from daemon.logs import configure_logging


def _load(path: str):
    from daemon.config import load_config

    return load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import Daemon
    from daemon.liveness import EXIT_STALLED

    config = _load(args.config)
    if args.preview:
        return run_preview(config, args.limit)
    code = Daemon(config).run_forever()
    if code == EXIT_STALLED:
        # A loop is still blocked inside a librdkafka call: interpreter teardown would destroy the client under
        # it (and may wait on it). The log is written line by line; leave now.
        sys.stderr.flush()
        os._exit(code)
    return code


def print_preview(event, target_name: str, requests: list[dict]) -> None:
    """One invoice's planned requests, bodies exactly as the wire would carry them (exact decimals)."""
    from connectors import jsonmoney

    print(f"== {event.number} v{event.version} -> {target_name}: {len(requests) or 'nothing'} request(s)")
    for r in requests:
        print(f"   {r['method']} {r['path']}")
        print(f"   {jsonmoney.dumps(r['body']).decode()}")


def run_preview(config, limit: int | None) -> int:
    """``run --preview``: read the canonical topic from each sink's stored offsets (a throw-away consumer
    group, nothing committed), keep the newest version per invoice the ledger has not delivered yet, and
    print what each target's connector would send. Sends nothing, writes no offsets or documents."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from daemon.canonical import decode_invoice_event
    from daemon.kafka_util import kafka_conf

    ledger, runtime = _ledger_and_runtime(config)
    from daemon.app import seed_credentials

    seed_credentials(config, runtime)
    topic = config.kafka.canonical_topic
    try:
        for target in [t for t in config.targets if t.enabled]:
            _, connector = _connector_for(config, target.name, runtime)
            reader = Consumer(kafka_conf(config.kafka, {
                "group.id": f"ledgerwire-preview-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                "isolation.level": "read_committed", "enable.partition.eof": True}))
            try:
                stored = ledger.offsets(target.name, topic)
                partitions = [TopicPartition(topic, p, stored.get(p, OFFSET_BEGINNING))
                              for p in reader.list_topics(topic, timeout=10).topics[topic].partitions]
                reader.assign(partitions)
                remaining = {tp.partition for tp in partitions}
                newest: dict[int, object] = {}
                while remaining and (limit is None or len(newest) < limit):
                    for m in reader.consume(500, 1.0):
                        if m.error():
                            if m.error().code() == KafkaError._PARTITION_EOF:
                                remaining.discard(m.partition())
                            continue
                        event = decode_invoice_event(m.value())
                        if target.routes(event.location.code) and (
                                event.invoice_id not in newest or newest[event.invoice_id].version < event.version):
                            newest[event.invoice_id] = event
            finally:
                reader.close()  # nothing committed: enable.auto.commit is off and commit() is never called
            shown = 0
            for event in newest.values():
                doc = ledger.document(target.name, event.invoice_id)
                if doc.delivered_version >= event.version:
                    continue
                print_preview(event, target.name, connector.preview(event, doc))
                shown += 1
                if limit is not None and shown >= limit:
                    break
            print(f"preview {target.name}: {shown} invoice(s) waiting; nothing sent")
            connector.close()
        return 0
    finally:
        ledger.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from daemon.localstack.demo import run_demo

    return run_demo(platform=args.platform, count=args.count, rate=args.rate, keep=args.keep, seed=args.seed)


def cmd_stack(args: argparse.Namespace) -> int:
    from daemon.localstack import stack

    if args.demo:
        from daemon.localstack.demo import demo_stack_config

        cfg = demo_stack_config()
    else:
        cfg = stack.StackConfig()
    if args.action == "up":
        stack.up(cfg)
        print(json.dumps(stack.status(cfg), indent=2))
        print(f"shop database:   {cfg.shop_dsn}\nledger database: {cfg.ledger_dsn}\n"
              f"kafka:           {cfg.bootstrap}\nkafka connect:   {cfg.connect_url}\nlogs:            {cfg.logs}")
    elif args.action == "down":
        stack.down(cfg, wipe=args.wipe)
        print("stack stopped" + (" and wiped" if args.wipe else ""))
    else:
        print(json.dumps(stack.status(cfg), indent=2))
    return 0


def cmd_source(args: argparse.Namespace) -> int:
    """``source init`` / ``source check``: the shop database's side of the CDC set-up (daemon/operations/source_setup.py)."""
    import os

    import psycopg

    from daemon.operations.source_setup import SourceSpec, check_source, init_source, render_init_sql

    dsn = args.dsn or os.environ.get("LEDGERWIRE_SOURCE_DSN")
    if not dsn:
        print("source: give --dsn or set LEDGERWIRE_SOURCE_DSN (the shop database)", file=sys.stderr)
        return 2
    spec = SourceSpec(role=args.role, publication=args.publication)
    if args.action == "register":
        return _register_source(args, dsn, spec)
    try:
        if args.action == "check":
            problems = check_source(dsn, spec)
            for line in problems:
                print(line)
            if not problems:
                print(f"source ok: role {spec.role}, publication {spec.publication}, replica identity, "
                      "signal and heartbeat tables")
            return 1 if problems else 0
        if args.print_sql:
            print(render_init_sql(spec, dsn, None))
            return 0
        password = None
        if args.password_env:
            password = os.environ.get(args.password_env)
            if not password:
                print(f"source init: environment variable {args.password_env} is not set", file=sys.stderr)
                return 2
        init_source(dsn, spec, password)
    except psycopg.Error as exc:
        print(f"source {args.action}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    problems = check_source(dsn, spec)
    for line in problems:
        print(line)
    print(f"source initialised: role {spec.role} (LOGIN REPLICATION, SELECT on the captured tables), "
          f"publication {spec.publication}" + ("; still missing: see above" if problems else ""))
    return 1 if problems else 0


def _register_source(args: argparse.Namespace, dsn: str, spec) -> int:
    """``source register``: Debezium's connector for the shop database named by the DSN (host, port, database;
    it logs in as the replication role, its password resolved by Kafka Connect from its environment)."""
    from psycopg.conninfo import conninfo_to_dict

    from daemon.operations.source_setup import debezium_connector_config, register_connector

    if not args.connect_url:
        print("source register: give --connect-url (Kafka Connect's REST address)", file=sys.stderr)
        return 2
    parts = conninfo_to_dict(dsn)
    config = debezium_connector_config(host=str(parts.get("host", "localhost")), port=parts.get("port", 5432),
                                       dbname=str(parts.get("dbname", "")), topic_prefix=args.topic_prefix,
                                       slot=args.slot, spec=spec)
    try:
        register_connector(args.connect_url, args.name, config)
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        print(f"source register: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"connector {args.name} registered at {args.connect_url}: {config['database.hostname']}:"
          f"{config['database.port']}/{config['database.dbname']} as {spec.role}, topics {args.topic_prefix}.*")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from daemon.localstack import generator

    return generator.main(argv) or 0


def write_secret_key(path: Path) -> None:
    """A new Fernet key in ``path``, created 0600 whatever the umask, by whoever runs this (in a container:
    the service's own uid). An existing file is never overwritten: it may encrypt stored credentials."""
    import os

    from cryptography.fernet import Fernet

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, Fernet.generate_key() + b"\n")
    finally:
        os.close(fd)


def cmd_secret_key(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    if args.out is None:
        print(Fernet.generate_key().decode())
        return 0
    try:
        write_secret_key(Path(args.out))
    except FileExistsError:
        print(f"secret-key: {args.out} exists; not overwritten (it may encrypt stored credentials)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"secret-key: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"secret key written to {args.out} (mode 0600)")
    return 0


EXIT_UNREACHABLE = 4  # a dependency (PostgreSQL, Kafka, Kafka Connect) did not answer; said in one line


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class Unreachable(Exception):
    """A dependency the command needs did not answer within a short timeout (one line, no traceback)."""


def _ledger_and_runtime(config):
    import psycopg

    from daemon.sink.deliver import DaemonRuntime
    from daemon.sink.ledger import Ledger, load_secret_key

    try:  # a short probe: the pool would wait 30 s for a database that is not there
        psycopg.connect(config.postgres.dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        raise Unreachable(f"PostgreSQL unreachable (the ledger database): {_one_line(exc)}") from None
    ledger = Ledger(config.postgres.dsn, min_size=1, max_size=4)
    ledger.ensure_schema()
    return ledger, DaemonRuntime(ledger, load_secret_key(config.secret_key_file))


def cmd_credentials(args: argparse.Namespace) -> int:
    config = _load(args.config)
    config.target(args.target)
    ledger, runtime = _ledger_and_runtime(config)
    store = runtime.credentials(args.target)
    document = json.loads(Path(args.from_file).read_text() if args.from_file != "-" else sys.stdin.read())
    with store.lock():
        store.put(document)
    ledger.clear_reauthorization(args.target)  # a target paused for re-authorisation resumes
    print(f"credentials stored (encrypted) for target {args.target}")
    ledger.close()
    return 0


def credential_problems(config) -> list[str]:
    """Each target's credential seed that cannot be used: a missing, unreadable or non-JSON file, or an unset
    environment variable (one line each, naming the target)."""
    import os

    problems = []
    for target in config.targets:
        if target.credentials_file is not None:
            try:
                raw = target.credentials_file.read_text()
            except OSError as exc:
                problems.append(f"target {target.name!r}: credentials_file {target.credentials_file}: "
                                f"{exc.strerror or exc}")
                continue
            source = f"credentials_file {target.credentials_file}"
        elif target.credentials_env:
            raw = os.environ.get(target.credentials_env)
            if raw is None:
                problems.append(f"target {target.name!r}: credentials_env {target.credentials_env} is not set")
                continue
            source = f"credentials_env {target.credentials_env}"
        else:
            continue
        try:
            document = json.loads(raw)
        except ValueError as exc:
            problems.append(f"target {target.name!r}: {source} is not JSON ({exc.msg} at line {exc.lineno})")
            continue
        if not isinstance(document, dict):
            problems.append(f"target {target.name!r}: {source} must hold a JSON object")
    return problems


def cmd_config_check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from connectors.registry import connector_class
    from daemon.config import ConfigError, validation_lines

    try:
        config = _load(args.file)
    except ConfigError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    problems = []
    names = {"targets": [{"name": t.name} for t in config.targets]}
    for index, target in enumerate(config.targets):
        try:
            connector_class(target.platform).settings_model.model_validate(target.settings)
        except ValidationError as exc:
            problems += validation_lines(args.file, exc, names, ("targets", index, "settings"))
    problems += [f"{args.file}: {line}" for line in credential_problems(config)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(config.targets)} targets: {', '.join(t.name for t in config.targets) or 'none'})")
    if not getattr(args, "online", False):
        return 0
    return check_online(config)


class _SeedFileCredentials:
    """A credential seed file used directly (no ledger database reachable): a rotated refresh token is
    written back to the file at once, so the seed stays valid for the daemon."""

    def __init__(self, path) -> None:
        import threading

        self.path = Path(path)
        self._lock = threading.RLock()

    def get(self) -> dict:
        return json.loads(self.path.read_text())

    def update(self, changes: dict) -> None:
        document = {**self.get(), **changes}
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(self.path)

    def lock(self):
        return self._lock


class _SeedFileRuntime:
    pg_pool = None

    def __init__(self, config) -> None:
        self._targets = {t.name: t for t in config.targets}

    def credentials(self, target: str):
        seed = self._targets[target].credentials_file
        if seed is None:
            raise RuntimeError(f"target {target}: no ledger database reachable and no credentials_file to use")
        return _SeedFileCredentials(seed)

    def limiter(self, target, *, per_second=None, per_minute=None, per_day=None, concurrency=4, overridable=True):
        from connectors.ratelimit import limiter_from

        return limiter_from(per_second, per_minute, per_day, concurrency)


def _online_runtime(config):
    """Credentials as ``run`` has them: the ledger's encrypted store (seeded from files/env the first time);
    when the ledger database is not reachable, each target's credentials_file (rotations written back)."""
    import psycopg

    try:
        psycopg.connect(config.postgres.dsn, connect_timeout=3).close()
    except psycopg.Error:
        print("ledger database not reachable: using each target's credentials_file", file=sys.stderr)
        return None, _SeedFileRuntime(config)
    from daemon.app import seed_credentials

    ledger, runtime = _ledger_and_runtime(config)
    seed_credentials(config, runtime)
    return ledger, runtime


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if isinstance(exc, KeyError):
        return f"missing {detail} in the stored credentials or settings"
    return f"{type(exc).__name__}: {detail}" if not isinstance(exc, (RuntimeError, ValueError)) else detail


def check_online(config) -> int:
    """``config check --online``: every target's mapping resolved against the platform."""
    from connectors.base import DeliveryError

    try:
        ledger, runtime = _online_runtime(config)
    except Exception as exc:  # noqa: BLE001 - seeding the store from a broken seed: one line, exit 1
        print(f"cannot prepare the credentials: {_one_line(exc)}")
        return 1
    missing = 0
    try:
        for target in config.targets:
            try:
                _, connector = _connector_for(config, target.name, runtime)
            except Exception as exc:  # noqa: BLE001 - one line per target, never a traceback
                print(f"{target.name}: cannot connect: {_one_line(exc)}")
                missing += 1
                continue
            try:
                problems = connector.check_mapping()
            except DeliveryError as exc:
                problems = [f"{target.platform}: check failed: {exc.reason}"]
            except Exception as exc:  # noqa: BLE001 - e.g. a credential document without the key a client needs
                problems = [f"{target.platform}: check failed: {_one_line(exc)}"]
            finally:
                connector.close()
            for line in problems:
                print(f"{target.name}: {line}")
            if not problems:
                print(f"{target.name}: mapping resolves ({target.platform})")
            missing += len(problems)
    finally:
        if ledger is not None:
            ledger.close()
    return 1 if missing else 0


def cmd_dlq(args: argparse.Namespace) -> int:
    import threading
    from datetime import date, datetime, timezone

    from daemon.operations.bookkeeping import drop_dead_letter, retry_dead_letter
    from daemon.canonical import decode_invoice_event
    from daemon.sink.deliver import SinkWorker

    config = _load(args.config)
    ledger, runtime = _ledger_and_runtime(config)
    try:
        if args.action == "retry" and args.all:
            target = config.target(args.target)
            since = (datetime.combine(date.fromisoformat(args.since), datetime.min.time(), timezone.utc)
                     if args.since else None)
            first_rows = {}  # one retry per invoice: it delivers the newest dead-lettered version
            for r in ledger.dead_letters(target.name):
                if since is None or r["created_at"] >= since:
                    first_rows.setdefault(r["invoice_id"], r)
            invoice_ids = list(first_rows)
            worker = SinkWorker(config, target, ledger, runtime, threading.Event())
            failed = 0
            for invoice_id in invoice_ids:
                outcome = retry_dead_letter(config, ledger, runtime, target, first_rows[invoice_id], worker=worker)
                failed += not outcome.ok
                print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
            worker.connector.close()
            print(f"retried {len(invoice_ids)} invoice(s) on {target.name}: {len(invoice_ids) - failed} delivered, "
                  f"{failed} failed")
            return 1 if failed else 0
        if args.action == "list":
            rows = ledger.dead_letters(args.target)
            print(f"{'id':>6}  {'target':<16} {'invoice':<18} {'ver':>4}  {'class':<10} {'status':<7} reason")
            for r in rows:
                print(f"{r['id']:>6}  {r['target']:<16} {r['invoice_number']:<18} {r['version']:>4}  "
                      f"{r['error_class']:<10} {r['status']:<7} {r['reason'][:80]}")
            print(f"{len(rows)} open")
            return 0
        row = ledger.dead_letter_row(args.id)
        if row is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 2
        if args.action == "show":
            event = decode_invoice_event(bytes(row["event"]))
            shown = {k: (str(v) if not isinstance(v, (int, str, type(None))) else v)
                     for k, v in row.items() if k != "event"}
            shown["event"] = {"number": event.number, "version": event.version, "status": event.status.value,
                              "total": str(event.computed.total), "lines": len(event.lines),
                              "payments": len(event.payments)}
            print(json.dumps(shown, indent=2, default=str))
            return 0
        target = config.target(row["target"])
        if args.action == "drop":
            print(drop_dead_letter(ledger, target, row).message)
            return 0
        outcome = retry_dead_letter(config, ledger, runtime, target, row)
        print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
        return 0 if outcome.ok else 1
    finally:
        ledger.close()


def cmd_trace(args: argparse.Namespace) -> int:
    config = _load(args.config)
    ledger, _ = _ledger_and_runtime(config)
    try:
        rows = ledger.audit_trail(args.invoice_number)
        if not rows:
            print(f"no deliveries recorded for {args.invoice_number}")
            return 1
        print(f"History of invoice {args.invoice_number}")
        for r in rows:
            summary = r["request_summary"]
            print(f"  {r['at']:%Y-%m-%d %H:%M:%S}  {r['target']:<14} v{r['version']:<3} {r['action']:<7} "
                  f"status={summary.get('status')} total={summary.get('total')} lines={summary.get('lines')} "
                  f"payments={summary.get('payments')} -> {r['response_status']} id={r['external_id']} "
                  f"(source tx {r['source_tx']})")
        for d in ledger.dead_letters(status=("open", "parked", "retried", "dropped")):
            if d["invoice_number"] == args.invoice_number:
                print(f"  {d['created_at']:%Y-%m-%d %H:%M:%S}  {d['target']:<14} v{d['version']:<3} DEAD-LETTER "
                      f"{d['error_class']}: {d['reason']} [{d['status']}]")
        ok, bad = ledger.verify_audit_chain()
        print("audit chain: intact" if ok else f"audit chain: BROKEN at record {bad}")
        return 0 if ok else 3
    finally:
        ledger.close()


def cmd_offsets(args: argparse.Namespace) -> int:
    import time

    from daemon.operations import offsets as ops

    config = _load(args.config)
    ledger, _ = _ledger_and_runtime(config)
    try:
        if args.action == "show":
            from daemon.kafka_util import kafka_unreachable

            kafka_down = kafka_unreachable(config.kafka)
            if kafka_down:  # one line, then what the ledger knows: each sink's stored offset
                print(f"{kafka_down}; showing the ledger's stored offsets only")
            rows = ops.ledger_positions(config, ledger, args.target) if kafka_down else \
                ops.positions(config, ledger, args.target)
            print(f"{'group':<34} {'topic':<34} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}  oldest unsent")
            for r in rows:
                oldest = r.oldest_unsent.isoformat(timespec="seconds") if r.oldest_unsent else "-"
                committed = "-" if r.committed is None else str(r.committed)
                end, lag = ("?", "?") if r.end is None else (r.end, r.lag)
                print(f"{r.group:<34} {r.topic:<34} {r.partition:>4} {committed:>10} {end:>10} {lag:>8}  {oldest}")
            return EXIT_UNREACHABLE if kafka_down else 0
        if not args.target:
            print("offsets reset needs --target (a target name, or 'fold')", file=sys.stderr)
            return 2
        modes = [(m, v) for m, v in (("to-datetime", args.to_datetime), ("to-earliest", args.to_earliest or None),
                                       ("to-latest", args.to_latest or None), ("shift", args.shift)) if v is not None]
        if len(modes) != 1:
            print("choose exactly one of --to-datetime, --to-earliest, --to-latest, --shift", file=sys.stderr)
            return 2
        mode, value = modes[0]
        plan = ops.plan_reset(config, ledger, args.target, mode, value)
        print(f"plan for {args.target} ({mode}{'' if value in (True, None) else ' ' + str(value)}):")
        for r in plan:
            print(f"  {r.topic}[{r.partition}]: {'-' if r.current is None else r.current} -> {r.new}")
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        group = config.kafka.fold_group if args.target == ops.FOLD else f"{config.kafka.sink_group_prefix}{args.target}"
        members = ops.group_members(config, group)
        if members and not args.stop_workers:
            print(f"refusing: {members} worker(s) of {group} are running; stop them or pass --stop-workers",
                  file=sys.stderr)
            return 3
        if members and args.target == ops.FOLD:
            print("refusing: the fold cannot be paused remotely; stop the daemons running it first", file=sys.stderr)
            return 3
        if members:
            ledger.set_paused(args.target, True, "offsets reset")
            deadline = time.monotonic() + 60
            while ops.group_members(config, group) and time.monotonic() < deadline:
                time.sleep(1)
            if ops.group_members(config, group):
                ledger.set_paused(args.target, False)
                print("workers did not stop within 60 s; nothing changed", file=sys.stderr)
                return 3
        try:
            ops.apply_reset(config, ledger, args.target, plan)
        finally:
            if args.target != ops.FOLD:
                ledger.set_paused(args.target, False)
        print("applied")
        return 0
    finally:
        ledger.close()


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.operations import offsets as ops

    config = _load(args.config)
    ledger, _ = _ledger_and_runtime(config)
    try:
        while True:
            report = ops.status(config, ledger, config.source.connect_url)
            if not args.watch:
                break
            print(time.strftime("%H:%M:%S"), "  ".join(
                f"{name}: {t['progress']['done']:,} done, {t['progress']['remaining']:,} remaining, "
                f"{t['progress']['per_minute']:,.0f}/min, ETA {ops.format_duration(t['progress']['eta_s'])}"
                for name, t in report["targets"].items()), flush=True)
            time.sleep(args.watch)  # a display refresh interval, not synchronisation
    except KeyboardInterrupt:
        return 0
    finally:
        ledger.close()
    code = EXIT_UNREACHABLE if report["unreachable"] else 0
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return code
    for line in report["unreachable"]:  # one line each; what the ledger knows follows
        print(line)
    print(f"source: {report['source']['verdict']} - {report['source']['cause']}")
    fold_lag = "unknown" if report["fold"]["lag"] is None else report["fold"]["lag"]
    print(f"fold: lag {fold_lag} over {report['fold']['partitions']} source partitions, oldest unfolded "
          f"{ops.format_duration(report['fold']['oldest_unfolded_age_s'] or 0)}")
    for name, t in report["targets"].items():
        lag = "unknown" if t["lag"] is None else t["lag"]
        print(f"target {name}: freshness {ops.format_duration(t['freshness_s'])} (oldest shop change not yet posted; "
              f"oldest unsent event {ops.format_duration(t['oldest_unsent_age_s'] or 0)} old)")
        print(f"target {name} ({t['platform']}){' PAUSED: ' + t['pause_reason'] if t['paused'] else ''}: lag {lag}, "
              f"oldest unsent {t['oldest_unsent'] or '-'}, last success {t['last_success'] or 'never'}, "
              f"dead letters open {t['dead_letters_open']} ({t['parked_invoices']} invoices parked, "
              f"{t['dead_letters_24h']} in 24 h), credentials expire {t['credential_expiry'] or '-'}, "
              f"schedule {t.get('schedule', 'realtime')}"
              + (f" ({t['waiting']} invoices waiting, next window {t['next_window']})" if t.get('next_window') else ""))
        progress = t["progress"]
        print(f"  progress: {progress['done']:,} invoices done, {progress['remaining']:,} versions remaining, "
              f"{progress['per_minute']:,.0f}/min over the last 10 min, ETA {ops.format_duration(progress['eta_s'])}")
    for name, d in report.get("debezium", {}).items():
        if name != "error":  # an unreachable Connect is said above
            print(f"debezium {name}: {d}")
    return code


def _connector_for(config, target_name: str, runtime):
    from connectors.registry import connector_class

    target = config.target(target_name)
    return target, connector_class(target.platform)(target, runtime)


def cmd_resync(args: argparse.Namespace) -> int:
    from datetime import date

    from daemon.operations import resync

    config = _load(args.config)
    ledger, runtime = _ledger_and_runtime(config)
    target, connector = _connector_for(config, args.target, runtime)
    try:
        since, until = date.fromisoformat(args.since), date.fromisoformat(args.until)
        if args.from_source:
            if not config.source.shop_dsn:
                print("--from-source needs source.shop_dsn in the config", file=sys.stderr)
                return 2
            print(f"incremental snapshot requested from Debezium (signal {resync.signal_incremental_snapshot(config.source.shop_dsn, since, until)})")
        items = resync.plan(config, ledger, connector, target, since, until, args.location)
        if args.preview:
            for event, requests in resync.preview(ledger, connector, target, items):
                print_preview(event, target.name, requests)
            print(f"preview: {sum(1 for i in items if i.action != 'no change')} invoice(s) would be resynced; "
                  "nothing sent")
            return 0
        print(f"{'invoice':<20} {'version':>7}  {'action':<10} detail")
        for item in items:
            print(f"{item.event.number:<20} {item.event.version:>7}  {item.action:<10} {item.detail}")
        counts = {a: sum(1 for i in items if i.action == a) for a in ("create", "update", "no change", "conflict")}
        print(f"{len(items)} invoices issued {since}..{until}: {counts}")
        if args.dry_run:
            print("dry run: nothing sent")
            return 0
        result = resync.apply(ledger, connector, target, items)
        for number, why in result.skipped:
            print(f"{number:<20} skipped    {why}")
        for number, error in result.errors:
            print(f"{number:<20} FAILED     {error}")
        print(f"resynced: {result.counts}; skipped {len(result.skipped)}; failed {len(result.errors)}")
        return 1 if result.errors else 0
    finally:
        connector.close()
        ledger.close()


def cmd_reconcile(args: argparse.Namespace) -> int:
    import csv
    from datetime import date

    from daemon.operations.bookkeeping import RECONCILE_FIELDS, reconcile_differences

    config = _load(args.config)
    ledger, runtime = _ledger_and_runtime(config)
    target, connector = _connector_for(config, args.target, runtime)
    try:
        since, until = date.fromisoformat(args.since), date.fromisoformat(args.until)
        rows = reconcile_differences(config, ledger, connector, target, since, until, args.location)
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif args.format == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=RECONCILE_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        else:
            for r in rows:
                print(f"{r['invoice']:<20} {r['kind']:<9} {r['detail']}")
            print(f"{len(rows)} difference(s) for {target.name} between {since} and {until}")
        return 1 if rows else 0
    finally:
        connector.close()
        ledger.close()


def cmd_qwc(args: argparse.Namespace) -> int:
    from connectors.quickbooks_desktop.qwc import render_qwc

    config = _load(args.config)
    target = config.target(args.target)
    url = f"{args.base_url.rstrip('/')}/connectors/{target.name}/qbwc"
    settings = target.settings
    print(render_qwc(app_name=f"Ledgerwire ({target.name})", app_url=url, username=settings.get("username", "ledgerwire"),
                     owner_id=settings.get("owner_id", "{57F3B9B1-86F1-4fcc-B1EE-566DE1813D20}"),
                     file_id=settings.get("file_id", "{90A44FB5-33D9-4815-AC85-BC87A7E7D1EB}"),
                     run_every_minutes=args.every))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledgerwire", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--console-logs", action="store_true", help="human-readable logs instead of JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon (fold + sinks + /metrics)")
    p.add_argument("--config", required=True)
    p.add_argument("--preview", action="store_true",
                   help="print what each target would be sent for the waiting invoices; send nothing, commit nothing")
    p.add_argument("--limit", type=int, help="with --preview: at most N invoices per target")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="local stack + sandbox + generated workload + daemon, with a summary")
    p.add_argument("--platform", default="quickbooks-online")
    p.add_argument("--count", type=int, default=200, help="workload operations to generate")
    p.add_argument("--rate", type=float, default=40.0, help="operations per second")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--keep", "--keep-stack", dest="keep", action="store_true",
                   help="leave the stack, the daemon and the sandbox running and print where to look "
                        "(stop with `ledgerwire stack down --demo`)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stack", help="the local PostgreSQL + Kafka + Kafka Connect/Debezium stack")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--wipe", action="store_true", help="with down: delete all stack data")
    p.add_argument("--demo", action="store_true", help="the demo's private stack (.stack/demo)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("source", help="set up (init) or check a shop database for Debezium: role, publication, "
                                      "replica identity, signal and heartbeat tables; register its connector")
    p.add_argument("action", choices=["init", "check", "register"])
    p.add_argument("--dsn", help="the shop database (init: as an admin); default $LEDGERWIRE_SOURCE_DSN")
    p.add_argument("--connect-url", help="register: Kafka Connect's REST address")
    p.add_argument("--topic-prefix", default="shop", help="register: Debezium's topic.prefix (source.topic_prefix)")
    p.add_argument("--slot", default="ledgerwire", help="register: the replication slot's name")
    p.add_argument("--name", default="shop-source", help="register: the connector's name")
    p.add_argument("--role", default="ledgerwire_cdc", help="the replication role Debezium logs in as")
    p.add_argument("--publication", default="ledgerwire")
    p.add_argument("--password-env", help="init: name of an environment variable holding the role's password")
    p.add_argument("--print-sql", action="store_true", help="init: print the statements, run nothing")
    p.set_defaults(func=cmd_source)

    sub.add_parser("generate", help="write a generated shop workload (see `ledgerwire generate --help`)",
                   add_help=False)

    p = sub.add_parser("secret-key", help="create a new credential encryption key (a 0600 file with --out)")
    p.add_argument("--out", help="write the key to this new file, mode 0600 (never overwritten); else print it")
    p.set_defaults(func=cmd_secret_key)

    p = sub.add_parser("credentials", help="store a target's credential document (encrypted)")
    p.add_argument("action", choices=["set"])
    p.add_argument("--config", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--from-file", required=True, help="JSON file, or - for standard input")
    p.set_defaults(func=cmd_credentials)

    p = sub.add_parser("config", help="configuration tools")
    p.add_argument("action", choices=["check"])
    p.add_argument("file")
    p.add_argument("--online", action="store_true",
                   help="also resolve every mapped account, tax code, item and tracking value at each target")
    p.set_defaults(func=cmd_config_check)

    p = sub.add_parser("dlq", help="dead letters: list, show, retry, drop")
    p.add_argument("action", choices=["list", "show", "retry", "drop"])
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--config", required=True)
    p.add_argument("--target")
    p.add_argument("--all", action="store_true", help="with retry: every invoice with an open dead letter on --target")
    p.add_argument("--since", help="with retry --all: only dead letters recorded on or after this date, YYYY-MM-DD")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("trace", help="history of one invoice across all targets")
    p.add_argument("invoice_number")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("offsets", help="show or reset consumer offsets (sinks: in the ledger; fold: in Kafka)")
    p.add_argument("action", choices=["show", "reset"])
    p.add_argument("--config", required=True)
    p.add_argument("--target", help="a target name, or 'fold'")
    p.add_argument("--to-datetime", help="ISO time; resolved with Kafka's offsets-for-times")
    p.add_argument("--to-earliest", action="store_true")
    p.add_argument("--to-latest", action="store_true")
    p.add_argument("--shift", type=int, help="move by N records (negative = back)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--stop-workers", action="store_true", help="pause the target's running workers for the reset")
    p.set_defaults(func=cmd_offsets)

    p = sub.add_parser("status", help="per target: lag, last success, failures, dead letters, credentials")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", type=float, metavar="SECONDS", default=None,
                   help="print each target's progress (done / remaining / rate / ETA) every SECONDS until Ctrl-C")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("resync", help="re-deliver every invoice issued in a period, checked against the platform")
    p.add_argument("--config", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--since", required=True, help="first issue date, YYYY-MM-DD")
    p.add_argument("--until", required=True, help="last issue date, YYYY-MM-DD")
    p.add_argument("--location", help="only this location code")
    p.add_argument("--dry-run", action="store_true", help="show create/update/no change/conflict per invoice only")
    p.add_argument("--preview", action="store_true", help="print the exact requests a resync would send; send nothing")
    p.add_argument("--from-source", action="store_true", help="also ask Debezium for an incremental snapshot")
    p.set_defaults(func=cmd_resync)

    p = sub.add_parser("reconcile", help="compare source, ledger and platform for a period")
    p.add_argument("--config", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--since", required=True)
    p.add_argument("--until", required=True)
    p.add_argument("--location")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("qwc", help="print the .qwc file for a QuickBooks Desktop target's Web Connector")
    p.add_argument("--config", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--base-url", required=True, help="how the Web Connector reaches this daemon (https://…)")
    p.add_argument("--every", type=int, default=5, help="minutes between Web Connector runs")
    p.set_defaults(func=cmd_qwc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate":
        configure_logging("INFO")
        return cmd_generate(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dlq" and args.action == "retry" and args.all:
        if args.id is not None or not args.target:
            parser.error("dlq retry --all needs --target T (and no dead-letter id)")
    elif args.command == "dlq" and args.since:
        parser.error("--since goes with dlq retry --all")
    elif getattr(args, "action", None) in ("show", "retry", "drop") and args.command == "dlq" and args.id is None:
        parser.error(f"dlq {args.action} needs a dead-letter id")
    configure_logging(args.log_level, json_output=not args.console_logs and args.command != "demo")
    from daemon.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:  # every command: one line per configuration problem, no traceback
        print("\n".join(exc.lines), file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    except Exception as exc:  # a dependency that went away during the command: one line, no traceback
        from confluent_kafka import KafkaException
        import psycopg

        if isinstance(exc, KafkaException):
            print(f"Kafka unreachable: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        elif isinstance(exc, psycopg.OperationalError):
            print(f"PostgreSQL unreachable: {_one_line(exc)}", file=sys.stderr)
        else:
            raise
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
