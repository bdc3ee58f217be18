"""Symbols, not pixels: telling a uint8 grid of codes from an image (torch-free).

The learner reads every Box observation of rank 3 as an image, and a uint8 image as pixels
it divides by 255 (learner/training/models.py). A small grid of symbol codes declared as
such a Box, MiniGrid's ``Box(0, 255, (7, 7, 3), uint8)`` of object, colour and state ids
(0-10), then reaches the network as numbers below 0.04 whose size means nothing: in a
user's runs on MiniGrid-Empty-5x5 greedy play stayed at a return of 0.0, while the same
data declared as MultiDiscrete (one-hot per cell) was solved in 22 s. :func:`symbol_grid_warnings` finds
such parts from the declared bounds or a few observations, and says how to declare them.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from seed_rl.spaces import ObservationLayout, UnsupportedSpace, observation_layout

log = logging.getLogger(__name__)

#: A uint8 image whose values all stay below this is taken for codes, not pixel intensities.
SYMBOL_LIMIT = 32
#: Random steps sampled after the reset, at most (fewer when the episode ends).
SAMPLE_STEPS = 8


def symbol_grid_warnings(env: gym.Env, seed: int, steps: int = SAMPLE_STEPS) -> list[str]:
    """One warning per uint8 image part of ``env``'s observations that looks like a grid of
    symbol codes: declared with an upper bound below :data:`SYMBOL_LIMIT`, or whose values
    at a seeded reset and up to ``steps`` random steps all are (and not all 0). The env is
    reset and stepped only when it has a uint8 image part; a failure while sampling ends
    the sampling (the actors will report it), never the caller."""
    try:
        layout = observation_layout(env.observation_space)
    except UnsupportedSpace:  # the caller's space check says so
        return []
    candidates = [i for i, leaf in enumerate(layout.leaves)
                  if isinstance(leaf.space, gym.spaces.Box) and len(leaf.shape) == 3
                  and leaf.space.dtype == np.uint8]
    if not candidates:
        return []
    largest = {i: None for i in candidates}
    declared = {i for i in candidates if int(np.max(layout.leaves[i].space.high)) < SYMBOL_LIMIT}
    sampled = [i for i in candidates if i not in declared]
    rows = np.zeros((0, *layout.row_shape), layout.row_dtype)
    if sampled:
        rows = _sample_rows(env, layout, seed, steps)
        if len(rows):
            parts = layout.unpack(rows)
            largest.update({i: int(parts[i].max()) for i in sampled})
    warnings = []
    for i in candidates:
        leaf = layout.leaves[i]
        where = f" {leaf.path!r}" if leaf.path else ""
        if i in declared:
            seen = f"declared with values up to {int(np.max(leaf.space.high))}"
        elif largest[i] is not None and 0 < largest[i] < SYMBOL_LIMIT:
            seen = (f"whose values at reset and in {len(rows) - 1} random step(s) stay "
                    f"below {SYMBOL_LIMIT} (the largest: {largest[i]})")
        else:
            continue
        warnings.append(
            f"the observation{where} is a uint8 image of shape {list(leaf.shape)} {seen}: it "
            "looks like a grid of symbol codes (object, colour or state ids, as MiniGrid's), "
            "not pixels. The conv torso divides uint8 images by 255, so each code reaches "
            "the network as a tiny number whose size means nothing, and it may learn nothing. "
            "Declare it as MultiDiscrete (one-hot per cell) with a gymnasium "
            "ObservationWrapper given as --env-wrapper MODULE:CALLABLE (examples/symbols.py; "
            "README, \"Your own environment\")")
    return warnings


def _sample_rows(env: gym.Env, layout: ObservationLayout, seed: int,
                 steps: int) -> np.ndarray:
    """The observation rows of a seeded reset and up to ``steps`` random steps (fewer, or
    none, when the environment fails: advisory, its failures surface in the actors)."""
    rows = np.zeros((steps + 1, *layout.row_shape), layout.row_dtype)
    taken = 0
    try:
        observation, _ = env.reset(seed=seed)
        layout.write(rows, taken, observation)
        taken += 1
        env.action_space.seed(seed)
        for _ in range(steps):
            observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
            layout.write(rows, taken, observation)
            taken += 1
            if terminated or truncated:
                break
    except Exception:
        log.debug("sampling observations for the symbol-grid check failed", exc_info=True)
    return rows[:taken]
