"""IMPALA / SEED RL losses: pure functions of tensors.

What
    The three terms of the IMPALA objective (Espeholt et al. 2018, section 4.2), each a scalar
    *sum* over every position (time step, batch entry, ...):

    * :func:`policy_gradient`: ``-sum(log pi(a|x) * advantages)``, the V-trace actor loss;
    * :func:`baseline`: ``0.5 * sum(advantages ** 2)``, the value (critic) loss;
    * :func:`entropy`: ``sum(pi . log pi)``, i.e. minus the entropy, the exploration bonus.

    The trainer combines them as ``pg + baseline_cost * baseline + entropy_cost * entropy``.

Why sums, not means
    IMPALA's implementation (deepmind/scalable_agent) and TorchBeast sum over time and batch, and
    the hyperparameters published with them (learning rate, baseline and entropy costs) assume
    it. A mean would silently rescale them by 1 / (T * B). Callers that want a mean divide.

Shapes and units
    ``logits`` is ``[..., A]``: unnormalised log-probabilities over A discrete actions, any leading
    dims (``[T, B, A]`` in the trainer). ``actions`` is an integer tensor of the leading dims
    ``[...]``; ``advantages`` is ``[...]`` in return units. Results are 0-dim tensors in the
    input's dtype and on its device: nats (entropy), nats x return units (policy gradient),
    squared return units (baseline). Softmax and logs go through ``log_softmax``, stable for any
    logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["baseline", "entropy", "policy_gradient"]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy *loss*: minus the entropy of softmax(logits), summed over all positions.

    ``sum_{positions} sum_a pi(a) log pi(a)`` with ``pi = softmax(logits)`` over the last dim.
    Minimising it maximises the policy's entropy. Its gradient w.r.t. the logits at one position
    is ``pi * (log pi + H)``, where ``H = -sum_a pi log pi``.

    Args:
        logits: ``[..., A]`` floating tensor.

    Returns:
        0-dim tensor (nats).
    """
    _check_logits(logits)
    log_policy = F.log_softmax(logits, dim=-1)
    return torch.sum(log_policy.exp() * log_policy)


def policy_gradient(
    logits: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor
) -> torch.Tensor:
    """The policy-gradient loss ``-sum(log pi(actions) * advantages)``.

    ``advantages`` are treated as constants (detached): with V-trace they are
    ``pg_advantages``, targets that must not be differentiated. The gradient w.r.t. the logits at
    one position is ``-(onehot(action) - softmax(logits)) * advantage``.

    Args:
        logits: ``[..., A]`` floating tensor, the policy being trained (pi).
        actions: ``[...]`` integer tensor, the actions taken, in ``[0, A)``.
        advantages: ``[...]`` floating tensor, e.g. ``vtrace.pg_advantages``.

    Returns:
        0-dim tensor.

    Raises:
        ValueError: ``actions`` or ``advantages`` do not have the leading dims of ``logits``.
    """
    _check_logits(logits)
    leading = tuple(logits.shape[:-1])
    for name, x in (("actions", actions), ("advantages", advantages)):
        if tuple(x.shape) != leading:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, expected the leading dims of logits "
                f"{tuple(logits.shape)}, i.e. {leading}"
            )
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got {actions.dtype}")
    log_policy = F.log_softmax(logits, dim=-1)
    action_log_probs = log_policy.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    return -torch.sum(action_log_probs * advantages.detach())


def baseline(advantages: torch.Tensor) -> torch.Tensor:
    """The value (baseline) loss ``0.5 * sum(advantages ** 2)``.

    With V-trace, ``advantages = vs - values``: the gradient w.r.t. ``values`` is then
    ``-(vs - values)``, the plain regression step towards the V-trace target (IMPALA section 4.2).

    The factor 0.5 is deliberate: it is IMPALA's value loss (deepmind/scalable_agent and
    TorchBeast use ``0.5 * sum(advantages ** 2)``). The reference implementation this project
    replaces dropped it, which silently doubled the weight of the value loss relative to the
    published ``baseline_cost``. With 0.5, a baseline cost from the IMPALA setups means what it
    meant there.

    Args:
        advantages: any shape, floating; gradients flow into it (to the values).

    Returns:
        0-dim tensor (squared return units).
    """
    return 0.5 * torch.sum(advantages**2)


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() < 1:
        raise ValueError(
            f"logits has shape {tuple(logits.shape)}, expected [..., A] with at least one dim"
        )
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating tensor, got {logits.dtype}")
