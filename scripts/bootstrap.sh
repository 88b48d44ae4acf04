#!/usr/bin/env bash
# Installs everything Ledgerwire needs on a fresh Debian machine, and nothing twice:
#   - PostgreSQL server (Debian's package; the local stack runs its own initdb'd cluster),
#   - a Java 17 runtime and Maven (Kafka, Kafka Connect and Debezium jars come from Maven Central,
#     pinned in stack/pom.xml and fetched on first `ledgerwire stack up`),
#   - Prometheus' promtool (the Grafana/alert-rule tests),
#   - the Python package with its test extras (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || need+=(chromium chromium-driver)  # console browser tests
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts a packaged PostgreSQL cluster and Prometheus on install; Ledgerwire runs its own.
  $SUDO systemctl disable --now postgresql prometheus >/dev/null 2>&1 || true
  $SUDO service postgresql stop >/dev/null 2>&1 || true
  $SUDO pkill -x prometheus >/dev/null 2>&1 || true
fi

PYTHON=${PYTHON:-python3}
if ! $PYTHON -c "import daemon.cli, pytest, hypothesis, xmlschema, openapi_core" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .stack/.pip-stamp ]; then
  $PYTHON -m pip install -q --disable-pip-version-check -e ".[test]"
  mkdir -p .stack && touch .stack/.pip-stamp
fi
echo "bootstrap: ok"
