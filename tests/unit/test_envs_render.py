"""``seed-rl eval --video`` on an environment that cannot render here: one paragraph naming
the exception and the fix, a non-zero exit, no traceback.

What a new user met: MuJoCo without a display printed a 50-line traceback ending in
``mujoco.FatalError: an OpenGL platform library has not been loaded`` (``MUJOCO_GL=egl``
fixed it). The environments are tests/support/envs_plugin.py's CartPoles that raise that error
from ``render()``, from ``reset()`` or when made with a ``render_mode``.
"""

from __future__ import annotations

import pytest
from support.learner_harness import make_config
from support.procs import REPO

from learner.running.evaluate import recording_env
from learner.running.learner import Learner
from seed_rl import cli
from seed_rl.config import Config

PLUGIN_PATH = f"{REPO}:{REPO / 'tests'}"
FIXES = ("MUJOCO_GL=egl", "MUJOCO_GL=osmesa", "PYOPENGL_PLATFORM", "drop --video")


def make_checkpoint(tmp_path, env: str):
    """A real learner's checkpoint of an untrained model for ``env``; returns the logdir."""
    learner = Learner(make_config(tmp_path, env=env, env_import=["support.envs_plugin"],
                                  hidden_sizes=[8]))
    try:
        assert learner.save_checkpoint() is not None
    finally:
        learner.metrics.close()
    return tmp_path / "run"


@pytest.mark.parametrize(("env", "step"), [
    ("RenderFailsLater-v0", "env.render() raised support.FatalError: the OpenGL context "
                            "was lost"),
    ("RenderOnResetFails-v0", "env.reset() with render_mode='rgb_array' raised "
                              "support.FatalError"),
    ("RenderOnMakeFails-v0", "making it with render_mode='rgb_array' raised "
                             "support.FatalError"),
])
def test_every_way_rendering_fails_is_named(tmp_path, capsys, env: str, step: str) -> None:
    logdir = make_checkpoint(tmp_path, env)
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "--checkpoint", str(logdir), "--episodes", "2", "--video",
                  str(tmp_path / "episodes.gif")])
    message = str(info.value.code)
    assert message.startswith(f"seed-rl eval: error: --video: {env} cannot render its frames: {step}")
    assert all(fix in message for fix in FIXES) and "\n" not in message


def test_a_failure_that_is_not_rendering_is_not_blamed_on_it() -> None:
    config = Config(env="ResetFails-v0", env_import=["support.envs_plugin"])
    with pytest.raises(RuntimeError, match="broken, rendering or not"):
        recording_env(config, seed=0)
