"""Observation normalisation as part of the model (``--normalize-observations``; the maths:
seed_rl/functional/observation_norm.py).

:class:`ObservationNorm` keeps running statistics of each Box part of the observation
(images included) as persistent buffers ``observation_norm.parts.<i>.{count,mean,var}``
(``i`` the part's index in the observation layout), so checkpoints, the published inference
copy, the evaluator's copy, a replica group's start-up broadcast and exported graphs carry
them like any weight: every actor is answered, and every deployed policy reads, through the
same statistics. Other parts (Discrete, MultiDiscrete, MultiBinary: one-hots and bits, already
in [0, 1]) pass through.

The trainer calls :meth:`ObservationNorm.update` once per batch, before the batch's optimizer
steps, with the moments of the batch's observations (the group's, with replicas); the steps
then learn on observations normalised by the new statistics. The actors' actions were chosen
under the statistics of before: part of the policy lag that V-trace corrects.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import Tensor, nn

from seed_rl.config import ConfigError
from seed_rl.functional import observation_norm as norm
from seed_rl.spaces import Leaf, ObservationLayout

#: the buffers' names in a model's state dict (``ActorCritic.observation_norm``)
PREFIX = "observation_norm."


def torso_input(x: Tensor) -> Tensor:
    """What a torso reads of a Box part: uint8 (images) scaled to [0, 1], anything else cast
    to float; the statistics are kept in these units."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class RunningNorm(nn.Module):
    """The running statistics of one part's elements ``[*shape]``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("count", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:  # [N, *shape] any dtype -> [N, *shape] float
        return norm.normalize(torso_input(x), self.mean, self.var)

    def moments(self, x: Tensor) -> Tensor:  # [N, *shape] -> [1 + 2 prod(shape)] float64
        return norm.moments(torso_input(x), self.mean.dim())

    @torch.no_grad()
    def update(self, batch_moments: Tensor) -> None:
        new = norm.merge(norm.NormStatistics(self.count, self.mean, self.var), batch_moments)
        self.count.copy_(new.count)
        self.mean.copy_(new.mean)
        self.var.copy_(new.var)


def normalized(leaf: Leaf) -> bool:
    return isinstance(leaf.space, gym.spaces.Box)


class ObservationNorm(nn.Module):
    """Normalises the Box parts of an observation (module docstring); ``forward`` maps the
    layout's parts (``[N, *leaf.shape]`` each, the leaf's dtype) to the parts the torso
    reads, the Box ones as float32 ``[N, *leaf.shape]``."""

    def __init__(self, layout: ObservationLayout):
        super().__init__()
        self.parts = nn.ModuleDict({str(i): RunningNorm(leaf.shape)
                                    for i, leaf in enumerate(layout.leaves) if normalized(leaf)})
        self.moments_size = sum(1 + 2 * part.mean.numel() for part in self.parts.values())

    def forward(self, parts: list[Tensor]) -> list[Tensor]:
        return [self.parts[str(i)](x) if str(i) in self.parts else x
                for i, x in enumerate(parts)]

    def moments(self, parts: list[Tensor]) -> Tensor:
        """Every normalised part's moments, concatenated (``[moments_size]``, float64):
        one all-reduce sums a replica group's."""
        if not self.parts:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([part.moments(parts[int(i)]) for i, part in self.parts.items()])

    def update(self, batch_moments: Tensor) -> None:
        """Merge ``batch_moments`` (:meth:`moments`, possibly summed over replicas) into
        every part's statistics."""
        start = 0
        for part in self.parts.values():
            size = 1 + 2 * part.mean.numel()
            part.update(batch_moments[start:start + size])
            start += size


def adapt_state_dict(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``state`` (a checkpoint's model state) for ``model``: a checkpoint trained without
    ``--normalize-observations`` loads into a model with it, its statistics starting afresh
    (count 0). One trained with it cannot load into a model without (its network learned on
    normalised inputs): ConfigError saying so. Returns ``state`` itself when it fits."""
    has = any(key.startswith(PREFIX) for key in state)
    wants = getattr(model, "observation_norm", None) is not None
    if has and not wants:
        raise ConfigError("the checkpoint was trained with --normalize-observations: its "
                         "network reads normalised observations; resume it with "
                         "--normalize-observations")
    if has or not wants:
        return state
    out = dict(state)
    out.update({key: value.clone() for key, value in model.state_dict().items()
                if key.startswith(PREFIX)})
    return out
