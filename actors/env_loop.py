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
from actors.messages import PermanentError, StepMessages
from seed_rl.envs.making import EnvironmentUnavailable, make_env

log = logging.getLogger("actors.env_loop")


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


class EnvLoop(StepMessages):
    """K environments of ``env_id`` and the buffers of the next ``StepRequest``
    (:class:`actors.messages.StepMessages`).

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
        self.env_kwargs = dict(env_kwargs)
        self.env_wrapper = list(env_wrapper)
        self.envs = make_envs(env_id, self.env_kwargs, len(seeds), process, self.env_wrapper)
        try:
            super().__init__(env_id, self.envs[0].observation_space,
                             self.envs[0].action_space, len(seeds), counters)
        except PermanentError:
            close_envs(self.envs)
            raise
        for i, (env, seed) in enumerate(zip(self.envs, seeds, strict=True)):
            observation, _ = env.reset(seed=seed)
            self.set_observation(i, observation)

    def step(self, actions: Sequence[Any] | np.ndarray) -> None:
        """Apply a_t to every env once and fill the buffers of request t+1: x_{t+1}, the
        reward and flags of the transition into it, and (episode ended) reset the env.
        ``actions[i]`` is env i's action as it travels (``decode_actions``)."""
        to_env, record = self.action_layout.to_env, self.record
        self.begin_step()
        for i, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(to_env(actions[i]))
            if term or trunc:
                final, (observation, _) = observation, env.reset()  # x_{t+1}: next episode's
                record(i, observation, float(reward), bool(term), bool(trunc), final)
            else:
                record(i, observation, float(reward), False, False)
        self.end_step()

    def close(self) -> None:
        close_envs(self.envs)
        self.envs = []
