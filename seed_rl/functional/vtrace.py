"""V-trace off-policy targets (Espeholt et al., "IMPALA", ICML 2018, section 4).

What
    ``from_importance_weights`` computes the V-trace value targets ``vs`` and the policy-gradient
    advantages ``pg_advantages`` of a batch of unrolls, given the log importance weights
    ``log_rhos = log pi(a_t|x_t) - log mu(a_t|x_t)``. ``from_logits`` first computes those weights
    from the target (learner) and behaviour (actor) policy logits.

Why
    SEED RL's actors act with a policy that lags the learner's by a few updates. V-trace corrects
    for that lag with truncated importance weights, so the learner can train on slightly stale
    data without the variance of full importance sampling.

The maths, in the paper's notation (eq. 1 and Remark 1), for an unroll x_s ... x_{s+n}:

    rho_t   = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t))                  (clip_rho_threshold)
    c_t     = lambda * min(c_bar, pi(a_t|x_t) / mu(a_t|x_t))           (clip_c_threshold, lambda_)
    delta_t = rho_t * (r_t + gamma_t * V(x_{t+1}) - V(x_t))

    v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t        (eq. 1)

which Remark 1 turns into the backward recursion this module evaluates:

    v_s - V(x_s) = delta_s + gamma_s * c_s * (v_{s+1} - V(x_{s+1})),   v_{s+n} - V(x_{s+n}) = 0

and the policy-gradient advantage (section 4.2) is

    pg_advantage_s = rho^pg_s * (r_s + gamma_s * v_{s+1} - V(x_s)),     v_{s+n} = V(x_{s+n})

with rho^pg_s = min(rho_bar_pg, pi/mu) (clip_pg_rho_threshold).

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
    * Units: rewards and values are in return units (same units as each other); discounts and
      ratios are dimensionless.
    * ``vs`` and ``pg_advantages`` are targets: they carry no gradient. In ``from_logits``,
      ``log_rhos`` and ``target_action_log_probs`` keep their graph to the target logits; no
      gradient reaches the behaviour logits.
    * Float16/bfloat16 inputs are computed in float32 and returned in the input dtype.

Speed
    At learner sizes the cost is per-operation overhead, not arithmetic. The elementwise parts are
    a handful of vectorised operations over the whole [T, B] block; only the recursion is
    sequential, one multiply and one add per step on preallocated rows. On CPU, inputs up to
    1 MiB each run entirely in NumPy on views of the tensors' memory (a ufunc call costs a
    fraction of a torch operator's dispatch); larger ones do the elementwise maths in torch
    (multithreaded) and the recursion in NumPy. On accelerators the recursion is one fused
    ``addcmul`` kernel per step. Nothing divides by a cumulative product, so nothing underflows
    in float32 on long unrolls. Measurements: ``benchmarks/vtrace.py``, ``docs/functional.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

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


def action_log_probs(policy_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``actions`` under the softmax policy given by ``policy_logits``.

    ``policy_logits`` is ``[..., A]`` (unnormalised log-probabilities), ``actions`` an integer
    tensor ``[...]`` with values in ``[0, A)``. Returns ``[...]`` in nats, differentiable w.r.t.
    the logits. Uses ``log_softmax`` for numerical stability.
    """
    if policy_logits.dim() < 1:
        raise ValueError("policy_logits must have at least 1 dim [..., A], got a scalar")
    if tuple(actions.shape) != tuple(policy_logits.shape[:-1]):
        raise ValueError(
            f"actions has shape {tuple(actions.shape)}, expected the leading dims of "
            f"policy_logits {tuple(policy_logits.shape)}, i.e. {tuple(policy_logits.shape[:-1])}"
        )
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got {actions.dtype}")
    log_probs = F.log_softmax(policy_logits, dim=-1)
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


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
    """V-trace for softmax policies given by logits.

    Args:
        behavior_policy_logits: ``[T, B, A]``, logits of mu, the policy the actors acted with.
            Treated as data: no gradient flows into it.
        target_policy_logits: ``[T, B, A]``, logits of pi, the learner's current policy.
        values: ``[T, B, *E]``, V(x_t) under the learner's value function.
        bootstrap_value: ``[B, *E]``, V(x_T).
        actions: ``[T, B]`` integer, a_t, the action taken from x_t.
        discounts: ``[T, B, *E]``, gamma_t applied after step t (0 at termination).
        rewards: ``[T, B, *E]``, r_t, the reward for taking a_t in x_t.
        clip_rho_threshold: rho_bar, or ``None`` for no clipping.
        clip_pg_rho_threshold: rho_bar for the policy-gradient advantages, or ``None``.
        clip_c_threshold: c_bar (keyword only), or ``None``.
        lambda_: the lambda of Remark 2 (keyword only); c_t = lambda * min(c_bar, rho_t).

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
    """V-trace targets from log importance weights (IMPALA eq. 1, Remark 1, section 4.2).

    Args:
        log_rhos: ``[T, B, *E]``, log(pi(a_t|x_t) / mu(a_t|x_t)).
        discounts: ``[T, B, *E]``, gamma_t, the discount applied after step t (0 at termination).
        rewards: ``[T, B, *E]``, r_t.
        values: ``[T, B, *E]``, V(x_t).
        bootstrap_value: ``[B, *E]``, V(x_T).
        clip_rho_threshold: rho_bar for the value targets, or ``None`` for no clipping.
        clip_pg_rho_threshold: rho_bar for the policy-gradient advantages, or ``None``.
        clip_c_threshold: c_bar (keyword only), or ``None`` for no clipping.
        lambda_: trace-cutting factor (keyword only), c_t = lambda_ * min(c_bar, rho_t).

    Returns:
        ``VTraceReturns(vs, pg_advantages)``, each of the broadcast shape ``[T, B, *E]``, on the
        inputs' device and in their (promoted) floating dtype, without gradient.

    Raises:
        ValueError: an argument's shape does not fit ``[T, B, *E]`` (``[B, *E]`` for the
            bootstrap); the message names the argument, its shape and the expected shape.
    """
    for name, threshold in (
        ("clip_rho_threshold", clip_rho_threshold),
        ("clip_pg_rho_threshold", clip_pg_rho_threshold),
        ("clip_c_threshold", clip_c_threshold),
    ):
        if threshold is not None and not threshold > 0:
            raise ValueError(f"{name} must be positive or None, got {threshold}")

    inputs = _check_and_align(log_rhos, discounts, rewards, values, bootstrap_value)
    device = inputs[0].device
    if any(x.device != device for x in inputs):
        seen = ", ".join(
            f"{name} on {x.device}" for name, x in zip(_ARG_NAMES, inputs, strict=True)
        )
        raise ValueError(f"all inputs must be on one device, got {seen}")
    out_dtype = _result_dtype(inputs)
    # Half-precision inputs are computed in float32: the recursion accumulates T terms.
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype

    with torch.no_grad():
        inputs = [x.detach() if x.dtype == dtype else x.detach().to(dtype) for x in inputs]
        size_bytes = inputs[0].numel() * inputs[0].element_size()
        if device.type == "cpu" and size_bytes <= _NUMPY_MAX_BYTES:
            # NumPy's per-operation overhead is a fraction of torch's; the arrays share memory
            # with the tensors (no copies).
            vs, pg_advantages = _vtrace(
                np,
                *(x.numpy() for x in inputs),
                clip_rho_threshold,
                clip_pg_rho_threshold,
                clip_c_threshold,
                lambda_,
            )
            vs, pg_advantages = torch.from_numpy(vs), torch.from_numpy(pg_advantages)
        else:
            vs, pg_advantages = _vtrace(
                torch,
                *inputs,
                clip_rho_threshold,
                clip_pg_rho_threshold,
                clip_c_threshold,
                lambda_,
            )

    if dtype != out_dtype:
        vs, pg_advantages = vs.to(out_dtype), pg_advantages.to(out_dtype)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


_ARG_NAMES = ("log_rhos", "discounts", "rewards", "values", "bootstrap_value")

# CPU problems up to this many bytes per input run entirely in NumPy. Larger ones run the
# elementwise maths in torch, which is multithreaded, and only the recursion in NumPy. Measured on
# 2 cores: NumPy wins up to about [100, 2048] float32 (800 KiB); see docs/functional.md.
_NUMPY_MAX_BYTES = 1 << 20


def _vtrace(
    xp,
    log_rhos,
    discounts,
    rewards,
    values,
    bootstrap_value,
    clip_rho_threshold: float | None,
    clip_pg_rho_threshold: float | None,
    clip_c_threshold: float | None,
    lambda_: float,
):
    """The V-trace maths, written once for torch tensors and NumPy arrays.

    ``xp`` is the ``torch`` or ``numpy`` module; the inputs are its arrays, time-major, all of the
    same shape ``[T, B, *E]`` except ``bootstrap_value`` ``[B, *E]``, and all of one float dtype.
    Returns ``(vs, pg_advantages)``.
    """
    rhos = xp.exp(log_rhos)  # pi(a_t|x_t) / mu(a_t|x_t)
    clipped_rhos = _clip(rhos, clip_rho_threshold)  # rho_t
    same_c = clip_c_threshold == clip_rho_threshold
    cs = clipped_rhos if same_c else _clip(rhos, clip_c_threshold)  # c_t / lambda
    if lambda_ != 1.0:
        cs = lambda_ * cs  # c_t = lambda * min(c_bar, pi/mu)

    # The arithmetic below updates fresh temporaries in place (``+=`` and friends): at these
    # sizes allocating is a large part of the cost. Nothing here needs a gradient.

    # V(x_{t+1}) for t = 0..T-1, with V(x_T) = bootstrap_value.
    values_t_plus_1 = xp.concatenate([values[1:], bootstrap_value[None]])
    # delta_t V = rho_t * (r_t + gamma_t * V(x_{t+1}) - V(x_t)), for all t at once.
    deltas = values_t_plus_1
    deltas *= discounts
    deltas += rewards
    deltas -= values
    deltas *= clipped_rhos

    # Remark 1: v_t - V(x_t) = delta_t V + gamma_t * c_t * (v_{t+1} - V(x_{t+1})).
    vs = _reverse_linear_recurrence(deltas, discounts * cs)
    vs += values

    # pg_advantage_t = rho^pg_t * (r_t + gamma_t * v_{t+1} - V(x_t)), with v_T = V(x_T).
    pg_advantages = xp.concatenate([vs[1:], bootstrap_value[None]])  # v_{t+1}
    pg_advantages *= discounts
    pg_advantages += rewards
    pg_advantages -= values
    same_pg = clip_pg_rho_threshold == clip_rho_threshold
    pg_advantages *= clipped_rhos if same_pg else _clip(rhos, clip_pg_rho_threshold)
    return vs, pg_advantages


def _clip(rhos, threshold: float | None):
    """min(threshold, rhos) for a torch tensor or NumPy array; no clipping for ``None``."""
    if threshold is None:
        return rhos
    if isinstance(rhos, np.ndarray):
        return np.minimum(rhos, threshold)
    return torch.clamp(rhos, max=threshold)


def _reverse_linear_recurrence(deltas, coeffs):
    """acc_t = deltas_t + coeffs_t * acc_{t+1} for t = T-1 .. 0, with acc_T = 0.

    ``deltas`` and ``coeffs`` are ``[T, ...]`` torch tensors or NumPy arrays of one shape. Returns
    a new array or tensor of that shape. This is the only sequential part of V-trace: one row of
    B elements per step, updated in place in a preallocated output.
    """
    if isinstance(deltas, torch.Tensor) and deltas.device.type == "cpu":
        # A NumPy ufunc call on a row costs well under a microsecond, a fraction of a torch
        # operator's dispatch; the arrays are views of the tensors' memory.
        out = torch.empty_like(deltas, memory_format=torch.contiguous_format)
        _reverse_linear_recurrence_numpy(deltas.numpy(), coeffs.numpy(), out.numpy())
        return out
    if isinstance(deltas, np.ndarray):
        out = np.empty_like(deltas)
        _reverse_linear_recurrence_numpy(deltas, coeffs, out)
        return out
    return _reverse_linear_recurrence_torch(deltas, coeffs)


def _reverse_linear_recurrence_torch(deltas: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Torch body of :func:`_reverse_linear_recurrence`, for accelerators: one kernel per step."""
    out = torch.empty_like(deltas, memory_format=torch.contiguous_format)
    if len(out) == 0:
        return out
    out_rows, delta_rows, coeff_rows = out.unbind(0), deltas.unbind(0), coeffs.unbind(0)
    acc = out_rows[-1]
    acc.copy_(delta_rows[-1])
    for t in range(len(out) - 2, -1, -1):
        torch.addcmul(delta_rows[t], coeff_rows[t], acc, out=out_rows[t])
        acc = out_rows[t]
    return out


def _reverse_linear_recurrence_numpy(deltas: np.ndarray, coeffs: np.ndarray, out: np.ndarray):
    """NumPy body of :func:`_reverse_linear_recurrence`, writing into ``out``."""
    if len(out) == 0:
        return
    multiply, add = np.multiply, np.add
    acc = out[-1]
    acc[...] = deltas[-1]
    for acc_t, delta_t, coeff_t in zip(out[-2::-1], deltas[-2::-1], coeffs[-2::-1], strict=True):
        multiply(coeff_t, acc, out=acc_t)
        add(acc_t, delta_t, out=acc_t)
        acc = acc_t


def _result_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The promoted floating dtype of the inputs (the default float dtype if none is floating)."""
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        if x.dtype != dtype:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _check_and_align(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
) -> list[torch.Tensor]:
    """Check the ``[T, B, *E]`` / ``[B, *E]`` contract and broadcast to one ``[T, B, *E]``.

    T and B are taken from ``log_rhos`` and must match exactly. Trailing dims are aligned after
    [T, B], not from the right: a ``[T, B]`` tensor acts as ``[T, B, 1, ...]``, so it broadcasts
    against ``[T, B, X]``. Returns the five tensors (views, no copies), the four time-major ones of
    the common shape ``[T, B, *E]`` and the bootstrap ``[B, *E]``.
    """
    shape = log_rhos.shape
    if (
        len(shape) >= 2
        and discounts.shape == shape
        and rewards.shape == shape
        and values.shape == shape
        and bootstrap_value.shape == shape[1:]
    ):
        return [log_rhos, discounts, rewards, values, bootstrap_value]  # the common case

    time_major = {
        "log_rhos": log_rhos,
        "discounts": discounts,
        "rewards": rewards,
        "values": values,
    }
    if log_rhos.dim() < 2:
        raise ValueError(
            f"log_rhos has shape {tuple(log_rhos.shape)}, expected time-major [T, B, ...]"
        )
    t, b = log_rhos.shape[:2]
    for name, x in time_major.items():
        if x.dim() < 2 or tuple(x.shape[:2]) != (t, b):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, expected [T, B, ...] with [T, B] = "
                f"[{t}, {b}] (T, B from log_rhos {tuple(log_rhos.shape)})"
            )
    if bootstrap_value.dim() < 1 or bootstrap_value.shape[0] != b:
        raise ValueError(
            f"bootstrap_value has shape {tuple(bootstrap_value.shape)}, expected [B, ...] with "
            f"B = {b} (from log_rhos {tuple(log_rhos.shape)})"
        )

    rank = max(max(x.dim() for x in time_major.values()), bootstrap_value.dim() + 1)
    aligned = [_pad_trailing(x, rank) for x in time_major.values()]
    aligned_bootstrap = _pad_trailing(bootstrap_value, rank - 1)
    try:
        trailing = torch.broadcast_shapes(
            *(x.shape[2:] for x in aligned), aligned_bootstrap.shape[1:]
        )
    except RuntimeError:
        seen = ", ".join(
            f"{name} {tuple(x.shape)}"
            for name, x in (*time_major.items(), ("bootstrap_value", bootstrap_value))
        )
        raise ValueError(
            "the dims after [T, B] do not broadcast: expected time-major arguments "
            f"[T, B, *E] and bootstrap_value [B, *E], got {seen}"
        ) from None
    return [x.expand(t, b, *trailing) for x in aligned] + [aligned_bootstrap.expand(b, *trailing)]


def _pad_trailing(x: torch.Tensor, rank: int) -> torch.Tensor:
    """View ``x`` with singleton dims appended up to ``rank`` dims."""
    extra = rank - x.dim()
    return x.reshape(*x.shape, *([1] * extra)) if extra > 0 else x
