"""The unreachable-target warning through the real `seed-rl train` a user ran: CartPole with --env-kwargs max_episode_steps 200 keeps the preset's target of 475."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SEED_RL = Path(sys.executable).with_name("seed-rl")
UNREACHABLE = "cannot be reached"


def test_seed_rl_train_with_shorter_episodes_warns_about_the_presets_target(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    done = subprocess.run(
        [str(SEED_RL), "train", "--env-kwargs", '{"max_episode_steps": 200}',
         "--total-steps", "2000", "--num-actors", "1", "--envs-per-actor", "8",
         "--logdir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    warnings = [line for line in output.splitlines() if UNREACHABLE in line]
    assert len(warnings) == 1, output
    (warning,) = warnings
    assert "WARNING" in warning
    for words in ("--target-return 475 cannot be reached", "at most 200 steps",
                  "returns at most 200", "--total-steps 2,000", "--target-return 190"):
        assert words in warning, warning
    assert "done: reached 2000 env steps" in output  # the budget ended it, as it said
