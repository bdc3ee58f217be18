"""The IMPALA losses against NumPy values and analytic gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import _vtrace_oracle as oracle

from seed_rl.functional import loss, vtrace

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LEADING = [(), (4,), (5, 3), (2, 3, 4)]


def make(leading, num_actions=6, dtype=torch.float64, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn((*leading, num_actions), generator=gen, dtype=torch.float64) * scale
    actions = torch.randint(0, num_actions, leading, generator=gen)
    advantages = torch.randn(leading, generator=gen, dtype=torch.float64)
    return logits.to(dtype), actions, advantages.to(dtype)


# --- entropy -------------------------------------------------------------------------------


@pytest.mark.parametrize("leading", LEADING)
def test_entropy_value_and_gradient(leading):
    logits, _, _ = make(leading)
    logits.requires_grad_(True)
    out = loss.entropy(logits)
    assert out.dim() == 0

    log_p = oracle.log_softmax(logits.detach().numpy())
    p = np.exp(log_p)
    np.testing.assert_allclose(out.item(), np.sum(p * log_p), rtol=1e-12)

    out.backward()
    # d/dz_j sum_a p_a log p_a = p_j (log p_j + H), H = -sum_a p_a log p_a (per position).
    h = -np.sum(p * log_p, axis=-1, keepdims=True)
    np.testing.assert_allclose(logits.grad.numpy(), p * (log_p + h), rtol=1e-10, atol=1e-12)


def test_entropy_of_uniform_and_deterministic_policies():
    uniform = torch.zeros(3, 4, dtype=torch.float64)
    assert loss.entropy(uniform).item() == pytest.approx(-3 * np.log(4))
    deterministic = torch.tensor([[1e4, 0.0, -1e4]], dtype=torch.float32)
    out = loss.entropy(deterministic)
    assert torch.isfinite(out) and out.item() == pytest.approx(0.0, abs=1e-6)


# --- policy gradient -----------------------------------------------------------------------


@pytest.mark.parametrize("leading", LEADING)
def test_policy_gradient_value_and_gradient(leading):
    logits, actions, advantages = make(leading, seed=1)
    logits.requires_grad_(True)
    advantages.requires_grad_(True)
    out = loss.policy_gradient(logits, actions, advantages)
    assert out.dim() == 0

    log_p = oracle.action_log_probs(logits.detach().numpy(), actions.numpy())
    np.testing.assert_allclose(out.item(), -np.sum(log_p * advantages.detach().numpy()), rtol=1e-12)

    out.backward()
    assert advantages.grad is None  # advantages are constants
    # d/dz [-log softmax(z)_a * adv] = -(onehot(a) - softmax(z)) * adv
    onehot = F.one_hot(actions, logits.shape[-1]).double()
    expected = -(onehot - torch.softmax(logits.detach(), -1)) * advantages.detach()[..., None]
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-12)


def test_policy_gradient_is_stable_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float32, requires_grad=True)
    out = loss.policy_gradient(logits, torch.tensor([1]), torch.tensor([2.0]))
    assert out.item() == pytest.approx(4e4)
    out.backward()
    assert torch.isfinite(logits.grad).all()


def test_policy_gradient_accepts_any_integer_action_dtype():
    logits, actions, advantages = make((5,), seed=2)
    expected = loss.policy_gradient(logits, actions, advantages)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(
            loss.policy_gradient(logits, actions.to(dtype), advantages), expected
        )


# --- log-probability forms ------------------------------------------------------------------


@pytest.mark.parametrize("leading", LEADING)
def test_entropy_from_log_probs_equals_the_logits_form_and_numpy(leading):
    logits, _, _ = make(leading, seed=6)
    via_logits = logits.clone().requires_grad_(True)
    via_log_probs = logits.clone().requires_grad_(True)
    expected = loss.entropy(via_logits)
    out = loss.entropy_from_log_probs(F.log_softmax(via_log_probs, dim=-1))
    assert out.dim() == 0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    log_p = oracle.log_softmax(logits.numpy())
    np.testing.assert_allclose(out.item(), np.sum(np.exp(log_p) * log_p), rtol=1e-12)

    expected.backward()
    out.backward()
    torch.testing.assert_close(via_log_probs.grad, via_logits.grad, rtol=0, atol=0)


@pytest.mark.parametrize("leading", LEADING)
def test_policy_gradient_from_log_probs_equals_the_logits_form_and_numpy(leading):
    logits, actions, advantages = make(leading, seed=7)
    via_logits = logits.clone().requires_grad_(True)
    via_log_probs = logits.clone().requires_grad_(True)
    advantages.requires_grad_(True)
    expected = loss.policy_gradient(via_logits, actions, advantages)
    action_log_probs = vtrace.action_log_probs(via_log_probs, actions)
    out = loss.policy_gradient_from_log_probs(action_log_probs, advantages)
    assert out.dim() == 0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    log_p = oracle.action_log_probs(logits.numpy(), actions.numpy())
    np.testing.assert_allclose(out.item(), -np.sum(log_p * advantages.detach().numpy()), rtol=1e-12)

    expected.backward()
    out.backward()
    assert advantages.grad is None  # advantages are constants
    torch.testing.assert_close(via_log_probs.grad, via_logits.grad, rtol=0, atol=0)


def test_policy_gradient_from_log_probs_for_a_gaussian_policy():
    """Any policy family: log pi(a|x) of a diagonal Gaussian, summed over the action dims."""
    rng = np.random.default_rng(8)
    mean_np, log_std_np = rng.normal(size=(5, 3, 2)), rng.normal(0, 0.3, size=(5, 3, 2))
    actions_np, adv_np = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3))
    mean = torch.tensor(mean_np, requires_grad=True)
    std = torch.tensor(log_std_np).exp()
    log_pi = torch.distributions.Normal(mean, std).log_prob(torch.tensor(actions_np)).sum(-1)
    out = loss.policy_gradient_from_log_probs(log_pi, torch.tensor(adv_np))

    var = np.exp(2 * log_std_np)
    log_pi_np = np.sum(
        -0.5 * (actions_np - mean_np) ** 2 / var - log_std_np - 0.5 * np.log(2 * np.pi), axis=-1
    )
    np.testing.assert_allclose(out.item(), -np.sum(log_pi_np * adv_np), rtol=1e-12)
    out.backward()
    # d/dmean [-log N(a; mean, std) * adv] = -adv * (a - mean) / std^2
    expected = -adv_np[..., None] * (actions_np - mean_np) / var
    np.testing.assert_allclose(mean.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("leading", LEADING)
def test_entropy_from_entropies_equals_the_softmax_forms_and_numpy(leading):
    """Per-position entropies of a softmax policy give the same loss and gradients as
    entropy_from_log_probs (up to summation order)."""
    logits, _, _ = make(leading, seed=11)
    via_log_probs = logits.clone().requires_grad_(True)
    via_entropies = logits.clone().requires_grad_(True)
    expected = loss.entropy_from_log_probs(F.log_softmax(via_log_probs, dim=-1))
    entropies = torch.distributions.Categorical(logits=via_entropies).entropy()  # [...]
    out = loss.entropy_from_entropies(entropies)
    assert out.dim() == 0
    log_p = oracle.log_softmax(logits.numpy())
    np.testing.assert_allclose(out.item(), np.sum(np.exp(log_p) * log_p), rtol=1e-12)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    expected.backward()
    out.backward()
    torch.testing.assert_close(via_entropies.grad, via_log_probs.grad, rtol=1e-10, atol=1e-12)


def test_entropy_from_entropies_for_a_gaussian_policy():
    """Any policy family: minus the summed entropies of diagonal Gaussians, whose gradient
    w.r.t. each log-std is -1."""
    rng = np.random.default_rng(12)
    log_std_np = rng.normal(0, 0.5, size=(5, 3, 2))
    log_std = torch.tensor(log_std_np, requires_grad=True)
    normal = torch.distributions.Normal(torch.zeros(5, 3, 2, dtype=torch.float64), log_std.exp())
    out = loss.entropy_from_entropies(normal.entropy().sum(-1))
    np.testing.assert_allclose(out.item(), -np.sum(0.5 + 0.5 * np.log(2 * np.pi) + log_std_np),
                               rtol=1e-12)
    out.backward()
    np.testing.assert_allclose(log_std.grad.numpy(), -np.ones_like(log_std_np), rtol=1e-12)
    with pytest.raises(TypeError, match="entropies"):
        loss.entropy_from_entropies(torch.zeros(3, dtype=torch.long))


def test_one_log_softmax_per_update_matches_the_logits_forms():
    """The trainer recipe of loss.py's docstring: same losses and gradients as the logits forms."""
    gen = torch.Generator().manual_seed(9)
    num_steps, batch, num_actions = 6, 4, 5
    behaviour = torch.randn(num_steps, batch, num_actions, generator=gen, dtype=torch.float64)
    target = torch.randn(num_steps, batch, num_actions, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, num_actions, (num_steps, batch), generator=gen)
    values = torch.randn(num_steps, batch, generator=gen, dtype=torch.float64)
    rest = {
        "bootstrap_value": torch.randn(batch, generator=gen, dtype=torch.float64),
        "discounts": torch.full((num_steps, batch), 0.9, dtype=torch.float64),
        "rewards": torch.randn(num_steps, batch, generator=gen, dtype=torch.float64),
    }

    def total(vt, pg, neg_entropy):
        return pg + 0.5 * loss.baseline(vt.vs - values) + 0.01 * neg_entropy

    by_logits = target.clone().requires_grad_(True)
    vt = vtrace.from_logits(behaviour, by_logits, values, actions=actions, **rest)
    expected = total(
        vt, loss.policy_gradient(by_logits, actions, vt.pg_advantages), loss.entropy(by_logits)
    )

    shared = target.clone().requires_grad_(True)
    log_pi = F.log_softmax(shared, dim=-1)
    log_pi_a = log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    log_mu_a = vtrace.action_log_probs(behaviour, actions)
    vt_shared = vtrace.from_importance_weights(
        log_pi_a - log_mu_a, rest["discounts"], rest["rewards"], values, rest["bootstrap_value"]
    )
    out = total(
        vt_shared,
        loss.policy_gradient_from_log_probs(log_pi_a, vt_shared.pg_advantages),
        loss.entropy_from_log_probs(log_pi),
    )
    torch.testing.assert_close(vt_shared.vs, vt.vs, rtol=0, atol=0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    expected.backward()
    out.backward()
    torch.testing.assert_close(shared.grad, by_logits.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_log_prob_forms_keep_dtype_and_device(device, dtype):
    logits, actions, advantages = make((5, 3), seed=10)
    log_probs = F.log_softmax(logits, dim=-1).to(device, dtype)
    action_log_probs = log_probs.gather(-1, actions.to(device).unsqueeze(-1)).squeeze(-1)
    outs = (
        loss.entropy_from_log_probs(log_probs),
        loss.policy_gradient_from_log_probs(action_log_probs, advantages.to(device, dtype)),
    )
    references = (loss.entropy(logits).item(), loss.policy_gradient(logits, actions, advantages))
    rtol = {torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-12}
    for out, ref in zip(outs, references, strict=True):
        assert out.dtype == dtype and out.device.type == device and out.dim() == 0
        assert out.item() == pytest.approx(float(ref), rel=rtol[dtype], abs=rtol[dtype])


def test_log_prob_forms_reject_bad_arguments():
    with pytest.raises(ValueError, match="advantages") as info:
        loss.policy_gradient_from_log_probs(torch.zeros(5, 3), torch.zeros(5, 1))
    assert "(5, 1)" in str(info.value) and "(5, 3)" in str(info.value)
    with pytest.raises(TypeError, match="action_log_probs"):
        loss.policy_gradient_from_log_probs(torch.zeros(5, dtype=torch.long), torch.zeros(5))
    with pytest.raises(ValueError, match="log_probs"):
        loss.entropy_from_log_probs(torch.tensor(-1.0))
    with pytest.raises(TypeError, match="log_probs"):
        loss.entropy_from_log_probs(torch.zeros(3, dtype=torch.long))


# --- baseline ------------------------------------------------------------------------------


@pytest.mark.parametrize("leading", LEADING)
def test_baseline_value_and_gradient(leading):
    _, _, advantages = make(leading, seed=3)
    advantages.requires_grad_(True)
    out = loss.baseline(advantages)
    assert out.dim() == 0
    a = advantages.detach().numpy()
    np.testing.assert_allclose(out.item(), 0.5 * np.sum(a**2), rtol=1e-12)
    out.backward()
    torch.testing.assert_close(advantages.grad, advantages.detach())  # d/da 0.5 a^2 = a


def test_baseline_gradient_moves_values_towards_vtrace_targets():
    vs = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    values = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    loss.baseline(vs - values).backward()
    torch.testing.assert_close(values.grad, -(vs - values.detach()))


# --- dtypes and devices --------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_losses_keep_dtype_and_device(device, dtype):
    logits, actions, advantages = make((5, 3), seed=4, dtype=torch.float64)
    reference = (
        loss.entropy(logits).item(),
        loss.policy_gradient(logits, actions, advantages).item(),
        loss.baseline(advantages).item(),
    )
    logits, actions, advantages = (x.to(device) for x in (logits, actions, advantages))
    logits, advantages = logits.to(dtype), advantages.to(dtype)
    outs = (
        loss.entropy(logits),
        loss.policy_gradient(logits, actions, advantages),
        loss.baseline(advantages),
    )
    rtol = {torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-12}
    for out, ref in zip(outs, reference, strict=True):
        assert out.dtype == dtype and out.device.type == device and out.dim() == 0
        assert out.item() == pytest.approx(ref, rel=rtol[dtype], abs=rtol[dtype])


def test_gradcheck():
    logits, actions, advantages = make((3, 2), num_actions=4, seed=5, scale=1.0)
    logits.requires_grad_(True)
    advantages.requires_grad_(True)
    assert torch.autograd.gradcheck(loss.entropy, (logits,))
    assert torch.autograd.gradcheck(
        lambda z: loss.policy_gradient(z, actions, advantages), (logits,)
    )
    assert torch.autograd.gradcheck(loss.baseline, (advantages,))
    assert torch.autograd.gradcheck(
        lambda z: loss.entropy_from_log_probs(F.log_softmax(z, dim=-1)), (logits,)
    )
    log_pi_a = vtrace.action_log_probs(logits.detach(), actions).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda lp: loss.policy_gradient_from_log_probs(lp, advantages), (log_pi_a,)
    )


# --- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad_shape"), [("actions", (5, 2)), ("advantages", (5,)), ("advantages", (5, 3, 1))]
)
def test_policy_gradient_rejects_bad_shapes(name, bad_shape):
    logits, actions, advantages = make((5, 3))
    args = {"logits": logits, "actions": actions, "advantages": advantages}
    args[name] = torch.zeros(bad_shape, dtype=args[name].dtype)
    with pytest.raises(ValueError, match=name) as info:
        loss.policy_gradient(**args)
    assert str(tuple(bad_shape)) in str(info.value)


def test_rejects_scalar_logits_and_float_actions():
    with pytest.raises(ValueError, match="logits"):
        loss.entropy(torch.tensor(1.0))
    logits, actions, advantages = make((4,))
    with pytest.raises(TypeError, match="actions"):
        loss.policy_gradient(logits, actions.double(), advantages)
