"""The softmax (categorical) policy's log-probabilities and entropies, written once.

A discrete policy is given by its logits ``[..., A]``, unnormalised log-probabilities over A
actions (``[T, B, A]`` in the trainer). Everything the learner needs from it is

    log pi(a|x) = log_softmax(logits)[a]                  (the importance weights, the PG loss)
    H(pi(.|x))  = -sum_a pi(a|x) log pi(a|x)              (the entropy loss, in nats)

and both come from one ``log_softmax`` (stable for any logits, never ``log(softmax)``).
:func:`log_prob_and_entropy` computes it once for both; the trainer's policy
(``learner/training/policies.py`` ``Categorical``), ``vtrace.action_log_probs``, ``vtrace.from_logits``
and ``loss.policy_gradient`` all call these functions, so the formula lives only here.

Shapes: ``logits [..., A]`` floating; ``actions [...]`` integer, values in ``[0, A)``;
results ``[...]`` in the logits' dtype and device, differentiable w.r.t. the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["entropy", "log_prob", "log_prob_and_entropy"]


def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(actions) ``[...]`` (nats) under softmax(``logits [..., A]``).

    Raises:
        ValueError: ``logits`` is a scalar, or ``actions`` is not of the leading dims of
            ``logits``.
        TypeError: ``actions`` is not an integer tensor.
    """
    _check(logits, actions)
    return _taken(F.log_softmax(logits, dim=-1), actions)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(``logits [..., A]``)) ``[...]``, in nats."""
    return _entropy(F.log_softmax(logits, dim=-1))


def log_prob_and_entropy(
    logits: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_prob` and :func:`entropy` from one ``log_softmax`` of ``logits``: the
    trainer's path (one normalisation of the target logits per update)."""
    _check(logits, actions)
    log_probs = F.log_softmax(logits, dim=-1)
    return _taken(log_probs, actions), _entropy(log_probs)


def _taken(log_probs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log_probs[..., actions]``: the log-probability of each position's action."""
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """-sum_a p(a) log p(a) over the last dim of normalised ``log_probs``."""
    return -(log_probs.exp() * log_probs).sum(-1)


def _check(logits: torch.Tensor, actions: torch.Tensor) -> None:
    if logits.dim() < 1:
        raise ValueError("logits must have at least 1 dim [..., A], got a scalar")
    if actions.shape != logits.shape[:-1]:
        raise ValueError(
            f"actions has shape {tuple(actions.shape)}, expected the leading dims of "
            f"logits {tuple(logits.shape)}, i.e. {tuple(logits.shape[:-1])}"
        )
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got {actions.dtype}")
