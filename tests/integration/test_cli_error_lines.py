"""Each role's early errors as a user meets them (the real console script): the line names the role once, says what to do, and the exit code tells a bad flag from a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.procs import REPO

SEED_RL = Path(sys.executable).with_name("seed-rl")

PLUGIN_PATH = f"{REPO}:{REPO / 'tests'}"  # custom_env_plugin: a Text observation space

def seed_rl(*argv: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    assert SEED_RL.exists(), f"{SEED_RL} is missing: pip install -e . in this environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    env["PYTHONPATH"] = PLUGIN_PATH
    return subprocess.run([str(SEED_RL), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)

def the_error_line(done: subprocess.CompletedProcess, role: str) -> str:
    """The one line of the output that names the role; it names it exactly once."""
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if f"seed-rl {role}:" in line]
    assert len(lines) == 1, output
    (line,) = lines
    assert line.startswith(f"seed-rl {role}: error: "), output
    message = line.removeprefix(f"seed-rl {role}: error: ")
    assert not message.startswith((f"{role}:", "seed-rl", "error:")), output
    assert "Traceback" not in output, output
    return line


@pytest.mark.parametrize(("role", "argv", "code", "says"), [
    ("train", ["--env", "NoSuchEnvAnywhere-v0"], 1,
     ["does not know the environment 'NoSuchEnvAnywhere-v0'", "--env-import MODULE"]),
    ("train", ["--total-steps", "lots"], 2, ["--total-steps", "give an integer"]),
    ("train", ["--env-kwargs", "{max_episode_steps: 200}"], 2,
     ["--env-kwargs", "give a JSON object"]),
    ("learner", ["--env", "NoSuchEnvAnywhere-v0"], 1, ["--env-import MODULE"]),
    ("learner", ["--env", "support.custom_env_plugin:TextObservation-v0", "--preset", "none"], 1,
     ["--env support.custom_env_plugin:TextObservation-v0", "Text"]),
    ("eval", ["--checkpoint", "no-such-run"], 1,
     ["--checkpoint no-such-run does not exist", "give a checkpoint file or the logdir"]),
    ("eval", ["--checkpoint", "no-such-run", "--episodes", "0"], 1,
     ["--episodes must be positive"]),
    ("serve", ["--checkpoint", "no-such-run"], 1,
     ["--checkpoint no-such-run does not exist", "give a checkpoint file or the logdir"]),
    ("serve", ["--follow-every", "0", "--follow", "run"], 2, ["--follow-every must be positive"]),
], ids=["train-unknown-env", "train-bad-int", "train-bad-json", "learner-unknown-env",
        "learner-unsupported-space", "eval-missing-checkpoint", "eval-bad-episodes",
        "serve-missing-checkpoint", "serve-bad-follow-every"])
def test_an_early_error_names_the_role_once_and_says_what_to_do(
        tmp_path, role: str, argv: list[str], code: int, says: list[str]) -> None:
    done = seed_rl(role, *argv, cwd=tmp_path)
    line = the_error_line(done, role)
    assert done.returncode == code, done.stdout + done.stderr
    for words in says:
        assert words in line, line
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert written == []  # it stopped before writing anything


def test_an_error_of_learner_replicas_is_said_once_not_per_replica(tmp_path) -> None:
    done = seed_rl("learner", "--env", "NoSuchEnvAnywhere-v0", "--replicas", "2",
                   cwd=tmp_path)
    line = the_error_line(done, "learner")
    assert done.returncode == 1
    assert "--env-import MODULE" in line
    output = done.stdout + done.stderr
    assert output.count("does not know the environment") == 1, output
    assert "replica" not in output, output  # none was started
