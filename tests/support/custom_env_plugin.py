"""An environment plugin for the ``--env-import`` tests (tests/unit/test_actor_spaces.py).

Importing this module registers ``CustomPluginImport-v0``; ``register_envs()`` registers
``CustomPlugin-v0`` (again, when a test removed it) and records each call in ``CALLS``.
Both are RevealAction with 3-step episodes. ``TextObservation-v0`` has a Text observation
space, which seed-rl cannot carry. ``CrashOnSeed-v0`` is RevealAction whose ``step``
raises in the one env that was reset with ``crash_seed`` (tests/unit/test_actor_groups.py).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from seed_rl.testing import RevealActionEnv

CALLS: list[int] = []  # the pid of each register_envs() call


def register_envs() -> None:
    CALLS.append(os.getpid())
    gym.registry.pop("CustomPlugin-v0", None)
    gym.register("CustomPlugin-v0", entry_point=RevealActionEnv, kwargs={"episode_length": 3})


class TextObservationEnv(gym.Env):
    observation_space = gym.spaces.Text(5)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return "hello", {}

    def step(self, action):
        return "hello", float(np.int64(action)), False, False, {}


class CrashOnSeedEnv(RevealActionEnv):
    def __init__(self, crash_seed: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.crash_seed = crash_seed
        self.seed_given: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.seed_given = seed
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.seed_given == self.crash_seed:
            raise RuntimeError(f"the env seeded {self.crash_seed} exploded")
        return super().step(action)


if "CustomPluginImport-v0" not in gym.registry:
    gym.register("CustomPluginImport-v0", entry_point=RevealActionEnv,
                 kwargs={"episode_length": 3})
if "TextObservation-v0" not in gym.registry:
    gym.register("TextObservation-v0", entry_point=TextObservationEnv)
if "CrashOnSeed-v0" not in gym.registry:
    gym.register("CrashOnSeed-v0", entry_point=CrashOnSeedEnv)
