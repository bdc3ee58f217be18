"""Unrolls for tests: random ones for the update (CartPole-shaped by default: 4 floats,
2 actions), and step-by-step ones from an UnrollBuilder whose observations name their step."""

from __future__ import annotations

import numpy as np

from learner.training.store import UnrollBuilder, Unrolls


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


# the builder of feed(): unrolls of T steps (T + 1 slots), K environments, A actions
T, K, A = 4, 3, 2


def feed(builder: UnrollBuilder, steps: int, version: int = 0, start: int = 0) -> list[Unrolls]:
    """Write ``steps`` rows whose observation is the global step index (per env: + 1000*k)."""
    out = []
    for step in range(start, start + steps):
        obs = (step + 1000 * np.arange(K)).astype(np.float32)[:, None]
        unrolls = builder.add_step(
            observations=obs,
            rewards=np.full(K, step, np.float32),
            terminated=np.zeros(K, bool),
            truncated=np.zeros(K, bool),
            truncation_values=np.zeros(K, np.float32),
            actions=np.full(K, step % A),
            behaviour_params=np.zeros((K, A), np.float32),
            policy_version=version,
            core_state_before=(np.full((K, 5), step, np.float32),),
        )
        if unrolls is not None:
            out.append(unrolls)
    return out


def make_builder() -> UnrollBuilder:
    return UnrollBuilder(T, K, (1,), np.dtype(np.float32), A, core_state_shapes=((K, 5),))
