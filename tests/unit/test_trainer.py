"""The IMPALA update: one log-softmax of the target logits per update, and the same loss as
the documented logits form of the functional API (``vtrace.from_logits`` + the losses)."""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn.functional as F
from support.unrolls import random_unrolls
from torch.overrides import TorchFunctionMode

from learner.training.models import build_model
from learner.training.update import Batch, compute_loss, vtrace_inputs
from seed_rl.config import Config
from seed_rl.functional import loss, vtrace

T, B = 6, 5


class CountLogSoftmax(TorchFunctionMode):
    """Counts log_softmax calls, split by whether the input carries gradient (the target
    policy's logits) or not (the behaviour logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_target = self.on_behaviour = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax):
            if args[0].requires_grad:
                self.on_target += 1
            else:
                self.on_behaviour += 1
        return func(*args, **(kwargs or {}))


def test_one_log_softmax_of_the_target_logits_per_update_and_the_documented_loss() -> None:
    env = gym.make("CartPole-v1")
    config = Config(baseline_cost=0.3, entropy_cost=0.02)
    model = build_model(env.observation_space, env.action_space, config)
    batch = Batch.from_unrolls(random_unrolls(0, T, B), torch.device("cpu"))
    with CountLogSoftmax() as counter:
        total, parts = compute_loss(model, batch, config)
    assert (counter.on_target, counter.on_behaviour) == (1, 1)

    # The same loss through the public logits form, as the README shows it.
    output = model(batch.observations, batch.terminated | batch.truncated, batch.core_state)
    inputs = vtrace_inputs(batch, output, config)
    returns = vtrace.from_logits(inputs.behaviour_params, inputs.target_params, inputs.values,
                                 inputs.bootstrap_value, inputs.actions, inputs.discounts,
                                 inputs.rewards, clip_rho_threshold=config.clip_rho_threshold,
                                 clip_pg_rho_threshold=config.clip_pg_rho_threshold)
    expected = (loss.policy_gradient(inputs.target_params, inputs.actions, returns.pg_advantages)
                + config.baseline_cost * loss.baseline(returns.vs - inputs.values)
                + config.entropy_cost * loss.entropy(inputs.target_params))
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(parts["loss_entropy"], loss.entropy(inputs.target_params))
    grads = torch.autograd.grad(total, list(model.parameters()))
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_vtrace_lambda_reaches_the_targets_as_the_traces_factor() -> None:
    env = gym.make("CartPole-v1")
    batch = Batch.from_unrolls(random_unrolls(1, T, B), torch.device("cpu"))
    model = build_model(env.observation_space, env.action_space, Config())
    output = model(batch.observations, batch.terminated | batch.truncated, batch.core_state)
    for lambda_ in (1.0, 0.5, 0.0):
        config = Config(vtrace_lambda=lambda_)
        _, parts = compute_loss(model, batch, config)
        inputs = vtrace_inputs(batch, output, config)
        expected = vtrace.from_logits(inputs.behaviour_params, inputs.target_params,
                                      inputs.values, inputs.bootstrap_value, inputs.actions,
                                      inputs.discounts, inputs.rewards, lambda_=lambda_)
        torch.testing.assert_close(parts["vs"], expected.vs, rtol=1e-6, atol=1e-6)
    # lambda 0 cuts every trace: vs_t = V(x_t) + rho_t-clipped one-step TD error
    assert not torch.allclose(compute_loss(model, batch, Config(vtrace_lambda=0.0))[1]["vs"],
                              compute_loss(model, batch, Config())[1]["vs"])
