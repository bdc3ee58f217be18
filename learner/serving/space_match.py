"""Whether an actor's spaces are the learner's, and if not, the first difference in words.

Used by the handshake check (learner/serving/validation.py): an actor whose environment differs from
the learner's (type, shape, dtype, bounds, n, start, Dict keys and their order) is refused
with what differs and where, never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from seed_rl import wire


@dataclass(frozen=True)
class SpaceMismatch:
    """Why two spaces differ, in words a person can act on."""

    what: str


def space_mismatch(expected: gym.Space, got: gym.Space) -> SpaceMismatch | None:
    """None when ``got`` equals ``expected`` exactly (type, shape, dtype, bounds, n, start,
    Dict keys and their order, recursively); else the first difference, with where."""
    return _mismatch(expected, got, "")


def _mismatch(expected: gym.Space, got: gym.Space, path: str) -> SpaceMismatch | None:
    at = f"at {path}: " if path else ""
    sides = f"learner has {wire.describe_space(expected)}, actor has {wire.describe_space(got)}"
    differ = SpaceMismatch(f"{at}{sides}")
    if type(expected) is not type(got):
        return differ
    if isinstance(expected, gym.spaces.Discrete):
        return differ if (expected.n, expected.start) != (got.n, got.start) else None
    if isinstance(expected, gym.spaces.Box):
        if expected.shape != got.shape or expected.dtype != got.dtype:
            return differ
        if not (np.array_equal(expected.low, got.low) and np.array_equal(expected.high, got.high)):
            return SpaceMismatch(f"bounds differ{' ' + at[:-2] if path else ''}: {sides}")
        return None
    if isinstance(expected, gym.spaces.MultiDiscrete):
        same = (expected.shape == got.shape and expected.dtype == got.dtype
                and np.array_equal(expected.nvec, got.nvec)
                and np.array_equal(expected.start, got.start))
        return None if same else differ
    if isinstance(expected, gym.spaces.MultiBinary):
        return None if expected.shape == got.shape else differ
    if isinstance(expected, gym.spaces.Dict):
        mine, theirs = list(expected.spaces), list(got.spaces)
        if mine != theirs:
            order = (" (the same keys in another order: packed observations follow the "
                     "order)" if sorted(map(str, mine)) == sorted(map(str, theirs)) else "")
            return SpaceMismatch(wire.shorten(f"{at}Dict keys differ{order}: learner has {mine}, "
                                      f"actor has {theirs}"))
        for key in mine:
            found = _mismatch(expected[key], got[key], f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(expected, gym.spaces.Tuple):
        if len(expected.spaces) != len(got.spaces):
            return SpaceMismatch(f"{at}Tuple lengths differ ({len(expected.spaces)} and "
                                 f"{len(got.spaces)}): {sides}")
        for index, (mine_sub, theirs_sub) in enumerate(zip(expected.spaces, got.spaces,
                                                           strict=True)):
            found = _mismatch(mine_sub, theirs_sub, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return SpaceMismatch(f"unsupported space {wire.describe_space(expected)}")
