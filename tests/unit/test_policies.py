"""learner/training/policies.py against torch.distributions as the oracle: log-probabilities,
entropies, greedy actions and sample statistics of every kind of action distribution."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as D

from learner.training import policies
from seed_rl.spaces import UnsupportedSpace

LEADING = (4, 3)  # [T, B]


def params_of(distribution: policies.ActionDistribution, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((*LEADING, distribution.num_params), generator=gen, dtype=torch.float64)


def test_categorical_matches_torch():
    dist = policies.Categorical(5)
    params = params_of(dist)
    actions = dist.sample(params)
    assert actions.shape == LEADING and actions.dtype == torch.int64
    oracle = D.Categorical(logits=params)
    torch.testing.assert_close(dist.log_prob(params, actions), oracle.log_prob(actions))
    torch.testing.assert_close(dist.entropy(params), oracle.entropy())
    log_prob, entropy = dist.log_prob_and_entropy(params, actions)
    torch.testing.assert_close(log_prob, oracle.log_prob(actions))
    torch.testing.assert_close(entropy, oracle.entropy())
    torch.testing.assert_close(dist.sample(params, greedy=True), params.argmax(-1))


def test_multi_categorical_is_independent_heads_summed():
    nvec = (3, 1, 4)
    dist = policies.MultiCategorical(nvec)
    assert dist.num_params == 8 and dist.action_shape == (3,)
    params = params_of(dist, seed=1)
    actions = dist.sample(params)
    assert actions.shape == (*LEADING, 3) and actions.dtype == torch.int64
    for i, n in enumerate(nvec):
        assert ((actions[..., i] >= 0) & (actions[..., i] < n)).all()
    heads = [D.Categorical(logits=p) for p in torch.split(params, nvec, dim=-1)]
    expected_log_prob = sum(h.log_prob(actions[..., i]) for i, h in enumerate(heads))
    expected_entropy = sum(h.entropy() for h in heads)
    torch.testing.assert_close(dist.log_prob(params, actions), expected_log_prob)
    torch.testing.assert_close(dist.entropy(params), expected_entropy)
    log_prob, entropy = dist.log_prob_and_entropy(params, actions)
    torch.testing.assert_close(log_prob, expected_log_prob)
    torch.testing.assert_close(entropy, expected_entropy)
    greedy = dist.sample(params, greedy=True)
    torch.testing.assert_close(greedy, torch.stack([h.probs.argmax(-1) for h in heads], -1))


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
def test_diagonal_gaussian_matches_torch(shape):
    dist = policies.DiagGaussian(shape)
    size = int(np.prod(shape))
    assert dist.num_params == 2 * size and dist.action_shape == shape
    params = params_of(dist, seed=2)
    actions = dist.sample(params)
    assert actions.shape == (*LEADING, *shape)
    mean, log_std = params[..., :size], params[..., size:]
    oracle = D.Normal(mean, log_std.exp())
    flat = actions.reshape(*LEADING, size)
    torch.testing.assert_close(dist.log_prob(params, actions), oracle.log_prob(flat).sum(-1))
    torch.testing.assert_close(dist.entropy(params), oracle.entropy().sum(-1))
    log_prob, entropy = dist.log_prob_and_entropy(params, actions)
    torch.testing.assert_close(log_prob, oracle.log_prob(flat).sum(-1))
    torch.testing.assert_close(entropy, oracle.entropy().sum(-1))
    torch.testing.assert_close(dist.sample(params, greedy=True), mean.reshape(actions.shape))
    # Far outside any bounds is still a valid (raw, unclipped) action with a finite density.
    far = torch.full_like(actions, 1e3)
    assert torch.isfinite(dist.log_prob(params, far)).all()


def test_samples_follow_the_distribution():
    torch.manual_seed(0)
    n = 200_000
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    categorical = policies.Categorical(4).sample(logits.expand(n, 4))
    frequencies = torch.bincount(categorical, minlength=4).double() / n
    torch.testing.assert_close(frequencies, torch.softmax(logits.double(), -1), atol=5e-3,
                               rtol=0)
    gaussian = policies.DiagGaussian((2,))
    params = torch.tensor([1.5, -2.0, np.log(0.5), np.log(2.0)], dtype=torch.float32)
    samples = gaussian.sample(params.expand(n, 4))
    torch.testing.assert_close(samples.mean(0), torch.tensor([1.5, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.tensor([0.5, 2.0]), atol=0.02, rtol=0)


def test_gradients_reach_the_parameters():
    for dist in (policies.Categorical(3), policies.MultiCategorical((2, 3)),
                 policies.DiagGaussian((2,))):
        params = params_of(dist, seed=3).requires_grad_(True)
        actions = dist.sample(params.detach())
        log_prob, entropy = dist.log_prob_and_entropy(params, actions)
        (log_prob.sum() + entropy.sum()).backward()
        assert params.grad is not None and params.grad.abs().sum() > 0


def test_each_action_space_gets_its_distribution():
    assert isinstance(policies.for_action_space(gym.spaces.Discrete(3, start=-1)),
                      policies.Categorical)
    multi = policies.for_action_space(gym.spaces.MultiDiscrete([2, 5]))
    assert isinstance(multi, policies.MultiCategorical) and multi.nvec == (2, 5)
    box = policies.for_action_space(gym.spaces.Box(-2, 2, (3,), np.float32))
    assert isinstance(box, policies.DiagGaussian) and box.num_params == 6
    with pytest.raises(UnsupportedSpace, match="MultiBinary"):
        policies.for_action_space(gym.spaces.MultiBinary(3))
