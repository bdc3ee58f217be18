"""The fast path behind :func:`seed_rl.functional.vtrace.from_importance_weights`.

Private: the definition, the shapes and the guarantees are documented in ``vtrace.py``; this
module only evaluates them quickly. :func:`targets` checks and aligns the arguments, picks a
backend and returns ``(vs, pg_advantages)``.

Why it is shaped like this
    At learner sizes the cost is per-operation overhead, not arithmetic. The elementwise parts are
    a handful of vectorised operations over the whole [T, B] block; only the recursion of Remark 1
    is sequential, one multiply and one add per step on preallocated rows. On CPU, inputs up to
    :data:`NUMPY_MAX_BYTES` each run entirely in NumPy on views of the tensors' memory (a ufunc
    call costs a fraction of a torch operator's dispatch); larger ones do the elementwise maths in
    torch (multithreaded) and the recursion in NumPy. On accelerators the recursion is one fused
    ``addcmul`` kernel per step. Nothing divides by a cumulative product, so nothing underflows in
    float32 on long unrolls. Measurements: ``benchmarks/vtrace.py``, ``docs/functional.md``.

Why the NumPy path stays (measured for issue 25, which asked for one path if it stays at least
3x faster than TorchRL's ``vtrace_advantage_estimate`` at every benchmarked size)
    Without it, CPU inputs of every size take the torch path. At [20, 32], the default
    ``--unroll-length`` x ``--batch-size``, that path is only about 3x faster than TorchRL: 2.9x
    (median of ``benchmarks/vtrace.py``) and 3.0x (the two paths and TorchRL interleaved in one
    process), against 4.9x for the NumPy path in that same process (0.101 vs 0.062 ms, TorchRL
    0.303 ms; [80, 256]: 4.7x vs 6.3x; [100, 1024]: 3.4x vs 3.9x; 2 cores, torch 2.13, TorchRL
    0.14.1). Doing the recursion with torch operators too, so that no NumPy is left, is slower
    still: 2.3x, 2.7x and 2.6x TorchRL on the three sizes. Both paths are checked against the
    same oracle (``tests/unit/test_vtrace.py`` runs its oracle tests through each); they differ by
    float32 rounding only (NumPy's and torch's ``exp`` differ in the last bit).
"""

from __future__ import annotations

import numpy as np
import torch

# CPU problems up to this many bytes per input run entirely in NumPy. Larger ones run the
# elementwise maths in torch, which is multithreaded, and only the recursion in NumPy. Measured on
# 2 cores: NumPy wins up to about [100, 2048] float32 (800 KiB); see docs/functional.md.
NUMPY_MAX_BYTES = 1 << 20

ARG_NAMES = ("log_rhos", "discounts", "rewards", "values", "bootstrap_value")


def targets(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None,
    clip_pg_rho_threshold: float | None,
    clip_c_threshold: float | None,
    lambda_: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vs, pg_advantages)`` of ``vtrace.from_importance_weights`` (shapes checked here)."""
    inputs = check_and_align(log_rhos, discounts, rewards, values, bootstrap_value)
    device = inputs[0].device
    if any(x.device != device for x in inputs):
        seen = ", ".join(f"{name} on {x.device}" for name, x in zip(ARG_NAMES, inputs, strict=True))
        raise ValueError(f"all inputs must be on one device, got {seen}")
    out_dtype = result_dtype(inputs)
    # Half-precision inputs are computed in float32: the recursion accumulates T terms.
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    clips = (clip_rho_threshold, clip_pg_rho_threshold, clip_c_threshold, lambda_)

    with torch.no_grad():
        inputs = [x.detach() if x.dtype == dtype else x.detach().to(dtype) for x in inputs]
        size_bytes = inputs[0].numel() * inputs[0].element_size()
        if device.type == "cpu" and size_bytes <= NUMPY_MAX_BYTES:
            # NumPy's per-operation overhead is a fraction of torch's; the arrays share memory
            # with the tensors (no copies).
            vs, pg_advantages = _vtrace(np, *(x.numpy() for x in inputs), *clips)
            vs, pg_advantages = torch.from_numpy(vs), torch.from_numpy(pg_advantages)
        else:
            vs, pg_advantages = _vtrace(torch, *inputs, *clips)

    if dtype != out_dtype:
        vs, pg_advantages = vs.to(out_dtype), pg_advantages.to(out_dtype)
    return vs, pg_advantages


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
    vs = reverse_linear_recurrence(deltas, discounts * cs)
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


def reverse_linear_recurrence(deltas, coeffs):
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
    return reverse_linear_recurrence_torch(deltas, coeffs)


def reverse_linear_recurrence_torch(deltas: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Torch body of :func:`reverse_linear_recurrence`, for accelerators: one kernel per step."""
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
    """NumPy body of :func:`reverse_linear_recurrence`, writing into ``out``."""
    if len(out) == 0:
        return
    multiply, add = np.multiply, np.add
    acc = out[-1]
    acc[...] = deltas[-1]
    for acc_t, delta_t, coeff_t in zip(out[-2::-1], deltas[-2::-1], coeffs[-2::-1], strict=True):
        multiply(coeff_t, acc, out=acc_t)
        add(acc_t, delta_t, out=acc_t)
        acc = acc_t


def result_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The promoted floating dtype of the inputs (the default float dtype if none is floating)."""
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        if x.dtype != dtype:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def check_and_align(
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

    time_major = dict(zip(ARG_NAMES[:4], (log_rhos, discounts, rewards, values), strict=True))
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
