"""A client for simulators that own their loop: a game engine that ticks, a robot, a
co-simulation. The simulator calls the learner from its own loop; nothing here steps it.

    session = SimulatorSession("MySim-v0", observation_space, action_space, num_envs=K)
    actions = session.reset(observations)          # x_0 of the K envs -> a_0, [K, ...]
    while True:
        ...                                         # apply actions[i] to env i, tick
        try:
            actions = session.step(observations, rewards, terminated, truncated,
                                   final_observations={i: last_obs_of_i, ...})
        except TrainingOver:
            break
    session.close()

``step`` takes, per environment, what the tick produced: x_{t+1} (after an episode end the
first observation of the next episode: the simulator resets its own environments), the
reward and the terminated/truncated flags of the transition into it, and for each
environment truncated (not terminated) the last observation of its episode, from which
the learner bootstraps. It returns a_{t+1} as ``env.step`` takes it (``[K]`` int64 with the
space's start for Discrete, ``[K, m]`` for MultiDiscrete, ``[K, *shape]`` clipped to the
Box's bounds). The session counts episode returns and lengths itself.

Underneath is the actors' own client (actors/client.py), running in a thread of its own:
the same handshake, token, TLS, redirects, reconnects with backoff (a lost learner makes
``step`` wait and then answer from the new session; the transition in flight is dropped,
as with ``seed-rl actors``) and errors: training over raises :class:`TrainingOver`, a
refusal that retrying cannot fix raises :class:`SessionFailed` with the learner's words.
Settings not given come from the ``SEED_RL_*`` variables as ``seed-rl actors`` reads them
(``SEED_RL_LEARNER``, ``SEED_RL_AUTH_TOKEN``, ``SEED_RL_TLS_CA``, ...).

The learner must know the spaces: it makes ``env_id`` (registered with ``--env-import``;
a gymnasium env whose spaces are the simulator's is enough, the learner never steps it).
One request is in flight at a time and ``step`` blocks for the round trip. Torch-free.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from actors.client import EXIT_OK, ActorClient, actor_id_for
from actors.counters import Counters
from actors.messages import StepMessages
from seed_rl.config import Config, resolve

POLL_S = 0.1  # how often a waiting side looks whether the other has finished


class TrainingOver(Exception):
    """The learner says training is over: stop stepping (the session is closed)."""


class SessionFailed(Exception):
    """The session ended for good: the learner refused it (the text is its reason), or the
    client failed (the cause is chained)."""


class _HandOver(StepMessages):
    """The client thread's side: its ``step(a_t)`` gives a_t to the simulator and waits for
    the transition the simulator makes with it."""

    def __init__(self, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int, counters: Counters, stop: threading.Event):
        super().__init__(env_id, observation_space, action_space, num_envs, counters)
        self.stop = stop
        self.actions: queue.Queue[np.ndarray] = queue.Queue(maxsize=1)  # to the simulator
        self.transitions: queue.Queue[tuple] = queue.Queue(maxsize=1)  # from the simulator

    def step(self, actions: np.ndarray) -> None:
        self.actions.put(actions)
        while True:
            try:
                observations, rewards, terminated, truncated, finals = self.transitions.get(
                    timeout=POLL_S)
                break
            except queue.Empty:
                if self.stop.is_set():  # closed: the client stops without another request
                    return
        self.begin_step()
        for i in range(self.num_envs):
            self.record(i, observations[i], float(rewards[i]), bool(terminated[i]),
                        bool(truncated[i]), finals.get(i))
        self.end_step()

    def close(self) -> None:
        """Nothing to close: the simulator owns its environments."""


class SimulatorSession:
    """One actor's session with the learner for ``num_envs`` environments of ``env_id``
    that a simulator steps itself (module docstring). ``learner``, ``auth_token``,
    ``actor_id`` and ``env_kwargs`` override the ``SEED_RL_*`` settings; ``config`` replaces
    them (a :class:`seed_rl.config.Config` as ``seed-rl actors`` resolves it)."""

    def __init__(self, env_id: str, observation_space: gym.Space, action_space: gym.Space,
                 num_envs: int = 1, *, learner: str | None = None,
                 auth_token: str | None = None, actor_id: str | None = None,
                 env_kwargs: Mapping[str, Any] | None = None, config: Config | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        base = config if config is not None else resolve(None, "actors").config
        given = {"learner": learner, "auth_token": auth_token,
                 "env_kwargs": dict(env_kwargs) if env_kwargs is not None else None}
        self.config = dataclasses.replace(
            base, env=env_id, envs_per_actor=num_envs,
            **{name: value for name, value in given.items() if value is not None})
        self.num_envs = num_envs
        self.counters = Counters()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._loop = _HandOver(env_id, observation_space, action_space, num_envs,
                               self.counters, self._stop)
        self._refusal = ""
        self._client = ActorClient(
            self.config, 0, stop=self._stop, counters=self.counters,
            actor_id=actor_id or actor_id_for(self.config, 0), envs=self._loop,
            report=self._refused)
        self._exit_code: int | None = None
        self._crash: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def actor_id(self) -> str:
        return self._client.actor_id

    def reset(self, observations: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Start the session with x_0 of every environment; returns a_0 ``[K, ...]``."""
        if self._thread is not None:
            raise RuntimeError("reset() starts the session and is called once; call step() "
                               "from then on (the simulator resets its own environments)")
        self._check_count("observations", observations)
        for i in range(self.num_envs):
            self._loop.set_observation(i, observations[i])
        self._thread = threading.Thread(target=self._run_client, daemon=True,
                                        name=f"session-{self.actor_id}")
        self._thread.start()
        return self._next_actions()

    def step(self, observations: Sequence[Any] | np.ndarray,
             rewards: Sequence[float] | np.ndarray, terminated: Sequence[bool] | np.ndarray,
             truncated: Sequence[bool] | np.ndarray,
             final_observations: Mapping[int, Any] | None = None) -> np.ndarray:
        """One tick of every environment: x_{t+1} ``[K, ...]``, the rewards ``[K]`` and
        flags ``[K]`` of the transitions into it, the last observation of each truncated
        (not terminated) episode by env index. Returns a_{t+1}; raises TrainingOver or
        SessionFailed when the session has ended."""
        if self._thread is None:
            raise RuntimeError("call reset(observations) first: it starts the session")
        for name, values in (("observations", observations), ("rewards", rewards),
                             ("terminated", terminated), ("truncated", truncated)):
            self._check_count(name, values)
        finals = dict(final_observations or {})
        missing = [i for i in range(self.num_envs) if truncated[i] and not terminated[i]
                   and i not in finals]
        if missing:
            raise ValueError(f"environments {missing} were truncated: give the last "
                             "observation of each such episode in final_observations={env: "
                             "observation} (the learner bootstraps from it)")
        if self._done.is_set():
            self._raise_end()
        self._loop.transitions.put((observations, rewards, terminated, truncated, finals))
        return self._next_actions()

    def close(self) -> None:
        """End the session (the stream is closed cleanly) and wait for the client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SimulatorSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _check_count(self, name: str, values: Sequence[Any] | np.ndarray) -> None:
        if len(values) != self.num_envs:
            raise ValueError(f"{name}: expected one per environment ({self.num_envs}), got "
                             f"{len(values)}")

    def _run_client(self) -> None:
        try:
            self._exit_code = self._client.run()
        except BaseException as error:  # handed to the simulator's thread, never lost
            self._crash = error
        finally:
            self._done.set()

    def _refused(self, _actor_id: str, message: str) -> None:
        self._refusal = message

    def _next_actions(self) -> np.ndarray:
        while True:
            try:
                actions = self._loop.actions.get(timeout=POLL_S)
            except queue.Empty:
                if self._done.is_set() and self._loop.actions.empty():
                    self._raise_end()
                continue
            layout = self._loop.action_layout
            if layout.kind == "box":
                space = self._loop.action_space
                return np.clip(actions, space.low, space.high).astype(space.dtype)
            return actions

    def _raise_end(self) -> None:
        if self._crash is not None:
            raise SessionFailed(f"the client failed: {self._crash!r}") from self._crash
        if self._exit_code == EXIT_OK and self._client.outcome == "training_over":
            raise TrainingOver(f"the learner at {self.config.learner} says training is over")
        if self._exit_code == EXIT_OK:
            raise SessionFailed("the session was closed")
        raise SessionFailed(self._refusal or f"the client ended with exit code "
                                             f"{self._exit_code}")
