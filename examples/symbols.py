"""A grid of symbol codes as MultiDiscrete (one-hot per cell), not as an image of pixels."""
import gymnasium as gym
import numpy as np


class Symbols(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, counts=(11, 6, 3)):  # MiniGrid: objects, colours, states
        super().__init__(env)
        nvec = np.broadcast_to(np.asarray(counts), env.observation_space.shape)
        self.observation_space = gym.spaces.MultiDiscrete(nvec.copy())

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation.astype(np.int64)
