"""The IMPALA update's maths as one pure function of tensors (Espeholt et al. 2018, section 4).

:func:`loss` is everything one learner update computes after the forward pass, written to be
checked against the paper in one sitting: the importance weights, V-trace, the three loss terms
and their weighted sum. It knows nothing of models, optimizers or unrolls; the learner's
update (``learner/training/update.py``) runs the model, aligns its outputs with the stored
slots, calls this, and steps the optimizer.

Inputs, time-major (T = unroll length, B = batch size; t indexes the steps x_0 .. x_{T-1}):

    target_log_probs     [T, B]  log pi(a_t|x_t): the learner's policy, with its graph
    behaviour_log_probs  [T, B]  log mu(a_t|x_t): the actors' policy, data (no gradient)
    entropies            [T, B]  H(pi(.|x_t)) in nats, with its graph
    values               [T, B]  V(x_t), with its graph
    bootstrap_value      [B]     V(x_T), the value after the unroll's last step (a target)
    rewards              [T, B]  r_t, the reward of taking a_t in x_t (return units)
    discounts            [T, B]  gamma_t, applied after step t: gamma, or 0 where a_t ended
                                 the episode (the trainer folds a time-limit truncation's
                                 gamma * V(final observation) into r_t: docs/architecture.md,
                                 "Slot convention")

Any policy family fits: V-trace and the policy gradient need only the log-probabilities of the
taken actions, the entropy loss only the per-step entropies (``learner/training/policies.py``).

The maths (paper's notation; sums run over every t < T and every batch entry b):

    rho_t      = pi(a_t|x_t) / mu(a_t|x_t) = exp(log pi - log mu)      importance weight
    v_t, A_t   = V-trace targets and policy-gradient advantages        eq. 1, Remark 1, 4.2:
                 v_t - V(x_t) = delta_t + gamma_t c_t (v_{t+1} - V(x_{t+1})),  v_T = V(x_T)
                 delta_t = min(rho_bar, rho_t) (r_t + gamma_t V(x_{t+1}) - V(x_t))
                 c_t     = lambda min(c_bar, rho_t)
                 A_t     = min(pg_rho_bar, rho_t) (r_t + gamma_t v_{t+1} - V(x_t))
    L_pg       = -sum A_t log pi(a_t|x_t)                  A_t a constant
    L_baseline = 0.5 sum (v_t - V(x_t))^2                  v_t a constant
    L_entropy  = -sum H(pi(.|x_t))
    L          = L_pg + baseline_cost L_baseline + entropy_cost L_entropy

Section 4.2 states the update as gradient directions; minimising L follows exactly them:
-dL_pg = A_t grad log pi(a_t|x_t) (the policy gradient), -dL_baseline = (v_t - V(x_t)) grad
V(x_t) (the value update), -dL_entropy = grad H (the entropy bonus). Sums, not means, as in
IMPALA's implementation and TorchBeast (their published costs assume it; ``loss.py``).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from seed_rl.functional import loss as losses
from seed_rl.functional import vtrace

__all__ = ["ImpalaLoss", "loss"]


class ImpalaLoss(NamedTuple):
    """Output of :func:`loss`. The four losses are 0-dim tensors; ``total`` is what the
    optimizer minimises, the others are its parts (what the trainer logs)."""

    total: Tensor  # L, with the graph to pi and V
    loss_pg: Tensor  # L_pg (nats x return units)
    loss_baseline: Tensor  # L_baseline (squared return units)
    loss_entropy: Tensor  # L_entropy, minus the summed entropy (nats)
    entropy: Tensor  # mean H(pi(.|x_t)) per step, nats; no gradient
    vs: Tensor  # v_t [T, B], V-trace value targets; no gradient
    pg_advantages: Tensor  # A_t [T, B]; no gradient


def loss(
    target_log_probs: Tensor,
    behaviour_log_probs: Tensor,
    entropies: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    *,
    baseline_cost: float,
    entropy_cost: float,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> ImpalaLoss:
    """The IMPALA loss of one batch of unrolls (the module docstring has the maths).

    Args:
        target_log_probs: ``[T, B]``, log pi(a_t|x_t); gradients flow into it through L_pg.
        behaviour_log_probs: ``[T, B]``, log mu(a_t|x_t); never differentiated.
        entropies: ``[T, B]``, H(pi(.|x_t)) in nats; gradients flow into it through L_entropy.
        values: ``[T, B]``, V(x_t); gradients flow into it through L_baseline only.
        bootstrap_value: ``[B]``, V(x_T); a target, never differentiated.
        rewards: ``[T, B]``, r_t.
        discounts: ``[T, B]``, gamma_t (0 where the episode ended at step t).
        baseline_cost: weight of L_baseline.
        entropy_cost: weight of L_entropy.
        clip_rho_threshold: rho_bar of the value targets, ``None`` for no clip.
        clip_pg_rho_threshold: rho_bar of the policy-gradient advantages, ``None`` for no clip.
        clip_c_threshold: c_bar of the traces, ``None`` for no clip.
        lambda_: the traces' lambda, c_t = lambda * min(c_bar, rho_t).

    Returns:
        :class:`ImpalaLoss`, on the inputs' device and in their dtype.

    Raises:
        ValueError: a shape does not fit (the message names the argument), or a threshold is
            not positive.
    """
    for name, x in (("behaviour_log_probs", behaviour_log_probs), ("entropies", entropies)):
        if x.shape != target_log_probs.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected the shape of "
                             f"target_log_probs {tuple(target_log_probs.shape)}")
    # log rho_t = log pi(a_t|x_t) - log mu(a_t|x_t): data for V-trace, whose outputs are
    # targets without gradient (so A_t and v_t are constants in the losses below).
    log_rhos = target_log_probs.detach() - behaviour_log_probs.detach()
    targets = vtrace.from_importance_weights(
        log_rhos=log_rhos,
        discounts=discounts,
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
        clip_c_threshold=clip_c_threshold,
        lambda_=lambda_,
    )
    loss_pg = losses.policy_gradient_from_log_probs(  # -sum A_t log pi(a_t|x_t)
        target_log_probs, targets.pg_advantages)
    loss_baseline = losses.baseline(targets.vs - values)  # 0.5 sum (v_t - V(x_t))^2
    loss_entropy = losses.entropy_from_entropies(entropies)  # -sum H(pi(.|x_t))
    total = loss_pg + baseline_cost * loss_baseline + entropy_cost * loss_entropy
    return ImpalaLoss(
        total=total,
        loss_pg=loss_pg,
        loss_baseline=loss_baseline,
        loss_entropy=loss_entropy,
        entropy=entropies.detach().mean(),
        vs=targets.vs,
        pg_advantages=targets.pg_advantages,
    )
