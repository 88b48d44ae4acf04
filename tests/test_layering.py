"""Issue #12's layering, read from the source: connectors import only the canonical model and config types
from the daemon, and production code never imports a sandbox (sandboxes are loaded by name for tests and the
local stack's demo)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# daemon.sink.schedule: the pure, clock-injected window arithmetic of the config's ``Schedule`` (no I/O, no state),
# which Patriot's file export uses to cut its periods exactly where the sink opens its windows.
DAEMON_TYPES_CONNECTORS_MAY_USE = {"daemon.canonical", "daemon.config", "daemon.sink.schedule"}
SANDBOX_MODULES = ("connectors.sandbox_kit", "connectors.testing")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def is_sandbox(module: str) -> bool:
    return module.startswith(SANDBOX_MODULES) or module.split(".")[-1] == "sandbox" or module.endswith(".Sandbox")


def production_files(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if not is_sandbox(".".join(p.relative_to(ROOT).with_suffix("").parts))]


def test_connectors_import_only_the_canonical_model_and_config_types_from_the_daemon():
    offending = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in production_files("connectors") for module in imports(path)
        if module.startswith("daemon") and module != "daemon"
        and not any(module == t or module.startswith(t + ".") for t in DAEMON_TYPES_CONNECTORS_MAY_USE)
    }
    assert not offending, sorted(offending)


def test_production_code_never_imports_a_sandbox():
    # daemon/localstack is the local stack and its demo: it serves the sandboxes by design.
    files = [p for p in production_files("daemon") if "localstack" not in p.parts] + production_files("connectors")
    offending = {f"{path.relative_to(ROOT)}: {module}" for path in files for module in imports(path) if is_sandbox(module)}
    assert not offending, sorted(offending)
