"""Third-party-like environments and wrappers for the test_envs_*.py tests, importable by a
subprocess with tests/ on PYTHONPATH (``--env-import support.envs_plugin``).

Importing it registers:

- ``MissionGrid-v0``: a MiniGrid-like task. Observations are MiniGrid's: a Dict of
  ``image``, a uint8 ``Box(0, 255, (7, 7, 3))`` whose cells hold symbol codes (object 1
  empty, 2 wall, 8 goal, 10 agent; colour 0-5; state 0), and ``mission``, a Text that
  seed-rl cannot carry. Walk right (action 1) from the left of the corridor to the goal:
  reward 1 and the episode ends; at most 20 steps.
- ``RenderFails-v0``: CartPole whose ``render()`` raises the error MuJoCo raises without an
  OpenGL context (``mujoco.FatalError: an OpenGL platform library has not been loaded``);
  ``RenderFailsLater-v0`` raises it from the fourth frame on, ``RenderOnResetFails-v0`` in
  ``reset()`` and ``RenderOnMakeFails-v0`` when made, both only with a ``render_mode``
  (environments that render or open a context there); ``ResetFails-v0``'s ``reset()``
  always raises, rendering or not.

Wrappers (``--env-wrapper support.envs_plugin:NAME``): :class:`ImageOnly` (minigrid's
``ImgObsWrapper``: the image alone), :class:`Pixels` (the image as bright pixels, values up
to 250), :func:`not_an_env` (returns no environment) and :func:`broken` (raises).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

GOAL_COLUMN = 5


class MissionGridEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
            "mission": gym.spaces.Text(40, charset="abcdefghijklmnopqrstuvwxyz "),
        })
        self.action_space = gym.spaces.Discrete(3)  # left, right, stay
        self.column = 1

    def _observation(self) -> dict:
        grid = np.zeros((7, 7, 3), np.uint8)
        grid[..., 0] = 2  # walls (grey: colour 5)
        grid[..., 1] = 5
        grid[1:-1, 1:-1] = (1, 0, 0)  # empty floor
        grid[3, GOAL_COLUMN] = (8, 1, 0)  # the goal, green
        grid[3, self.column] = (10, 0, 0)  # the agent, red, facing right
        return {"image": grid, "mission": "get to the green goal square"}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.column = int(self.np_random.integers(1, GOAL_COLUMN))
        return self._observation(), {}

    def step(self, action):
        self.column = int(np.clip(self.column + (-1, 1, 0)[int(action)], 1, GOAL_COLUMN))
        reached = self.column == GOAL_COLUMN
        return self._observation(), float(reached), reached, False, {}

    def render(self) -> np.ndarray:
        return np.kron(self._observation()["image"] * 20, np.ones((8, 8, 1), np.uint8))


class ImageOnly(gym.ObservationWrapper):
    """The ``image`` part of a Dict observation alone (what minigrid's ImgObsWrapper does)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = env.observation_space["image"]

    def observation(self, observation: dict) -> np.ndarray:
        return observation["image"]


class Pixels(gym.ObservationWrapper):
    """The image scaled to bright pixel values (codes x 25, up to 250): a real image."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (observation * 25).astype(np.uint8)


def not_an_env(env: gym.Env) -> None:
    """A wrapper that forgets to return the environment."""
    env.close()


def broken(env: gym.Env) -> gym.Env:
    raise RuntimeError("this wrapper is broken")


class FatalError(Exception):
    """Named like ``mujoco.FatalError``."""


class RenderFailsEnv(CartPoleEnv):
    def render(self):
        raise FatalError("an OpenGL platform library has not been loaded into this process, "
                         "this most likely means that a valid OpenGL context has not been "
                         "created before mjr_makeContext was called")


class RenderFailsLaterEnv(CartPoleEnv):
    frames = 0

    def render(self):
        self.frames += 1
        if self.frames > 3:
            raise FatalError("the OpenGL context was lost")
        return super().render()


class RenderOnResetFailsEnv(CartPoleEnv):
    def reset(self, **kwargs):
        if self.render_mode is not None:
            raise FatalError("an OpenGL platform library has not been loaded into this process")
        return super().reset(**kwargs)


class RenderOnMakeFailsEnv(CartPoleEnv):
    def __init__(self, render_mode: str | None = None):
        if render_mode is not None:
            raise FatalError("an OpenGL platform library has not been loaded into this process")
        super().__init__(render_mode=render_mode)


class ResetFailsEnv(CartPoleEnv):
    def reset(self, **kwargs):
        raise RuntimeError("this environment is broken, rendering or not")


for _name, _entry in (("RenderFails-v0", RenderFailsEnv),
                      ("RenderFailsLater-v0", RenderFailsLaterEnv),
                      ("RenderOnResetFails-v0", RenderOnResetFailsEnv),
                      ("RenderOnMakeFails-v0", RenderOnMakeFailsEnv),
                      ("ResetFails-v0", ResetFailsEnv)):
    if _name not in gym.registry:
        gym.register(_name, entry_point=_entry, max_episode_steps=50)
if "MissionGrid-v0" not in gym.registry:
    gym.register("MissionGrid-v0", entry_point=MissionGridEnv, max_episode_steps=20)
