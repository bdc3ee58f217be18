"""The README's promises that a test can keep: its Python example runs, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from seed_rl import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_functional_example_runs_and_backpropagates() -> None:
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(),
                                                flags=re.S) if "seed_rl.functional" in block]
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)  # noqa: S102 - our own README
    assert torch.isfinite(scope["total"])
    assert scope["values"].grad is not None and scope["target_logits"].grad is not None
    assert scope["behaviour_logits"].grad is None  # nothing reaches the behaviour policy


def test_every_seed_rl_command_in_the_readme_parses() -> None:
    parser = cli.build_parser()
    commands = re.findall(r"^\s*(?:[A-Z_]+=\S+ )*seed-rl (\w+[^#\n]*)", README.read_text(), re.M)
    assert len(commands) >= 8
    for command in commands:
        argv = command.split()
        args = parser.parse_args(argv)  # exits (SystemExit) on an unknown flag
        assert args.role in cli.ROLES, command


def test_the_custom_environment_in_the_readme_is_examples_catch() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    catch = (README.parent / "examples" / "catch.py").read_text()
    assert catch in blocks
