#!/usr/bin/env python3
"""Connector sizes against issue #12's targets: connector.py ≤ 350 lines, connector + mapping + client +
settings ≤ 600, per platform; and whether the connector runs on the delivery engine.

    python3 scripts/connector_lines.py          # table; exit 1 when a connector on the engine is over target
"""

from __future__ import annotations

import sys
from pathlib import Path

CONNECTOR_MAX = 350
CORE_MAX = 600
CORE_FILES = ("connector.py", "mapping.py", "client.py", "settings.py")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "connectors"
    over = False
    print(f"{'platform':<22}{'connector.py':>14}{'core (4 files)':>16}  engine  verdict")
    for package in sorted(p for p in root.iterdir() if (p / "connector.py").exists()):
        connector = lines(package / "connector.py")
        core = sum(lines(package / name) for name in CORE_FILES)
        on_engine = "EngineConnector" in (package / "connector.py").read_text()
        ok = connector <= CONNECTOR_MAX and core <= CORE_MAX
        over |= on_engine and not ok
        verdict = "ok" if ok else ("OVER TARGET" if on_engine else "over (not ported yet)")
        print(f"{package.name:<22}{connector:>9}/{CONNECTOR_MAX}{core:>11}/{CORE_MAX}  {'yes' if on_engine else 'no ':<6}  {verdict}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
