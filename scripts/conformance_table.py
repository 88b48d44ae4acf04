#!/usr/bin/env python3
"""The conformance suite's connector × scenario table (issue #12), from a real run of the suite.

    python3 scripts/conformance_table.py                 # run tests/conformance, print the Markdown table
    python3 scripts/conformance_table.py --write README.md   # and put it between the README's markers
    python3 scripts/conformance_table.py --from report.xml   # build it from an earlier run's JUnit XML

Each cell is what that scenario did for that platform: ✓ passed, · skipped (a capability the platform does not
have; the reasons are listed under the table), x expected failure (a rule not yet met on that platform, named
in the scenario), F failed. Exit 1 when any scenario failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("tests/conformance/test_conformance.py", "tests/conformance/test_conformance_books.py",
          "tests/conformance/test_conformance_refunded.py")
START, END = "<!-- conformance-table:start -->", "<!-- conformance-table:end -->"
MARK = {"passed": "✓", "skipped": "·", "xfailed": "x", "failed": "F"}


def run_suite(report: Path) -> None:
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES,
                    f"--junitxml={report}", "-o", "junit_family=xunit1"], cwd=ROOT, check=False)


def outcomes(report: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """scenario -> platform -> outcome, and platform -> skip reason -> scenarios' count (as text)."""
    table: dict[str, dict[str, str]] = defaultdict(dict)
    reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in ET.parse(report).getroot().iter("testcase"):
        match = re.match(r"test_(?:conformance|books)_(.+?)\[([^\]]+)\]$", case.get("name", ""))
        if not match:
            continue
        scenario, platform = match.group(1), match.group(2)
        platform = re.sub(r"-(-?\d+\.\d+)$", "", platform)  # a scenario parametrised beyond the platform (cents)
        skipped = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            outcome = "xfailed"
        elif skipped is not None:
            outcome = "skipped"
            reason = (skipped.get("message") or "").replace("Skipped: ", "")
            reason = reason.split(": ", 1)[1] if reason.startswith(platform + ":") else reason
            reasons[platform][reason] += 1
        else:
            outcome = "passed"
        previous = table[scenario].get(platform)
        # A scenario run for several parameters shows its worst outcome.
        order = ["passed", "skipped", "xfailed", "failed"]
        if previous is None or order.index(outcome) > order.index(previous):
            table[scenario][platform] = outcome
    return table, reasons


def markdown(table: dict[str, dict[str, str]], reasons: dict[str, dict[str, int]]) -> str:
    platforms = sorted({p for row in table.values() for p in row})
    head = "| scenario | " + " | ".join(f"{i + 1}" for i in range(len(platforms))) + " |"
    lines = [head, "|---|" + "---|" * len(platforms)]
    for scenario in table:
        cells = [MARK[table[scenario].get(p, "skipped")] for p in platforms]
        lines.append(f"| {scenario.replace('_', ' ')} | " + " | ".join(cells) + " |")
    key = ", ".join(f"{i + 1} {p}" for i, p in enumerate(platforms))
    lines += ["", f"Columns: {key}. ✓ passed, · skipped (capability off), x expected failure, F failed.", ""]
    for platform in platforms:
        if reasons.get(platform):
            said = "; ".join(f"{reason} ({n})" for reason, n in sorted(reasons[platform].items()))
            lines.append(f"- {platform}, skipped: {said}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    parser.add_argument("--from", dest="source", type=Path, help="an earlier run's JUnit XML")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = args.source or Path(tmp) / "conformance.xml"
        if args.source is None:
            run_suite(report)
        table, reasons = outcomes(report)
    text = markdown(table, reasons)
    print(text)
    if args.write:
        document = args.write.read_text()
        if START not in document or END not in document:
            raise SystemExit(f"{args.write}: the markers {START} and {END} are missing")
        before, rest = document.split(START, 1)
        document = before + START + "\n" + text + "\n" + END + rest.split(END, 1)[1]
        args.write.write_text(document)
    return 1 if any(o == "failed" for row in table.values() for o in row.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
