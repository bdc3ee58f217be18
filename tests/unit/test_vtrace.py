"""V-trace against an independent NumPy oracle written from the IMPALA paper's double sum:
from_importance_weights' values (both code paths, every clipping, dtypes, devices, shapes)
and episode ends. from_logits, gradients and argument checks are in
test_vtrace_logits.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vtrace_inputs import CLIPPING, oracle_of, random_inputs, tolerances

from seed_rl.functional import _vtrace_kernels, vtrace

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["numpy", "torch"])
def backend(request, monkeypatch):
    """Run a test through both code paths: all-NumPy (small CPU inputs) and torch elementwise."""
    if request.param == "numpy":
        monkeypatch.setattr(_vtrace_kernels, "NUMPY_MAX_BYTES", 1 << 62)
    else:
        monkeypatch.setattr(_vtrace_kernels, "NUMPY_MAX_BYTES", -1)
    return request.param


# --- values against the oracle -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rho_bar", "pg_rho_bar", "c_bar", "lambda_"), CLIPPING)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (20, 7)])
def test_from_importance_weights_matches_oracle(
    backend, dtype, rho_bar, pg_rho_bar, c_bar, lambda_, shape
):
    inputs = random_inputs(*shape, dtype=dtype, seed=sum(shape))
    out = vtrace.from_importance_weights(
        **inputs,
        clip_rho_threshold=rho_bar,
        clip_pg_rho_threshold=pg_rho_bar,
        clip_c_threshold=c_bar,
        lambda_=lambda_,
    )
    vs, pg = oracle_of(
        inputs,
        clip_rho_threshold=rho_bar,
        clip_pg_rho_threshold=pg_rho_bar,
        clip_c_threshold=c_bar,
        lambda_=lambda_,
    )
    assert isinstance(out, vtrace.VTraceReturns)
    assert out.vs.dtype == dtype and out.pg_advantages.dtype == dtype
    assert out.vs.shape == shape and out.pg_advantages.shape == shape
    np.testing.assert_allclose(out.vs.numpy(), vs, **tolerances(dtype))
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, **tolerances(dtype))


def test_positional_argument_order_matches_the_contract():
    inputs = random_inputs(6, 4)
    args = [inputs[k] for k in ("log_rhos", "discounts", "rewards", "values", "bootstrap_value")]
    out = vtrace.from_importance_weights(*args, 0.7, 1.3)
    vs, pg = oracle_of(inputs, clip_rho_threshold=0.7, clip_pg_rho_threshold=1.3)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-10, atol=1e-10)


def test_on_policy_without_clipping_gives_n_step_returns():
    """With pi == mu and c_bar, rho_bar >= 1, v_s is the n-step bootstrapped return (Remark 2)."""
    inputs = random_inputs(7, 3, termination_prob=0.3)
    inputs["log_rhos"] = torch.zeros_like(inputs["log_rhos"])
    out = vtrace.from_importance_weights(**inputs)
    discounts, rewards = inputs["discounts"].numpy(), inputs["rewards"].numpy()
    ret = inputs["bootstrap_value"].numpy()
    expected = []
    for t in reversed(range(7)):
        ret = rewards[t] + discounts[t] * ret
        expected.append(ret)
    np.testing.assert_allclose(out.vs.numpy(), np.stack(expected[::-1]), rtol=1e-12, atol=1e-12)


def test_float32_long_unroll_is_stable(backend):
    """T=100, gamma near 1, importance weights around 1: float32 stays within 1e-5 relative."""
    inputs = random_inputs(
        100, 64, dtype=torch.float32, termination_prob=0.0, log_rho_scale=0.1, seed=3
    )
    inputs["discounts"] = torch.full_like(inputs["discounts"], 0.999)
    out = vtrace.from_importance_weights(**inputs)
    vs, pg = oracle_of(inputs)
    scale = np.abs(vs).max()
    assert scale > 5  # long returns, not a trivially small problem
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-5, atol=1e-5 * scale)
    assert torch.isfinite(out.vs).all()


def test_tiny_coefficients_do_not_underflow_into_nan():
    """Products of many small gamma_t c_t underflow to 0 in float32; that must stay harmless."""
    inputs = random_inputs(100, 5, dtype=torch.float32, termination_prob=0.0, seed=4)
    inputs["log_rhos"] = torch.full_like(inputs["log_rhos"], -20.0)  # rho ~ 2e-9
    out = vtrace.from_importance_weights(**inputs)
    vs, pg = oracle_of(inputs)
    assert torch.isfinite(out.vs).all() and torch.isfinite(out.pg_advantages).all()
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_is_computed_in_float32(device):
    inputs = random_inputs(10, 4, dtype=torch.bfloat16, seed=5)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    out = vtrace.from_importance_weights(**inputs)
    assert out.vs.dtype == torch.bfloat16 and out.vs.device.type == device
    vs, pg = oracle_of(inputs)
    np.testing.assert_allclose(out.vs.float().cpu().numpy(), vs, rtol=1e-2, atol=2e-2)
    np.testing.assert_allclose(out.pg_advantages.float().cpu().numpy(), pg, rtol=1e-2, atol=2e-2)


def test_mixed_dtypes_promote():
    inputs = random_inputs(5, 3, seed=6)
    inputs["rewards"] = inputs["rewards"].float()
    inputs["log_rhos"] = inputs["log_rhos"].float()
    out = vtrace.from_importance_weights(**inputs)
    assert out.vs.dtype == torch.float64
    vs, _ = oracle_of(inputs)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_inputs_device(device):
    inputs = {k: v.to(device) for k, v in random_inputs(8, 5, dtype=torch.float32).items()}
    out = vtrace.from_importance_weights(**inputs)
    assert out.vs.device.type == device and out.pg_advantages.device.type == device
    vs, pg = oracle_of(inputs)
    np.testing.assert_allclose(out.vs.cpu().numpy(), vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages.cpu().numpy(), pg, rtol=1e-5, atol=1e-5)


def test_trailing_dims_broadcast(backend):
    """values [T, B, X] with log_rhos, discounts [T, B] and bootstrap [B, X] (e.g. X heads)."""
    t, b, x = 6, 4, 3
    full = random_inputs(t, b, trailing=(x,), seed=7)
    inputs = dict(full)
    inputs["log_rhos"] = full["log_rhos"][..., 0]
    inputs["discounts"] = full["discounts"][..., 0]
    out = vtrace.from_importance_weights(**inputs)
    assert out.vs.shape == (t, b, x) and out.pg_advantages.shape == (t, b, x)
    expected = dict(full)
    expected["log_rhos"] = inputs["log_rhos"][..., None].expand(t, b, x)
    expected["discounts"] = inputs["discounts"][..., None].expand(t, b, x)
    vs, pg = oracle_of(expected)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-10, atol=1e-10)

    # A [B] bootstrap broadcasts over the trailing dims too.
    inputs["bootstrap_value"] = full["bootstrap_value"][:, 0]
    expected["bootstrap_value"] = inputs["bootstrap_value"][:, None].expand(b, x)
    out = vtrace.from_importance_weights(**inputs)
    vs, pg = oracle_of(expected)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-10, atol=1e-10)


def test_non_contiguous_inputs(backend):
    inputs = random_inputs(9, 6, dtype=torch.float32, seed=8)
    batch_major = {
        k: v.movedim(0, 1).contiguous().movedim(1, 0)
        for k, v in inputs.items()
        if k != "bootstrap_value"
    }
    batch_major["bootstrap_value"] = inputs["bootstrap_value"]
    assert not batch_major["values"].is_contiguous()
    out = vtrace.from_importance_weights(**batch_major)
    vs, pg = oracle_of(inputs)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=1e-5, atol=1e-5)


def test_recurrence_helpers_agree():
    """The NumPy loop (CPU) and the torch loop (accelerators) compute the same recursion."""
    rng = np.random.default_rng(9)
    deltas = torch.tensor(rng.normal(size=(30, 4, 2)))
    coeffs = torch.tensor(rng.uniform(0, 1, size=(30, 4, 2)))
    expected = np.zeros((31, 4, 2))
    for t in reversed(range(30)):
        expected[t] = deltas[t].numpy() + coeffs[t].numpy() * expected[t + 1]
    via_torch = _vtrace_kernels.reverse_linear_recurrence_torch(deltas, coeffs)
    via_numpy = _vtrace_kernels.reverse_linear_recurrence(deltas, coeffs)
    np.testing.assert_allclose(via_torch.numpy(), expected[:-1], rtol=1e-12)
    np.testing.assert_allclose(via_numpy.numpy(), expected[:-1], rtol=1e-12)


# --- episode ends --------------------------------------------------------------------------


@pytest.mark.parametrize(("rho_bar", "pg_rho_bar", "c_bar", "lambda_"), CLIPPING)
def test_episode_ends_split_the_unroll(backend, rho_bar, pg_rho_bar, c_bar, lambda_):
    """discount 0 at step e ends an episode: nothing after e reaches steps <= e.

    V-trace over the whole unroll must equal V-trace over each episode piece computed alone.
    A piece [s, e] that ends in a termination gets a garbage bootstrap (it is multiplied by 0);
    the last piece keeps the unroll's bootstrap value.
    """
    kwargs = {
        "clip_rho_threshold": rho_bar,
        "clip_pg_rho_threshold": pg_rho_bar,
        "clip_c_threshold": c_bar,
        "lambda_": lambda_,
    }
    num_steps, batch = 12, 1
    inputs = random_inputs(num_steps, batch, termination_prob=0.0, seed=10)
    ends = [2, 3, 8]  # terminations after steps 2, 3 (a one-step episode) and 8
    inputs["discounts"][ends] = 0.0
    whole = vtrace.from_importance_weights(**inputs, **kwargs)

    starts = [0] + [e + 1 for e in ends]
    stops = [e + 1 for e in ends] + [num_steps]
    for start, stop in zip(starts, stops, strict=True):
        piece = {k: v[start:stop] for k, v in inputs.items() if k != "bootstrap_value"}
        if stop < num_steps:
            piece["bootstrap_value"] = torch.full((batch,), 1e6, dtype=torch.float64)
        else:
            piece["bootstrap_value"] = inputs["bootstrap_value"]
        alone = vtrace.from_importance_weights(**piece, **kwargs)
        torch.testing.assert_close(whole.vs[start:stop], alone.vs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            whole.pg_advantages[start:stop], alone.pg_advantages, rtol=1e-12, atol=1e-12
        )
    vs, pg = oracle_of(inputs, **kwargs)
    np.testing.assert_allclose(whole.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(whole.pg_advantages.numpy(), pg, rtol=1e-10, atol=1e-10)


def test_termination_at_the_last_step_ignores_the_bootstrap():
    inputs = random_inputs(5, 3, termination_prob=0.0, seed=11)
    inputs["discounts"][-1] = 0.0
    a = vtrace.from_importance_weights(**inputs)
    inputs["bootstrap_value"] = inputs["bootstrap_value"] + 123.0
    b = vtrace.from_importance_weights(**inputs)
    torch.testing.assert_close(a.vs, b.vs, rtol=0, atol=0)
    torch.testing.assert_close(a.pg_advantages, b.pg_advantages, rtol=0, atol=0)
