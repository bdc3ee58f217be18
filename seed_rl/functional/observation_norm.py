"""Running observation normalisation as pure functions of tensors (``--normalize-observations``;
the running mean and variance of every observation element, as Sample Factory's
``--normalize_input`` and Stable-Baselines3's ``VecNormalize`` keep them, but on the learner,
so one set of statistics serves every actor and travels with the checkpoint).

An observation element x of a Box part (shape ``S``; as the network would read it without
normalisation: uint8 images scaled to [0, 1], anything else cast to float) is fed to it as

    z = clip((x - mean) / sqrt(var + EPSILON), -CLIP, CLIP)

with ``mean`` and ``var`` the mean and (population) variance of every such element seen in
training so far. A batch of observations is summarised by its moments ``(n, sum x,
sum x^2)`` (``[1]``, ``S``, ``S``; summed over a replica group by one all-reduce) and merged
into the running ``(count, mean, var)`` exactly, by Chan et al.'s parallel rule (Chan, Golub
and LeVeque 1979):

    count' = count + n
    delta  = mean_b - mean
    mean'  = mean + delta n / count'
    var'   = (var count + var_b n + delta^2 count n / count') / count'

where ``mean_b = sum x / n`` and ``var_b = sum x^2 / n - mean_b^2`` are the batch's. So the
statistics after any sequence of batches are those of all their elements together (up to
float rounding; the moments and the merge are computed in float64). The initial statistics
(count 0, mean 0, var 1) leave x as it is but for the clip, until the first batch. EPSILON and CLIP are Sample Factory's (1e-5 and 5): an element that was constant
so far (var 0) and then changes reads as +-5, not infinity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CLIP", "EPSILON", "NormStatistics", "merge", "moments", "normalize"]

EPSILON = 1e-5
CLIP = 5.0


class NormStatistics(NamedTuple):
    """Running statistics of the observation elements: ``count [1]`` (float64), ``mean`` and
    ``var`` (the elements' shape ``S``)."""

    count: Tensor
    mean: Tensor
    var: Tensor


def moments(x: Tensor, element_dims: int) -> Tensor:
    """``[n, sum x, sum x^2]`` of ``x [*, *S]`` over its leading dims, flat in float64:
    ``1 + 2 prod(S)`` values (``S`` its last ``element_dims`` dims), summable across
    replicas."""
    x = x.reshape(-1, *x.shape[x.dim() - element_dims:]).to(torch.float64)
    count = torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device)
    return torch.cat([count, x.sum(0).reshape(-1), x.square().sum(0).reshape(-1)])


def merge(statistics: NormStatistics, batch_moments: Tensor) -> NormStatistics:
    """The statistics after a batch with ``batch_moments`` (:func:`moments`, possibly summed
    over replicas); a batch of no elements leaves them as they are. New tensors, in the
    statistics' dtypes."""
    count, mean, var = statistics
    n = batch_moments[:1]
    if float(n) == 0:
        return statistics
    size = mean.numel()
    batch_mean = batch_moments[1:1 + size] / n
    batch_var = (batch_moments[1 + size:] / n - batch_mean.square()).clamp_min(0.0)
    old_mean, old_var = mean.reshape(-1).to(torch.float64), var.reshape(-1).to(torch.float64)
    old_count = count.to(torch.float64)
    total = old_count + n
    delta = batch_mean - old_mean
    new_mean = old_mean + delta * n / total
    new_var = (old_var * old_count + batch_var * n + delta.square() * old_count * n / total) / total
    return NormStatistics(total.to(count.dtype), new_mean.reshape(mean.shape).to(mean.dtype),
                          new_var.reshape(var.shape).to(var.dtype))


def normalize(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``x [*, *S]`` float -> ``clip((x - mean) / sqrt(var + EPSILON), +-CLIP)``, same shape."""
    return ((x - mean) * torch.rsqrt(var + EPSILON)).clamp(-CLIP, CLIP)
