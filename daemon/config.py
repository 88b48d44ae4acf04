"""Configuration: one YAML file, validated by these models, with environment overrides.

Secrets never come from the command line: a target's credentials are seeded from a file or from
environment variables (``credentials_file`` / ``credentials_env``) into the encrypted credential store.
Environment overrides: ``LEDGERWIRE__KAFKA__BOOTSTRAP_SERVERS=…`` sets ``kafka.bootstrap_servers``
(double underscores separate levels).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon.canonical import LineKind


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaConfig(_Config):
    bootstrap_servers: str = "127.0.0.1:9092"
    canonical_topic: str = "ledgerwire.invoices"
    canonical_partitions: int = Field(6, ge=1)
    fold_state_topic: str = "ledgerwire.fold-state"  # compacted changelog of the fold's state
    dead_letter_topic: str = "ledgerwire.dead-letter"
    fold_group: str = "ledgerwire-fold"
    sink_group_prefix: str = "ledgerwire-sink-"
    extra: dict[str, str] = Field(default_factory=dict)  # passed to librdkafka as they are
    # Bound on every Kafka call that can block (transactions, flush, metadata, offsets): a broker that stops
    # answering turns into an error the loop retries, never a thread stuck for good.
    call_timeout_s: float = Field(30.0, gt=0, le=300)


class SourceHealthConfig(_Config):
    """How the daemon watches the source side (issue #13): Debezium's heartbeats, the replication slot, and the
    Connect task it restarts when the runbook's answer is mechanical (a failed task, or RUNNING with no
    heartbeat). Restarts are bounded: at most ``max_restarts`` within ``restart_window_s``, at least
    ``restart_spacing_s`` apart; past that, an alert asks a person."""

    enabled: bool = True  # needs source.connect_url (and shop_dsn for the slot) to do anything
    interval_s: float = Field(15.0, gt=0)  # how often freshness, the slot and the connector are read
    heartbeat_stale_s: float = Field(60.0, gt=0)  # no heartbeat for this long: the connector is stalled
    self_heal: bool = True
    max_restarts: int = Field(3, ge=0)
    restart_window_s: float = Field(3600.0, gt=0)
    restart_spacing_s: float = Field(120.0, ge=0)


class SourceConfig(_Config):
    """Where Debezium writes the shop database's changes."""

    topic_prefix: str = "shop"  # Debezium's topic.prefix
    schema_name: str = "public"
    transaction_topic: str | None = None  # default: "<prefix>.transaction"
    connect_url: str | None = None  # Kafka Connect REST, for `ledgerwire status`
    shop_dsn: str | None = None  # read access to the shop database, for resync signals and reconciliation
    incomplete_transaction_timeout_s: float = Field(30.0, gt=0)
    max_buffered_events: int = Field(200_000, gt=0)
    connector_name: str | None = None  # the Debezium connector in Kafka Connect (default "<prefix>-source")
    slot_name: str = "ledgerwire"  # its replication slot (the connector's slot.name)
    heartbeat_topic_prefix: str = "__debezium-heartbeat"  # Debezium's topic.heartbeat.prefix
    health: SourceHealthConfig = Field(default_factory=SourceHealthConfig)

    @property
    def connector(self) -> str:
        return self.connector_name or f"{self.topic_prefix}-source"

    @property
    def heartbeat_topic(self) -> str:
        return f"{self.heartbeat_topic_prefix}.{self.topic_prefix}"

    @property
    def tx_topic(self) -> str:
        return self.transaction_topic or f"{self.topic_prefix}.transaction"

    def table_topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{self.schema_name}.{table}"


class PostgresConfig(_Config):
    """Ledgerwire's own database: sync ledger, sink offsets, credentials, audit trail, DLQ index."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/ledgerwire"


class MappingConfig(_Config):
    """How the shop's lines, taxes and payments post into this target's books (bookkeeper's choice)."""

    income_accounts: dict[LineKind, str] = Field(default_factory=dict)  # line kind -> account id/code
    item_mode: Literal["per_line_kind", "per_part_number"] = "per_line_kind"
    items: dict[LineKind, str] = Field(default_factory=dict)  # generic item per line kind (id or name)
    tax_codes: dict[str, str] = Field(default_factory=dict)  # source tax code -> platform tax code/rate
    payment_accounts: dict[str, str] = Field(default_factory=dict)  # payment method -> deposit account
    location_tracking: dict[str, str] = Field(default_factory=dict)  # location code -> class/dept/branch
    # An existing platform customer (the bookkeeper's, not claimed by another shop customer) is matched by these
    # keys only when the bookkeeper lists them; by default a shop customer is found by its shop id only, else
    # created (issue #20: two shop customers never share one platform customer).
    customer_match: list[Literal["email", "phone", "name"]] = Field(default_factory=list)
    discount_posting: Literal["line", "discount_account"] = "line"
    core_account: str | None = None  # liability/income account for core charges and returns
    # with discount_posting "discount_account": the platform's discount account discount lines post to
    discount_account: str | None = None
    payment_terms: dict[int, str] = Field(default_factory=dict)  # fleet terms in days -> platform term id
    # When the shop's stored totals differ from its lines (``totals_mismatch``): "stored" posts the printed
    # invoice's total with an untaxed rounding line for the difference (default), "computed" posts the lines
    # as they are, "hold" dead-letters the version for review (issue #20).
    totals_mismatch: Literal["stored", "computed", "hold"] = "stored"
    # The company's own currency at the platform (ISO 4217). Where set, an invoice in another currency is posted
    # only by a connector that sends currencies (``Capabilities.multi_currency``); elsewhere it is dead-lettered
    # with the reason instead of being booked as if it were in this currency (issue #20). None: not checked.
    home_currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")


class RateLimit(_Config):
    per_minute: float | None = None
    per_second: float | None = None
    per_day: float | None = None
    concurrency: int = Field(4, ge=1)


class Schedule(_Config):
    """When a target's deliveries go out (``daemon/sink/schedule.py`` computes the windows).

    ``realtime`` (default): as soon as they arrive. ``interval``: every ``every_minutes`` minutes, counted
    from 1970-01-01T00:00Z so every process agrees. ``end_of_day``: once a day at ``at_local_time``
    ("HH:MM", 24 h) in ``timezone`` (an IANA name such as "America/Chicago"), all unsynced invoices.
    """

    mode: Literal["realtime", "interval", "end_of_day"] = "realtime"
    every_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)
    at_local_time: str | None = None  # "18:30" with end_of_day
    timezone: str = "UTC"

    @field_validator("at_local_time")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", value.strip())
        if match is None:
            raise ValueError(f"at_local_time must be a 24-hour local time \"HH:MM\" (e.g. \"18:30\"), got {value!r}")
        return match.group(0)

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"timezone must be an IANA time zone name such as \"America/Chicago\" or "
                             f"\"Europe/London\", got {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _fields_for_mode(self) -> "Schedule":
        if self.mode == "interval":
            if self.every_minutes is None:
                raise ValueError("schedule mode 'interval' needs every_minutes (e.g. every_minutes: 15)")
            if self.at_local_time is not None:
                raise ValueError("at_local_time is only used with schedule mode 'end_of_day', not 'interval'")
        elif self.mode == "end_of_day":
            if self.at_local_time is None:
                raise ValueError("schedule mode 'end_of_day' needs at_local_time as \"HH:MM\" (e.g. \"18:30\") "
                                 "and a timezone")
            if self.every_minutes is not None:
                raise ValueError("every_minutes is only used with schedule mode 'interval', not 'end_of_day'")
        elif self.every_minutes is not None or self.at_local_time is not None:
            raise ValueError("schedule mode 'realtime' takes neither every_minutes nor at_local_time; "
                             "set mode to 'interval' or 'end_of_day'")
        return self


class ReconcileConfig(_Config):
    """Reconciliation inside the daemon (issue #13): every ``interval_s`` the last ``period_days`` of invoices
    are compared — source, ledger, platform — and ``ledgerwire_reconcile_mismatches`` is set. ``enabled``
    unset: on, except for platforms with a daily request quota (their settings have ``requests_per_day``:
    Xero, Zoho Books, Sage), where reading every invoice back would spend it."""

    enabled: bool | None = None
    interval_s: float = Field(21600.0, ge=60)
    period_days: int = Field(7, ge=1)


class TargetConfig(_Config):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    platform: str
    base_url: str | None = None  # the platform's API root (the sandbox's URL in demo and tests)
    locations: list[str] = Field(default_factory=list)  # location codes routed here; empty = all
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    settings: dict[str, Any] = Field(default_factory=dict)  # validated by the connector's settings_model
    credentials_file: Path | None = None  # JSON seed for the credential store
    credentials_env: str | None = None  # name of an env var holding that JSON
    rate_limit: RateLimit | None = None  # overrides the connector's documented defaults
    schedule: Schedule = Field(default_factory=Schedule)
    enabled: bool = True
    request_timeout_s: float = Field(20.0, gt=0)
    max_attempts: int = Field(8, ge=1)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)

    def routes(self, location_code: str) -> bool:
        return not self.locations or location_code in self.locations


class HttpConfig(_Config):
    """/metrics, /healthz, /readyz — plain HTTP, nothing secret. ``host: 0.0.0.0`` lets a remote Prometheus
    scrape (the default, 127.0.0.1, only a local one)."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConnectorConfig(_Config):
    """The QuickBooks Web Connector's SOAP endpoint (``/connectors/<target>/qbwc``): a listener of its own,
    never the metrics port. The real Web Connector insists on HTTPS for any host but localhost: serve TLS
    from ``tls_certfile``/``tls_keyfile``, or set ``behind_proxy`` when a reverse proxy terminates TLS (the
    client address is then the last ``X-Forwarded-For`` hop, which that proxy adds)."""

    host: str = "127.0.0.1"
    port: int = Field(9465, ge=0, le=65535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    behind_proxy: bool = False
    # receiveResponseXML carries QuickBooks' answers; a full list sync of a big company file is a few MB.
    max_request_bytes: int = Field(16 * 1024 * 1024, gt=0)
    # authenticate throttling, per username and per client address: this many failures are free, then each
    # further attempt waits base * 2^(failures - free) seconds (capped) after the last failure.
    auth_free_failures: int = Field(3, ge=0)
    auth_base_delay_s: float = Field(2.0, gt=0)
    auth_max_delay_s: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> "WebConnectorConfig":
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together (the certificate chain and its private key)")
        if self.tls_certfile is not None and self.behind_proxy:
            raise ValueError("behind_proxy means the proxy terminates TLS; drop tls_certfile/tls_keyfile or behind_proxy")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None


class ConsoleConfig(_Config):
    """The bookkeeper's web console (``daemon/console``), served under ``/console`` on the HTTP port.

    Off unless enabled. ``auth``: ``password`` (``username`` + a scrypt ``password_hash`` made by
    ``python3 -m daemon.console.password``), ``proxy`` (the reverse proxy's authenticated user in
    ``proxy_user_header``, believed only from ``trusted_proxies``), or ``none`` (only with http.host on loopback).
    """

    enabled: bool = False
    auth: Literal["password", "proxy", "none"] = "password"
    username: str = Field("bookkeeper", min_length=1, max_length=64)
    password_hash: str | None = None
    proxy_user_header: str | None = None
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    session_minutes: int = Field(480, ge=5, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _auth_complete(self) -> "ConsoleConfig":
        if self.password_hash is not None and not re.fullmatch(
                r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", self.password_hash):
            raise ValueError("console.password_hash must be a hash made by `python3 -m daemon.console.password` "
                             "(scrypt$n$r$p$salt$hash), never the password itself")
        if self.enabled and self.auth == "password" and self.password_hash is None:
            raise ValueError("console.auth 'password' needs console.password_hash "
                             "(make one with `python3 -m daemon.console.password`)")
        if self.enabled and self.auth == "proxy" and not self.proxy_user_header:
            raise ValueError("console.auth 'proxy' needs console.proxy_user_header (e.g. X-Forwarded-User)")
        return self


class LivenessConfig(_Config):
    """Liveness by progress (README "Liveness"): a loop (the fold, each sink's consumer loop and partition workers) that shows no
    progress for ``stall_timeout_s`` is stalled: /healthz fails, ``ledgerwire_component_up`` is 0, the systemd
    watchdog is no longer fed, and with ``exit_on_stall`` the process exits (code 75) for its supervisor to
    restart it. A loop that waits (idle, or backing off from Kafka or PostgreSQL being away) is not stalled."""

    stall_timeout_s: float = Field(120.0, gt=0)
    exit_on_stall: bool = True
    log_repeat_interval_s: float = Field(30.0, ge=0)  # librdkafka: the same message at most once per interval


class AppConfig(_Config):
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    web_connector: WebConnectorConfig = Field(default_factory=WebConnectorConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    targets: list[TargetConfig] = Field(default_factory=list)
    run_fold: bool = True
    run_sinks: bool = True
    secret_key_file: Path | None = None  # else env LEDGERWIRE_SECRET_KEY
    shutdown_grace_s: float = Field(20.0, gt=0)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        names = [t.name for t in targets]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {sorted(dupes)}")
        return targets

    @model_validator(mode="after")
    def _known_platforms(self) -> "AppConfig":
        from connectors.registry import known_platforms

        for t in self.targets:
            if t.platform not in known_platforms():
                raise ValueError(f"target {t.name!r}: unknown platform {t.platform!r}; known: {known_platforms()}")
        web = self.web_connector
        pulled = [t.name for t in self.targets if t.platform == "quickbooks-desktop" and t.enabled]
        if pulled and not web.tls and not web.behind_proxy and not _is_loopback(web.host):
            raise ValueError(f"web_connector.host {web.host!r} is not loopback but serves plain HTTP to target(s) "
                             f"{pulled}: set web_connector.tls_certfile and tls_keyfile, or behind_proxy: true "
                             "(the QuickBooks Web Connector requires HTTPS for any host but localhost)")
        if self.liveness.stall_timeout_s <= self.kafka.call_timeout_s:
            raise ValueError(f"liveness.stall_timeout_s ({self.liveness.stall_timeout_s}) must exceed "
                             f"kafka.call_timeout_s ({self.kafka.call_timeout_s}): a Kafka call that times out is "
                             "retried, not stalled")
        for t in self.targets:  # a partition worker beats before each platform request, which may last this long
            if self.liveness.stall_timeout_s <= 2 * t.request_timeout_s:
                raise ValueError(f"target {t.name!r}: liveness.stall_timeout_s ({self.liveness.stall_timeout_s}) must "
                                 f"exceed twice its request_timeout_s ({t.request_timeout_s}): a request and its token "
                                 "renewal are slow, not stalled")
        return self

    def target(self, name: str) -> TargetConfig:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"no target named {name!r}; configured: {[t.name for t in self.targets]}")


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, value in environ.items():
        if not key.startswith("LEDGERWIRE__"):
            continue
        path = [p.lower() for p in key[len("LEDGERWIRE__") :].split("__")]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return data


class ConfigError(ValueError):
    """A configuration that cannot be used: one line per problem, each naming the file, the target (by name)
    and the field — what ``config check``, ``run`` and every command print instead of a traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """``targets[2].mapping.income_accounts`` → ``target 'qbo-main' (targets[2]): mapping.income_accounts``."""
    parts: list[str] = []
    prefix = ""
    for index, key in enumerate(loc):
        if isinstance(key, int):
            parts[-1:] = [f"{parts[-1]}[{key}]"] if parts else [f"[{key}]"]
            if index == 1 and loc[0] == "targets":
                targets = data.get("targets") if isinstance(data, dict) else None
                name = targets[key].get("name") if isinstance(targets, list) and key < len(targets) \
                    and isinstance(targets[key], dict) else None
                prefix = f"target {name!r} (targets[{key}]): " if name else f"targets[{key}]: "
                parts = []
        else:
            parts.append(str(key))
    return prefix + (".".join(parts) or "(top level)")


def validation_lines(source: str, exc: ValidationError, data: Any, loc_prefix: tuple[Any, ...] = ()) -> list[str]:
    """One line per pydantic error: where (target by name, field path), what, and the value given.
    ``loc_prefix`` places a nested model's errors (a target's ``settings``) in the whole file."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        shown = f" (got {given!r})" if error["type"] not in ("missing", "extra_forbidden") \
            and not isinstance(given, (dict, list)) else ""
        lines.append(f"{source}: {_location(loc_prefix + tuple(error['loc']), data)}: {message}{shown}")
    return lines


def load_config(path: str | Path | None, environ: dict[str, str] | None = None) -> AppConfig:
    """The validated configuration; any problem raises ``ConfigError`` (one line each, no traceback)."""
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "configuration"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError([f"{source}: {where}invalid YAML: {problem}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{source}: the top level must be a mapping (key: value), not {type(loaded).__name__}"])
        data = loaded
    data = _apply_env_overrides(data, dict(os.environ if environ is None else environ))
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_lines(source, exc, data)) from None
    if path is not None:
        _resolve_relative_paths(config, Path(path).resolve().parent)
    return config


def _resolve_relative_paths(config: AppConfig, base: Path) -> None:
    """Relative file names in the configuration mean "beside this file" — under systemd the file is
    $CREDENTIALS_DIRECTORY/ledgerwire.yml, so ``credentials_file: qbo-main.json`` is another credential."""
    def resolved(value: Path | None) -> Path | None:
        return base / value if value is not None and not value.is_absolute() else value

    config.secret_key_file = resolved(config.secret_key_file)
    config.web_connector.tls_certfile = resolved(config.web_connector.tls_certfile)
    config.web_connector.tls_keyfile = resolved(config.web_connector.tls_keyfile)
    for target in config.targets:
        target.credentials_file = resolved(target.credentials_file)
