"""RevealAction (seed_rl.testing), the environment whose rewards reveal the action taken at
the previous step, as the fault tests use it: its ``--env`` flags, and a check that an unroll
was not torn (steps of two incarnations or two environments glued together)."""

from __future__ import annotations

import json

import numpy as np

REVEAL = "seed_rl.testing:RevealAction-v0"
REVEAL_EPISODE = 4


def reveal_flags(**kwargs) -> str:
    """``--env``/``--env-kwargs`` flags of RevealAction (kwargs as compact JSON)."""
    kwargs = {"episode_length": REVEAL_EPISODE, **kwargs}
    return f"--env {REVEAL} --env-kwargs {json.dumps(kwargs, separators=(',', ':'))}"


def check_untorn(unrolls, episode_length: int) -> int:
    """Every transition of ``unrolls`` follows RevealAction's dynamics; returns how many
    were checked. A torn unroll (steps of two incarnations or two environments glued
    together) breaks the step counter, the episode counter or the reward that reveals
    the action taken at the previous step."""
    obs = unrolls.observations  # [T+1, N, 2]: (t within the episode, episode)
    t, episode = obs[..., 0], obs[..., 1]
    starts = unrolls.terminated[1:] | unrolls.truncated[1:]
    expected_reward = 10 * t[:-1] + unrolls.actions[:-1]
    np.testing.assert_array_equal(unrolls.rewards[1:], expected_reward)
    np.testing.assert_array_equal(t[1:], np.where(starts, 0, t[:-1] + 1))
    np.testing.assert_array_equal(episode[1:], np.where(starts, episode[:-1] + 1, episode[:-1]))
    assert (t[:-1][starts] == episode_length - 1).all()
    return starts.size
