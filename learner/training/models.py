"""Actor-critic networks, built from the observation and action layouts (seed_rl/spaces.py).

Every model maps a time-major batch to policy parameters and values:

    model(observations [T, B, *row_shape], episode_start [T, B] bool, core_state)
        -> ModelOutput(policy_params [T, B, P], values [T, B], core_state)

``observations`` are rows as they travel and sit in the store (``ObservationLayout
.row_shape`` and ``row_dtype``: a Dict or Tuple observation is a packed uint8 row that the
model unpacks with views of its bytes, :func:`unpack_rows`). ``policy_params`` are what
``model.distribution`` (learner/training/policies.py) reads: logits for Discrete and MultiDiscrete
actions, mean and log-std for Box actions. ``episode_start[t]`` marks x_t as the first
observation of an episode: a recurrent core zeroes its state before it reads x_t (slot
convention, docs/architecture.md). Inference calls the same model with T = 1, so acting
and learning share one code path. Feed-forward models take and return an empty
``core_state`` tuple.

Each part (leaf) of an observation is encoded by its kind:

* Box with 3 dims ``[H, W, C]`` (channels last): an image, through a conv torso of its
  own (learner/training/torsos.py): the Nature-DQN conv net (Mnih et al. 2015), the IMPALA
  ResNet (Espeholt et al. 2018, Fig. 3) or, for small images, MinAtar's one-layer net
  (Young & Tian 2019). uint8 images stay uint8 until the torso divides them by 255; bool
  and other dtypes are only cast to float;
* any other Box: flattened, cast to float;
* Discrete: one-hot of ``value - start``; MultiDiscrete: the one-hots of its components,
  concatenated; MultiBinary: its bits as floats.

The non-image parts are concatenated and go through the MLP (``--hidden-sizes``); all
features are concatenated -> optional LSTM core -> policy and value heads. A single Box
observation keeps the torso it always had (``model.torso`` is the MLP or the conv net), so
checkpoints from before composite observations still load.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from learner.training import policies
from learner.training.observation_norm import ObservationNorm
from learner.training.popart import PopArt
from learner.training.torsos import MLPTorso, check_image, conv_torso, describe, is_image
from seed_rl.config import Config
from seed_rl.spaces import (
    ActionLayout,
    Leaf,
    ObservationLayout,
    UnsupportedSpace,
    action_layout,
    observation_layout,
)

CoreState = tuple[Tensor, ...]

#: The Gaussian policy's initial log standard deviation: std 1, as in most PPO/IMPALA
#: continuous-control setups; the policy learns it (state-independent).
INITIAL_LOG_STD = 0.0


class ModelOutput(NamedTuple):
    policy_params: Tensor  # [T, B, P]: the action distribution's parameters
    values: Tensor  # [T, B]
    core_state: CoreState  # per layer [B, H]; () for feed-forward models


# -- observation parts ---------------------------------------------------------------------


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype


def unpack_rows(rows: Tensor, layout: ObservationLayout) -> list[Tensor]:
    """The leaves of ``rows [N, *row_shape]``: one tensor ``[N, *leaf.shape]`` each, in the
    leaf's dtype, exactly as :meth:`ObservationLayout.unpack` (the bytes of each leaf
    reinterpreted, little-endian like the wire)."""
    if not layout.packed:
        return [rows]
    count = rows.shape[0]
    # a copy of each leaf's bytes, always: for one row the slice already counts as
    # contiguous (its row stride does not matter), and a view of it as a wider dtype fails
    # unless the row's width and the leaf's offset are multiples of the dtype's size
    return [rows[:, leaf.offset:leaf.offset + leaf.nbytes].clone(
                memory_format=torch.contiguous_format)
            .view(torch_dtype(leaf.dtype)).reshape(count, *leaf.shape)
            for leaf in layout.leaves]


class FlatFeatures(nn.Module):
    """One non-image leaf ``[N, *leaf.shape]`` -> float features ``[N, size]``: one-hots for
    Discrete and MultiDiscrete (all zeros for a value out of range, never an error),
    floats for MultiBinary and Box."""

    def __init__(self, leaf: Leaf):
        super().__init__()
        space = leaf.space
        if isinstance(space, gym.spaces.Discrete):
            counts, start = np.array([space.n]), np.array([space.start])
        elif isinstance(space, gym.spaces.MultiDiscrete):
            counts, start = space.nvec.reshape(-1), np.asarray(space.start).reshape(-1)
        else:
            self.one_hot, self.size = False, math.prod(leaf.shape)
            return
        self.one_hot, self.size = True, int(counts.sum())
        counts = torch.as_tensor(counts.astype(np.int64))
        self.register_buffer("start", torch.as_tensor(start.astype(np.int64)), persistent=False)
        self.register_buffer("categories", torch.arange(int(counts.max())), persistent=False)
        # the positions of the padded one-hots [m * max count] that exist, in order
        valid = (self.categories < counts.unsqueeze(-1)).reshape(-1)
        self.register_buffer("columns", valid.nonzero().squeeze(-1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if not self.one_hot:
            return flat.float()
        hot = (flat - self.start).unsqueeze(-1) == self.categories  # [N, m, max count]
        # indices, not a boolean mask: the same columns, and a graph export can trace it
        return hot.reshape(x.shape[0], -1)[:, self.columns].float()


class MultiPartTorso(nn.Module):
    """Observations of several parts, or of a non-Box kind: each image part through its own
    conv torso, the other parts' features (:class:`FlatFeatures`) concatenated through
    the MLP; the output is all of it concatenated, images first."""

    def __init__(self, layout: ObservationLayout, config: Config):
        super().__init__()
        self.layout = layout
        self.image_parts = [i for i, leaf in enumerate(layout.leaves) if is_image(leaf)]
        self.flat_parts = [i for i, leaf in enumerate(layout.leaves) if not is_image(leaf)]
        self.images = nn.ModuleList(conv_torso(layout.leaves[i], config.conv_net)
                                    for i in self.image_parts)
        self.features = nn.ModuleList(FlatFeatures(layout.leaves[i]) for i in self.flat_parts)
        self.mlp = (MLPTorso(sum(f.size for f in self.features), list(config.hidden_sizes))
                    if self.flat_parts else None)
        self.output_size = (sum(t.output_size for t in self.images)
                            + (self.mlp.output_size if self.mlp is not None else 0))

    def forward(self, rows: Tensor) -> Tensor:  # [N, *row_shape] -> [N, output_size]
        return self.encode(unpack_rows(rows, self.layout))

    def encode(self, parts: list[Tensor]) -> Tensor:
        """The features ``[N, output_size]`` of the observation's leaves, one tensor
        ``[N, *leaf.shape]`` each in the layout's order and the leaf's dtype (what
        :func:`unpack_rows` gives; an exported graph takes them as separate inputs)."""
        features = [torso(parts[i]) for torso, i in zip(self.images, self.image_parts,
                                                        strict=True)]
        if self.mlp is not None:
            flat = [encode(parts[i]) for encode, i in zip(self.features, self.flat_parts,
                                                          strict=True)]
            features.append(self.mlp(torch.cat(flat, dim=-1)))
        return torch.cat(features, dim=-1)


def build_torso(layout: ObservationLayout, config: Config) -> nn.Module:
    """The torso for ``layout``: a single Box keeps the MLP or conv net it always had."""
    (first, *rest) = layout.leaves
    if not rest and not layout.packed and isinstance(first.space, gym.spaces.Box):
        if is_image(first):
            return conv_torso(first, config.conv_net)
        return MLPTorso(math.prod(first.shape), list(config.hidden_sizes))
    return MultiPartTorso(layout, config)


# -- the model -----------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """[optional observation normalisation] -> torso -> optional LSTM core -> policy
    parameters and value heads (with ``--normalize-observations`` the Box parts are
    normalised by ``observation_norm``, learner/training/observation_norm.py; with
    ``--popart`` the value head's output is unnormalised by ``popart``,
    learner/training/popart.py).

    ``distribution`` (learner/training/policies.py) says what the policy parameters mean;
    ``observation_layout`` and ``action_layout`` how observations and actions travel.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: Config):
        super().__init__()
        self.observation_layout = observation_layout(observation_space)
        self.action_layout = action_layout(action_space)
        self.distribution = policies.for_action_layout(self.action_layout)
        self.observation_norm = (ObservationNorm(self.observation_layout)
                                 if config.normalize_observations else None)
        self.torso = build_torso(self.observation_layout, config)
        features = self.torso.output_size
        self.core = nn.LSTM(features, config.lstm_size) if config.lstm else None
        if self.core is not None:
            features = config.lstm_size
        gaussian = isinstance(self.distribution, policies.DiagGaussian)
        head_size = self.distribution.size if gaussian else self.distribution.num_params
        self.policy = nn.Linear(features, head_size)  # logits, or the Gaussian's mean
        self.policy_log_std = (nn.Parameter(torch.full((head_size,), INITIAL_LOG_STD))
                               if gaussian else None)
        self.value = nn.Linear(features, 1)  # with --popart: the normalised value n(x)
        self.popart = PopArt(config.popart_beta) if config.popart else None
        # Small initial logits and means: a near-uniform (or centred) first policy.
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> CoreState:
        """Zero core state for ``batch_size`` environments: (h [B, H], c [B, H]) or ()."""
        if self.core is None:
            return ()
        size = self.core.hidden_size
        return (torch.zeros(batch_size, size, device=device),
                torch.zeros(batch_size, size, device=device))

    def forward(self, observations: Tensor, episode_start: Tensor,
                core_state: CoreState = ()) -> ModelOutput:
        time, batch = observations.shape[:2]
        rows = observations.reshape(time * batch, *observations.shape[2:])
        features = self.encode(unpack_rows(rows, self.observation_layout))
        return self.heads(features.view(time, batch, -1), episode_start, core_state)

    def encode(self, parts: list[Tensor]) -> Tensor:
        """The torso's features ``[N, F]`` of the observation's parts (:func:`unpack_rows`:
        ``[N, *leaf.shape]`` each; an exported graph takes them as separate inputs)."""
        if self.observation_norm is not None:
            parts = self.observation_norm(parts)
        if isinstance(self.torso, MultiPartTorso):
            return self.torso.encode(parts)
        return self.torso(parts[0])

    def heads(self, features: Tensor, episode_start: Tensor,
              core_state: CoreState = ()) -> ModelOutput:
        """What follows the torso: its ``features [T, B, F]`` -> the optional LSTM core ->
        the policy and value heads (an exported graph calls it after its own torso call)."""
        time = features.shape[0]
        if self.core is not None:
            h, c = core_state
            keep = (~episode_start).to(features.dtype).unsqueeze(-1)  # [T, B, 1]
            outputs = []
            for t in range(time):
                h, c = h * keep[t], c * keep[t]
                out, (h1, c1) = self.core(features[t : t + 1], (h.unsqueeze(0), c.unsqueeze(0)))
                h, c = h1.squeeze(0), c1.squeeze(0)
                outputs.append(out)
            features = torch.cat(outputs)
            core_state = (h, c)
        params = self.policy(features)
        if self.policy_log_std is not None:
            params = torch.cat([params, self.policy_log_std.expand_as(params)], dim=-1)
        values = self.value(features).squeeze(-1)
        if self.popart is not None:  # sigma * n(x) + mu: return units
            values = self.popart(values)
        return ModelOutput(params, values, core_state)


def check_spaces(observation_space: gym.Space, action_space: gym.Space,
                 config: Config) -> tuple[ObservationLayout, ActionLayout]:
    """The layouts of the spaces, or UnsupportedSpace (a ValueError) naming the space or
    part the learner cannot carry with ``config`` (e.g. an image too small for its conv
    net). Cheap: builds no network; the learner calls it at start-up."""
    observations = observation_layout(observation_space)
    actions = action_layout(action_space)
    for leaf in observations.leaves:
        if is_image(leaf):
            check_image(leaf, config.conv_net)
        if math.prod(leaf.shape) == 0:
            raise UnsupportedSpace(f"{describe(leaf)} {leaf.space} has no values")
    return observations, actions


def build_model(observation_space: gym.Space, action_space: gym.Space,
                config: Config) -> ActorCritic:
    """The actor-critic for these spaces; UnsupportedSpace says what cannot be learned."""
    check_spaces(observation_space, action_space, config)
    return ActorCritic(observation_space, action_space, config)
