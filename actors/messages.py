"""The step messages of K environments: the rows of the next ``StepRequest`` and the
running episodes, whoever steps the environments.

Two loops fill them: :class:`actors.env_loop.EnvLoop` steps K gymnasium environments
itself, :class:`actors.simulator.SimulatorSession` takes what a simulator that owns its loop
hands it. Both record one transition per environment per step (:meth:`StepMessages.record`)
and the client (``actors/client.py``) sends :meth:`build_request` and decodes the answer
with :meth:`decode_actions`. The slot convention is written once, in actors/env_loop.py:
the request at step t carries x_t and the reward and episode-end flags of the transition
into x_t; a truncated (not terminated) environment's final observation travels beside it;
each session's first message carries no transition (:meth:`start_session`).

Torch-free, and free of grpc.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from actors.counters import Counters
from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import UnsupportedSpace, action_layout, observation_layout


class PermanentError(Exception):
    """Retrying cannot help (an environment that cannot be made, spaces the wire cannot
    carry, malformed actions, a refusing learner); the text says what to change."""


class StepMessages:
    """The next ``StepRequest`` of ``num_envs`` environments of ``env_id`` with these
    spaces, and the return and length of each one's running episode.

    ``counters`` receives the env steps and finished episodes. PermanentError when the
    wire cannot carry a space.
    """

    def __init__(self, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int, counters: Counters | None = None):
        self.env_id = env_id
        self.num_envs = k = int(num_envs)
        self.counters = counters if counters is not None else Counters()
        self.observation_space = observation_space
        self.action_space = action_space
        try:  # the handshake describes both spaces; reject what the wire cannot carry now
            self.observation_layout = observation_layout(observation_space)
            self.action_layout = action_layout(action_space)
            self.observation_space_msg = wire.encode_space(observation_space)
            self.action_space_msg = wire.encode_space(action_space)
        except (UnsupportedSpace, wire.WireError) as error:
            raise PermanentError(f"environment {env_id}: {error}") from None
        layout = self.observation_layout
        shape, dtype = layout.row_shape, layout.row_dtype  # one row per env
        self.observation_shape, self.observation_dtype = shape, dtype

        # What the next request carries (the slot convention), one row per env.
        self.observations = np.zeros((k, *shape), dtype=dtype)  # x_t
        self.rewards = np.zeros(k, dtype=np.float32)  # reward of the transition into x_t
        self.terminated = np.zeros(k, dtype=bool)
        self.truncated = np.zeros(k, dtype=bool)
        self.final_env_indices: list[int] = []  # truncated envs, ascending
        self.final_observations = np.zeros((k, *shape), dtype=dtype)  # their rows, same order
        self.finished_episodes: list[tuple[int, float, int]] = []  # (env, return, length)
        self._empty_finals = wire.encode_tensor(np.zeros((0, *shape), dtype=dtype))

        # The running episode of each env.
        self.episode_returns = [0.0] * k
        self.episode_lengths = [0] * k

    def describe(self) -> str:
        """For the log: ``3 x CartPole-v1, observations (4,) float32, actions Discrete(2)``
        (a Dict or Tuple observation: its description and its packed row)."""
        observations = f"{self.observation_shape} {self.observation_dtype}"
        if self.observation_layout.packed:
            observations = (f"{wire.describe_space(self.observation_space)} packed as "
                            f"{observations} rows")
        return (f"{self.num_envs} x {self.env_id}, observations {observations}, "
                f"actions {wire.describe_space(self.action_space)}")

    def worst_request_bytes(self) -> int:
        """An upper bound on one request's size: every env may be truncated at once (a
        shared time limit), so observations travel twice, plus per-env scalars."""
        return 2 * self.observations.nbytes + 64 * self.num_envs + 1024

    def start_session(self) -> None:
        """Make the next request a session's first: current observations, reward 0, no
        episode ends, nothing final (what the old session did not answer is dropped)."""
        self.rewards[:] = 0.0
        self.terminated[:] = False
        self.truncated[:] = False
        self.final_env_indices = []
        self.finished_episodes = []

    def set_observation(self, index: int, observation: object) -> None:
        """Write env ``index``'s current observation (as the env gives it) into its row."""
        self.observation_layout.write(self.observations, index, observation)

    def begin_step(self) -> None:
        """Start recording a step: every env is then :meth:`record`-ed once, in ascending
        order, and :meth:`end_step` makes them the next request."""
        k = self.num_envs
        self._step_rewards = [0.0] * k  # lists while recording: cheaper per env than arrays
        self._step_terminated = [False] * k
        self._step_truncated = [False] * k
        self.final_env_indices = []
        self.finished_episodes = []

    def record(self, index: int, observation: object, reward: float, terminated: bool,
               truncated: bool, final_observation: object = None) -> None:
        """One environment's transition of this step: ``observation`` is x_{t+1} (after an
        episode end, the next episode's first), ``reward``/``terminated``/``truncated`` those
        of the transition into it, ``final_observation`` the last observation of an episode
        that was truncated (not terminated)."""
        returns, lengths = self.episode_returns, self.episode_lengths
        returns[index] += reward
        lengths[index] += 1
        self._step_rewards[index] = reward
        if terminated or truncated:
            self._step_terminated[index] = terminated
            self._step_truncated[index] = truncated
            if truncated and not terminated:  # the learner bootstraps from the true last state
                self.observation_layout.write(self.final_observations,
                                              len(self.final_env_indices), final_observation)
                self.final_env_indices.append(index)
            self.finished_episodes.append((index, returns[index], lengths[index]))
            self.counters.add_episode(returns[index])
            returns[index] = 0.0
            lengths[index] = 0
        self.observation_layout.write(self.observations, index, observation)

    def end_step(self) -> None:
        """The recorded step becomes the next request's rewards and flags."""
        self.rewards[:] = self._step_rewards
        self.terminated[:] = self._step_terminated
        self.truncated[:] = self._step_truncated
        self.counters.add_steps(self.num_envs)

    def step(self, actions: np.ndarray) -> None:
        """Apply a_t ``[K, *action shape]`` (as it travels) and record the transitions it
        makes: the loop's business (EnvLoop steps gymnasium environments, a simulator
        session hands them to the simulator)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the environments, if this loop owns them."""

    def build_request(self) -> pb.StepRequest:
        """The ``StepRequest`` for stream step t: x_t of all K envs ``[K, *obs_shape]``,
        rewards ``[K]`` float32, terminated / truncated ``[K]`` bool, the final observations
        ``[F, *obs_shape]`` of the F envs truncated into x_t, and the finished episodes."""
        request = pb.StepRequest()
        wire.encode_tensor(self.observations, out=request.observations)
        wire.encode_tensor(self.rewards, out=request.rewards)
        wire.encode_tensor(self.terminated, out=request.terminated)
        wire.encode_tensor(self.truncated, out=request.truncated)
        if self.final_env_indices:
            request.final_observation_envs.extend(self.final_env_indices)
            finals = self.final_observations[:len(self.final_env_indices)]
            wire.encode_tensor(finals, out=request.final_observations)
        else:
            request.final_observations.CopyFrom(self._empty_finals)
        for env_index, episode_return, length in self.finished_episodes:
            request.episodes.add(
                env_index=env_index, episode_return=episode_return, episode_length=length
            )
        return request

    def decode_actions(self, response: pb.StepResponse) -> np.ndarray:
        """The K actions a_t of a ``StepResponse``, ``[K, *layout.shape]``; PermanentError
        unless shape and dtype are the action layout's (int64 for Discrete and
        MultiDiscrete, finite float32 for Box)."""
        layout = self.action_layout
        try:
            actions = wire.decode_tensor(response.actions, name="StepResponse.actions")
        except wire.WireError as error:
            raise PermanentError(f"the learner sent malformed actions: {error}") from None
        expected = (self.num_envs, *layout.shape)
        if actions.shape != expected or actions.dtype != layout.dtype:
            raise PermanentError(
                f"the learner sent actions of shape {list(actions.shape)} and dtype "
                f"{actions.dtype}; expected {list(expected)} {layout.dtype} for the action "
                f"space {wire.describe_space(self.action_space)}")
        if layout.kind == "box" and not np.isfinite(actions).all():
            raise PermanentError("the learner sent actions that are not finite (NaN or inf)")
        return actions.copy()  # writable, and not a view of the message: envs may keep it
