"""benchmarks/learning.py's suite mode, run as a person runs it: a real `seed-rl train` per
entry and seed, the Markdown tables, every run's curve and metrics, the combined figure, and
the resume of a suite that was killed.

Learning itself is measured by the benchmark; here the run is short and its target low
(CartPole's mean return passes 15 within seconds), so what is asserted is the bookkeeping:
--past-target keeps training after the target and the table marks where it was crossed."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.procs import REPO


def suite(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "learning.py"), *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tables(stdout: str) -> list[list[list[str]]]:
    """The Markdown tables printed, each as its rows' cells (no header, no rule)."""
    found, rows = [], None
    for line in stdout.splitlines() + [""]:
        if line.startswith("|"):
            rows = [] if rows is None else rows
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows is not None:
            found.append(rows[2:])
            rows = None
    return found


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of the per-run table."""
    return tables(stdout)[0]


@pytest.mark.slow
def test_past_target_trains_the_whole_budget_and_marks_where_the_target_was_crossed(
        tmp_path) -> None:
    out = tmp_path / "suite"
    done = suite("--suite", "cartpole --target-return 15", "--budget", "12", "--seeds", "0",
                 "--past-target", "--out", str(out), "--progress-every", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    # long runs show progress: env steps and the mean return while it trains
    progress = [line for line in done.stderr.splitlines()
                if line.startswith("  cartpole --target-return 15 seed 0: ")
                and "M env steps, " in line]
    assert len(progress) >= 2, done.stderr
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
    (summary,) = tables(done.stdout)[1]
    assert summary[:5] == ["cartpole --target-return 15", "0", "15",
                           "the entry's --target-return", "1/1"]
    assert summary[5] == final and summary[8] == f"{steps_to_target:,}"


@pytest.mark.slow
def test_without_past_target_the_run_stops_at_its_target(tmp_path) -> None:
    """(With --compact: its metrics kept as a compressed curve, no per-run figure.)"""
    out = tmp_path / "suite"
    done = suite("--suite", "cartpole --target-return 15", "--budget", "60", "--seeds", "0",
                 "--compact", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = table_rows(done.stdout)
    assert row[3] == "yes"
    assert sorted(p.name for p in out.iterdir()) == [
        "cartpole_target-return_15-seed0-metrics.jsonl.gz",
        "cartpole_target-return_15-seed0-result.json", "suite.png"]
    records = [json.loads(line) for line in gzip.decompress(
        (out / "cartpole_target-return_15-seed0-metrics.jsonl.gz").read_bytes()).splitlines()]
    assert records[-1]["elapsed"] < 60  # stopped well before the budget: at the target
    assert records[-1]["episode_return_mean"] >= 15


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_killed_suite_started_again_resumes_where_it_stopped(tmp_path) -> None:
    out = tmp_path / "suite"
    argv = ("--suite", "cartpole --target-return 15", "--budget", "10", "--seeds", "0,1",
            "--past-target", "--out", str(out))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    first = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "learning.py"), *argv],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for(out / "cartpole_target-return_15-seed0-result.json", first)
        time.sleep(3)  # seed 1 is training
        children = Path(f"/proc/{first.pid}/task/{first.pid}/children").read_text().split()
        assert len(children) == 1  # its seed-rl train
        first.send_signal(signal.SIGTERM)
        stdout, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130, stdout + stderr
    assert "the same command resumes the suite" in stderr
    assert not Path(f"/proc/{children[0]}").exists()  # the train it ran was stopped
    assert not (out / "cartpole_target-return_15-seed1-result.json").exists()
    seed0 = json.loads((out / "cartpole_target-return_15-seed0-result.json").read_text())
    assert "--seed 0" in seed0["command"] and seed0["exit_code"] == 0

    again = suite(*argv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not rerun): cartpole --target-return 15 seed 0\n" in again.stdout
    rows = table_rows(again.stdout)
    assert [row[1] for row in rows] == ["0", "1"]
    assert rows[0][6] == f"{seed0['final_return']:.2f}"  # read back, not trained again
    records = [json.loads(line) for line in
               (out / "cartpole_target-return_15-seed1-metrics.jsonl").read_text().splitlines()]
    assert len({r["run_started"] for r in records}) == 1  # seed 1 from scratch, in one run
    assert records[-1]["elapsed"] >= 8
    (summary,) = tables(again.stdout)[1]
    assert summary[1] == "0,1"
    assert (out / "cartpole_target-return_15-seed1-result.json").is_file()
