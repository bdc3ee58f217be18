"""The test layout's rule (tests/conftest.py): outside tests/integration/ and tests/deploy/,
a test that starts a process fails, so ``pytest -m "not slow"`` never starts one."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest
from conftest import PROCESS_ATTEMPTS, ProcessStarted


def test_a_unit_test_cannot_start_a_subprocess(request: pytest.FixtureRequest) -> None:
    with pytest.raises(ProcessStarted, match="belongs in tests/integration/"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    assert request.node.stash[PROCESS_ATTEMPTS] == ["subprocess._fork_exec"]
    request.node.stash[PROCESS_ATTEMPTS].clear()  # provoked on purpose


def test_a_unit_test_cannot_start_a_multiprocessing_child(
        request: pytest.FixtureRequest) -> None:
    process = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(ProcessStarted):
        process.start()
    assert request.node.stash[PROCESS_ATTEMPTS]
    request.node.stash[PROCESS_ATTEMPTS].clear()  # provoked on purpose


def test_unit_tests_are_not_slow(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("slow") is None
