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


if "RevealAction-v0" not in gym.registry:
    gym.register("RevealAction-v0", entry_point=RevealActionEnv)
if "SpikeReward-v0" not in gym.registry:
    gym.register("SpikeReward-v0", entry_point=SpikeRewardEnv)
