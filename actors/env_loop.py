"""The environment loop of one actor: K gymnasium environments stepped in lockstep.

Read top to bottom: make the K environments and reset them (each with its own seed), then,
once per stream step, build the ``StepRequest`` of all K and apply the K actions that came
back. This module speaks the wire messages (``seed_rl.proto``) but not how they travel:
``actors/client.py`` owns the gRPC channel and drives an :class:`EnvLoop` through
``start_session`` / ``build_request`` / ``decode_actions`` / ``step``.

Slot convention (docs/architecture.md, "Slot convention"; proto/seed_rl/v1/seed_rl.proto):
the request at stream step t carries x_t and the reward and episode-end flags of the
transition that LED to x_t; the response carries a_t, sampled from the policy at x_t.

    request t:   x_t;  r_t, terminated_t, truncated_t of the step x_{t-1} --a_{t-1}--> x_t
    response t:  a_t ~ pi(. | x_t)

An environment whose episode ended is reset at once, so x_t is then the first observation
of its next episode; on truncation (not termination) the final observation of the old
episode travels in ``final_observation_envs`` / ``final_observations`` (the learner
bootstraps from it). Finished episodes (env index, return, length) ride along for the
learner's statistics. Each session's first message carries reward 0 and no flags (the
learner refuses any other): the learner starts a fresh trajectory per session, and what an
old session never acknowledged belongs to no trajectory.

Observations travel as rows of the layout of the observation space (seed_rl/spaces.py): a
Box, Discrete, MultiDiscrete or MultiBinary as itself, a Dict or Tuple packed into one uint8
row per env. Actions come back as the action space's layout says (Discrete ``[K]`` int64,
MultiDiscrete ``[K, n]`` int64, Box ``[K, *shape]`` float32) and reach ``env.step`` through
``ActionLayout.to_env`` (Box actions clipped to the bounds there).

Per-message work is done once per message (preallocated ``[K, ...]`` buffers, each tensor
encoded once); per-environment work is only ``env.step`` / ``env.reset`` and one row write.

Torch-free, and free of grpc.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from actors.counters import Counters
from seed_rl import wire
from seed_rl.envs.making import EnvironmentUnavailable, make_env
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import UnsupportedSpace, action_layout, observation_layout

log = logging.getLogger("actors.env_loop")


class PermanentError(Exception):
    """Retrying cannot help (an environment that cannot be made, spaces the wire cannot
    carry, malformed actions, a refusing learner); the text says what to change."""


def env_seeds(seed: int, actor_id: str, num_envs: int) -> list[int]:
    """Deterministic, distinct seeds for the K envs of ``actor_id``, from the base seed."""
    sequence = np.random.SeedSequence([seed % (1 << 64), zlib.crc32(actor_id.encode())])
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in sequence.spawn(num_envs)]


def registered_here(env_id: str) -> bool:
    """``gym.make(env_id)`` needs no ``--env-import`` first: the id is registered in this
    process, or uses gymnasium's ``module:EnvId`` form (gym.make imports the module)."""
    return ":" in env_id or env_id in gym.registry


def make_envs(env_id: str, env_kwargs: dict[str, Any], num_envs: int,
              process: str = "actor", env_wrapper: Sequence[str] = ()) -> list[gym.Env]:
    """``num_envs`` environments made by ``seed_rl.envs.making.make_env``, as every process
    makes them (this process ran its ``--env-import`` already), each wrapped by
    ``env_wrapper``; PermanentError if any cannot be made (the ones already made are
    closed). ``process`` names this actor in the error."""
    envs: list[gym.Env] = []
    try:
        for _ in range(num_envs):
            envs.append(make_env(env_id, env_kwargs, (), env_wrapper, process))
    except EnvironmentUnavailable as error:  # says what to install, import or fix
        close_envs(envs)
        hint = "" if registered_here(env_id) else (
            " (not registered in this process: give --env-import here, or leave it out here "
            "to run the learner's)")
        raise PermanentError(f"{error}{hint}") from None
    except Exception as error:  # the environment's own code raised
        close_envs(envs)
        raise PermanentError(
            f"{process}: cannot make environment {env_id!r} with kwargs {env_kwargs}: "
            f"{type(error).__name__}: {error}"
        ) from None
    return envs


def close_envs(envs: Sequence[gym.Env]) -> None:
    """Close every env; a failing ``close()`` is logged, never raised (closing must not
    hide why the actor stopped)."""
    for env in envs:
        try:
            env.close()
        except Exception:
            log.debug("env.close() failed", exc_info=True)


class EnvLoop:
    """K environments of ``env_id`` and the buffers of the next ``StepRequest``.

    ``seeds`` has one seed per environment (K = ``len(seeds)``); env i is reset with
    ``seeds[i]`` once, here, and afterwards only when its episode ends (unseeded, so its
    own RNG stream continues). The environments keep their state across sessions: a
    reconnect continues the episodes where they were. ``counters`` receives the env steps
    taken and the episodes finished; ``process`` names this actor in errors; each env is
    wrapped by the ``env_wrapper`` entries (``--env-wrapper``), in order.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        seeds: Sequence[int],
        counters: Counters | None = None,
        process: str = "actor",
        env_wrapper: Sequence[str] = (),
    ):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.num_envs = k = len(seeds)
        self.counters = counters if counters is not None else Counters()
        self.env_wrapper = list(env_wrapper)
        self.envs = make_envs(env_id, self.env_kwargs, k, process, self.env_wrapper)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        try:  # the handshake describes both spaces; reject what the wire cannot carry now
            self.observation_layout = observation_layout(self.observation_space)
            self.action_layout = action_layout(self.action_space)
            self.observation_space_msg = wire.encode_space(self.observation_space)
            self.action_space_msg = wire.encode_space(self.action_space)
        except (UnsupportedSpace, wire.WireError) as error:
            close_envs(self.envs)
            raise PermanentError(f"environment {env_id}: {error}") from None
        layout = self.observation_layout
        shape, dtype = layout.row_shape, layout.row_dtype  # one row per env
        self.observation_shape, self.observation_dtype = shape, dtype

        # What the next request carries (slot convention above), one row per env.
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

        for i, (env, seed) in enumerate(zip(self.envs, seeds, strict=True)):
            observation, _ = env.reset(seed=seed)
            layout.write(self.observations, i, observation)

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

    def step(self, actions: Sequence[Any] | np.ndarray) -> None:
        """Apply a_t to every env once and fill the buffers of request t+1: x_{t+1}, the
        reward and flags of the transition into it, and (episode ended) reset the env.
        ``actions[i]`` is env i's action as it travels (``decode_actions``)."""
        layout, to_env = self.observation_layout, self.action_layout.to_env
        rewards = [0.0] * self.num_envs
        terminated = [False] * self.num_envs
        truncated = [False] * self.num_envs
        final_env_indices: list[int] = []
        finished_episodes: list[tuple[int, float, int]] = []
        returns, lengths = self.episode_returns, self.episode_lengths
        for i, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(to_env(actions[i]))
            reward = float(reward)
            returns[i] += reward
            lengths[i] += 1
            rewards[i] = reward
            if term or trunc:
                terminated[i] = bool(term)
                truncated[i] = bool(trunc)
                if trunc and not term:  # the learner bootstraps from the true last state
                    layout.write(self.final_observations, len(final_env_indices), observation)
                    final_env_indices.append(i)
                finished_episodes.append((i, returns[i], lengths[i]))
                self.counters.add_episode(returns[i])
                returns[i] = 0.0
                lengths[i] = 0
                observation, _ = env.reset()  # x_{t+1} is the next episode's first
            layout.write(self.observations, i, observation)
        self.rewards[:] = rewards
        self.terminated[:] = terminated
        self.truncated[:] = truncated
        self.final_env_indices = final_env_indices
        self.finished_episodes = finished_episodes
        self.counters.add_steps(self.num_envs)

    def close(self) -> None:
        close_envs(self.envs)
        self.envs = []
