"""Catch: a ball falls down a 5x5 grid; move the paddle (bottom row) under it. +1 caught, -1 missed."""
import gymnasium as gym
import numpy as np


class Catch(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, size: int = 5, render_mode: str | None = None):
        self.size, self.render_mode = size, render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size, size), np.float32)
        self.action_space = gym.spaces.Discrete(3)  # left, stay, right

    def _grid(self) -> np.ndarray:
        grid = np.zeros((self.size, self.size), np.float32)
        grid[self.row, self.column] = grid[-1, self.paddle] = 1.0
        return grid

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.row, self.column = 0, int(self.np_random.integers(self.size))
        self.paddle = self.size // 2
        return self._grid(), {}

    def step(self, action):
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 0, self.size - 1))
        self.row += 1
        done = self.row == self.size - 1
        reward = (1.0 if self.column == self.paddle else -1.0) if done else 0.0
        return self._grid(), reward, done, False, {}

    def render(self) -> np.ndarray:  # [H, W, 3] uint8 frames for seed-rl eval --video
        return np.repeat(np.kron(self._grid(), np.ones((32, 32)))[..., None] * 255, 3, -1).astype(np.uint8)


gym.register("Catch-v0", entry_point=Catch, max_episode_steps=100)
