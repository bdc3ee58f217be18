"""Small deterministic environments for tests and debugging (torch-free).

``gymnasium.make("seed_rl.testing:RevealAction-v0", ...)`` imports this module and so
registers them in any process, actors included.

RevealAction: observation ``[t, episode]`` (float32), where t counts steps within the
episode. Taking action a at observation t yields reward ``10 * t + a``: the reward reveals
both the action and the observation it was taken at, which is how the tests prove the slot
convention. After ``episode_length`` steps the episode ends: terminated, or truncated when
``truncate=True``. With ``pixels=S`` the observation is instead a uint8 image ``[S, S, 1]``
whose every pixel holds t (for the conv-net path).

SpikeReward: RevealAction whose episodes end, with probability ``spike_probability``, on a
huge but finite reward (3e38, near float32's largest). The learner accepts it (it is
finite), and a training batch that holds one overflows its loss to inf in float32: the
update must be skipped and counted, and training must go on with the other batches.

Three small environments for the other spaces seed-rl carries. Each draws a random *cue*
per step from its own seeded RNG, shows it in the observation, and pays for acting on it:
a policy that reads the cue beats one that does not, so learning is possible and visible.

DictObservation: observation ``Dict(cue=Discrete(num_actions), image=Box uint8 [S, S, 1],
position=Box float32 [2])`` (image pixels all hold t, position is ``[t, episode]``), action
``Discrete(num_actions)``; reward 1 when the action equals the cue, else 0. Only the
Discrete leaf tells the cue: the learner must read inside the packed Dict row.

MultiDiscreteAction: observation Box float32 ``[len(nvec)]`` holding the cue (one value per
head, ``start`` included), action ``MultiDiscrete(nvec, start=start)``; reward the fraction of
heads that equal the cue. ``start`` defaults to non-zero values, and an action outside the
space raises (a learner that forgets ``start`` fails loudly).

ContinuousAction: observation Box float32 ``[dim]``, a cue in [-0.5, 0.5]; action
``Box(-1, 1, [dim], float32)``; reward ``-mean((action - cue) ** 2)``. An action outside the
bounds raises: the actor must clip.

All three end after ``episode_length`` steps (terminated, or truncated with
``truncate=True``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class RevealActionEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, num_actions: int = 3, episode_length: int = 5, truncate: bool = False,
                 pixels: int = 0, render_mode: str | None = None):
        self.num_actions = num_actions
        self.episode_length = episode_length
        self.truncate = truncate
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(num_actions)
        self.pixels = pixels
        if pixels:
            self.observation_space = gym.spaces.Box(0, 255, shape=(pixels, pixels, 1),
                                                    dtype=np.uint8)
        else:
            self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32)
        self._t = 0
        self._episode = -1

    def _obs(self) -> np.ndarray:
        if self.pixels:
            return np.full((self.pixels, self.pixels, 1), min(self._t, 255), dtype=np.uint8)
        return np.array([self._t, self._episode], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._episode += 1
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} outside {self.action_space}")
        reward = 10.0 * self._t + action
        self._t += 1
        ended = self._t >= self.episode_length
        terminated = ended and not self.truncate
        truncated = ended and self.truncate
        return self._obs(), reward, terminated, truncated, {}

    def render(self):
        frame = np.zeros((16, 16, 3), dtype=np.uint8)
        frame[:, : min(16, self._t * 3)] = 255
        return frame


class SpikeRewardEnv(RevealActionEnv):
    SPIKE = 3e38

    def __init__(self, spike_probability: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.spike_probability = spike_probability

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        if (terminated or truncated) and self.np_random.random() < self.spike_probability:
            reward = self.SPIKE
        return observation, reward, terminated, truncated, info


class _CueEnv(gym.Env):
    """A new random cue every step; episodes of ``episode_length`` steps."""

    def __init__(self, episode_length: int = 5, truncate: bool = False):
        self.episode_length = episode_length
        self.truncate = truncate
        self._t = 0
        self._episode = -1
        self._cue = self._new_cue()

    def _new_cue(self):
        raise NotImplementedError

    def _obs(self):
        raise NotImplementedError

    def _reward(self, action) -> float:
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # a seeded reset starts over: reproducible from the seed alone
            self._episode = -1
        self._t = 0
        self._episode += 1
        self._cue = self._new_cue()
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        reward = self._reward(action)
        self._t += 1
        self._cue = self._new_cue()
        ended = self._t >= self.episode_length
        return self._obs(), reward, ended and not self.truncate, ended and self.truncate, {}


class DictObservationEnv(_CueEnv):
    def __init__(self, num_actions: int = 3, pixels: int = 4, **kwargs):
        self.num_actions, self.pixels = num_actions, pixels
        self.observation_space = gym.spaces.Dict({
            "cue": gym.spaces.Discrete(num_actions),
            "image": gym.spaces.Box(0, 255, shape=(pixels, pixels, 1), dtype=np.uint8),
            "position": gym.spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32),
        })
        self.action_space = gym.spaces.Discrete(num_actions)
        super().__init__(**kwargs)

    def _new_cue(self) -> int:
        return int(self.np_random.integers(self.num_actions))

    def _obs(self) -> dict:
        return {"cue": self._cue,
                "image": np.full((self.pixels, self.pixels, 1), min(self._t, 255), np.uint8),
                "position": np.array([self._t, self._episode], dtype=np.float32)}

    def _reward(self, action) -> float:
        return float(int(action) == self._cue)


class MultiDiscreteActionEnv(_CueEnv):
    def __init__(self, nvec: tuple[int, ...] = (3, 4), start: tuple[int, ...] = (1, -2),
                 **kwargs):
        self.action_space = gym.spaces.MultiDiscrete(list(nvec), start=list(start))
        low, high = self.action_space.start, self.action_space.start + self.action_space.nvec - 1
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32),
                                                dtype=np.float32)
        super().__init__(**kwargs)

    def _new_cue(self) -> np.ndarray:
        space = self.action_space
        return space.start + self.np_random.integers(space.nvec)

    def _obs(self) -> np.ndarray:
        return self._cue.astype(np.float32)

    def _reward(self, action) -> float:
        return float(np.mean(np.asarray(action) == self._cue))


class ContinuousActionEnv(_CueEnv):
    def __init__(self, dim: int = 2, **kwargs):
        self.dim = dim
        self.observation_space = gym.spaces.Box(-0.5, 0.5, shape=(dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
        super().__init__(**kwargs)

    def _new_cue(self) -> np.ndarray:
        return self.np_random.uniform(-0.5, 0.5, self.dim).astype(np.float32)

    def _obs(self) -> np.ndarray:
        return self._cue.copy()

    def _reward(self, action) -> float:
        return -float(np.mean((np.asarray(action, dtype=np.float32) - self._cue) ** 2))


for _id, _entry_point in (("RevealAction-v0", RevealActionEnv),
                          ("SpikeReward-v0", SpikeRewardEnv),
                          ("DictObservation-v0", DictObservationEnv),
                          ("MultiDiscreteAction-v0", MultiDiscreteActionEnv),
                          ("ContinuousAction-v0", ContinuousActionEnv)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry_point)
