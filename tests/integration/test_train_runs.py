"""`seed-rl train` end to end, as real processes: a run to its target and its resume, replicas, signals (SIGINT, SIGKILL), failing actors, and the Atari module's imports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.procs import REPO, descendants, is_running

from learner.training import checkpoint
from learner.watching import curves

SMALL = ["--num-actors", "1", "--envs-per-actor", "8", "--log-every", "0.5"]


WAIT = 60.0  # seconds: generous bound for a whole small run on a busy 2-core machine


def run_train(processes, logdir: Path, *flags: str):
    return processes(
        [sys.executable, "-m", "seed_rl", "train", "--logdir", str(logdir), *SMALL, *flags]
    )

def wait_gone(pids: list[int], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while [p for p in pids if is_running(p)]:
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if is_running(p)]}"
        time.sleep(0.1)

def wait_descendants(pid: int, count: int, timeout: float = WAIT) -> list[int]:
    """The supervisor and its actors, once ``count`` processes are up."""
    deadline = time.monotonic() + timeout
    while len(found := descendants(pid)) < count:
        assert time.monotonic() < deadline, f"only {found} below {pid}"
        time.sleep(0.1)
    return found


def test_atari_env_module_is_torch_free() -> None:
    code = "import sys, seed_rl.envs; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.slow
def test_train_end_to_end_then_resume(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    first = run_train(processes, logdir, "--total-steps", "3000")
    assert first.wait(WAIT) == 0, first.text
    checkpoints = sorted((logdir / "checkpoints").glob("ckpt-*.pt"))
    assert checkpoints, first.text
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["env_steps"] >= 3000
    assert (logdir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["env"] == "CartPole-v1" and saved["optimizer"] == "adam"  # the preset
    assert saved["total_steps"] == 3000 and saved["logdir"] == str(logdir)
    assert saved["preset"] == "cartpole"
    assert saved["auth_token"] == "<redacted>"  # the run made a token (only set ones redact)
    assert "without TLS" not in first.text  # loopback: no warning about the token in clear
    assert "done: reached 3000 env steps" in first.text
    assert f"checkpoint  {checkpoints[-1]}" in first.text
    # The last status line shows the final record, the one the summary reports.
    (summary_steps,) = re.findall(r"env steps +([\d,]+) \(", first.text)
    status_lines = [line for line in first.lines if line.startswith("steps ")]
    assert status_lines and status_lines[-1].startswith(f"steps {summary_steps} |"), first.text
    assert "resumed from" not in first.text

    second = run_train(processes, logdir, "--total-steps", "6000")
    assert second.wait(WAIT) == 0, second.text
    assert f"resumed from  {checkpoints[-1]}" in second.text
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] >= 6000
    assert records[-1]["train_steps"] > int(checkpoints[-1].stem.split("-")[1])
    assert curves.read_curve(logdir / "metrics.jsonl").runs == 2


@pytest.mark.slow
def test_sigint_stops_everything_and_keeps_the_results(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", WAIT)
    family = wait_descendants(run.popen.pid, 2)  # the supervisor and its actor
    os.kill(run.popen.pid, signal.SIGINT)
    assert run.wait(WAIT) == 128 + signal.SIGINT, run.text
    wait_gone(family)
    assert "interrupted (received SIGINT)" in run.text
    assert sorted((logdir / "checkpoints").glob("ckpt-*.pt")), run.text
    assert (logdir / "learning_curve.png").is_file()


@pytest.mark.slow
def test_sigkilled_train_takes_its_actors_along(processes, tmp_path) -> None:
    run = run_train(processes, tmp_path / "run", "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", WAIT)
    family = wait_descendants(run.popen.pid, 2)
    run.popen.kill()
    run.wait(WAIT)
    wait_gone(family)


@pytest.mark.slow
def test_failing_actors_stop_training_with_their_output(processes, tmp_path) -> None:
    # The learner refuses actor ids longer than 256 characters (INVALID_ARGUMENT, a
    # permanent error): the supervisor restarts no actor and exits 2 at once; train must
    # stop, exit 1, keep its results and show what the actors said.
    run = run_train(
        processes,
        tmp_path / "run",
        "--max-time",
        "120",
        "--max-restarts",
        "0",
        "--actor-id-prefix",
        "x" * 300,
    )
    assert run.wait(WAIT) == 1, run.text
    assert "the actor processes exited with code 2 while training was running" in run.text
    assert "must be 1-256 printable characters" in run.text  # the actors' own words
    assert "stopped: the actors failed" in run.text
    assert sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow
def test_train_with_two_replicas_end_to_end(processes, tmp_path) -> None:
    """``seed-rl train --replicas 2``: two learner replica processes, the actors dial
    rank 0 (one is redirected to rank 1); summary, curve and checkpoint as with one."""
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--replicas", "2", "--num-actors", "2",
                    "--total-steps", "3000")
    assert run.wait(3 * WAIT) == 0, run.text
    assert run.text.count("learner serving CartPole-v1") == 2, run.text
    assert "sends this actor to" in run.text or run.text.count(" joined from ") == 2
    state, path = checkpoint.load_latest(logdir)
    assert state["counters"]["env_steps"] >= 3000
    assert state["counters"]["policy_version"] == state["counters"]["train_steps"] > 0
    assert (logdir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "done (2 learner replicas)" in run.text and f"checkpoint  {path}" in run.text
    (summary_steps,) = re.findall(r"env steps +([\d,]+) \(", run.text)
    assert int(summary_steps.replace(",", "")) >= 3000
    assert json.loads((logdir / "config.json").read_text())["replicas"] == 2


@pytest.mark.slow
def test_sigint_stops_two_replicas_and_keeps_the_results(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--replicas", "2", "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", 2 * WAIT)
    family = descendants(run.popen.pid)  # the replicas, the supervisor and its actor
    os.kill(run.popen.pid, signal.SIGINT)
    assert run.wait(WAIT) == 128 + signal.SIGINT, run.text
    wait_gone(family)
    assert "interrupted (received SIGINT)" in run.text
    assert checkpoint.list_checkpoints(logdir), run.text
    assert (logdir / "learning_curve.png").is_file()
