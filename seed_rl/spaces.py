"""Which gymnasium spaces seed-rl carries, and how their values travel and are stored.

Observations of K environments always travel (and sit in the learner's store) as ONE array
``[K, *row_shape]`` of one dtype, so the wire, the store and the batcher never look inside:

* a single space travels as itself: Box of any shape and dtype (bool and uint8 stay one
  byte per value), Discrete as int64 ``[K]`` (the value, ``start`` included),
  MultiDiscrete as int64 ``[K, *nvec.shape]``, MultiBinary as int8 ``[K, *n]``;
* Dict and Tuple spaces (nested too) travel packed: the bytes of every leaf, in the
  space's own order (a Dict's keys as gymnasium keeps them), concatenated into a uint8
  row ``[K, nbytes]``. Each leaf keeps its own dtype inside the row, so images stay one byte per pixel; the learner's
  model takes views of the row (:meth:`ObservationLayout.unpack`).

Actions travel as int64 ``[K]`` (Discrete), int64 ``[K, n]`` (MultiDiscrete) or float32
``[K, *shape]`` (Box). The learner samples Discrete and MultiDiscrete actions as 0-based
indices and adds ``start`` before sending. A Box action is the raw sample of the learner's
Gaussian policy: the actor clips it to the bounds just before ``env.step`` (:meth:`ActionLayout
.to_env`), the way gymnasium's ClipAction wrapper does. Clipping, not squashing: the action
sent is the one whose log-probability V-trace uses, with no change-of-variables term, and a
tanh squash would need one and pushes the mean towards saturation.

Torch-free: actors import this module. Anything else (Text, Graph, Sequence, spaces whose
leaves are not one of the above) is refused with :class:`UnsupportedSpace`, naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


class UnsupportedSpace(ValueError):
    """seed-rl cannot carry this space; the text names it and says what would work."""


@dataclass(frozen=True)
class Leaf:
    """One non-composite part of an observation space and where it sits in a row."""

    path: str  # "" for a single space; "image", "0", "sensors.position" inside Dict/Tuple
    space: gym.Space
    shape: tuple[int, ...]  # per environment, as it travels
    dtype: np.dtype
    offset: int  # byte offset inside a packed row (0 when not packed)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _leaf_format(space: gym.Space, path: str) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(space, gym.spaces.Box):
        return tuple(space.shape), np.dtype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return tuple(space.nvec.shape), np.dtype(np.int64)
    if isinstance(space, gym.spaces.MultiBinary):
        return tuple(np.atleast_1d(space.n).tolist()), np.dtype(np.int8)
    where = f" at {path!r}" if path else ""
    raise UnsupportedSpace(
        f"observation space {space}{where} ({type(space).__name__}) is not supported: seed-rl "
        "carries Box, Discrete, MultiDiscrete, MultiBinary and Dict/Tuple of those; wrap the "
        "environment to turn it into one of these (--env-wrapper MODULE:CALLABLE, README: "
        "\"Your own environment\")")


def _leaves(space: gym.Space, path: str = "") -> list[tuple[str, gym.Space]]:
    if isinstance(space, gym.spaces.Dict):
        return [leaf for key, sub in space.spaces.items()
                for leaf in _leaves(sub, f"{path}.{key}" if path else str(key))]
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for index, sub in enumerate(space.spaces)
                for leaf in _leaves(sub, f"{path}.{index}" if path else str(index))]
    return [(path, space)]


@dataclass(frozen=True)
class ObservationLayout:
    """How one environment's observation becomes one row of the observations array."""

    space: gym.Space
    leaves: tuple[Leaf, ...]
    packed: bool  # Dict/Tuple: leaves packed as bytes into a uint8 row
    row_shape: tuple[int, ...]
    row_dtype: np.dtype

    def write(self, rows: np.ndarray, index: int, observation: object) -> None:
        """Write ``observation`` (as the env returned it) into ``rows[index]``."""
        if not self.packed:
            rows[index] = observation
            return
        row = rows[index]
        for leaf, value in zip(self.leaves, _leaf_values(observation, self.space), strict=True):
            part = np.asarray(value, dtype=leaf.dtype).reshape(leaf.shape)
            row[leaf.offset:leaf.offset + leaf.nbytes] = part.reshape(-1).view(np.uint8)

    def unpack(self, rows: np.ndarray) -> list[np.ndarray]:
        """The leaves of ``rows [N, *row_shape]``: one array ``[N, *leaf.shape]`` each (views
        of ``rows`` when it is contiguous)."""
        if not self.packed:
            return [rows]
        count = rows.shape[0]
        return [np.ascontiguousarray(rows[:, leaf.offset:leaf.offset + leaf.nbytes])
                .view(leaf.dtype).reshape(count, *leaf.shape) for leaf in self.leaves]


def _leaf_values(observation: object, space: gym.Space) -> list[object]:
    if isinstance(space, gym.spaces.Dict):
        return [v for key, sub in space.spaces.items()
                for v in _leaf_values(observation[key], sub)]  # type: ignore[index]
    if isinstance(space, gym.spaces.Tuple):
        return [v for sub, part in zip(space.spaces, observation, strict=True)  # type: ignore[call-overload]
                for v in _leaf_values(part, sub)]
    return [observation]


def observation_layout(space: gym.Space) -> ObservationLayout:
    """The layout of ``space``; UnsupportedSpace names what cannot travel."""
    composite = isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple))
    leaves, offset = [], 0
    for path, sub in _leaves(space):
        shape, dtype = _leaf_format(sub, path)
        leaf = Leaf(path, sub, shape, dtype, offset if composite else 0)
        leaves.append(leaf)
        offset += leaf.nbytes
    if not leaves:
        raise UnsupportedSpace(f"observation space {space} has no parts")
    if composite:
        return ObservationLayout(space, tuple(leaves), True, (offset,), np.dtype(np.uint8))
    return ObservationLayout(space, tuple(leaves), False, leaves[0].shape, leaves[0].dtype)


@dataclass(frozen=True)
class ActionLayout:
    """How the learner's actions for one environment travel and reach ``env.step``."""

    space: gym.Space
    kind: str  # "discrete", "multi_discrete" or "box"
    shape: tuple[int, ...]  # per environment on the wire
    dtype: np.dtype
    nvec: tuple[int, ...]  # category counts of each categorical head ((n,) for Discrete)
    start: np.ndarray  # added to 0-based indices before sending (categorical kinds)

    def to_wire(self, indices: np.ndarray) -> np.ndarray:
        """Learner side: sampled actions ``[K, *shape]`` (0-based indices for categorical
        kinds) as they travel."""
        if self.kind == "box":
            return np.asarray(indices, dtype=np.float32)
        return (indices + self.start).astype(np.int64, copy=False)

    def to_env(self, action: np.ndarray) -> object:
        """Actor side: one environment's action from the wire, as ``env.step`` takes it
        (Box actions clipped to the bounds)."""
        space = self.space
        if self.kind == "discrete":
            return int(action)
        if self.kind == "multi_discrete":
            return np.asarray(action, dtype=space.dtype)
        return np.clip(action, space.low, space.high).astype(space.dtype)


def action_layout(space: gym.Space) -> ActionLayout:
    """The layout of ``space``; UnsupportedSpace names what cannot travel."""
    if isinstance(space, gym.spaces.Discrete):
        return ActionLayout(space, "discrete", (), np.dtype(np.int64), (int(space.n),),
                            np.asarray(int(space.start), dtype=np.int64))
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise UnsupportedSpace(f"action space {space}: only one-dimensional MultiDiscrete "
                                   "actions are supported; flatten it with a wrapper")
        return ActionLayout(space, "multi_discrete", (len(space.nvec),), np.dtype(np.int64),
                            tuple(int(n) for n in space.nvec),
                            np.asarray(space.start, dtype=np.int64))
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return ActionLayout(space, "box", tuple(space.shape), np.dtype(np.float32), (),
                            np.zeros((), np.int64))
    raise UnsupportedSpace(
        f"action space {space} ({type(space).__name__}) is not supported: seed-rl acts in "
        "Discrete, MultiDiscrete (one-dimensional) and float Box spaces; wrap the "
        "environment (e.g. a MultiBinary action as MultiDiscrete([2] * n), with --env-wrapper "
        "MODULE:CALLABLE)")
