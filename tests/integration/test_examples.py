"""The README's custom-environment path, as a newcomer runs it: examples/catch.py, registered
with --env-import in the learner and the actor processes, trained by `seed-rl train`, played
by `seed-rl eval` into a GIF. Real processes and files; bounded by a step budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.procs import REPO, Process

EXAMPLES = REPO / "examples"


def seed_rl(*argv: str, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    env.pop("PYTHONPATH", None)  # the module must be found in the current directory
    return subprocess.run([sys.executable, "-m", "seed_rl", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_catch_trains_through_env_import_and_plays_into_a_video(tmp_path) -> None:
    logdir = tmp_path / "run"
    trained = seed_rl("train", "--env-import", "catch", "--env", "Catch-v0",
                      "--total-steps", "20000", "--logdir", str(logdir), "--num-actors", "1",
                      "--envs-per-actor", "16", cwd=EXAMPLES)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["env_import"] == ["catch"] and saved["env"] == "Catch-v0"
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] >= 20000 and records[-1]["episodes"] > 0

    video = tmp_path / "catch.gif"
    played = seed_rl("eval", "--checkpoint", str(logdir), "--episodes", "3", "--greedy",
                     "--video", str(video), cwd=EXAMPLES)
    assert played.returncode == 0, played.stdout + played.stderr
    assert "3 episode(s), greedy actions" in played.stdout
    assert video.read_bytes()[:6] == b"GIF89a"


def test_without_env_import_the_error_says_what_to_do(tmp_path) -> None:
    failed = seed_rl("train", "--env", "Catch-v0", "--logdir", str(tmp_path / "run"),
                     cwd=EXAMPLES, timeout=60)
    assert failed.returncode != 0
    assert "--env-import" in failed.stderr and "Catch" in failed.stderr


@pytest.mark.slow
def test_a_simulator_that_owns_its_loop_learns_through_a_simulator_session(tmp_path) -> None:
    """examples/ticking_simulator.py: a world of 16 bodies ticked by its own loop, not a
    gymnasium env, calls SimulatorSession.step; the learner knows the spaces from the
    example's PointMass-v0 and trains until the mean return reaches 0.5 (at most 1; a
    random policy's is below 0), then the simulator hears that training is over."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    env.pop("PYTHONPATH", None)
    logdir = tmp_path / "run"
    learner = Process([sys.executable, "-m", "seed_rl", "learner", "--env-import",
                       "ticking_simulator", "--env", "PointMass-v0", "--address",
                       "127.0.0.1:0", "--auth-token", "sim-token", "--target-return", "0.5",
                       "--max-time", "240", "--logdir", str(logdir)], env=env, cwd=EXAMPLES)
    try:
        port = learner.wait_for_line(r"learner serving .* on 127\.0\.0\.1:(\d+)", timeout=60)
        address = "127.0.0.1:" + port.split("127.0.0.1:")[1].split()[0]
        simulator = subprocess.run(
            [sys.executable, "ticking_simulator.py", "--bodies", "16"], cwd=EXAMPLES,
            env={**env, "SEED_RL_LEARNER": address, "SEED_RL_AUTH_TOKEN": "sim-token"},
            capture_output=True, text=True, timeout=300)
        assert simulator.returncode == 0, simulator.stdout + simulator.stderr
        assert "the learner says training is over" in simulator.stdout
        assert learner.wait(timeout=60) == 0, learner.text
    finally:
        learner.kill()
    assert "reached the target 0.5" in learner.text, learner.text[-2000:]
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["episodes"] > 0
