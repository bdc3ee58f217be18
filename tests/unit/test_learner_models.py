"""Models chosen from the observation space, through the real service: image observations
stay uint8 on the wire and in the store, and both conv torsos train."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.training.models import build_model, check_spaces
from learner.training.torsos import ImpalaTorso, MLPTorso, NatureTorso
from learner.training.update import Batch, build_optimizer, train_step
from seed_rl.config import Config
from seed_rl.spaces import UnsupportedSpace

ENV = "seed_rl.testing:RevealAction-v0"
K, T = 2, 4


@pytest.mark.parametrize("conv_net", ["nature", "impala"])
def test_image_observations_stay_uint8_and_train(tmp_path, conv_net):
    kwargs = {"pixels": 36, "episode_length": 3}
    config = make_config(tmp_path, env=ENV, env_kwargs=kwargs, unroll_length=T, batch_size=K,
                         conv_net=conv_net)
    with running_learner(config, train=False) as learner:
        torso = learner.trainer.model.torso
        assert isinstance(torso, NatureTorso if conv_net == "nature" else ImpalaTorso)
        env = gym.make(ENV, **kwargs)
        obs = np.stack([env.reset()[0] for _ in range(K)])
        actor = ScriptedActor(f"127.0.0.1:{learner.port}", handshake_request(ENV, K,
                                                                             env_kwargs=kwargs))
        for step in range(T + 1):
            actor.step(step_request(np.full_like(obs, step)))
        actor.close()
        unrolls = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        assert unrolls.observations.dtype == np.uint8
        assert unrolls.observations.shape == (T + 1, K, 36, 36, 1)
        batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
        assert batch.observations.dtype == torch.uint8
        before = [p.detach().clone() for p in learner.trainer.model.parameters()]
        stats = train_step(learner.trainer.model, learner.trainer.optimizer, batch, config, 1e-3)
        assert not stats.skipped and np.isfinite(stats.loss_total)
        assert any((a != b).any() for a, b in zip(before, learner.trainer.model.parameters(),
                                                   strict=True))


def test_vector_observations_get_an_mlp_and_an_optional_lstm():
    env = gym.make("CartPole-v1")
    config = dataclasses.replace(Config(), hidden_sizes=[32, 16], lstm=True, lstm_size=8)
    model = build_model(env.observation_space, env.action_space, config)
    assert isinstance(model.torso, MLPTorso) and model.torso.output_size == 16
    state = model.initial_state(5)
    assert [s.shape for s in state] == [(5, 8), (5, 8)]
    out = model(torch.zeros(3, 5, 4), torch.zeros(3, 5, dtype=torch.bool), state)
    assert out.policy_params.shape == (3, 5, 2) and out.values.shape == (3, 5)


def test_episode_start_resets_the_recurrent_state():
    env = gym.make("CartPole-v1")
    config = dataclasses.replace(Config(), lstm=True, lstm_size=8)
    model = build_model(env.observation_space, env.action_space, config)
    obs = torch.randn(1, 2, 4)
    warm = tuple(torch.randn(2, 8) for _ in range(2))
    fresh = model(obs, torch.tensor([[True, True]]), warm)
    zero = model(obs, torch.tensor([[False, False]]), model.initial_state(2))
    torch.testing.assert_close(fresh.policy_params, zero.policy_params)
    carried = model(obs, torch.tensor([[False, False]]), warm)
    assert not torch.allclose(carried.policy_params, zero.policy_params)


def test_unsupported_spaces_are_refused_with_a_clear_message():
    config = Config()
    with pytest.raises(UnsupportedSpace, match="MultiBinary"):
        build_model(gym.spaces.Box(0, 1, (3,)), gym.spaces.MultiBinary(2), config)
    with pytest.raises(UnsupportedSpace, match="observation space Text"):
        build_model(gym.spaces.Text(5), gym.spaces.Discrete(2), config)
    with pytest.raises(UnsupportedSpace, match="'b'.*Graph"):
        check_spaces(gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": gym.spaces.Graph(
            gym.spaces.Discrete(2), None)}), gym.spaces.Discrete(2), config)


def test_optimizers_are_built_from_the_config():
    env = gym.make("CartPole-v1")
    for name, kind in (("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop)):
        config = dataclasses.replace(Config(), optimizer=name)
        model = build_model(env.observation_space, env.action_space, config)
        assert isinstance(build_optimizer(model, config), kind)


@pytest.mark.parametrize("lstm", [False, True], ids=["mlp", "lstm"])
def test_a_whole_unroll_in_one_call_equals_inference_step_by_step(lstm):
    """The trainer runs the model over [T+1, B] at once from the unroll's first state;
    inference ran it one step at a time (T = 1), carrying the state and resetting it at
    episode starts. Both must give the same logits, values and final state, which is what
    lets training replay the behaviour logits exactly."""
    env = gym.make("CartPole-v1")
    config = dataclasses.replace(Config(), hidden_sizes=[16], lstm=lstm, lstm_size=8)
    torch.manual_seed(0)
    model = build_model(env.observation_space, env.action_space, config)
    steps, batch = 6, 3
    obs = torch.randn(steps, batch, 4)
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0, 1] = starts[2, 0] = starts[4, 0] = starts[3, 2] = True
    state = tuple(torch.randn(batch, 8) for _ in range(2)) if lstm else ()
    with torch.no_grad():
        whole = model(obs, starts, state)
        carried, logits, values = state, [], []
        for t in range(steps):
            out = model(obs[t : t + 1], starts[t : t + 1], carried)
            carried = out.core_state
            logits.append(out.policy_params)
            values.append(out.values)
        torch.testing.assert_close(whole.policy_params, torch.cat(logits))
        torch.testing.assert_close(whole.values, torch.cat(values))
        for a, b in zip(whole.core_state, carried, strict=True):
            torch.testing.assert_close(a, b)
        if lstm:  # not vacuous: the episode starts and the initial state both matter
            ignored = model(obs, torch.zeros_like(starts), state)
            assert not torch.allclose(ignored.policy_params[2:, 0], whole.policy_params[2:, 0])
            zero = model(obs, starts, model.initial_state(batch))
            assert not torch.allclose(zero.policy_params[0, 0], whole.policy_params[0, 0])
