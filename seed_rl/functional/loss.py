"""IMPALA / SEED RL losses: pure functions of tensors.

What
    The three terms of the IMPALA objective (Espeholt et al. 2018, section 4.2), each a scalar
    *sum* over every position (time step, batch entry, ...):

    * :func:`policy_gradient`: ``-sum(log pi(a|x) * advantages)``, the V-trace actor loss;
    * :func:`baseline`: ``0.5 * sum(advantages ** 2)``, the value (critic) loss;
    * :func:`entropy`: ``sum(pi . log pi)``, i.e. minus the entropy, the exploration bonus.

    The trainer combines them as ``pg + baseline_cost * baseline + entropy_cost * entropy``.

One log_softmax per update
    :func:`policy_gradient` and :func:`entropy` take logits and each compute ``log_softmax``.
    Their log-probability forms take it from the caller instead, so a trainer computes it once
    and shares it with V-trace; they also serve any policy family whose log-probabilities the
    caller computes (Gaussian, multi-discrete, ...)::

        log_pi = F.log_softmax(target_logits, dim=-1)                       # [T, B, A], once
        log_pi_a = log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)     # [T, B]
        log_mu_a = vtrace.action_log_probs(behaviour_logits, actions)       # [T, B]
        vt = vtrace.from_importance_weights(log_pi_a - log_mu_a, discounts, rewards, values,
                                            bootstrap_value)
        pg = policy_gradient_from_log_probs(log_pi_a, vt.pg_advantages)
        neg_entropy = entropy_from_log_probs(log_pi)

    * :func:`policy_gradient_from_log_probs`: ``-sum(action_log_probs * advantages)``;
    * :func:`entropy_from_log_probs`: ``sum(exp(log_probs) * log_probs)``.

    These give the same values and gradients as the logits forms (which call them). For a
    family whose entropy the caller computes per position (a Gaussian's
    ``sum(0.5 + 0.5 log(2 pi) + log_std)``, a sum over multi-discrete heads, ...),
    :func:`entropy_from_entropies` is ``-sum(entropies)``.

Why sums, not means
    IMPALA's implementation (deepmind/scalable_agent) and TorchBeast sum over time and batch, and
    the hyperparameters published with them (learning rate, baseline and entropy costs) assume
    it. A mean would silently rescale them by 1 / (T * B). Callers that want a mean divide.

Shapes and units
    ``logits`` is ``[..., A]``: unnormalised log-probabilities over A discrete actions, any leading
    dims (``[T, B, A]`` in the trainer); ``log_probs`` the same shape, normalised. ``actions`` is
    an integer tensor of the leading dims ``[...]``; ``action_log_probs`` and ``advantages`` are
    ``[...]``, the latter in return units. Results are 0-dim tensors in the input's dtype and on
    its device: nats (entropy), nats x return units (policy gradient), squared return units
    (baseline). Softmax and logs go through ``log_softmax``, stable for any logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seed_rl.functional import categorical

__all__ = [
    "baseline",
    "entropy",
    "entropy_from_entropies",
    "entropy_from_log_probs",
    "policy_gradient",
    "policy_gradient_from_log_probs",
]


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
    return entropy_from_log_probs(F.log_softmax(logits, dim=-1))


def entropy_from_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """:func:`entropy` from normalised log-probabilities: ``sum(exp(log_probs) * log_probs)``.

    ``log_probs`` is ``[..., A]``, e.g. ``F.log_softmax(logits, dim=-1)`` computed once per
    update and shared with V-trace and :func:`policy_gradient_from_log_probs`; gradients flow
    through it to whatever produced it. It is not renormalised: pass log-probabilities whose
    exponentials sum to 1 over the last dim. Returns a 0-dim tensor (nats), minus the entropy.
    """
    _check_floating("log_probs", log_probs)
    return torch.sum(log_probs.exp() * log_probs)


def entropy_from_entropies(entropies: torch.Tensor) -> torch.Tensor:
    """The entropy loss from per-position entropies: ``-sum(entropies)``.

    ``entropies`` is ``[...]`` (``[T, B]`` in the trainer), the entropy of the policy at each
    position in nats, computed by the caller for any policy family with its graph to the
    policy's parameters. For a softmax policy it equals :func:`entropy_from_log_probs` of
    the log-probabilities. Returns a 0-dim tensor (nats), minus the total entropy.
    """
    _check_floating("entropies", entropies, min_dim=0)
    return -torch.sum(entropies)


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
    return policy_gradient_from_log_probs(categorical.log_prob(logits, actions), advantages)


def policy_gradient_from_log_probs(
    action_log_probs: torch.Tensor, advantages: torch.Tensor
) -> torch.Tensor:
    """:func:`policy_gradient` from the log-probabilities of the taken actions.

    ``-sum(action_log_probs * advantages)`` with ``advantages`` detached. Works for any policy
    family: ``action_log_probs`` is log pi(a_t|x_t) however it was computed (a gathered
    ``log_softmax``, ``Normal(mean, std).log_prob(a).sum(-1)``, a sum over the components of a
    multi-discrete action, ...), with its graph to the policy's parameters.

    Args:
        action_log_probs: ``[...]`` floating tensor (``[T, B]`` in the trainer).
        advantages: ``[...]`` floating tensor of the same shape, e.g. ``vtrace.pg_advantages``.

    Returns:
        0-dim tensor.

    Raises:
        ValueError: the shapes differ (no broadcasting: a mismatch is always a bug here).
        TypeError: ``action_log_probs`` is not floating.
    """
    _check_floating("action_log_probs", action_log_probs, min_dim=0)
    if advantages.shape != action_log_probs.shape:
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)}, expected the shape of "
            f"action_log_probs {tuple(action_log_probs.shape)}"
        )
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
    _check_floating("logits", logits)


def _check_floating(name: str, x: torch.Tensor, min_dim: int = 1) -> None:
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected [..., A] with at least one dim"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
