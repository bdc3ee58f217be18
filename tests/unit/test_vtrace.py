"""V-trace against an independent NumPy oracle written from the IMPALA paper's double sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import _vtrace_oracle as oracle

from seed_rl.functional import _vtrace_kernels, vtrace

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (clip_rho_threshold, clip_pg_rho_threshold, clip_c_threshold, lambda_)
CLIPPING = [
    pytest.param(1.0, 1.0, 1.0, 1.0, id="defaults"),
    pytest.param(None, None, None, 1.0, id="no-clipping"),
    pytest.param(0.5, 2.0, 0.8, 1.0, id="rho0.5-pg2-c0.8"),
    pytest.param(2.0, 0.5, 1.5, 1.0, id="rho2-pg0.5-c1.5"),
    pytest.param(1.0, 1.0, 1.0, 0.5, id="lambda0.5"),
    pytest.param(None, 1.0, 0.3, 0.95, id="rho-none-c0.3-lambda0.95"),
    pytest.param(3.7, None, None, 0.9, id="pg-none-c-none"),
]


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    )


def random_inputs(
    num_steps: int,
    batch: int,
    dtype: torch.dtype = torch.float64,
    *,
    seed: int = 0,
    termination_prob: float = 0.1,
    log_rho_scale: float = 1.0,
    trailing: tuple[int, ...] = (),
) -> dict[str, torch.Tensor]:
    """Inputs of from_importance_weights; log_rhos spread so that every clip is active."""
    rng = np.random.default_rng(seed)
    shape = (num_steps, batch, *trailing)
    discounts = rng.uniform(0.8, 1.0, shape)
    discounts[rng.uniform(size=shape) < termination_prob] = 0.0
    arrays = {
        "log_rhos": rng.normal(0.0, log_rho_scale, shape),
        "discounts": discounts,
        "rewards": rng.normal(0.0, 1.0, shape),
        "values": rng.normal(0.0, 2.0, shape),
        "bootstrap_value": rng.normal(0.0, 2.0, shape[1:]),
    }
    return {k: torch.tensor(v, dtype=dtype) for k, v in arrays.items()}


def oracle_of(inputs: dict[str, torch.Tensor], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    return oracle.vtrace(**{k: v.cpu().double().numpy() for k, v in inputs.items()}, **kwargs)


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


# --- from_logits ---------------------------------------------------------------------------


def random_logits_inputs(num_steps=6, batch=4, num_actions=5, dtype=torch.float64, seed=12):
    gen = torch.Generator().manual_seed(seed)
    rest = random_inputs(num_steps, batch, dtype=dtype, seed=seed)
    del rest["log_rhos"]
    return {
        "behavior_policy_logits": torch.randn(num_steps, batch, num_actions, generator=gen).to(
            dtype
        ),
        "target_policy_logits": torch.randn(num_steps, batch, num_actions, generator=gen).to(dtype),
        "actions": torch.randint(0, num_actions, (num_steps, batch), generator=gen),
        **rest,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rho_bar", "pg_rho_bar", "c_bar", "lambda_"), CLIPPING)
def test_from_logits_matches_oracle(dtype, rho_bar, pg_rho_bar, c_bar, lambda_):
    inputs = random_logits_inputs(dtype=dtype)
    out = vtrace.from_logits(
        **inputs,
        clip_rho_threshold=rho_bar,
        clip_pg_rho_threshold=pg_rho_bar,
        clip_c_threshold=c_bar,
        lambda_=lambda_,
    )
    assert isinstance(out, vtrace.VTraceFromLogitsReturns)
    actions = inputs["actions"].numpy()
    behaviour = oracle.action_log_probs(inputs["behavior_policy_logits"].numpy(), actions)
    target = oracle.action_log_probs(inputs["target_policy_logits"].numpy(), actions)
    tol = tolerances(dtype)
    np.testing.assert_allclose(out.behavior_action_log_probs.numpy(), behaviour, **tol)
    np.testing.assert_allclose(out.target_action_log_probs.detach().numpy(), target, **tol)
    np.testing.assert_allclose(out.log_rhos.detach().numpy(), target - behaviour, **tol)

    vs, pg = oracle.vtrace(
        target - behaviour,
        inputs["discounts"].numpy(),
        inputs["rewards"].numpy(),
        inputs["values"].numpy(),
        inputs["bootstrap_value"].numpy(),
        clip_rho_threshold=rho_bar,
        clip_pg_rho_threshold=pg_rho_bar,
        clip_c_threshold=c_bar,
        lambda_=lambda_,
    )
    np.testing.assert_allclose(out.vs.numpy(), vs, **tol)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, **tol)


def test_from_logits_positional_argument_order():
    inputs = random_logits_inputs()
    names = [
        "behavior_policy_logits",
        "target_policy_logits",
        "values",
        "bootstrap_value",
        "actions",
        "discounts",
        "rewards",
    ]
    positional = vtrace.from_logits(*(inputs[n] for n in names), 0.9, 1.1)
    keyword = vtrace.from_logits(**inputs, clip_rho_threshold=0.9, clip_pg_rho_threshold=1.1)
    for a, b in zip(positional, keyword, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_return_types_are_namedtuples_with_the_contract_fields():
    assert vtrace.VTraceFromLogitsReturns._fields == (
        "vs",
        "pg_advantages",
        "log_rhos",
        "behavior_action_log_probs",
        "target_action_log_probs",
    )
    assert vtrace.VTraceReturns._fields == ("vs", "pg_advantages")


def test_action_log_probs_matches_numpy():
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64) * 10
    actions = torch.randint(0, 6, (3, 4), generator=gen)
    expected = oracle.action_log_probs(logits.numpy(), actions.numpy())
    np.testing.assert_allclose(
        vtrace.action_log_probs(logits, actions).numpy(), expected, rtol=1e-12, atol=1e-12
    )
    # Stable for extreme logits: log_softmax, never log(softmax).
    big = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float32)
    out = vtrace.action_log_probs(big, torch.tensor([1]))
    assert torch.isfinite(out).all() and out.item() == pytest.approx(-2e4)


@pytest.mark.parametrize("policy", ["gaussian", "multi-discrete"])
def test_from_importance_weights_takes_log_rhos_of_any_policy(policy):
    """log_rhos = log pi(a|x) - log mu(a|x) of a non-softmax policy, against the oracle."""
    gen = torch.Generator().manual_seed(14)
    inputs = random_inputs(7, 3, seed=14)
    if policy == "gaussian":  # 2-dim continuous actions, diagonal Gaussian policies
        mu_mean, pi_mean, actions = (torch.randn(7, 3, 2, generator=gen) for _ in range(3))
        std = torch.full((7, 3, 2), 0.8)
        normal = torch.distributions.Normal
        log_pi = normal(pi_mean, std).log_prob(actions).sum(-1)
        log_mu = normal(mu_mean, std).log_prob(actions).sum(-1)
    else:  # two discrete components with 3 and 4 choices
        log_pi, log_mu = 0, 0
        for num in (3, 4):
            actions = torch.randint(0, num, (7, 3), generator=gen)
            log_pi = log_pi + vtrace.action_log_probs(
                torch.randn(7, 3, num, generator=gen), actions
            )
            log_mu = log_mu + vtrace.action_log_probs(
                torch.randn(7, 3, num, generator=gen), actions
            )
    inputs["log_rhos"] = (log_pi - log_mu).double()
    out = vtrace.from_importance_weights(**inputs, clip_rho_threshold=1.5, clip_c_threshold=0.9)
    vs, pg = oracle_of(inputs, clip_rho_threshold=1.5, clip_c_threshold=0.9)
    np.testing.assert_allclose(out.vs.numpy(), vs, **tolerances(torch.float64))
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, **tolerances(torch.float64))


# --- gradients -----------------------------------------------------------------------------


def test_gradient_flow():
    inputs = random_logits_inputs()
    for name in (
        "behavior_policy_logits",
        "target_policy_logits",
        "values",
        "bootstrap_value",
        "rewards",
    ):
        inputs[name] = inputs[name].clone().requires_grad_(True)
    out = vtrace.from_logits(**inputs)

    assert not out.vs.requires_grad and out.vs.grad_fn is None
    assert not out.pg_advantages.requires_grad and out.pg_advantages.grad_fn is None
    assert not out.behavior_action_log_probs.requires_grad
    assert out.log_rhos.requires_grad and out.target_action_log_probs.requires_grad

    (out.log_rhos.sum() + out.target_action_log_probs.sum()).backward()
    assert inputs["behavior_policy_logits"].grad is None
    for name in ("values", "bootstrap_value", "rewards"):
        assert inputs[name].grad is None
    # d log pi(a)/d logits = onehot(a) - softmax(logits); both outputs contribute once.
    logits = inputs["target_policy_logits"].detach()
    onehot = torch.nn.functional.one_hot(inputs["actions"], logits.shape[-1]).to(logits.dtype)
    expected = 2 * (onehot - torch.softmax(logits, -1))
    torch.testing.assert_close(inputs["target_policy_logits"].grad, expected)


def test_from_importance_weights_outputs_carry_no_gradient():
    inputs = random_inputs(5, 3)
    for v in inputs.values():
        v.requires_grad_(True)
    out = vtrace.from_importance_weights(**inputs)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


# --- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad_shape"),
    [
        ("log_rhos", (6,)),
        ("discounts", (5, 4)),
        ("rewards", (6, 3)),
        ("values", (7, 4)),
        ("values", (6,)),
        ("bootstrap_value", (3,)),
        ("bootstrap_value", ()),
        ("rewards", (6, 4, 3)),  # trailing dims that do not broadcast with values [6, 4, 2]
    ],
)
def test_from_importance_weights_rejects_bad_shapes(name, bad_shape):
    inputs = random_inputs(6, 4)
    if name == "rewards" and len(bad_shape) == 3:
        inputs["values"] = torch.zeros(6, 4, 2, dtype=torch.float64)
    inputs[name] = torch.zeros(bad_shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=name) as info:
        vtrace.from_importance_weights(**inputs)
    assert str(tuple(bad_shape)) in str(info.value)


@pytest.mark.parametrize(
    ("name", "bad_shape"),
    [
        ("behavior_policy_logits", (6, 4)),
        ("target_policy_logits", (6, 4, 3)),
        ("actions", (6, 5)),
        ("values", (5, 4)),
        ("discounts", (6, 3)),
        ("rewards", (4,)),
        ("bootstrap_value", (6,)),
    ],
)
def test_from_logits_rejects_bad_shapes(name, bad_shape):
    inputs = random_logits_inputs(num_steps=6, batch=4, num_actions=5)
    dtype = torch.int64 if name == "actions" else torch.float64
    inputs[name] = torch.zeros(bad_shape, dtype=dtype)
    with pytest.raises(ValueError, match=name) as info:
        vtrace.from_logits(**inputs)
    assert str(tuple(bad_shape)) in str(info.value)


@pytest.mark.parametrize(
    "name", ["clip_rho_threshold", "clip_pg_rho_threshold", "clip_c_threshold"]
)
def test_rejects_non_positive_thresholds(name):
    with pytest.raises(ValueError, match=name):
        vtrace.from_importance_weights(**random_inputs(3, 2), **{name: 0.0})


def test_rejects_float_actions():
    inputs = random_logits_inputs()
    inputs["actions"] = inputs["actions"].double()
    with pytest.raises(TypeError, match="actions"):
        vtrace.from_logits(**inputs)
