"""Operations assets: the Grafana dashboard, the alert rules, the Prometheus config, the compose stack and
the systemd unit — checked statically, with promtool, and against a real Prometheus scraping a real
daemon run (every dashboard query must return data)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from connectors.sandbox_kit import free_port
from daemon import metrics  # noqa: F401 - registers the metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "ledgerwire.json"
RULES = REPO / "grafana" / "alerts" / "ledgerwire-rules.yml"
PROM_CONFIG = REPO / "grafana" / "prometheus.yml"


def defined_series() -> set[str]:
    """Every series name daemon/metrics.py exports, with the suffixes Prometheus adds."""
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names.add(value._name)  # noqa: SLF001 - the metric's registered name
            names.update(value._name + suffix for suffix in suffixes[value._type])  # noqa: SLF001
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bledgerwire_[a-z_]+", expr))


def test_dashboard_uses_only_defined_metrics_and_every_panel_is_complete():
    board = json.loads(DASHBOARD.read_text())
    known = defined_series()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["title"] and panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        for target in panel["targets"]:
            unknown = used_metrics(target["expr"]) - known
            assert not unknown, f"panel {panel['title']!r} uses undefined metrics {unknown}"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "target"}


def test_alert_rules_use_defined_metrics_and_pass_promtool():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    known = defined_series()
    for rule in rules:
        assert not used_metrics(rule["expr"]) - known, rule["alert"]
        assert rule["labels"]["severity"] and rule["annotations"]["summary"] and "for" in rule
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; scripts/bootstrap.sh installs it)")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)], capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_compose_stack_is_complete():
    """No Docker here: the compose file is checked by parsing its YAML (structure, mounts, the commands it runs)."""
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"shopdb", "ledgerdb", "kafka", "connect", "source-init", "register-connector", "ledgerwire", "prometheus",
            "grafana"} <= set(services)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / "compose" / source).resolve().exists(), f"missing {source}"
    connector = json.loads((REPO / "compose" / "debezium-connector.json").read_text())
    assert connector["plugin.name"] == "pgoutput" and connector["provide.transaction.metadata"] == "true"
    assert connector["decimal.handling.mode"] == "precise" and connector["publication.name"] == "ledgerwire"
    # The reference JSON is exactly what `ledgerwire source register` sends, logging in as the replication role.
    from daemon.operations.source_setup import debezium_connector_config

    assert connector == debezium_connector_config(host="shopdb", port=5432, dbname="shop", topic_prefix="shop")
    assert connector["database.user"] == "ledgerwire_cdc" and connector["database.password"].startswith("${env:")
    config = yaml.safe_load((REPO / "compose" / "ledgerwire.yml").read_text())
    from daemon.cli import build_parser
    from daemon.config import AppConfig

    app_config = AppConfig.model_validate(config)
    # An external shop database by setting a DSN: the reference database is an opt-in profile, and the
    # set-up / registration take the DSNs from the environment.
    assert services["shopdb"]["profiles"] == ["reference-shop"]
    assert "${SHOP_ADMIN_DSN" in services["source-init"]["environment"]["LEDGERWIRE_SOURCE_DSN"]
    assert "${SHOP_DSN" in services["register-connector"]["environment"]["LEDGERWIRE_SOURCE_DSN"]
    for name in ("source-init", "register-connector"):
        args = build_parser().parse_args(services[name]["command"])
        assert args.command == "source" and args.action in ("init", "register")
    assert "shopdb" not in services["register-connector"]["depends_on"]
    assert services["source-init"]["depends_on"]["shopdb"]["required"] is False
    assert services["connect"]["environment"]["CONNECT_CONFIG_PROVIDERS"] == "env"
    # Secret creation without a host install: the one-shot command in the file's header, into the volume the
    # daemon reads its key from, by the image's own uid (the Dockerfile creates that directory owned by it).
    header = (REPO / "compose" / "docker-compose.yml").read_text()
    command = re.search(r"docker compose run --rm --no-deps ledgerwire (secret-key --out \S+)", header).group(1)
    args = build_parser().parse_args(command.split())
    assert args.command == "secret-key" and Path(args.out) == app_config.secret_key_file
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["ledgerwire"]["volumes"]}
    assert mounts[str(app_config.secret_key_file.parent)] in compose["volumes"]  # a named volume
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"install -d -o ledgerwire -g ledgerwire -m 0700 {app_config.secret_key_file.parent}" in dockerfile
    assert dockerfile.index("install -d -o ledgerwire") < dockerfile.index("USER ledgerwire")
    # Metrics and the Web Connector endpoint on separate listeners; the endpoint with TLS.
    assert app_config.http.port != app_config.web_connector.port and app_config.web_connector.tls
    ports = {p.rsplit(":", 1)[-1] for p in services["ledgerwire"]["ports"]}
    assert ports == {str(app_config.http.port), str(app_config.web_connector.port)}
    assert str(app_config.web_connector.tls_certfile.parent) in mounts


def test_systemd_unit_is_notify_with_watchdog_and_sandboxing():
    unit = (REPO / "deploy" / "systemd" / "ledgerwire.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "LoadCredential=secret-key:", "TimeoutStopSec="):
        assert line in unit
    assert "--secret" not in unit and "PASSWORD" not in unit.upper()


@pytest.mark.stack
def test_real_prometheus_scrapes_a_daemon_run_and_every_dashboard_query_has_data(shop, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not installed (Debian package prometheus; scripts/bootstrap.sh installs it)")
    from connectors.quickbooks_online import Sandbox
    from daemon.localstack import generator
    from daemon.app import Daemon

    sandbox = Sandbox()
    server = sandbox.serve()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(sandbox.seed_credentials()))
    http_port, prom_port = free_port(), free_port()
    config = shop.app_config(targets=[sandbox.target_config("qbo", server.url) | {"credentials_file": str(credentials)}],
                             http={"port": http_port})
    daemon = Daemon(config)
    daemon.start()
    prom_dir = Path(tempfile.mkdtemp(prefix="prom-"))
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "ledgerwire", "static_configs": [{"targets": [f"127.0.0.1:{http_port}"]}]}]}))
    proc = subprocess.Popen([prometheus, f"--config.file={prom_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(shop.shop_dsn, autocommit=True) as conn:
            generator.seed_reference_data(conn, random.Random(2))
            generator.Workload(conn, seed=2).run(40, rate_per_s=20)
        time.sleep(15)  # several scrapes, so rate() has two points
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        empty = []
        for title, expr in dashboard_queries():
            query = expr.replace('target=~"$target"', 'target=~".*"')
            answer = httpx.get(f"{api}/query", params={"query": query}, timeout=10).json()
            assert answer["status"] == "success", (title, answer)
            if not answer["data"]["result"]:
                empty.append(title)
        assert not empty, f"dashboard panels without data: {empty}"
        groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        shipped = len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
        assert len(rules) == shipped and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        proc.terminate()
        proc.wait(10)
        daemon.shutdown()
        server.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)
    assert threading.active_count() >= 1
