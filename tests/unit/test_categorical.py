"""seed_rl.functional.categorical against torch.distributions.Categorical."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from seed_rl.functional import categorical


def test_log_prob_and_entropy_match_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64) * 3
    actions = torch.randint(0, 5, (4, 3), generator=gen)
    oracle = D.Categorical(logits=logits)
    torch.testing.assert_close(categorical.log_prob(logits, actions), oracle.log_prob(actions))
    torch.testing.assert_close(categorical.entropy(logits), oracle.entropy())
    log_prob, entropy = categorical.log_prob_and_entropy(logits, actions)
    torch.testing.assert_close(log_prob, oracle.log_prob(actions))
    torch.testing.assert_close(entropy, oracle.entropy())


def test_stable_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]])
    log_prob, entropy = categorical.log_prob_and_entropy(logits, torch.tensor([1]))
    assert log_prob.item() == pytest.approx(-2e4) and entropy.item() == pytest.approx(0.0)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="actions") as info:
        categorical.log_prob(torch.zeros(4, 3, 5), torch.zeros(4, 2, dtype=torch.long))
    assert "(4, 2)" in str(info.value)
    with pytest.raises(ValueError, match="logits"):
        categorical.log_prob(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(TypeError, match="actions"):
        categorical.log_prob_and_entropy(torch.zeros(3, 5), torch.zeros(3))
