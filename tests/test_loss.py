"""The IMPALA losses against NumPy values and analytic gradients."""

from __future__ import annotations

import _vtrace_oracle as oracle
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seed_rl.functional import loss

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
