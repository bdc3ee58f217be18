"""A checkpoint to play and ``seed-rl eval`` run in this process, for the eval tests."""

from __future__ import annotations

import re

from learner.running.learner import Learner
from seed_rl import cli
from support.learner_harness import make_config

WAIT = 60.0


def make_checkpoint(tmp_path, **overrides):
    """A real learner's checkpoint of an untrained model; returns the logdir."""
    config = make_config(tmp_path, hidden_sizes=[16, 16], **overrides)
    learner = Learner(config)
    try:
        assert learner.save_checkpoint() is not None
    finally:
        learner.metrics.close()
    return tmp_path / "run"


def run_eval(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(["eval", *argv])
    return rc, capsys.readouterr().out


STATS = re.compile(r"return  mean (\S+)  std (\S+)  min (\S+)  max (\S+)")
