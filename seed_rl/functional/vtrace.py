"""V-trace off-policy targets (Espeholt et al., "IMPALA", ICML 2018, section 4).

SEED RL's actors act with a behaviour policy mu that lags the learner's target policy pi by a few
updates. V-trace corrects for that lag with truncated importance weights, so the learner trains on
slightly stale data without the variance of full importance sampling.

The definition, in the paper's notation (eq. 1 and Remark 1), for an unroll x_s ... x_{s+n}:

    rho_t   = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t))                  (clip_rho_threshold)
    c_t     = lambda * min(c_bar, pi(a_t|x_t) / mu(a_t|x_t))           (clip_c_threshold, lambda_)
    delta_t = rho_t * (r_t + gamma_t * V(x_{t+1}) - V(x_t))

    v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t        (eq. 1)

which Remark 1 turns into the backward recursion that is evaluated:

    v_s - V(x_s) = delta_s + gamma_s * c_s * (v_{s+1} - V(x_{s+1})),   v_{s+n} - V(x_{s+n}) = 0

and the policy-gradient advantage (section 4.2) is

    pg_advantage_s = rho^pg_s * (r_s + gamma_s * v_{s+1} - V(x_s)),     v_{s+n} = V(x_{s+n})

with rho^pg_s = min(rho_bar_pg, pi/mu) (clip_pg_rho_threshold). ``None`` disables a clip.

Conventions
    * Time-major: logits ``[T, B, A]``; ``actions``, ``values``, ``rewards``, ``discounts``,
      ``log_rhos`` ``[T, B]``; ``bootstrap_value`` ``[B]`` is V(x_T), the value of the
      observation after the last step of the unroll.
    * ``discounts[t]`` is gamma_t, the discount applied *after* step t: gamma, or 0 where the
      episode terminated at step t (then nothing after step t leaks into steps <= t).
    * Optional trailing dimensions: every time-major argument is ``[T, B, *E]`` and the bootstrap
      is ``[B, *E]``; trailing dimensions are aligned after ``[T, B]`` (a ``[T, B]`` tensor acts
      as ``[T, B, 1, ...]``) and broadcast. Example: values ``[T, B, X]`` (X value heads) with
      ``log_rhos [T, B]`` and ``bootstrap_value [B, X]``.
    * Units: rewards and values are in return units; discounts and ratios are dimensionless.
    * ``vs`` and ``pg_advantages`` are targets: they carry no gradient. In ``from_logits``,
      ``log_rhos`` and ``target_action_log_probs`` keep their graph to the target logits; no
      gradient reaches the behaviour logits.
    * Float16/bfloat16 inputs are computed in float32 and returned in the input dtype.

Any policy family
    :func:`from_importance_weights` needs only ``log_rhos = log pi(a_t|x_t) - log mu(a_t|x_t)``,
    the log-probabilities of the *taken* actions: softmax (:func:`action_log_probs`), Gaussian
    (``Normal(mean, std).log_prob(a).sum(-1)``), multi-discrete (the sum of the components'
    log-probabilities), ... :func:`from_logits` is the softmax shortcut.

Speed: the evaluation lives in ``seed_rl/functional/_vtrace_kernels.py`` (vectorised elementwise
maths, NumPy on small CPU inputs, one fused kernel per step on accelerators); measurements in
``benchmarks/vtrace.py`` and ``docs/functional.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from seed_rl.functional import _vtrace_kernels, categorical

__all__ = [
    "VTraceFromLogitsReturns",
    "VTraceReturns",
    "action_log_probs",
    "from_importance_weights",
    "from_logits",
]


class VTraceReturns(NamedTuple):
    """Output of :func:`from_importance_weights`. Both fields are ``[T, B, *E]``, no gradient."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor


class VTraceFromLogitsReturns(NamedTuple):
    """Output of :func:`from_logits`.

    ``vs``, ``pg_advantages``: as in :class:`VTraceReturns`, no gradient.
    ``log_rhos``: ``[T, B]``, log pi(a_t|x_t) - log mu(a_t|x_t), differentiable w.r.t. the target
    logits. ``behavior_action_log_probs``: ``[T, B]``, log mu(a_t|x_t), no gradient.
    ``target_action_log_probs``: ``[T, B]``, log pi(a_t|x_t), differentiable.
    """

    vs: torch.Tensor
    pg_advantages: torch.Tensor
    log_rhos: torch.Tensor
    behavior_action_log_probs: torch.Tensor
    target_action_log_probs: torch.Tensor


def from_importance_weights(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    *,
    clip_c_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace targets ``v_s`` and advantages from log importance weights (eq. 1, section 4.2).

    Args:
        log_rhos: ``[T, B, *E]``, log pi(a_t|x_t) - log mu(a_t|x_t), for any policy family (see
            the module docstring). Treated as data: no gradient flows back through it.
        discounts: ``[T, B, *E]``, gamma_t, the discount applied after step t (0 at termination).
        rewards: ``[T, B, *E]``, r_t.
        values: ``[T, B, *E]``, V(x_t).
        bootstrap_value: ``[B, *E]``, V(x_T).
        clip_rho_threshold: rho_bar for the value targets, or ``None`` for no clipping.
        clip_pg_rho_threshold: rho_bar for the policy-gradient advantages, or ``None``.
        clip_c_threshold: c_bar (keyword only), or ``None`` for no clipping.
        lambda_: trace-cutting factor (keyword only), c_t = lambda_ * min(c_bar, pi/mu).

    Returns:
        ``VTraceReturns(vs, pg_advantages)``, each of the broadcast shape ``[T, B, *E]``, on the
        inputs' device and in their (promoted) floating dtype, without gradient.

    Raises:
        ValueError: a threshold is not positive; the inputs are on several devices; or an
            argument's shape does not fit ``[T, B, *E]`` (``[B, *E]`` for the bootstrap), and the
            message names the argument, its shape and the expected shape.
    """
    for name, threshold in (
        ("clip_rho_threshold", clip_rho_threshold),
        ("clip_pg_rho_threshold", clip_pg_rho_threshold),
        ("clip_c_threshold", clip_c_threshold),
    ):
        if threshold is not None and not threshold > 0:
            raise ValueError(f"{name} must be positive or None, got {threshold}")
    vs, pg_advantages = _vtrace_kernels.targets(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap_value,
        clip_rho_threshold,
        clip_pg_rho_threshold,
        clip_c_threshold,
        lambda_,
    )
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def from_logits(
    behavior_policy_logits: torch.Tensor,
    target_policy_logits: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    actions: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    *,
    clip_c_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceFromLogitsReturns:
    """V-trace for softmax policies given by logits: :func:`from_importance_weights` with
    ``log_rhos = log softmax(target)[a] - log softmax(behaviour)[a]``.

    Args:
        behavior_policy_logits: ``[T, B, A]``, logits of mu, the policy the actors acted with.
            Treated as data: no gradient flows into it.
        target_policy_logits: ``[T, B, A]``, logits of pi, the learner's current policy.
        values: ``[T, B, *E]``, V(x_t) under the learner's value function.
        bootstrap_value: ``[B, *E]``, V(x_T).
        actions: ``[T, B]`` integer, a_t, the action taken from x_t.
        discounts: ``[T, B, *E]``, gamma_t applied after step t (0 at termination).
        rewards: ``[T, B, *E]``, r_t, the reward for taking a_t in x_t.
        clip_rho_threshold, clip_pg_rho_threshold, clip_c_threshold, lambda_: as in
            :func:`from_importance_weights`.

    Returns:
        ``VTraceFromLogitsReturns(vs, pg_advantages, log_rhos, behavior_action_log_probs,
        target_action_log_probs)``.
    """
    for name, logits in (
        ("behavior_policy_logits", behavior_policy_logits),
        ("target_policy_logits", target_policy_logits),
    ):
        if logits.dim() != 3:
            raise ValueError(f"{name} must be [T, B, A] (3 dims), got shape {tuple(logits.shape)}")
    if behavior_policy_logits.shape != target_policy_logits.shape:
        raise ValueError(
            f"behavior_policy_logits has shape {tuple(behavior_policy_logits.shape)} but "
            f"target_policy_logits has shape {tuple(target_policy_logits.shape)}; expected equal "
            "[T, B, A]"
        )
    t_b = tuple(target_policy_logits.shape[:2])
    if tuple(actions.shape) != t_b:
        raise ValueError(
            f"actions has shape {tuple(actions.shape)}, expected [T, B] = {t_b} "
            f"(from target_policy_logits {tuple(target_policy_logits.shape)})"
        )

    target_action_log_probs = action_log_probs(target_policy_logits, actions)
    behavior_action_log_probs = action_log_probs(behavior_policy_logits.detach(), actions)
    log_rhos = target_action_log_probs - behavior_action_log_probs
    vtrace_returns = from_importance_weights(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap_value,
        clip_rho_threshold,
        clip_pg_rho_threshold,
        clip_c_threshold=clip_c_threshold,
        lambda_=lambda_,
    )
    return VTraceFromLogitsReturns(
        vs=vtrace_returns.vs,
        pg_advantages=vtrace_returns.pg_advantages,
        log_rhos=log_rhos,
        behavior_action_log_probs=behavior_action_log_probs,
        target_action_log_probs=target_action_log_probs,
    )


def action_log_probs(policy_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``actions`` under the softmax policy given by ``policy_logits``.

    ``policy_logits`` is ``[..., A]`` (unnormalised log-probabilities), ``actions`` an integer
    tensor ``[...]`` with values in ``[0, A)``. Returns ``[...]`` in nats, differentiable w.r.t.
    the logits: :func:`seed_rl.functional.categorical.log_prob`, under V-trace's name.
    """
    return categorical.log_prob(policy_logits, actions)
