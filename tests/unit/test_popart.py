"""PopArt (seed_rl/functional/popart.py, learner/training/popart.py): the statistics against
numbers worked out by hand, the unnormalised outputs preserved exactly across updates (the
pure functions, the model, a real optimizer step), and checkpoints of either kind loading
into a model of the other (the learner's resume and ``seed-rl eval``'s load_policy)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import gymnasium as gym
import pytest
import torch
from support.learner_harness import make_config
from support.unrolls import random_unrolls

from learner.running.evaluate import load_policy
from learner.running.learner import Learner
from learner.training import checkpoint
from learner.training.models import build_model
from learner.training.popart import adapt_state_dict
from learner.training.update import Batch, build_optimizer, compute_loss, train_step
from seed_rl.config import Config
from seed_rl.functional import popart

CPU = torch.device("cpu")


def test_statistics_match_a_hand_computation():
    # targets 1, 2, 3, 4: mean 2.5, mean square (1 + 4 + 9 + 16) / 4 = 7.5
    mu, nu = torch.tensor([0.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    new = popart.update_statistics(mu, nu, torch.tensor(2.5, dtype=torch.float64),
                                   torch.tensor(7.5, dtype=torch.float64), beta=0.1)
    assert new.mu.item() == pytest.approx(0.9 * 0.0 + 0.1 * 2.5)  # 0.25
    assert new.nu.item() == pytest.approx(0.9 * 1.0 + 0.1 * 7.5)  # 1.65
    assert new.sigma.item() == pytest.approx(math.sqrt(1.65 - 0.25**2))  # sqrt(1.5875)
    # a second batch, targets -10 and 30: mean 10, mean square 500
    again = popart.update_statistics(new.mu, new.nu, torch.tensor(10.0, dtype=torch.float64),
                                     torch.tensor(500.0, dtype=torch.float64), beta=0.1)
    assert again.mu.item() == pytest.approx(0.9 * 0.25 + 1.0)  # 1.225
    assert again.nu.item() == pytest.approx(0.9 * 1.65 + 50.0)  # 51.485
    assert again.sigma.item() == pytest.approx(math.sqrt(51.485 - 1.225**2))


def test_sigma_is_clipped_to_its_bounds():
    zero = torch.tensor([0.0])
    # constant targets: variance 0 -> sigma 1e-4; huge targets -> 1e6
    low = popart.update_statistics(zero, zero, torch.tensor(3.0), torch.tensor(9.0), beta=1.0)
    assert low.sigma.item() == pytest.approx(1e-4)
    high = popart.update_statistics(zero, zero, torch.tensor(0.0), torch.tensor(1e14), beta=1.0)
    assert high.sigma.item() == pytest.approx(1e6)
    with pytest.raises(ValueError, match="beta"):
        popart.update_statistics(zero, zero, zero, zero, beta=0.0)


def test_preserve_outputs_keeps_the_unnormalised_values_exactly():
    torch.manual_seed(0)
    features = torch.randn(50, 8, dtype=torch.float64)
    weight, bias = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    mu, nu = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    sigma = torch.ones(1, dtype=torch.float64)
    before = popart.unnormalize(features @ weight.T + bias, mu, sigma)
    for scale in (1.0, 100.0, 1e4, 0.01):  # targets of very different sizes, one after another
        targets = scale * torch.randn(64, dtype=torch.float64) + 3 * scale
        new = popart.update_statistics(mu, nu, targets.mean(), targets.square().mean(),
                                       beta=0.3)
        weight, bias = popart.preserve_outputs(weight, bias, mu, sigma, new.mu, new.sigma)
        mu, nu, sigma = new
        after = popart.unnormalize(features @ weight.T + bias, mu, sigma)
        torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-9)
        # and the head now predicts normalised values
        torch.testing.assert_close(popart.normalize(after, mu, sigma), features @ weight.T + bias)
    assert sigma.item() != pytest.approx(1.0)


def cartpole_model(**overrides):
    env = gym.make("CartPole-v1")
    config = dataclasses.replace(Config(), hidden_sizes=[16], **overrides)
    torch.manual_seed(0)
    return build_model(env.observation_space, env.action_space, config), config


def test_the_model_outputs_return_units_and_keeps_them_across_updates():
    model, _ = cartpole_model(popart=True, popart_beta=0.5)
    assert {"popart.mu", "popart.nu", "popart.sigma"} <= set(model.state_dict())
    plain, _ = cartpole_model()
    assert not any(k.startswith("popart.") for k in plain.state_dict())
    batch = Batch.from_unrolls(random_unrolls(0, 5, 3), CPU)
    start = batch.terminated | batch.truncated
    before = model(batch.observations, start).values
    for mean in (50.0, 500.0, -20.0):
        model.popart.update(model.value, torch.tensor(mean), torch.tensor(mean**2 + 25.0))
        after = model(batch.observations, start).values
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-3)
    assert model.popart.sigma.item() > 10  # the statistics moved a long way
    # the value head itself now predicts (V - mu) / sigma
    normalised = model.value(model.torso(batch.observations.reshape(18, 4))).squeeze(-1)
    torch.testing.assert_close(normalised * model.popart.sigma + model.popart.mu,
                               before.reshape(18), rtol=1e-5, atol=1e-3)


def test_a_train_step_updates_the_statistics_from_its_vtrace_targets():
    model, config = cartpole_model(popart=True, popart_beta=0.25, optimizer="adam")
    optimizer = build_optimizer(model, config)
    batch = Batch.from_unrolls(random_unrolls(1, 6, 4), CPU)
    with torch.no_grad():
        _, parts = compute_loss(copy.deepcopy(model), batch, config)
    vs = parts["vs"].double()
    stats = train_step(model, optimizer, batch, config, 1e-3)
    assert stats.optimizer_steps == 1
    mu, nu = 0.25 * vs.mean().item(), 0.75 + 0.25 * vs.square().mean().item()
    assert model.popart.mu.item() == pytest.approx(mu, rel=1e-5)
    assert model.popart.nu.item() == pytest.approx(nu, rel=1e-5)
    assert model.popart.sigma.item() == pytest.approx(math.sqrt(nu - mu**2), rel=1e-5)


def test_the_losses_use_sigma():
    """The value loss of a PopArt model is 0.5 sum(((v - V) / sigma)^2) with V in return
    units: doubling sigma (and rescaling the head to keep V) quarters it."""
    model, config = cartpole_model(popart=True, popart_beta=1.0)
    batch = Batch.from_unrolls(random_unrolls(2, 5, 3), CPU)
    _, parts = compute_loss(model, batch, config)
    with torch.no_grad():
        model.popart.update(model.value, torch.tensor(0.0), torch.tensor(4.0))
        sigma = model.popart.sigma.item()
    assert sigma == pytest.approx(2.0)
    _, scaled = compute_loss(model, batch, config)
    torch.testing.assert_close(scaled["vs"], parts["vs"], rtol=1e-5, atol=1e-5)
    assert scaled["loss_baseline"].item() == pytest.approx(
        parts["loss_baseline"].item() / sigma**2, rel=1e-4)
    assert scaled["loss_pg"].item() == pytest.approx(parts["loss_pg"].item() / sigma, rel=1e-4)


def test_checkpoints_of_either_kind_load_with_their_values():
    plain, _ = cartpole_model()
    with_popart, _ = cartpole_model(popart=True)
    with torch.no_grad():
        with_popart.popart.update(with_popart.value, torch.tensor(40.0), torch.tensor(2000.0))
    batch = Batch.from_unrolls(random_unrolls(3, 4, 2), CPU)
    start = batch.terminated | batch.truncated
    # an old checkpoint (no buffers) into a PopArt model: identity statistics, same values
    into_popart, _ = cartpole_model(popart=True)
    into_popart.load_state_dict(adapt_state_dict(plain.state_dict(), True))
    torch.testing.assert_close(into_popart(batch.observations, start).values,
                               plain(batch.observations, start).values)
    # a PopArt checkpoint into a model without: the statistics folded into the head
    into_plain, _ = cartpole_model()
    into_plain.load_state_dict(adapt_state_dict(with_popart.state_dict(), False))
    torch.testing.assert_close(into_plain(batch.observations, start).values,
                               with_popart(batch.observations, start).values,
                               rtol=1e-5, atol=1e-4)
    assert adapt_state_dict(plain.state_dict(), False).keys() == plain.state_dict().keys()


def test_an_old_checkpoint_loads_for_eval_and_resumes_with_popart(tmp_path):
    """A checkpoint written before these options existed (its config has none of their
    keys, its model no PopArt buffers) loads in ``seed-rl eval`` and resumes a run that now
    has ``--popart``."""
    old = Learner(make_config(tmp_path))
    old.metrics.train_steps = 3
    old.trainer.weights.publish(old.trainer.model, 3)
    path = old.save_checkpoint()
    old.metrics.close()
    state = checkpoint.load_file(path)
    saved = json.loads(state["config"])
    for key in ("popart", "popart_beta", "epochs", "minibatches", "ppo_clip",
                "normalize_advantages", "loss_reduction"):
        del saved[key]
    state["config"] = json.dumps(saved)
    assert checkpoint.save(old.logdir, state) == path
    model, config, _, counters = load_policy(old.logdir)
    assert not config.popart and model.popart is None and counters["policy_version"] == 3
    resumed = Learner(make_config(tmp_path, popart=True))
    assert resumed.trainer.policy_version == 3 and resumed.trainer.model.popart is not None
    batch = Batch.from_unrolls(random_unrolls(4, 4, 2), CPU)
    start = batch.terminated | batch.truncated
    torch.testing.assert_close(resumed.trainer.model(batch.observations, start).values,
                               model(batch.observations, start).values)
    resumed.metrics.close()
