"""A role that cannot start says so on one line that names the role once: ``seed-rl ROLE:
error: WHAT TO DO`` (issue 25: lines read ``seed-rl train: seed-rl train: ...`` and
``seed-rl learner: learner: ...``). Each case runs the real console script as a user
would, with an input that fails before anything trains."""

from __future__ import annotations

import pytest

from seed_rl import cli


@pytest.mark.parametrize("message", [
    "--episodes must be positive",
    "seed-rl eval: --episodes must be positive",  # raised with the prefix already
    "seed-rl eval: error: --episodes must be positive",
])
def test_error_line_adds_the_prefix_exactly_once(message: str) -> None:
    assert cli.error_line("eval", message) == "seed-rl eval: error: --episodes must be positive"
