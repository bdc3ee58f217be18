"""The slot convention, end to end through a real learner service.

RevealAction's reward is 10 * t + a for action a taken at observation t, so the V-trace
inputs are aligned exactly when every reward_t equals 10 * x_t[0] + a_t.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.training.update import Batch, vtrace_inputs

ENV = "seed_rl.testing:RevealAction-v0"
K, T, EPISODE = 3, 7, 4


def drive(address: str, kwargs: dict, steps: int) -> None:
    """Step K real RevealAction envs with the learner's actions, as an actor would."""
    envs = [gym.make(ENV, **kwargs) for _ in range(K)]
    obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])
    actor = ScriptedActor(address, handshake_request(ENV, K, env_kwargs=kwargs))
    request = step_request(obs)
    for _ in range(steps):
        actions = actor.actions(actor.step(request))
        rewards, terms, truncs, finals, final_envs = [], [], [], [], []
        for i, (env, action) in enumerate(zip(envs, actions, strict=True)):
            o, r, term, trunc, _ = env.step(int(action))
            if trunc and not term:
                finals.append(o)
                final_envs.append(i)
            if term or trunc:
                o, _ = env.reset()
            obs[i] = o
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
        request = step_request(obs, rewards, terms, truncs, final_envs,
                               np.stack(finals) if finals else None)
    actor.close()


def aligned_batch(tmp_path, truncate: bool):
    kwargs = {"episode_length": EPISODE, "truncate": truncate}
    config = make_config(tmp_path, env=ENV, env_kwargs=kwargs, unroll_length=T, batch_size=K,
                         discount=0.9, queue_size=2)  # room for both unrolls of each env
    with running_learner(config, train=False) as learner:
        drive(f"127.0.0.1:{learner.port}", kwargs, steps=2 * T + 1)
        unrolls = learner.queue.get(2 * K, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None, "two unrolls per env should be complete"
        batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
        with torch.no_grad():
            output = learner.trainer.model(batch.observations, batch.terminated | batch.truncated,
                                   batch.core_state)
        return learner, batch, output, vtrace_inputs(batch, output, config)


def test_vtrace_inputs_pair_each_action_with_the_reward_it_caused(tmp_path):
    _, batch, _, inputs = aligned_batch(tmp_path, truncate=False)
    t_obs = batch.observations[:-1, :, 0]  # x_t[0]: the step counter of x_t
    assert inputs.actions.unique().numel() > 1, "the learner should sample varied actions"
    torch.testing.assert_close(inputs.rewards, 10 * t_obs + inputs.actions.float())
    # Behaviour params are mu(.|x_t): the same slot as x_t and a_t.
    assert inputs.behaviour_params.shape == (T, 2 * K, 3)
    # Terminated after EPISODE steps: no bootstrap across the episode boundary.
    ended = t_obs == EPISODE - 1
    assert ended.any() and (~ended).any()
    torch.testing.assert_close(inputs.discounts, torch.where(ended, 0.0, 0.9))
    # And the next slot starts a new episode at counter 0.
    assert (batch.observations[1:, :, 0][ended] == 0).all()


def test_truncation_bootstraps_from_the_final_observation(tmp_path):
    learner, batch, _, inputs = aligned_batch(tmp_path, truncate=True)
    t_obs = batch.observations[:-1, :, 0]
    episode = batch.observations[:-1, :, 1]
    ended = t_obs == EPISODE - 1
    assert ended.any()
    torch.testing.assert_close(inputs.discounts, torch.where(ended, 0.0, 0.9))
    # The reward of a truncated step carries gamma * V(true final observation [EPISODE, ep]).
    final_obs = torch.stack([torch.full_like(t_obs, EPISODE), episode], dim=-1)
    with torch.no_grad():
        final_values = learner.trainer.model(final_obs, torch.zeros_like(ended), ()).values
    expected = 10 * t_obs + inputs.actions.float() + torch.where(ended, 0.9 * final_values, 0.0)
    torch.testing.assert_close(inputs.rewards, expected)
    assert (final_values[ended].abs() > 0).all(), "the bootstrap must not be a silent zero"


def test_training_replays_exactly_what_inference_computed(tmp_path):
    """With unchanged weights, the trainer's forward pass over an unroll reproduces the
    behaviour params slot by slot, so log_rhos are 0: proof that observations, episode
    starts and (with --lstm) the recurrent state replayed from the unroll's first state
    line up with what the actor was served."""
    kwargs = {"episode_length": EPISODE, "truncate": True}
    for lstm in (False, True):
        config = make_config(tmp_path / str(lstm), env=ENV, env_kwargs=kwargs,
                             unroll_length=T, batch_size=K, lstm=lstm, lstm_size=16,
                             queue_size=3)  # room for the three unrolls of each env
        with running_learner(config, train=False) as learner:
            drive(f"127.0.0.1:{learner.port}", kwargs, steps=3 * T + 1)
            unrolls = learner.queue.get(3 * K, learner.trainer.policy_version, timeout=5)
            assert unrolls is not None
            batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
            if lstm:
                assert batch.core_state[0].abs().sum() > 0, "later unrolls start mid-state"
            with torch.no_grad():
                output = learner.trainer.model(batch.observations, batch.terminated | batch.truncated,
                                       batch.core_state)
            torch.testing.assert_close(output.policy_params, batch.behaviour_params,
                                       atol=1e-5, rtol=1e-5)
