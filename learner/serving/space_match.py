"""Whether an actor's spaces are the learner's, and if not, the first difference in words.

Used by the handshake check (learner/serving/validation.py): an actor whose environment differs from
the learner's (type, shape, dtype, bounds, n, start, Dict keys and their order) is refused
with what differs, where (the path of the part inside a Dict / Tuple), and both sides'
values: Box bounds and MultiDiscrete nvec / start are compared element by element, so the
message names the first element that differs and prints both arrays (shortened when large)
with every value exact. An actor written in another language can then see that, say, its
float32 bound is not the learner's, or that it sent inf where the learner has the float32
maximum (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from seed_rl import wire

EDGE_VALUES = 3  # a large array prints its first and last this many values
MAX_MISMATCH = 1600  # characters of one mismatch (a hostile handshake controls part of it)
#: the arrays of a space kind compared element by element and printed value by value
ARRAYS = {gym.spaces.Box: ("low", "high"), gym.spaces.MultiDiscrete: ("nvec", "start")}


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
    names = next((names for kind, names in ARRAYS.items() if isinstance(expected, kind)), None)
    if names is not None:  # Box, MultiDiscrete
        if expected.shape != got.shape or expected.dtype != got.dtype:
            return differ
        found = [d for d in (_first_difference(name, getattr(expected, name),
                                               getattr(got, name)) for name in names) if d]
        if not found:
            return None
        lead = (f"bounds differ{' ' + at[:-2] if path else ''}: "
                if isinstance(expected, gym.spaces.Box) else at)
        return SpaceMismatch(wire.shorten(
            f"{lead}{'; '.join(found)}; learner has {_arrays_text(expected, names)}, actor "
            f"has {_arrays_text(got, names)}", MAX_MISMATCH))
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


def _first_difference(name: str, mine: np.ndarray, theirs: np.ndarray) -> str | None:
    """``NAME[i, j] is A on the learner, B on the actor (N of M values differ)`` for the
    first element (C order) where two arrays of one shape differ; None when none does."""
    differs = mine != theirs
    if not differs.any():
        return None
    positions = np.flatnonzero(differs)
    index = np.unravel_index(positions[0], mine.shape)
    where = f"[{', '.join(str(int(i)) for i in index)}]" if mine.ndim else ""
    return (f"{name}{where} is {_value(mine[index])} on the learner, {_value(theirs[index])} on "
            f"the actor ({positions.size} of {mine.size} values differ)")


def _value(scalar: np.generic) -> str:
    """One value, exactly: the shortest text that reads back as the same value of its dtype
    (a float32 prints as float32, so two different float32 values never print alike)."""
    return str(scalar)


def _values_text(array: np.ndarray) -> str:
    """All values of ``array`` flattened in C order, each exact; one value when they are
    all equal; the first and last EDGE_VALUES when there are many."""
    flat = array.reshape(-1)
    if flat.size and (flat == flat[0]).all():
        return _value(flat[0])
    if flat.size <= 2 * EDGE_VALUES:
        return f"[{', '.join(map(_value, flat))}]"
    head, tail = flat[:EDGE_VALUES], flat[-EDGE_VALUES:]
    return f"[{', '.join(map(_value, head))}, ..., {', '.join(map(_value, tail))}]"


def _arrays_text(space: gym.Space, names: tuple[str, str]) -> str:
    """The space with its arrays ``names`` printed value by value (describe_space hides
    varied ones): ``Box(shape=.., dtype=.., low=.., high=..)``, likewise MultiDiscrete."""
    arrays = ", ".join(f"{name}={_values_text(getattr(space, name))}" for name in names)
    return f"{type(space).__name__}(shape={tuple(space.shape)}, dtype={space.dtype}, {arrays})"
