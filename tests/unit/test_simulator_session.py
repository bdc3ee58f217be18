"""actors/simulator.py: a simulator that owns its loop calls ``SimulatorSession.step`` and
gets actions, through a real learner and the stand-in learner (a real gRPC server that
records every message and can be restarted on its port)."""

from __future__ import annotations

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support.learner_harness import make_config, running_learner
from support.stand_in_learner import StandInLearner, stand_in_actions

from actors.simulator import SessionFailed, SimulatorSession, TrainingOver
from seed_rl.spaces import action_layout

K = 3
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


class CartPoles:
    """K CartPoles stepped by hand, as a simulator steps its bodies: reset on episode end,
    the final observation kept for truncated ones."""

    def __init__(self, k: int, max_steps: int = 500):
        self.envs = [gym.make("CartPole-v1", max_episode_steps=max_steps) for _ in range(k)]
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space

    def reset(self) -> np.ndarray:
        return np.stack([env.reset(seed=i)[0] for i, env in enumerate(self.envs)])

    def tick(self, actions: np.ndarray) -> tuple:
        observations, rewards, terminated, truncated, finals = [], [], [], [], {}
        for i, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(int(actions[i]))
            if term or trunc:
                if trunc and not term:
                    finals[i] = observation
                observation, _ = env.reset()
            observations.append(observation)
            rewards.append(reward)
            terminated.append(term)
            truncated.append(trunc)
        return np.stack(observations), rewards, terminated, truncated, finals


def session_for(learner: StandInLearner, sim: CartPoles, **kwargs) -> SimulatorSession:
    return SimulatorSession("CartPole-v1", sim.observation_space, sim.action_space, K,
                            learner=learner.address, actor_id="sim", **kwargs)


def test_each_step_carries_the_transition_the_answered_actions_made() -> None:
    sim = CartPoles(K, max_steps=5)  # truncations every 5 ticks
    with StandInLearner() as learner, session_for(learner, sim) as session:
        layout = action_layout(sim.action_space)
        observations = sim.reset()
        actions = session.reset(observations)
        sent = [(observations, [0.0] * K, [False] * K, [False] * K, {})]
        for n in range(12):
            np.testing.assert_array_equal(actions, stand_in_actions(layout, n, K))
            transition = sim.tick(actions)
            sent.append(transition)
            actions = session.step(*transition)
        (handshake,) = learner.sessions()
        steps = learner.steps_of(handshake.session_id)
        assert len(steps) == 13
        for step, (observations, rewards, terminated, truncated, finals) in zip(
                steps, sent, strict=True):
            np.testing.assert_array_equal(step.observations, observations)
            np.testing.assert_array_equal(step.rewards, np.asarray(rewards, np.float32))
            np.testing.assert_array_equal(step.terminated, terminated)
            np.testing.assert_array_equal(step.truncated, truncated)
            assert step.final_envs == sorted(finals)
            for row, env in enumerate(step.final_envs):
                np.testing.assert_array_equal(step.final_observations[row], finals[env])
        ended = [episode for step in steps for episode in step.episodes]
        assert ended and all(length == 5 and ret == 5.0 for _, ret, length in ended)
        assert handshake.request.num_envs == K and handshake.request.env_id == "CartPole-v1"


def test_a_restarted_learner_is_reconnected_and_the_new_session_starts_clean() -> None:
    sim = CartPoles(K)
    with StandInLearner() as learner, session_for(learner, sim) as session:
        actions = session.reset(sim.reset())
        for _ in range(3):
            actions = session.step(*sim.tick(actions))
        learner.stop()
        learner.start()  # same port; the old session is gone
        for _ in range(3):  # step() waits through the reconnect and answers
            transition = sim.tick(actions)
            actions = session.step(*transition)
        first, second = learner.sessions()
        assert first.session_id != second.session_id
        resumed = learner.steps_of(second.session_id)
        assert resumed, "no step reached the new session"
        assert not resumed[0].rewards.any() and not resumed[0].terminated.any()
        assert not resumed[0].truncated.any() and not resumed[0].final_envs


def test_training_over_ends_the_loop() -> None:
    sim = CartPoles(K)
    with StandInLearner(training_over_after=4) as learner, session_for(learner, sim) as session:
        actions = session.reset(sim.reset())
        with pytest.raises(TrainingOver, match="training is over"):
            for _ in range(10):
                actions = session.step(*sim.tick(actions))
        with pytest.raises(TrainingOver):  # and stays over
            session.step(*sim.tick(actions))


def test_a_refusal_is_raised_with_the_learners_words() -> None:
    sim = CartPoles(K)
    refusal = (grpc.StatusCode.FAILED_PRECONDITION, "observation spaces differ: learner Box(2)")
    with (StandInLearner(handshake_error=refusal) as learner,
          session_for(learner, sim) as session,
          pytest.raises(SessionFailed, match="observation spaces differ: learner Box")):
        session.reset(sim.reset())


def test_bad_calls_say_what_to_give() -> None:
    sim = CartPoles(K)
    with StandInLearner() as learner, session_for(learner, sim) as session:
        observations = sim.reset()
        with pytest.raises(RuntimeError, match="call reset"):
            session.step(observations, [0.0] * K, [False] * K, [False] * K)
        session.reset(observations)
        with pytest.raises(ValueError, match="expected one per environment"):
            session.step(observations[:2], [0.0] * K, [False] * K, [False] * K)
        with pytest.raises(ValueError, match=r"environments \[1\] were truncated"):
            session.step(observations, [1.0] * K, [False] * K, [False, True, False])


def test_a_real_learner_trains_on_a_simulators_loop(tmp_path) -> None:
    config = make_config(tmp_path, env="CartPole-v1", batch_size=2, unroll_length=8)
    sim = CartPoles(K)
    with running_learner(config) as learner:
        session = SimulatorSession("CartPole-v1", sim.observation_space, sim.action_space, K,
                                   learner=f"127.0.0.1:{learner.port}",
                                   auth_token=config.auth_token)
        with session:
            actions = session.reset(sim.reset())
            for _ in range(300):
                actions = session.step(*sim.tick(actions))
                assert sim.action_space.contains(int(actions[0]))
        assert learner.metrics.env_steps > 0
        assert learner.metrics.episodes > 0 and learner.trainer.policy_version > 0
