"""PopArt's statistics as part of the model (``--popart``; the maths:
seed_rl/functional/popart.py).

:class:`PopArt` holds the running statistics of the value targets as persistent buffers
``mu``, ``nu``, ``sigma`` (``[1]`` each, return units), so checkpoints, the published
inference copy (learner/training/weights.py copies the state dict) and a replica group's
start-up broadcast carry them like any weight. The model's value head predicts a normalised
value n(x) and the model returns ``V = sigma * n + mu``: inference, V-trace and the values
of truncated episodes' final observations stay in return units. The trainer calls
:meth:`PopArt.update` after each optimizer step with the mean and mean square of the step's
V-trace targets (the group's, with replicas); it moves the statistics and rescales the value
head so that V is unchanged.

A model built without ``--popart`` has no such module and no buffers: checkpoints of either
kind load into a model of the other through :func:`adapt_state_dict` (exactly: the
statistics are folded into, or start as the identity on, the value head).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seed_rl.functional import popart

#: the buffers' names in a model's state dict (``ActorCritic.popart``)
PREFIX = "popart."
BUFFERS = ("mu", "nu", "sigma")


class PopArt(nn.Module):
    """Running statistics of the value targets; ``forward`` unnormalises the head's output.

    Initially mu = 0, nu = 1, sigma = 1: the identity, the model without PopArt."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta
        self.register_buffer("mu", torch.zeros(1))
        self.register_buffer("nu", torch.ones(1))
        self.register_buffer("sigma", torch.ones(1))

    def forward(self, normalized: Tensor) -> Tensor:  # [...] -> [...], return units
        return popart.unnormalize(normalized, self.mu, self.sigma)

    @torch.no_grad()
    def update(self, head: nn.Linear, target_mean: Tensor, target_square_mean: Tensor) -> None:
        """Move the statistics towards this step's targets (their mean and mean square,
        0-dim or ``[1]``) and rescale ``head`` (the value head's last layer) in place so
        that the model's values are the same before and after."""
        new = popart.update_statistics(self.mu, self.nu, target_mean.to(self.mu.dtype),
                                       target_square_mean.to(self.mu.dtype), beta=self.beta)
        weight, bias = popart.preserve_outputs(head.weight, head.bias, self.mu, self.sigma,
                                               new.mu, new.sigma)
        head.weight.copy_(weight)
        head.bias.copy_(bias)
        self.mu.copy_(new.mu)
        self.nu.copy_(new.nu)
        self.sigma.copy_(new.sigma)


def adapt_state_dict(state: dict[str, Tensor], with_popart: bool,
                     head: str = "value") -> dict[str, Tensor]:
    """``state`` (a model's state dict) for a model with or without PopArt, its values the
    same: a checkpoint without the buffers gets the identity statistics; one with them loaded
    into a model without PopArt has them folded into the value head ``head``
    (``w sigma``, ``b sigma + mu``). Returns ``state`` itself when it already fits."""
    has = all(PREFIX + name in state for name in BUFFERS)
    if has == with_popart:
        return state
    out = dict(state)
    if with_popart:
        like = state[f"{head}.bias"]
        out[PREFIX + "mu"] = torch.zeros_like(like)
        out[PREFIX + "nu"] = torch.ones_like(like)
        out[PREFIX + "sigma"] = torch.ones_like(like)
        return out
    mu, sigma = out.pop(PREFIX + "mu"), out.pop(PREFIX + "sigma")
    out.pop(PREFIX + "nu")
    out[f"{head}.weight"], out[f"{head}.bias"] = popart.preserve_outputs(
        state[f"{head}.weight"], state[f"{head}.bias"], mu, sigma, torch.zeros_like(mu),
        torch.ones_like(sigma))
    return out
