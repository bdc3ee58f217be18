"""`seed-rl eval --video` as a user runs it when rendering fails: one paragraph naming the exception and the fixes, exit code 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from support.playing import make_checkpoint
from support.procs import REPO

PLUGIN_PATH = f"{REPO}:{REPO / 'tests'}"
FIXES = ("MUJOCO_GL=egl", "MUJOCO_GL=osmesa", "PYOPENGL_PLATFORM", "drop --video")


def test_eval_video_without_opengl_is_one_paragraph_and_a_failure(tmp_path) -> None:
    logdir = make_checkpoint(tmp_path, env="RenderFails-v0", env_import=["support.envs_plugin"])
    done = subprocess.run(
        [sys.executable, "-m", "seed_rl", "eval", "--checkpoint", str(logdir), "--episodes",
         "1", "--video", str(tmp_path / "episodes.gif")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": PLUGIN_PATH},
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (message,) = [line for line in done.stderr.splitlines() if line.startswith("seed-rl eval")]
    assert message.startswith("seed-rl eval: error: --video: RenderFails-v0 cannot render its frames: "
                              "env.render() raised support.FatalError: an OpenGL platform "
                              "library has not been loaded"), message
    assert all(fix in message for fix in FIXES), message
    assert not (tmp_path / "episodes.gif").exists()
    # without --video the same checkpoint plays
    plays = subprocess.run(
        [sys.executable, "-m", "seed_rl", "eval", "--checkpoint", str(logdir), "--episodes", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": PLUGIN_PATH},
    )
    assert plays.returncode == 0, plays.stdout + plays.stderr
    assert "1 episode(s)" in plays.stdout
