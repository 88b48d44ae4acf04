#!/usr/bin/env bash
# Installs what Ledgerwire needs on a fresh Debian machine, only what is missing, and leaves the host alone:
#   - PostgreSQL server binaries (Debian's package; the local stack runs its own initdb'd cluster on its
#     own ports, so a packaged cluster the host runs may keep running),
#   - a Java 17 runtime and Maven (Kafka, Kafka Connect and Debezium jars come from Maven Central,
#     pinned in stack/pom.xml and fetched on first `ledgerwire stack up`),
#   - Prometheus' promtool (the Grafana/alert-rule tests), systemd-analyze (the unit-file tests),
#   - a project virtual environment ($LEDGERWIRE_VENV, default .venv) with this package and its test
#     extras (editable): never the system interpreter (PEP 668 refuses that on Debian 12 anyway).
#
# It never stops, disables or kills anything. A package whose install would start a service (Debian starts
# packaged PostgreSQL and Prometheus) is kept from starting by a policy-rc.d written *before* the install and
# removed afterwards — only when the host has none of its own (an existing policy-rc.d is left as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LEDGERWIRE_VENV:-.venv}
SYSTEM_PYTHON=${LEDGERWIRE_SYSTEM_PYTHON:-python3}
POLICY_RC=/usr/sbin/policy-rc.d

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || need+=(chromium chromium-driver)  # console browser tests
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v "$SYSTEM_PYTHON" >/dev/null 2>&1 || need+=(python3)
if [ ! -x "$VENV/bin/python" ] && ! "$SYSTEM_PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing ${need[*]}"
  written_policy=""
  if [ ! -e "$POLICY_RC" ]; then
    # 101 = "action forbidden": invoke-rc.d / deb-systemd-invoke start nothing during this install.
    printf '#!/bin/sh\n# written by ledgerwire scripts/bootstrap.sh for one apt-get install; removed after it\nexit 101\n' \
      | $SUDO tee "$POLICY_RC" >/dev/null
    $SUDO chmod 0755 "$POLICY_RC"
    written_policy=1
    trap '[ -n "$written_policy" ] && $SUDO rm -f "$POLICY_RC"' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ -n "$written_policy" ]; then
    $SUDO rm -f "$POLICY_RC"
    written_policy=""
  fi
fi

# The project's own interpreter. --system-site-packages reuses what the machine already has (nothing is
# installed outside the venv); pip adds the rest into it.
# The venv is made from the interpreter's real path: a venv made through a symlink (a pyenv shim, a temporary
# PATH directory) records that link as its home and breaks when the link goes. A venv without a working
# interpreter (such a broken one) is made again from scratch (--clear).
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "" >/dev/null 2>&1; then
  echo "bootstrap: creating the virtual environment $VENV"
  REAL_PYTHON=$("$SYSTEM_PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
  "$REAL_PYTHON" -m venv --clear --system-site-packages "$VENV"
fi
STAMP="$VENV/.ledgerwire-installed"
if [ pyproject.toml -nt "$STAMP" ] \
   || ! "$VENV/bin/python" -c "import daemon.cli, pytest, hypothesis, xmlschema, openapi_core, yaml" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
  touch "$STAMP"
fi
echo "bootstrap: ok ($VENV/bin/python)"
