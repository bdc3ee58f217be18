"""Every test under tests/integration/ and tests/deploy/ is marked ``slow`` by its folder
(tests/conftest.py), so ``pytest -m "not slow"`` leaves them out and they may start
processes."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_integration_tests_are_slow_and_may_start_processes(
        request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("slow") is not None
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0
