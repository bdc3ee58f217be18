"""``Atari-v0``: ALE games with the standard preprocessing, alike in every process (torch-free).

``gymnasium.make("seed_rl.envs:Atari-v0", game="ALE/Pong-v5")`` imports the package
``seed_rl.envs`` (gymnasium's ``module:EnvId`` syntax), which registers ``Atari-v0`` with
:func:`make_atari` here as its entry point; every process makes its environments with
``seed_rl.envs.making.make_env``, so a preset that names this id gets identical wrappers
in the learner, the actors and eval without any other plumbing.

Atari-v0 is the preprocessing of DQN (Mnih et al. 2015) as used by IMPALA and SEED RL:
an ALE game without sticky actions and with the minimal action set, up to 30 no-op actions
at reset, each action repeated 4 frames (max-pooled over the last two), 84x84 grayscale,
the last 4 frames stacked, at most 108,000 frames (30 minutes) per episode, and the
episode ending with the game, not with a lost life. Observations are uint8 ``[84, 84, 4]``
(height, width, stacked frames), the image layout the conv torsos expect.

Needs ``ale-py`` and ``opencv-python-headless``: ``pip install 'seed-rl[atari]'``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ATARI_EXTRA_HINT = "pip install 'seed-rl[atari]' (ale-py and opencv-python-headless)"


class ChannelsLast(gym.ObservationWrapper):
    """``[C, H, W]`` observations (gymnasium's frame stack) -> ``[H, W, C]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box) and len(space.shape) == 3
        self.observation_space = gym.spaces.Box(
            low=np.moveaxis(space.low, 0, -1),
            high=np.moveaxis(space.high, 0, -1),
            dtype=space.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, 0, -1))


def make_atari(
    game: str = "ALE/Pong-v5",
    frame_skip: int = 4,
    frame_stack: int = 4,
    noop_max: int = 30,
    screen_size: int = 84,
    sticky_actions: float = 0.0,
    max_episode_frames: int = 108_000,
    render_mode: str | None = None,
    **game_kwargs: Any,
) -> gym.Env:
    """An ALE game with the standard preprocessing (see the module docstring).

    ``game`` is an ALE id (``ALE/Breakout-v5``...); ``sticky_actions`` is ALE's
    ``repeat_action_probability`` (0.25 for the Machado et al. 2018 protocol).
    """
    try:
        import ale_py
        import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
    except ImportError as error:
        raise gym.error.DependencyNotInstalled(
            f"Atari environments need ale-py and opencv ({error}): {ATARI_EXTRA_HINT}"
        ) from None
    gym.register_envs(ale_py)
    env = gym.make(
        game,
        frameskip=1,
        repeat_action_probability=sticky_actions,
        full_action_space=False,
        max_num_frames_per_episode=max_episode_frames,
        render_mode=render_mode,
        **game_kwargs,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.FrameStackObservation(env, frame_stack)
    return ChannelsLast(env)
