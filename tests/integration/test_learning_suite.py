"""benchmarks/learning.py's suite mode, run as a person runs it: a real `seed-rl train` per
entry and seed, the Markdown table, every run's curve and metrics, the combined figure.

Learning itself is measured by the benchmark; here the run is short and its target low
(CartPole's mean return passes 15 within seconds), so what is asserted is the bookkeeping:
--past-target keeps training after the target and the table marks where it was crossed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.procs import REPO


def suite(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning.py"), *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| cartpole")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_past_target_trains_the_whole_budget_and_marks_where_the_target_was_crossed(
        tmp_path) -> None:
    out = tmp_path / "suite"
    done = suite("--suite", "cartpole --target-return 15", "--budget", "12", "--seeds", "0",
                 "--past-target", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = table_rows(done.stdout)
    entry, seed, target, reached, to_target_s, steps_to_target, final, best, steps, sps = row
    assert (entry, seed, target, reached) == ("cartpole --target-return 15", "0", "15", "yes")
    steps_to_target, steps = int(steps_to_target.replace(",", "")), int(steps.replace(",", ""))
    assert 0 < steps_to_target < steps  # it went on after crossing 15
    records = [json.loads(line) for line in
               (out / "cartpole_target-return_15-seed0-metrics.jsonl").read_text().splitlines()]
    assert records[-1]["elapsed"] >= 10  # trained for the budget, not until the target
    first = next(r for r in records if (r.get("episode_return_mean") or 0) >= 15)
    assert first["env_steps"] == steps_to_target
    assert float(best) >= float(final) and float(best) >= 15
    assert (out / "suite.png").stat().st_size > 0
    assert (out / "cartpole_target-return_15-seed0-learning_curve.png").is_file()
    assert "1/1 seeds reached 15" in done.stdout


@pytest.mark.slow
def test_without_past_target_the_run_stops_at_its_target(tmp_path) -> None:
    out = tmp_path / "suite"
    done = suite("--suite", "cartpole --target-return 15", "--budget", "60", "--seeds", "0",
                 "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = table_rows(done.stdout)
    assert row[3] == "yes"
    records = [json.loads(line) for line in
               (out / "cartpole_target-return_15-seed0-metrics.jsonl").read_text().splitlines()]
    assert records[-1]["elapsed"] < 60  # stopped well before the budget: at the target
    assert records[-1]["episode_return_mean"] >= 15
