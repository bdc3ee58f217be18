"""Random unrolls for tests of the update: CartPole-shaped by default (4 floats, 2 actions)."""

from __future__ import annotations

import numpy as np

from learner.training.store import Unrolls


def random_unrolls(seed: int, T: int, B: int, *, obs_size: int = 4, actions: int = 2,
                   lstm: int = 0) -> Unrolls:
    """B complete unrolls of T+1 slots, all acted by policy version 0; with ``lstm`` > 0,
    a random initial core state (h, c) of that width."""
    rng = np.random.default_rng(seed)
    core = (rng.standard_normal((B, lstm)).astype(np.float32),
            rng.standard_normal((B, lstm)).astype(np.float32)) if lstm else ()
    return Unrolls(
        observations=rng.standard_normal((T + 1, B, obs_size)).astype(np.float32),
        rewards=rng.standard_normal((T + 1, B)).astype(np.float32),
        terminated=rng.random((T + 1, B)) < 0.2,
        truncated=np.zeros((T + 1, B), bool),
        truncation_values=np.zeros((T + 1, B), np.float32),
        actions=rng.integers(0, actions, (T + 1, B)),
        behaviour_params=rng.standard_normal((T + 1, B, actions)).astype(np.float32),
        policy_versions=np.zeros((T + 1, B), np.int64),
        core_state=core,
    )
