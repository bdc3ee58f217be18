"""Observation normalisation (``--normalize-observations``; seed_rl/functional/observation_norm.py,
learner/training/observation_norm.py): the running statistics against numbers worked out by
hand and against all batches at once, the model reading normalised Box parts (and only
those), the update taking each batch's observations once, and checkpoints: a run without the
option resumes with it; one with it refuses to load into a model without."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from support.learner_harness import make_config
from support.unrolls import random_unrolls

from learner.running.learner import Learner
from learner.training.models import build_model, unpack_rows
from learner.training.observation_norm import adapt_state_dict
from learner.training.update import Batch, build_optimizer, train_batch
from seed_rl.config import Config, ConfigError
from seed_rl.functional import observation_norm as norm
from seed_rl.spaces import observation_layout

CPU = torch.device("cpu")


def fresh(shape: tuple[int, ...]) -> norm.NormStatistics:
    return norm.NormStatistics(torch.zeros(1, dtype=torch.float64), torch.zeros(shape),
                               torch.ones(shape))


def test_statistics_match_a_hand_computation():
    # elements [1, 10], [3, 10]: mean [2, 10], variance [1, 0]
    first = norm.merge(fresh((2,)), norm.moments(torch.tensor([[1.0, 10.0], [3.0, 10.0]]), 1))
    assert first.count.item() == 2
    assert first.mean.tolist() == [2.0, 10.0] and first.var.tolist() == [1.0, 0.0]
    # then [8, 13]: all three together have mean [4, 11], variance [26/3, 2]
    second = norm.merge(first, norm.moments(torch.tensor([[8.0, 13.0]]), 1))
    assert second.count.item() == 3
    torch.testing.assert_close(second.mean, torch.tensor([4.0, 11.0]))
    torch.testing.assert_close(second.var, torch.tensor([26 / 3, 2.0]))
    # a batch of nothing (a replica without unrolls) changes nothing
    assert norm.merge(second, torch.zeros(5, dtype=torch.float64)) is second


def test_batches_merged_one_by_one_equal_all_of_them_at_once():
    torch.manual_seed(0)
    batches = [torch.randn(n, 3, 2) * scale + shift
               for n, scale, shift in ((7, 1.0, 0.0), (50, 10.0, 100.0), (1, 0.1, -3.0),
                                       (300, 2.0, 5.0))]
    statistics = fresh((3, 2))
    for batch in batches:
        statistics = norm.merge(statistics, norm.moments(batch, 2))
    everything = torch.cat(batches).double()
    assert statistics.count.item() == len(everything)
    torch.testing.assert_close(statistics.mean.double(), everything.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(statistics.var.double(), everything.var(0, unbiased=False),
                               rtol=1e-5, atol=1e-5)
    # moments summed over two "replicas" merge as their concatenation does
    a, b = batches[1], batches[3]
    summed = norm.moments(a, 2) + norm.moments(b, 2)
    joined = norm.merge(fresh((3, 2)), norm.moments(torch.cat([a, b]), 2))
    for got, want in zip(norm.merge(fresh((3, 2)), summed), joined, strict=True):
        torch.testing.assert_close(got, want)


def test_normalize_standardises_and_clips():
    mean, var = torch.tensor([1.0, 0.0]), torch.tensor([4.0, 0.0])
    x = torch.tensor([[5.0, 0.0], [1.0, 1.0], [-100.0, -1.0]])
    z = norm.normalize(x, mean, var)
    assert z[0, 0].item() == pytest.approx(4 / (4 + norm.EPSILON) ** 0.5)
    assert z[1, 0].item() == 0.0 and z[0, 1].item() == 0.0
    # far out, or a change in an element that was constant so far: clipped, not infinite
    assert z[2, 0].item() == -norm.CLIP and z[1, 1].item() == norm.CLIP
    assert z[2, 1].item() == -norm.CLIP


DICT = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (6, 6, 2), np.uint8),
                        "position": gym.spaces.Box(-5, 5, (3,), np.float32),
                        "room": gym.spaces.Discrete(4)})


def model_for(space: gym.Space, **overrides):
    config = dataclasses.replace(Config(), hidden_sizes=[8], conv_net="minatar", **overrides)
    torch.manual_seed(0)
    return build_model(space, gym.spaces.Discrete(2), config), config


def sampled_rows(space: gym.Space, count: int) -> torch.Tensor:
    layout = observation_layout(space)
    space.seed(1)
    rows = np.zeros((count, *layout.row_shape), layout.row_dtype)
    for i in range(count):
        layout.write(rows, i, space.sample())
    return torch.from_numpy(rows)


def test_the_model_reads_box_parts_normalised_and_others_as_they_are():
    model, _ = model_for(DICT, normalize_observations=True)
    plain, _ = model_for(DICT)
    assert plain.observation_norm is None
    assert not any(k.startswith("observation_norm.") for k in plain.state_dict())
    rows = sampled_rows(DICT, 400)
    parts = unpack_rows(rows, model.observation_layout)
    norm_module = model.observation_norm
    norm_module.update(norm_module.moments(parts))
    image, position = norm_module.parts["0"], norm_module.parts["1"]
    # the image's statistics are in the torso's units (uint8 / 255), per pixel and channel
    assert image.mean.shape == (6, 6, 2) and 0.4 < float(image.mean.mean()) < 0.6
    torch.testing.assert_close(position.mean.double(), parts[1].double().mean(0),
                               rtol=1e-5, atol=1e-5)
    normalised = model.observation_norm(parts)
    assert normalised[2] is parts[2]  # the Discrete room passes through
    assert abs(float(normalised[1].mean())) < 1e-4
    assert float(normalised[1].std(0, unbiased=False).mean()) == pytest.approx(1.0, abs=1e-3)
    # the model's features are the torso's on the normalised parts
    torch.testing.assert_close(model.encode(parts), model.torso.encode(normalised))
    start = torch.zeros(1, 400, dtype=torch.bool)
    output = model(rows[None], start)
    assert output.values.shape == (1, 400)


def test_an_update_takes_each_observation_of_the_batch_once_before_its_steps():
    """T x B observations (slot T is the next unroll's slot 0), once per batch however many
    optimizer steps it makes; the steps see the new statistics."""
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    model, config = model_for(space, normalize_observations=True, epochs=2, minibatches=2,
                              optimizer="adam")
    optimizer = build_optimizer(model, config)
    unrolls = [random_unrolls(seed, 5, 4) for seed in (0, 1)]
    for unroll in unrolls:
        unroll.observations[:] = unroll.observations * 3 + 7  # mean 7, std 3
        stats = train_batch(model, optimizer, Batch.from_unrolls(unroll, CPU), config, 1e-3)
        assert stats.optimizer_steps == 4
    seen = np.concatenate([u.observations[:-1].reshape(-1, 4) for u in unrolls]).astype(
        np.float64)
    running = model.observation_norm.parts["0"]
    assert running.count.item() == 2 * 5 * 4
    np.testing.assert_allclose(running.mean.numpy(), seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(running.var.numpy(), seen.var(0), rtol=1e-4)


def test_a_checkpoint_without_the_statistics_loads_one_with_them_needs_them():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    plain, _ = model_for(space)
    with_norm, _ = model_for(space, normalize_observations=True)
    adapted = adapt_state_dict(plain.state_dict(), with_norm)
    with_norm.load_state_dict(adapted)
    assert with_norm.observation_norm.parts["0"].count.item() == 0
    assert adapt_state_dict(plain.state_dict(), plain).keys() == plain.state_dict().keys()
    with pytest.raises(ConfigError, match="--normalize-observations"):
        adapt_state_dict(with_norm.state_dict(), plain)


def test_a_run_resumes_with_the_option_turned_on_and_not_off(tmp_path):
    old = Learner(make_config(tmp_path))
    old.metrics.train_steps = 2
    old.trainer.weights.publish(old.trainer.model, 2)
    old.save_checkpoint()
    old.metrics.close()
    resumed = Learner(make_config(tmp_path, normalize_observations=True))
    assert resumed.trainer.policy_version == 2
    assert resumed.trainer.model.observation_norm is not None
    resumed.trainer.weights.publish(resumed.trainer.model, 3)
    resumed.save_checkpoint()
    resumed.metrics.close()
    with pytest.raises(ConfigError, match="resume it with --normalize-observations"):
        Learner(make_config(tmp_path))
