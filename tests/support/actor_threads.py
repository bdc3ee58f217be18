"""Actors of the test process: run_actor in a thread against a stand-in learner.

A config for the RevealAction environment (the slot convention made visible), an actor
thread that stops through its event, and a run that lasts until the stand-in ends training.
"""

from __future__ import annotations

import threading

from actors.counters import Counters
from actors.groups import run_actor
from seed_rl.config import Config
from support.procs import WAIT
from support.stand_in_learner import StandInLearner

REVEAL = "seed_rl.testing:RevealAction-v0"


def make_config(address: str, **overrides) -> Config:
    values = dict(
        learner=address,
        env=REVEAL,
        env_kwargs={"episode_length": 3, "truncate": False},
        envs_per_actor=3,
        actor_id_prefix="test",
        reconnect_max_backoff=0.2,
        status_every=0.5,
        seed=0,
    )
    values.update(overrides)
    return Config(**values)


class ActorThread:
    """run_actor in a thread of the test process, stoppable through its stop event."""

    def __init__(self, config: Config, index: int = 0, counters: Counters | None = None):
        self.stop = threading.Event()
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, args=(config, index, counters),
                                       name=f"test-actor-{index}", daemon=True)
        self.thread.start()

    def _run(self, config: Config, index: int, counters: Counters | None) -> None:
        self.rc = run_actor(config, index, stop=self.stop, counters=counters)

    def join(self, timeout: float = WAIT) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the actor did not return within {timeout} s"
        assert self.rc is not None
        return self.rc


def run_to_end(learner: StandInLearner, config: Config, index: int = 0) -> int:
    """Run an actor until the stand-in says training is over."""
    actor = ActorThread(config, index)
    try:
        return actor.join()
    finally:
        actor.stop.set()
