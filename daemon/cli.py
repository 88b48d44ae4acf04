"""``ledgerwire`` — the command line: the service, the demo, the local stack and the ops commands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from daemon.logs import configure_logging


def _load(path: str):
    from daemon.config import load_config

    return load_config(path)


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import Daemon

    config = _load(args.config)
    if args.preview:
        return run_preview(config, args.limit)
    return Daemon(config).run_forever()


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
    from daemon.demo import run_demo

    return run_demo(platform=args.platform, count=args.count, rate=args.rate, keep_stack=args.keep_stack,
                    seed=args.seed)


def cmd_stack(args: argparse.Namespace) -> int:
    from daemon import stack

    if args.demo:
        from daemon.demo import demo_stack_config

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


def cmd_generate(argv: list[str]) -> int:
    from daemon import generator

    return generator.main(argv) or 0


def cmd_secret_key(args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def _ledger_and_runtime(config):
    from daemon.deliver import DaemonRuntime
    from daemon.ledger import Ledger, load_secret_key

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
    print(f"credentials stored (encrypted) for target {args.target}")
    ledger.close()
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from connectors.registry import connector_class

    try:
        config = _load(args.file)
        for target in config.targets:
            connector_class(target.platform).settings_model.model_validate(target.settings)
    except (ValidationError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"{args.file}: invalid\n{exc}", file=sys.stderr)
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


def check_online(config) -> int:
    """``config check --online``: every target's mapping resolved against the platform."""
    from connectors.base import DeliveryError

    ledger, runtime = _online_runtime(config)
    missing = 0
    try:
        for target in config.targets:
            try:
                _, connector = _connector_for(config, target.name, runtime)
            except (RuntimeError, DeliveryError) as exc:
                print(f"{target.name}: cannot connect: {exc}")
                missing += 1
                continue
            try:
                problems = connector.check_mapping()
            except DeliveryError as exc:
                problems = [f"{target.platform}: check failed: {exc.reason}"]
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
    from daemon.canonical import decode_invoice_event
    from daemon.deliver import SinkWorker, deliver_event_now, deliver_pulled_again

    config = _load(args.config)
    ledger, runtime = _ledger_and_runtime(config)
    try:
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
            n = ledger.resolve_dead_letters(target.name, row["invoice_id"], "dropped")
            print(f"dropped {n} dead letter(s) of invoice {row['invoice_number']} on {target.name}")
            return 0
        # retry: deliver the newest dead-lettered version of that invoice, then unpark it.
        rows = [r for r in ledger.dead_letters(target.name) if r["invoice_id"] == row["invoice_id"]]
        newest = max(rows, key=lambda r: r["version"])
        newest_row = ledger.dead_letter_row(newest["id"])
        event = decode_invoice_event(bytes(newest_row["event"]))
        import threading

        worker = SinkWorker(config, target, ledger, runtime, threading.Event())
        if newest_row["topic"].startswith("pull:"):
            # Refused by a pull platform after it was queued: the ledger already counts the version as
            # delivered, so hand it straight back to the connector to queue again.
            outcome = deliver_pulled_again(worker, event)
        else:
            outcome = deliver_event_now(worker, event)
        if outcome is not None and not isinstance(outcome, tuple):
            print(f"retry failed again: {outcome.error_class.value}: {outcome.reason}", file=sys.stderr)
            return 1
        if isinstance(outcome, tuple):
            doc, _, action = outcome
            ledger.save_document(target.name, event.number, event.invoice_id, doc)
        n = ledger.resolve_dead_letters(target.name, row["invoice_id"], "retried")
        print(f"invoice {event.number} v{event.version} delivered to {target.name}; {n} dead letter(s) resolved")
        return 0
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

    from daemon import ops

    config = _load(args.config)
    ledger, _ = _ledger_and_runtime(config)
    try:
        if args.action == "show":
            rows = ops.positions(config, ledger, args.target)
            print(f"{'group':<34} {'topic':<34} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}  oldest unsent")
            for r in rows:
                oldest = r.oldest_unsent.isoformat(timespec="seconds") if r.oldest_unsent else "-"
                committed = "-" if r.committed is None else str(r.committed)
                print(f"{r.group:<34} {r.topic:<34} {r.partition:>4} {committed:>10} {r.end:>10} {r.lag:>8}  {oldest}")
            return 0
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
    from daemon import ops

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
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"fold: lag {report['fold']['lag']} over {report['fold']['partitions']} source partitions")
    for name, t in report["targets"].items():
        print(f"target {name} ({t['platform']}){' PAUSED' if t['paused'] else ''}: lag {t['lag']}, "
              f"oldest unsent {t['oldest_unsent'] or '-'}, last success {t['last_success'] or 'never'}, "
              f"dead letters open {t['dead_letters_open']} ({t['parked_invoices']} invoices parked, "
              f"{t['dead_letters_24h']} in 24 h), credentials expire {t['credential_expiry'] or '-'}, "
              f"schedule {t.get('schedule', 'realtime')}"
              + (f" ({t['waiting']} invoices waiting, next window {t['next_window']})" if t.get('next_window') else ""))
        progress = t["progress"]
        print(f"  progress: {progress['done']:,} invoices done, {progress['remaining']:,} versions remaining, "
              f"{progress['per_minute']:,.0f}/min over the last 10 min, ETA {ops.format_duration(progress['eta_s'])}")
    for name, d in report.get("debezium", {}).items():
        print(f"debezium {name}: {d}")
    return 0


def _connector_for(config, target_name: str, runtime):
    from connectors.registry import connector_class

    target = config.target(target_name)
    return target, connector_class(target.platform)(target, runtime)


def cmd_resync(args: argparse.Namespace) -> int:
    from datetime import date

    from daemon import resync

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
        done = resync.apply(ledger, connector, target, items)
        print(f"resynced: {done}")
        return 0
    finally:
        connector.close()
        ledger.close()


def cmd_reconcile(args: argparse.Namespace) -> int:
    import csv
    from datetime import date

    from daemon import metrics, resync

    config = _load(args.config)
    ledger, runtime = _ledger_and_runtime(config)
    target, connector = _connector_for(config, args.target, runtime)
    try:
        since, until = date.fromisoformat(args.since), date.fromisoformat(args.until)
        rows = []
        for item in resync.plan(config, ledger, connector, target, since, until, args.location):
            doc = ledger.document(target.name, item.event.invoice_id)
            kind = {"create": "missing", "conflict": "conflict", "update": "amount"}.get(item.action)
            remote = connector.fetch_invoice(doc.external_id) if doc.external_id else None
            if kind is None and remote is not None and remote.balance is not None \
                    and item.event.status.value == "issued" and remote.balance != item.event.balance:
                kind, item.detail = "payment", f"balance {remote.balance} vs {item.event.balance}"
            if kind is not None:
                rows.append({"invoice": item.event.number, "kind": kind, "detail": item.detail,
                             "ledger_version": doc.delivered_version, "source_version": item.event.version,
                             "external_id": doc.external_id or ""})
        for kind in ("missing", "amount", "conflict", "payment"):
            metrics.RECONCILE_MISMATCHES.labels(target.name, kind).set(sum(1 for r in rows if r["kind"] == kind))
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        elif args.format == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=["invoice", "kind", "detail", "ledger_version",
                                                            "source_version", "external_id"])
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
    p.add_argument("--keep-stack", action="store_true", help="leave PostgreSQL/Kafka/Connect running")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stack", help="the local PostgreSQL + Kafka + Kafka Connect/Debezium stack")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--wipe", action="store_true", help="with down: delete all stack data")
    p.add_argument("--demo", action="store_true", help="the demo's private stack (.stack/demo)")
    p.set_defaults(func=cmd_stack)

    sub.add_parser("generate", help="write a generated shop workload (see `ledgerwire generate --help`)",
                   add_help=False)

    p = sub.add_parser("secret-key", help="print a new credential encryption key")
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
    if getattr(args, "action", None) in ("show", "retry", "drop") and args.command == "dlq" and args.id is None:
        parser.error(f"dlq {args.action} needs a dead-letter id")
    configure_logging(args.log_level, json_output=not args.console_logs and args.command != "demo")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
