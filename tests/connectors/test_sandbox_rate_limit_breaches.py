"""Every registered connector's sandbox reports breaches of its platform's request limits the same way
(``rate_limit_breaches() -> int``), which the every-connector chaos test asserts to be 0 on each target."""

from __future__ import annotations

import importlib

import pytest

from connectors.registry import PLATFORM_PACKAGES, known_platforms


@pytest.mark.parametrize("platform", known_platforms())
def test_every_sandbox_counts_rate_limit_breaches_uniformly(platform):
    module = importlib.import_module(PLATFORM_PACKAGES[platform])
    sandbox = module.Sandbox(**getattr(module, "LOCAL_SANDBOX_OPTIONS", {}))
    breaches = sandbox.rate_limit_breaches()
    assert isinstance(breaches, int) and breaches == 0
