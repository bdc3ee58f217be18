"""Start a real in-process learner on a free loopback port for a test."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from learner.running.learner import Learner
from seed_rl.config import Config, validate


def make_config(tmp_path, **overrides) -> Config:
    values = dict(address="127.0.0.1:0", logdir=str(tmp_path / "run"), log_every=0.5,
                  checkpoint_every=3600.0, max_wait_ms=1.0, status_every=0.0)
    values.update(overrides)
    config = dataclasses.replace(Config(), **values)
    validate(config)
    return config


@contextlib.contextmanager
def running_learner(config: Config, train: bool = True) -> Iterator[Learner]:
    """A started learner; stops it (final checkpoint included) on exit."""
    learner = Learner(config)
    learner.start(train=train)
    try:
        yield learner
    finally:
        learner.request_stop("test finished")
        learner.shutdown()
