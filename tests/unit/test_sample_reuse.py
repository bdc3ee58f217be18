"""Sample reuse (learner/training/update.py): ``--epochs E --minibatches M`` make E x M
optimizer steps per batch on whole, shuffled unrolls, one publication (policy version + 1)
per batch, and policy-lag metrics measured against the published version; the shuffle is
the same for a group as for one learner with the concatenated batch; a batch size that M
does not divide is refused."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from support.unrolls import random_unrolls

from learner.training.models import build_model
from learner.training.store import UnrollQueue
from learner.training.trainer import Trainer
from learner.training.update import Batch, build_optimizer, minibatch_plan, train_batch, train_step
from learner.watching.metrics import Metrics
from seed_rl.config import Config, ConfigError, validate

T, B = 3, 4


def config(**overrides) -> Config:
    values = dict(unroll_length=T, batch_size=B, hidden_sizes=[8], optimizer="adam", seed=7,
                  max_policy_lag=10**6)
    values.update(overrides)
    made = dataclasses.replace(Config(), **values)
    validate(made)
    return made


def labelled_unrolls(seed: int, versions: int = 0):
    """B unrolls whose observations carry their index in the batch (feature 0), acted by
    policy ``versions``."""
    unrolls = random_unrolls(seed, T, B)
    unrolls.observations[..., 0] = np.arange(B, dtype=np.float32)
    unrolls.policy_versions[...] = versions
    return unrolls


def test_the_plan_splits_each_pass_into_whole_shuffled_minibatches():
    plan = minibatch_plan([4], epochs=2, minibatches=2, seed=7, version=0)
    assert len(plan) == 4 and all(len(part) == 2 for part in plan)
    for epoch in (plan[:2], plan[2:]):  # every unroll once per pass
        assert sorted(np.concatenate(epoch).tolist()) == [0, 1, 2, 3]
    # the documented generator: (seed, version) -> one permutation per pass, split in M
    rng = np.random.default_rng([7, 0])
    expected = [np.sort(p) for _ in range(2) for p in np.array_split(rng.permutation(4), 2)]
    assert [p.tolist() for p in plan] == [p.tolist() for p in expected]
    assert [p.tolist() for p in minibatch_plan([4], 2, 2, 7, 0)] == [p.tolist() for p in plan]
    later = [minibatch_plan([4], 2, 2, 7, v) for v in range(1, 6)]
    assert any([p.tolist() for p in other] != [p.tolist() for p in plan] for other in later)
    # one minibatch: the whole batch in order, every pass
    assert [p.tolist() for p in minibatch_plan([4], 3, 1, 7, 5)] == [[0, 1, 2, 3]] * 3
    # a group of replicas (2 + 0 + 2 unrolls) is shuffled as one batch of 4
    assert [p.tolist() for p in minibatch_plan([2, 0, 2], 2, 2, 7, 0)] == \
        [p.tolist() for p in plan]


def test_two_epochs_of_two_minibatches_make_four_steps_and_one_version(tmp_path):
    cfg = config(epochs=2, minibatches=2)
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    model = build_model(env.observation_space, env.action_space, cfg)
    seen: list[list[int]] = []

    def record(module, args):  # which unrolls each forward pass of the update saw
        observations = args[0]
        seen.append(sorted(int(i) for i in observations[0, :, 0].tolist()))

    metrics = Metrics(tmp_path, tensorboard=False)
    trainer = Trainer(model, cfg, torch.device("cpu"), UnrollQueue(100, 10**6), metrics)
    trainer.model.register_forward_pre_hook(record)
    trainer.update(labelled_unrolls(0, versions=0))
    first = [p.tolist() for p in minibatch_plan([B], 2, 2, cfg.seed, 0)]
    assert seen == first  # the unrolls of each step, in order
    assert trainer.policy_version == 1 and metrics.train_steps == 1
    state = trainer.optimizer.state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {4}  # Adam counted 4 steps
    with trainer.weights.read() as (published, version):  # published once, after step 4
        assert version == 1
        for a, b in zip(published.parameters(), trainer.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    seen.clear()
    trainer.update(labelled_unrolls(1, versions=0))  # acted by version 0, trained from 1
    assert seen == [p.tolist() for p in minibatch_plan([B], 2, 2, cfg.seed, 1)]
    assert trainer.policy_version == 2 and metrics.train_steps == 2
    record_ = metrics.emit()
    assert record_["optimizer_steps"] == 4
    assert record_["policy_lag_mean"] == 0.5 and record_["policy_lag_max"] == 1  # 0, then 1
    metrics.close()


def test_one_epoch_of_one_minibatch_is_the_impala_step_bit_for_bit():
    cfg = config()
    env = gym.make("CartPole-v1")
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(env.observation_space, env.action_space, cfg))
    optimizers = [build_optimizer(m, cfg) for m in models]
    for seed in range(2):
        batch = Batch.from_unrolls(random_unrolls(seed, T, B), torch.device("cpu"))
        train_step(models[0], optimizers[0], batch, cfg, 1e-3)
        stats = train_batch(models[1], optimizers[1], batch, cfg, 1e-3, version=seed)
        assert stats.optimizer_steps == 1 and stats.skipped_steps == 0
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_recurrent_minibatches_keep_each_unrolls_initial_core_state():
    cfg = config(lstm=True, lstm_size=5)
    batch = Batch.from_unrolls(random_unrolls(3, T, B, lstm=5), torch.device("cpu"))
    part = batch.select(torch.tensor([3, 1]))
    torch.testing.assert_close(part.core_state[0], batch.core_state[0][[3, 1]])
    torch.testing.assert_close(part.observations, batch.observations[:, [3, 1]])
    env = gym.make("CartPole-v1")
    model = build_model(env.observation_space, env.action_space, cfg)
    whole = model(batch.observations, batch.terminated, batch.core_state).values
    alone = model(part.observations, part.terminated, part.core_state).values
    torch.testing.assert_close(alone, whole[:, [3, 1]])


def test_a_batch_size_the_minibatches_do_not_divide_is_refused():
    with pytest.raises(ConfigError, match=r"--batch-size 6 must be a multiple of "
                                          r"--minibatches 4"):
        config(batch_size=6, minibatches=4)
    for name, value in (("epochs", 0), ("minibatches", 0), ("ppo_clip", 1.0),
                        ("popart_beta", 0.0), ("loss_reduction", "avg")):
        with pytest.raises(ConfigError, match=name.replace("_", "-")):
            config(**{name: value})


@pytest.mark.parametrize(("max_grad_norm", "clipped"), [(1e-6, 1.0), (0.0, 0.0), (1e9, 0.0)])
def test_the_stats_say_how_many_steps_the_gradient_clip_cut(max_grad_norm, clipped):
    """``grad_clipped``: the fraction of a batch's optimizer steps whose gradient norm was
    above --max-grad-norm (0: no clip, never cut); ``grad_norm`` is the norm before it."""
    cfg = config(epochs=2, minibatches=2, max_grad_norm=max_grad_norm)
    env = gym.make("CartPole-v1")
    torch.manual_seed(0)
    model = build_model(env.observation_space, env.action_space, cfg)
    batch = Batch.from_unrolls(random_unrolls(0, T, B), torch.device("cpu"))
    stats = train_batch(model, build_optimizer(model, cfg), batch, cfg, 1e-3, version=0)
    assert stats.optimizer_steps == 4 and stats.grad_norm > 1e-6
    assert stats.grad_clipped == clipped
