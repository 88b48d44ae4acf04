"""The local stack without Docker: PostgreSQL, Kafka (KRaft) and Kafka Connect + Debezium.

PostgreSQL comes from Debian's packages (initdb in a private directory); Kafka, Connect and the Debezium
PostgreSQL connector are jars from Maven Central at the versions pinned in ``stack/pom.xml`` (Maven's
own cache keeps them between runs). ``ledgerwire stack up`` starts everything, waits for health and
registers the connector; ``ledgerwire stack down`` stops it. Ports and the state directory are
configurable, so tests can run a stack of their own beside a developer's.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import structlog

from daemon.operations.source_setup import SourceSpec, check_source, init_source
from daemon.operations.source_setup import debezium_connector_config as source_connector_config

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "stack" / "pom.xml"
SHOP_SCHEMA = REPO / "schemas" / "source" / "shop.sql"
CONNECTOR_NAME = "shop-source"

LOG4J2 = """rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=${sys:lw.log.file}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.state.name=state.change.logger
logger.state.level=WARN
logger.reflections.name=org.reflections
logger.reflections.level=ERROR
"""


@dataclass
class StackConfig:
    home: Path = field(default_factory=lambda: Path(os.environ.get("LEDGERWIRE_STACK_DIR", REPO / ".stack")))
    pg_port: int = int(os.environ.get("LEDGERWIRE_PG_PORT", "15432"))
    kafka_port: int = int(os.environ.get("LEDGERWIRE_KAFKA_PORT", "19092"))
    controller_port: int = int(os.environ.get("LEDGERWIRE_KAFKA_CONTROLLER_PORT", "19093"))
    connect_port: int = int(os.environ.get("LEDGERWIRE_CONNECT_PORT", "18083"))
    shop_db: str = "shop"
    ledger_db: str = "ledgerwire"
    topic_prefix: str = "shop"
    source: SourceSpec = field(default_factory=SourceSpec)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{db}"

    @property
    def shop_dsn(self) -> str:
        return self.dsn(self.shop_db)

    @property
    def ledger_dsn(self) -> str:
        return self.dsn(self.ledger_db)

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def lib(self) -> Path:
        return self.home / "lib"


class StackError(RuntimeError):
    pass


# --- jars ---------------------------------------------------------------------------------------------


def fetch_jars(cfg: StackConfig) -> None:
    """Copy the pinned jars out of Maven's cache (downloading them once) into the stack directory."""
    stamp = cfg.lib / "pom.stamp"
    wanted = POM.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is not installed; run `make bootstrap` or apt-get install maven")
    if cfg.lib.exists():
        shutil.rmtree(cfg.lib)
    for profile in ("kafka", "debezium"):
        out = cfg.lib / profile
        log.info("fetching_jars", profile=profile)
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(POM), f"-P{profile}", "dependency:copy-dependencies",
             f"-DoutputDirectory={out}", "-DincludeScope=runtime"],
            check=True,
        )
    plugin = cfg.lib / "plugins" / "debezium-postgres"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cfg.lib / "debezium", plugin)
    stamp.write_text(wanted)


# --- processes ----------------------------------------------------------------------------------------


def _wait_port_free(port: int, what: str, timeout: float = 45.0) -> None:
    """A previous stack on the same ports may still be shutting down: wait for the port, or say who holds it."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise StackError(f"port {port} for {what} is in use by another process; "
                                     f"choose other ports (LEDGERWIRE_*_PORT) or stop it") from None
        time.sleep(0.5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_java(cfg: StackConfig, name: str, main_class: str, args: list[str], heap: str,
                ports: list[int] = ()) -> int:
    pid_file = cfg.home / f"{name}.pid"
    running = _our_process(cfg, name)
    if running is not None:
        return running
    for port in ports:
        _wait_port_free(port, name)
    cfg.logs.mkdir(parents=True, exist_ok=True)
    log4j = cfg.home / "log4j2.properties"
    log4j.write_text(LOG4J2)
    cmd = ["java", f"-Xmx{heap}", "-XX:+UseSerialGC", f"-Dlog4j2.configurationFile={log4j}", f"-Dlw.log.file={cfg.logs / (name + '.log')}",
           "-cp", f"{cfg.lib / 'kafka'}/*", main_class, *args]
    out = open(cfg.logs / f"{name}.out", "ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cfg.home)
    identity = _process_identity(proc.pid)
    if identity is None:
        raise StackError(f"{name} exited at once; see {cfg.logs / (name + '.out')}")
    pid_file.write_text(json.dumps(identity))
    return proc.pid


def _process_identity(pid: int) -> dict[str, object] | None:
    """What tells *our* process from another that later got the same pid: its start time (clock ticks
    after boot, /proc/<pid>/stat field 22) and its command line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    if fields[0] == "Z":
        return None
    return {"pid": pid, "start_ticks": int(fields[19]),
            "cmdline": [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]}


def _our_process(cfg: StackConfig, name: str) -> int | None:
    """The pid in ``<name>.pid`` if that process is still the one we started, else None.

    A pid file outlives its process (reboot, SIGKILL, a wiped /proc view); its pid may since belong to
    anything on the host, so it is signalled only when start time and command line both still match.
    A pid file from before identities were recorded (a bare number) matches when the command line names
    this stack's directory.
    """
    pid_file = cfg.home / f"{name}.pid"
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    try:
        recorded = json.loads(text)
    except ValueError:
        return None
    if isinstance(recorded, int):
        current = _process_identity(recorded)
        if current is None or not any(str(cfg.home) in arg for arg in current["cmdline"]):
            return None
        return recorded
    if not isinstance(recorded, dict) or not isinstance(recorded.get("pid"), int):
        return None
    current = _process_identity(recorded["pid"])
    if current is None:
        return None
    # pid + start time name one process for the life of the machine; the command line is a second check,
    # skipped when it read empty, now or when it was recorded (the kernel returns nothing while the process's
    # memory is being torn down or is briefly inaccessible: a stop under load once left its own process running).
    # The command line must be the one recorded or still name this stack's directory (the JVM's launcher may
    # re-exec itself with another argv: a strict comparison left Kafka Connect running after `down`).
    if current["start_ticks"] != recorded.get("start_ticks") or (
            current["cmdline"] and recorded.get("cmdline") and current["cmdline"] != recorded.get("cmdline")
            and not any(str(cfg.home) in arg for arg in current["cmdline"])):
        log.warning("pid_file_names_another_process", process=name, pid=recorded["pid"],
                    start_ticks_match=current["start_ticks"] == recorded.get("start_ticks"),
                    cmdline_match=current["cmdline"] == recorded.get("cmdline"))
        return None
    return recorded["pid"]


def record_process(cfg: StackConfig, name: str, pid: int) -> None:
    """Record a process that ``down`` stops (by its identity, as the stack's own)."""
    identity = _process_identity(pid)
    if identity is not None:
        cfg.home.mkdir(parents=True, exist_ok=True)
        (cfg.home / f"{name}.pid").write_text(json.dumps(identity))


def forget_process(cfg: StackConfig, name: str) -> None:
    (cfg.home / f"{name}.pid").unlink(missing_ok=True)


def _stop_pid(cfg: StackConfig, name: str, timeout: float = 20.0) -> None:
    pid_file = cfg.home / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = _our_process(cfg, name)
    if pid is None:
        log.warning("stale_pid_file_ignored", process=name, pid_file=str(pid_file))
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _our_process(cfg, name) == pid:
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    pid_file.unlink(missing_ok=True)


# --- PostgreSQL ---------------------------------------------------------------------------------------


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise StackError("PostgreSQL server binaries not found; run `make bootstrap` (apt-get install postgresql)")
    return candidates[-1].parent


def _as_pg_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; on CI and in containers we are root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def start_postgres(cfg: StackConfig) -> None:
    bin_dir = _pg_bin()
    data = cfg.home / "pg" / "data"
    sock = cfg.home / "pg"
    sock.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(sock, pw.pw_uid, pw.pw_gid)
        os.chmod(cfg.home, 0o755)
    if not (data / "PG_VERSION").exists():
        subprocess.run(_as_pg_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "-E", "UTF8", "--no-sync"]), check=True, stdout=subprocess.DEVNULL)
    if not _postgres_running(cfg):
        _wait_port_free(cfg.pg_port, "PostgreSQL")
        opts = (f"-p {cfg.pg_port} -k {sock} -c listen_addresses=127.0.0.1 -c wal_level=logical "
                "-c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off -c synchronous_commit=off "
                # Every daemon process needs a lock connection per partition worker plus its pool (README "Ledger
                # connections"): the chaos test runs twenty targets in two daemons and twenty resyncs at once.
                "-c max_connections=500")
        subprocess.run(_as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                                    str(sock / "postgres.log"), "-w", "-t", "60", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        for db in (cfg.shop_db, cfg.ledger_db):
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(cfg.shop_dsn, autocommit=True) as conn:
        conn.execute(SHOP_SCHEMA.read_text())
    init_source(cfg.shop_dsn, cfg.source)


# A fast shutdown waits for every walsender to send the WAL up to its checkpoint. Debezium's walsender whose client
# does not read (its Connect task waiting on a broker that is down) holds it until wal_sender_timeout (60 s), which
# is pg_ctl's own wait: the stop could return with the server still shutting down, and the next start found it
# "running" and was refused ("the database system is shutting down"; every later test then found no server).
FAST_STOP_S = 30


def _postgres_running(cfg: StackConfig) -> bool:
    status = subprocess.run(_as_pg_user([str(_pg_bin() / "pg_ctl"), "-D", str(cfg.home / "pg" / "data"), "status"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return status.returncode == 0


def stop_postgres(cfg: StackConfig) -> None:
    """Stop our PostgreSQL: fast, and immediate when fast has not finished in ``FAST_STOP_S`` (crash-safe: the next
    start recovers). Returns once it is stopped."""
    data = cfg.home / "pg" / "data"
    if not (data / "PG_VERSION").exists():
        return
    for mode, wait_s in (("fast", FAST_STOP_S), ("immediate", 60)):
        subprocess.run(_as_pg_user([str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", str(wait_s),
                                    "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _postgres_running(cfg):
            return


# --- Kafka --------------------------------------------------------------------------------------------


def start_kafka(cfg: StackConfig) -> None:
    data = cfg.home / "kafka-data"
    props = cfg.home / "kafka.properties"
    props.write_text("\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{cfg.controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},CONTROLLER://127.0.0.1:{cfg.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data}", "num.partitions=1", "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=10",
        "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=true",
        "log.retention.hours=-1", "log.retention.bytes=-1",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=5000",
    ]) + "\n")
    if not (data / "meta.properties").exists():
        data.mkdir(parents=True, exist_ok=True)
        cp = f"{cfg.lib / 'kafka'}/*"
        formatted = subprocess.run(["java", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                                    "-c", str(props), "--standalone"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        if formatted.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed: {formatted.stderr.strip()[-500:]}")
    _start_java(cfg, "kafka", "kafka.Kafka", [str(props)], "768m", ports=[cfg.kafka_port, cfg.controller_port])
    _wait(lambda: _kafka_ready(cfg), 90, "Kafka broker", cfg.logs / "kafka.log")


def _cluster_id() -> str:
    """A random cluster id (16 bytes, base64url), never one starting with "-", as Kafka's own ``Uuid.randomUuid``:
    kafka-storage's argument parser takes "-t -q_mR1e…" for an option, and 1 stack start in 64 failed."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_ready(cfg: StackConfig) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": cfg.bootstrap, "log_level": 0}).list_topics(timeout=2)
        return bool(md.brokers)
    except Exception:
        return False


# --- Kafka Connect + Debezium -------------------------------------------------------------------------


def start_connect(cfg: StackConfig) -> None:
    props = cfg.home / "connect.properties"
    props.write_text("\n".join([
        f"bootstrap.servers={cfg.bootstrap}", "group.id=ledgerwire-connect",
        "key.converter=org.apache.kafka.connect.json.JsonConverter",
        "value.converter=org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable=true", "value.converter.schemas.enable=true",
        "offset.storage.topic=_connect_offsets", "config.storage.topic=_connect_configs",
        "status.storage.topic=_connect_status", "offset.storage.replication.factor=1",
        "config.storage.replication.factor=1", "status.storage.replication.factor=1",
        "offset.flush.interval.ms=1000", f"listeners=http://127.0.0.1:{cfg.connect_port}",
        f"plugin.path={cfg.lib / 'plugins'}", "topic.creation.enable=true",
    ]) + "\n")
    _start_java(cfg, "connect", "org.apache.kafka.connect.cli.ConnectDistributed", [str(props)], "768m",
                ports=[cfg.connect_port])
    _wait(lambda: _connect_has_plugin(cfg), 180, "Kafka Connect", cfg.logs / "connect.log")


def _connect_has_plugin(cfg: StackConfig) -> bool:
    try:
        plugins = httpx.get(f"{cfg.connect_url}/connector-plugins", timeout=2).json()
        return any(p["class"].endswith("PostgresConnector") for p in plugins)
    except (httpx.HTTPError, ValueError):
        return False


def debezium_connector_config(cfg: StackConfig, db: str | None = None, prefix: str | None = None,
                              slot: str = "ledgerwire") -> dict[str, str]:
    """The shop connector as a real deployment registers it (``daemon/operations/source_setup.py``), tuned for the local stack:
    the local cluster trusts 127.0.0.1, so the replication role needs no password; bigger batches, faster polls."""
    config = source_connector_config(host="127.0.0.1", port=cfg.pg_port, dbname=db or cfg.shop_db,
                                     topic_prefix=prefix or cfg.topic_prefix, slot=slot, spec=cfg.source,
                                     password="")
    # Heartbeats every 2 s: the daemon tells a stalled connector from a quiet shop by them (issue #13).
    config.update({"max.batch.size": "4096", "poll.interval.ms": "50", "heartbeat.interval.ms": "2000"})
    return config


def register_connector(cfg: StackConfig, name: str = CONNECTOR_NAME, db: str | None = None,
                       prefix: str | None = None, slot: str = "ledgerwire") -> None:
    # Databases created before `source init` existed get the role, publication and tables now; one already set
    # up is left alone (its ALTER TABLEs would take exclusive locks while the shop writes).
    if check_source(cfg.dsn(db or cfg.shop_db), cfg.source):
        init_source(cfg.dsn(db or cfg.shop_db), cfg.source)
    response = httpx.put(f"{cfg.connect_url}/connectors/{name}/config",
                         json=debezium_connector_config(cfg, db, prefix, slot), timeout=30)
    if response.status_code >= 300:
        raise StackError(f"connector registration failed: {response.status_code} {response.text}")
    if "FAILED" in (connector_state(cfg, name) or ""):
        # A task that failed earlier (e.g. across a broker restart) does not come back by itself.
        httpx.post(f"{cfg.connect_url}/connectors/{name}/restart?includeTasks=true&onlyFailed=true", timeout=30)
    _wait(lambda: connector_state(cfg, name) == "RUNNING", 90, "Debezium connector", cfg.logs / "connect.log")


def create_shop_database(cfg: StackConfig, db: str) -> str:
    """A fresh shop database with the reference schema (tests run one per scenario)."""
    with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(cfg.dsn(db), autocommit=True) as conn:
        conn.execute(SHOP_SCHEMA.read_text())
    init_source(cfg.dsn(db), cfg.source)
    return cfg.dsn(db)


def remove_connector(cfg: StackConfig, name: str, slot: str | None = None) -> None:
    httpx.delete(f"{cfg.connect_url}/connectors/{name}", timeout=30)
    if slot:
        deadline = time.monotonic() + 30
        with psycopg.connect(cfg.dsn("postgres"), autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name=%s", (slot,)).fetchone()
                if row is None:
                    return
                if not row[0]:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    return
                time.sleep(0.5)


def connector_state(cfg: StackConfig, name: str = CONNECTOR_NAME) -> str | None:
    try:
        status = httpx.get(f"{cfg.connect_url}/connectors/{name}/status", timeout=3).json()
        states = [status["connector"]["state"]] + [t["state"] for t in status.get("tasks", [])]
        if not status.get("tasks"):
            return "STARTING"
        return "RUNNING" if all(s == "RUNNING" for s in states) else ",".join(states)
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def restart_connector(cfg: StackConfig, name: str = CONNECTOR_NAME) -> None:
    httpx.post(f"{cfg.connect_url}/connectors/{name}/restart?includeTasks=true&onlyFailed=false", timeout=30)
    time.sleep(1)
    _wait(lambda: connector_state(cfg, name) == "RUNNING", 90, "Debezium connector restart", cfg.logs / "connect.log")


def _wait(check, timeout: float, what: str, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else "(no log)"
    raise StackError(f"{what} not healthy after {timeout:.0f}s; see {log_file}\n{tail}")


# --- the whole stack ----------------------------------------------------------------------------------


def up(cfg: StackConfig | None = None) -> StackConfig:
    cfg = cfg or StackConfig()
    cfg.home.mkdir(parents=True, exist_ok=True)
    fetch_jars(cfg)
    start_postgres(cfg)
    start_kafka(cfg)
    start_connect(cfg)
    register_connector(cfg)
    (cfg.home / "stack.json").write_text(json.dumps({
        "shop_dsn": cfg.shop_dsn, "ledger_dsn": cfg.ledger_dsn, "bootstrap": cfg.bootstrap,
        "connect": cfg.connect_url, "logs": str(cfg.logs),
    }, indent=2))
    return cfg


def down(cfg: StackConfig | None = None, wipe: bool = False) -> None:
    cfg = cfg or StackConfig()
    _stop_pid(cfg, "demo", timeout=40)  # a demo kept running (--keep) first: its daemon drains and exits
    _stop_pid(cfg, "connect")
    _stop_pid(cfg, "kafka")
    stop_postgres(cfg)
    if wipe and cfg.home.exists():
        for sub in ("pg", "kafka-data", "connect"):
            shutil.rmtree(cfg.home / sub, ignore_errors=True)
        for f in ("stack.json", "kafka.properties", "connect.properties"):
            (cfg.home / f).unlink(missing_ok=True)


def restart_kafka(cfg: StackConfig) -> None:
    """Stop and start the broker (chaos tests): data is kept."""
    _stop_pid(cfg, "kafka")
    start_kafka(cfg)


def status(cfg: StackConfig | None = None) -> dict[str, object]:
    cfg = cfg or StackConfig()
    pg_ok = True
    try:
        psycopg.connect(cfg.dsn("postgres"), connect_timeout=2).close()
    except psycopg.Error:
        pg_ok = False
    return {"postgres": pg_ok, "kafka": _kafka_ready(cfg), "connect": _connect_has_plugin(cfg),
            "connector": connector_state(cfg), "logs": str(cfg.logs)}
