"""A uint8 grid of symbol codes declared as an image: the learner warns and names the fix.

What a new user met: MiniGrid's image (object, colour and state codes 0-10 in a
``Box(0, 255, (7, 7, 3), uint8)``) went through the conv torso as pixels divided by 255, and
greedy play stayed at 0.0; declared as MultiDiscrete (one-hot per cell) it was solved in
22 s. The environment is tests/support/envs_plugin.py's MissionGrid-v0, MiniGrid-like, with its
image kept by the ImageOnly wrapper (MiniGrid's ImgObsWrapper); the fix is
examples/symbols.py, the wrapper the README shows.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from learner.serving.validation import make_spec
from learner.training.models import build_model
from seed_rl.config import Config
from seed_rl.envs.making import make_env
from seed_rl.envs.symbols import symbol_grid_warnings

REPO = Path(__file__).resolve().parents[2]
ENV, IMPORT = "MissionGrid-v0", ["support.envs_plugin"]


def spec_warnings(caplog, *wrappers: str):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="learner.serving.validation"):
        spec = make_spec(Config(env=ENV, env_import=IMPORT, conv_net="minatar",
                                env_wrapper=["support.envs_plugin:ImageOnly", *wrappers]))
    return spec, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_learner_warns_about_a_symbol_grid_and_names_the_fix(caplog) -> None:
    spec, warnings = spec_warnings(caplog)
    assert spec.observation_space == gym.spaces.Box(0, 255, (7, 7, 3), np.uint8)
    (warning,) = warnings
    assert warning.startswith(f"--env {ENV}: the observation is a uint8 image of shape [7, 7, 3]")
    assert "stay below 32 (the largest: 10)" in warning
    assert "looks like a grid of symbol codes" in warning and "divides uint8 images by 255" in warning
    assert "Declare it as MultiDiscrete" in warning and "--env-wrapper MODULE:CALLABLE" in warning


def test_declared_as_multidiscrete_it_is_one_hot_and_quiet(caplog, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "examples"))  # as `cd examples` would
    spec, warnings = spec_warnings(caplog, "symbols:Symbols")
    assert warnings == []
    space = spec.observation_space
    assert isinstance(space, gym.spaces.MultiDiscrete) and space.shape == (7, 7, 3)
    np.testing.assert_array_equal(space.nvec[0, 0], [11, 6, 3])
    model = build_model(space, spec.action_space, Config(hidden_sizes=[8]))
    assert model.observation_layout.leaves[0].space == space  # no image torso: one-hots


def test_bright_pixels_are_an_image_and_get_no_warning(caplog) -> None:
    _, warnings = spec_warnings(caplog, "support.envs_plugin:Pixels")
    assert warnings == []


def test_a_declared_small_bound_is_warned_about_without_playing() -> None:
    env = make_env(ENV, {}, IMPORT, ["support.envs_plugin:ImageOnly"], "test")
    codes = gym.spaces.Box(0, 10, (7, 7, 3), np.uint8)
    env = gym.wrappers.TransformObservation(env, lambda observation: observation, codes)
    try:
        (warning,) = symbol_grid_warnings(env, seed=0)
    finally:
        env.close()
    assert "declared with values up to 10" in warning


def test_the_readme_shows_the_fix() -> None:
    readme = (REPO / "README.md").read_text()
    fix = (REPO / "examples" / "symbols.py").read_text()
    assert fix in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert "ImgObsWrapper,symbols:Symbols" in readme


@pytest.mark.parametrize("env_id", ["CartPole-v1", "seed_rl.testing:RevealAction-v0"])
def test_environments_without_a_uint8_image_are_not_played(env_id: str) -> None:
    class CountResets(gym.Wrapper):
        resets = 0

        def reset(self, **kwargs):
            self.resets += 1
            return super().reset(**kwargs)

    env = CountResets(gym.make(env_id))
    try:
        assert symbol_grid_warnings(env, seed=0) == []
        assert env.resets == 0
    finally:
        env.close()
