"""Spaces beyond Box/Discrete through the whole system: `seed-rl train` (a real learner and
real actor processes over gRPC) trains a few updates on the test environments whose
observations are a Dict (image + vector + Discrete) or whose actions are MultiDiscrete or a
Box, and the checkpoint plays with `seed-rl eval`. Bounded by step budgets; no learning
result is asserted here (benchmarks/ measure learning)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.procs import REPO

ENVS = ["seed_rl.testing:DictObservation-v0", "seed_rl.testing:MultiDiscreteAction-v0",
        "seed_rl.testing:ContinuousAction-v0"]


def seed_rl(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    return subprocess.run([sys.executable, "-m", "seed_rl", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENVS)
def test_seed_rl_train_and_eval_on_other_spaces(env_id, tmp_path) -> None:
    logdir = tmp_path / "run"
    trained = seed_rl("train", "--env", env_id, "--total-steps", "4000", "--logdir",
                      str(logdir), "--conv-net", "minatar", "--num-actors", "2",
                      "--envs-per-actor", "8",
                      "--batch-size", "8", "--unroll-length", "10", "--lstm")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] >= 4000
    assert records[-1]["train_steps"] >= 3, "a few updates through the real processes"
    assert all(r.get("skipped_updates", 0) == 0 for r in records)
    played = seed_rl("eval", "--checkpoint", str(logdir), "--episodes", "2")
    assert played.returncode == 0, played.stdout + played.stderr
    assert "2 episode(s)" in played.stdout
