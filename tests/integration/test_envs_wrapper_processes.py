"""--env-wrapper through real processes: the learner, its actors and `seed-rl eval` apply the same wrapper."""

from __future__ import annotations

import json
import sys

import pytest
from support.learner_process import actors_command, learner_command
from support.procs import REPO, WAIT

ENV = "MissionGrid-v0"
IMPORT = ["support.envs_plugin"]
WRAPPER = ["support.envs_plugin:ImageOnly"]
PLUGIN_PATH = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}


@pytest.mark.timeout(300)
def test_learner_actors_and_eval_apply_the_wrapper_alike(tmp_path, free_port, processes) -> None:
    logdir = tmp_path / "run"
    flags = (f"--env {ENV} --env-import support.envs_plugin --env-wrapper support.envs_plugin:ImageOnly "
             "--conv-net minatar --total-steps 1500 --checkpoint-every 3600")
    learner = processes(learner_command(logdir, free_port, flags), env=PLUGIN_PATH)
    learner.wait_for_line(r"learner serving", timeout=3 * WAIT)
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["env_wrapper"] == WRAPPER and saved["env_import"] == IMPORT

    # its own --env but not the wrapper: the mission cannot travel, and the error names the fix
    own_env = processes(actors_command(free_port, f"--env {ENV} --env-import support.envs_plugin "
                                       "--num-actors 1 --max-restarts 0"), env=PLUGIN_PATH)
    assert own_env.wait() != 0
    assert "'mission' (Text) is not supported" in own_env.text, own_env.text
    assert "--env-wrapper MODULE:CALLABLE" in own_env.text, own_env.text

    # no --env: the learner names env, import and wrapper in the handshake
    actors = processes(actors_command(free_port, "--env= --num-actors 1 --envs-per-actor 4"),
                       env=PLUGIN_PATH)
    assert learner.wait(timeout=240) == 0, learner.text
    assert actors.wait() == 0, actors.text
    assert "wrapping its environments with the learner's --env-wrapper support.envs_plugin:ImageOnly" \
        in actors.text, actors.text

    # eval plays the checkpoint with the config it was trained with: wrapper included
    evaluation = processes([sys.executable, "-m", "seed_rl", "eval", "--checkpoint",
                            str(logdir), "--episodes", "2", "--greedy"], env=PLUGIN_PATH)
    assert evaluation.wait(timeout=3 * WAIT) == 0, evaluation.text
    assert "2 episode(s), greedy actions" in evaluation.text, evaluation.text
