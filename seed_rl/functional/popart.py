"""PopArt value normalisation as pure functions of tensors (van Hasselt et al. 2016,
"Learning values across many orders of magnitude"; Hessel et al. 2019, "Multi-task Deep
Reinforcement Learning with PopArt", the IMPALA variant).

The value head predicts a *normalised* value n(x); the model outputs the unnormalised one

    V(x) = sigma * n(x) + mu                                   (return units)

from running statistics of the value targets v_t (V-trace's, in return units):

    mu'    = (1 - beta) mu + beta mean(v_t)                    first moment
    nu'    = (1 - beta) nu + beta mean(v_t^2)                  second moment
    sigma' = sqrt(clip(nu' - mu'^2, sigma_min^2, sigma_max^2)) scale

("ART": adaptively rescaling targets). After each change of the statistics the head's last
linear layer ``n(x) = w . h(x) + b`` is rescaled so that V(x) is the same for every input
("POP": preserving outputs precisely):

    w' = w sigma / sigma'        b' = (sigma b + mu - mu') / sigma'

so sigma' (w' h + b') + mu' = sigma (w h + b) + mu exactly (up to float rounding). The
losses then use sigma (:func:`seed_rl.functional.impala.loss`, ``value_scale``): the value
error (v_t - V(x_t)) / sigma = (v_t - mu) / sigma - n(x_t) and the advantages A_t / sigma are
in normalised units, whatever the scale of the returns.

Shapes: K statistics (one per value output; 1 for the learner's single value head):
``mu``, ``nu``, ``sigma`` ``[K]``; the head's ``weight`` ``[K, H]`` and ``bias`` ``[K]``;
the batch moments ``[K]`` (or scalars, broadcast; ``impala.moments`` sums them). Defaults: ``sigma`` in [1e-4, 1e6], the
bounds of rlax's ``popart`` (and of the paper's experiments); beta is the caller's
(``--popart-beta``, 3e-4 per update as in Hessel et al. 2019). The initial statistics
mu = 0, nu = 1 give sigma = 1: V = n, the model of before.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["PopArtStatistics", "normalize", "preserve_outputs", "unnormalize",
           "update_statistics"]

SIGMA_MIN = 1e-4
SIGMA_MAX = 1e6


class PopArtStatistics(NamedTuple):
    """The running statistics, each ``[K]``, in return units (``nu`` squared)."""

    mu: Tensor  # first moment of the targets
    nu: Tensor  # second moment
    sigma: Tensor  # sqrt(nu - mu^2), clipped


def update_statistics(mu: Tensor, nu: Tensor, target_mean: Tensor, target_square_mean: Tensor,
                      *, beta: float, sigma_min: float = SIGMA_MIN,
                      sigma_max: float = SIGMA_MAX) -> PopArtStatistics:
    """The statistics after one batch whose targets have mean ``target_mean`` and mean
    square ``target_square_mean`` (module docstring). New tensors; nothing is modified.

    Raises:
        ValueError: ``beta`` is not in (0, 1], or the bounds are not 0 < min <= max.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if not 0.0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    new_mu = (1.0 - beta) * mu + beta * target_mean
    new_nu = (1.0 - beta) * nu + beta * target_square_mean
    variance = (new_nu - new_mu.square()).clamp(sigma_min**2, sigma_max**2)
    return PopArtStatistics(new_mu, new_nu, variance.sqrt())


def preserve_outputs(weight: Tensor, bias: Tensor, mu: Tensor, sigma: Tensor, new_mu: Tensor,
                     new_sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The last layer ``(weight [K, H], bias [K])`` rescaled from the statistics
    ``(mu, sigma)`` to ``(new_mu, new_sigma)`` so that the unnormalised outputs stay the
    same: ``w sigma / sigma'`` and ``(sigma b + mu - mu') / sigma'``. New tensors."""
    if weight.shape[0] != bias.shape[0]:
        raise ValueError(f"weight {tuple(weight.shape)} and bias {tuple(bias.shape)} must "
                         "have the same number K of outputs")
    new_weight = weight * (sigma / new_sigma).unsqueeze(-1)
    new_bias = (sigma * bias + mu - new_mu) / new_sigma
    return new_weight, new_bias


def unnormalize(normalized: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """``sigma * n + mu``: return units from the head's normalised output (broadcast)."""
    return sigma * normalized + mu


def normalize(values: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """``(v - mu) / sigma``: the inverse of :func:`unnormalize`."""
    return (values - mu) / sigma
