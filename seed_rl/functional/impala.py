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

Options (keyword arguments, each off by default; applied in this order):

1. PPO-style clipped surrogate (``ppo_clip`` = eps > 0; "APPO"). The advantage drops
   V-trace's rho factor and the surrogate's ratio becomes the only importance weight:

       A_t  = r_t + gamma_t v_{t+1} - V(x_t)
       L_pg = -sum min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)    rho_t differentiated

   Sample Factory's APPO (sample_factory/algo/learning/learner.py) and RLlib's APPO instead
   multiply the surrogate's ratio into V-trace's advantage, which already carries
   min(pg_rho_bar, rho_t), so rho_t is counted twice; here it is counted once, as in PPO
   (Schulman et al. 2017) with V-trace's v_{t+1} as the return estimate. Sample Factory
   also clips the ratio to [1 / (1 + eps), 1 + eps] and to [0.05, 20] first; here
   [1 - eps, 1 + eps] as in PPO. ``clip_pg_rho_threshold`` plays no part then.
2. PopArt scale (``value_scale`` = sigma, ``seed_rl/functional/popart.py``): the value error
   and the advantages are divided by sigma, so both terms are in normalised units:

       L_baseline = 0.5 sum ((v_t - V(x_t)) / sigma)^2        A_t <- A_t / sigma

   V(x_t), v_t and the bootstrap stay in return units (the model unnormalises its values).
3. Advantage normalisation (``normalize_advantages``): A_t <- (A_t - m) / (s + 1e-8) with
   m, s the mean and the (population) standard deviation of A over all T x B steps; with
   ``group_sum`` over the whole data-parallel group's batch (it adds up
   [count, sum A, sum A^2] across replicas, so every replica uses the same m and s).
   PopArt's 1 / sigma then cancels in the policy term.
4. Reduction (``reduction``): "sum" as above; "mean" divides L_pg, L_baseline and
   L_entropy by ``steps`` (default T x B; the trainer passes the group's step count) so
   the size of each term no longer grows with T x B. The costs weigh the terms against each
   other the same way in both; what changes is the size of the gradient, T x B times
   smaller with means: a ``max_grad_norm`` or an RMSprop epsilon tuned for sums (IMPALA's
   40 and 0.01) is then far too large (PPO implementations use means with a norm of 0.5
   and Adam, whose step does not depend on the gradient's scale).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from seed_rl.functional import loss as losses
from seed_rl.functional import vtrace

__all__ = ["ADVANTAGE_EPS", "ImpalaLoss", "loss", "moments"]

ADVANTAGE_EPS = 1e-8  # added to the advantages' standard deviation before dividing


class ImpalaLoss(NamedTuple):
    """Output of :func:`loss`. The four losses are 0-dim tensors; ``total`` is what the
    optimizer minimises, the others are its parts (what the trainer logs)."""

    total: Tensor  # L, with the graph to pi and V
    loss_pg: Tensor  # L_pg (nats x return units; normalised units with the options)
    loss_baseline: Tensor  # L_baseline (squared return units; normalised with value_scale)
    loss_entropy: Tensor  # L_entropy, minus the summed entropy (nats)
    entropy: Tensor  # mean H(pi(.|x_t)) per step, nats; no gradient
    vs: Tensor  # v_t [T, B], V-trace value targets in return units; no gradient
    pg_advantages: Tensor  # A_t [T, B] as L_pg used them (after the options); no gradient


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
    ppo_clip: float = 0.0,
    value_scale: Tensor | float = 1.0,
    normalize_advantages: bool = False,
    reduction: str = "sum",
    steps: int | None = None,
    group_sum: Callable[[Tensor], Tensor] | None = None,
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
        ppo_clip: eps of the clipped surrogate (option 1), 0 for IMPALA's L_pg.
        value_scale: PopArt's sigma (option 2), a number or a tensor that broadcasts to
            ``[T, B]`` (the model's ``[1]`` buffer); never differentiated.
        normalize_advantages: option 3.
        reduction: "sum" or "mean" (option 4).
        steps: the number of steps "mean" divides by (default ``T * B``).
        group_sum: sums a ``[3]`` tensor over the data-parallel group (all-reduce); option 3
            calls it once, with this batch's [count, sum A, sum A^2]. None: this batch alone.

    Returns:
        :class:`ImpalaLoss`, on the inputs' device and in their dtype.

    Raises:
        ValueError: a shape does not fit (the message names the argument), a threshold is
            not positive, ``ppo_clip`` is not in [0, 1), or ``reduction`` is unknown.
    """
    for name, x in (("behaviour_log_probs", behaviour_log_probs), ("entropies", entropies)):
        if x.shape != target_log_probs.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected the shape of "
                             f"target_log_probs {tuple(target_log_probs.shape)}")
    if not 0.0 <= ppo_clip < 1.0:
        raise ValueError(f"ppo_clip must be in [0, 1) (0: off), got {ppo_clip}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if isinstance(value_scale, Tensor):
        value_scale = value_scale.detach()
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
    if ppo_clip > 0:  # r_t + gamma_t v_{t+1} - V(x_t), without rho
        vs_next = torch.cat([targets.vs[1:], bootstrap_value.detach().unsqueeze(0)])
        advantages = rewards + discounts * vs_next - values.detach()
    else:
        advantages = targets.pg_advantages
    advantages = advantages / value_scale
    if normalize_advantages:
        advantages = _normalized(advantages, group_sum)
    if ppo_clip > 0:  # -sum min(rho A, clip(rho, 1 - eps, 1 + eps) A)
        rhos = torch.exp(target_log_probs - behaviour_log_probs.detach())
        surrogate = torch.minimum(rhos * advantages,
                                  rhos.clamp(1.0 - ppo_clip, 1.0 + ppo_clip) * advantages)
        loss_pg = -torch.sum(surrogate)
    else:
        loss_pg = losses.policy_gradient_from_log_probs(  # -sum A_t log pi(a_t|x_t)
            target_log_probs, advantages)
    # 0.5 sum ((v_t - V(x_t)) / sigma)^2
    loss_baseline = losses.baseline((targets.vs - values) / value_scale)
    loss_entropy = losses.entropy_from_entropies(entropies)  # -sum H(pi(.|x_t))
    if reduction == "mean":
        count = target_log_probs.numel() if steps is None else steps
        if count <= 0:
            raise ValueError(f"steps must be positive, got {count}")
        loss_pg, loss_baseline, loss_entropy = (
            loss_pg / count, loss_baseline / count, loss_entropy / count)
    total = loss_pg + baseline_cost * loss_baseline + entropy_cost * loss_entropy
    return ImpalaLoss(
        total=total,
        loss_pg=loss_pg,
        loss_baseline=loss_baseline,
        loss_entropy=loss_entropy,
        entropy=entropies.detach().mean(),
        vs=targets.vs,
        pg_advantages=advantages.detach(),
    )


def moments(x: Tensor) -> Tensor:
    """``[3]``: ``[count, sum x, sum x^2]`` of ``x`` (any shape, detached, in its dtype):
    what replicas add up to get the group's mean and variance (option 3 hands
    ``group_sum`` the advantages'; the trainer the V-trace targets' for PopArt)."""
    flat = x.detach().reshape(-1)
    return torch.stack([flat.new_tensor(float(flat.numel())), flat.sum(),
                        flat.square().sum()])


def _normalized(advantages: Tensor, group_sum: Callable[[Tensor], Tensor] | None) -> Tensor:
    """(A - m) / (s + eps) over this batch, or the group's (module docstring, option 3)."""
    count, total, squares = _group(moments(advantages), group_sum)
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0.0).sqrt()
    return (advantages - mean) / (std + ADVANTAGE_EPS)


def _group(moments: Tensor, group_sum: Callable[[Tensor], Tensor] | None) -> Tensor:
    return moments if group_sum is None else group_sum(moments)
