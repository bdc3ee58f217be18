"""V-trace's from_logits against the NumPy oracle, the gradients that flow (and do not) through
both entry points, and the argument checks. from_importance_weights' values are in
test_vtrace.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import _vtrace_oracle as oracle
from support.vtrace_inputs import (
    CLIPPING,
    oracle_of,
    random_inputs,
    random_logits_inputs,
    tolerances,
)

from seed_rl.functional import vtrace

# --- from_logits ---------------------------------------------------------------------------


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
