"""Shared fixtures. The official platform specs are read from $LEDGERWIRE_SPECS_DIR (default
../shared/specs beside the repository); spec tests skip with a clear reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def specs_dir() -> Path:
    return Path(os.environ.get("LEDGERWIRE_SPECS_DIR", REPO.parent / "shared" / "specs")).resolve()


@pytest.fixture(scope="session")
def specs() -> Path:
    path = specs_dir()
    if not path.is_dir():
        pytest.skip(f"official specs not found at {path} (set LEDGERWIRE_SPECS_DIR)")
    return path
