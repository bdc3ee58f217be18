"""``seed-rl train --deterministic`` as real processes (a learner and 2 actor processes of 8
CartPole environments each): the same seed gives the same updates and weights, another seed
does not, a group of two learner replicas too, and a resumed run is reproducible from its
checkpoint (docs/reliability.md, "Deterministic mode")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.procs import REPO

from learner.training import checkpoint
from learner.watching.update_log import read_updates

pytestmark = pytest.mark.slow

STEPS_PER_UPDATE = 8 * 20  # --batch-size x --unroll-length
RUN = ["--env", "CartPole-v1", "--preset", "none", "--deterministic", "--num-actors", "2",
       "--envs-per-actor", "8", "--batch-size", "8", "--unroll-length", "20",
       "--status-every", "0", "--log-every", "0.5"]


def train(logdir: Path, seed: int, updates: int, *flags: str) -> list[dict]:
    """One run to ``updates`` updates; its updates.jsonl records."""
    done = subprocess.run(
        [sys.executable, "-m", "seed_rl", "train", *RUN, "--seed", str(seed), "--logdir",
         str(logdir), "--total-steps", str(updates * STEPS_PER_UPDATE), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line or "Error" in line]
    assert done.returncode == 0, "\n".join([done.stdout[-2000:], *errors[:40], done.stderr[-3000:]])
    assert f"trained {updates} updates" in done.stderr + done.stdout
    return read_updates(logdir)


def final_weights(logdir: Path) -> dict[str, torch.Tensor]:
    state, _ = checkpoint.load_latest(logdir, map_location="cpu")
    return state["model"]


def test_the_same_seed_gives_the_same_updates_and_weights(tmp_path) -> None:
    first = train(tmp_path / "first", 1, 200, "--no-resume")
    again = train(tmp_path / "again", 1, 200, "--no-resume")
    other = train(tmp_path / "other", 2, 200, "--no-resume")
    assert len(first) == 200 and [r["policy_version"] for r in first] == list(range(1, 201))
    assert first == again  # every update's losses, lag, learning rate and weight digest
    weights, weights_again = final_weights(tmp_path / "first"), final_weights(tmp_path / "again")
    assert weights.keys() == weights_again.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, weights_again[name]), name
    assert first[-1]["weights"] != other[-1]["weights"]
    assert [r["loss_total"] for r in first] != [r["loss_total"] for r in other]
    # One rollout of lag: the first two rollouts (4 updates) act with version 0.
    assert max(r["policy_lag_max"] for r in first) <= 5


def test_a_replica_group_is_deterministic_too(tmp_path) -> None:
    replicas = ["--replicas", "2", "--no-resume"]  # one actor each (ids ...-0 and ...-1)
    first = train(tmp_path / "first", 1, 100, *replicas)
    again = train(tmp_path / "again", 1, 100, *replicas)
    assert len(first) == 100 and first == again
    for name, tensor in final_weights(tmp_path / "first").items():
        assert torch.equal(tensor, final_weights(tmp_path / "again")[name]), name


def test_a_resumed_run_is_reproducible_from_its_checkpoint(tmp_path) -> None:
    whole = train(tmp_path / "whole", 3, 120, "--no-resume")
    half = train(tmp_path / "resumed", 3, 60, "--no-resume")
    assert half == whole[:60]  # the same run, stopped at its 60th update
    shutil.copytree(tmp_path / "resumed", tmp_path / "resumed_again")
    resumed = train(tmp_path / "resumed", 3, 120)
    resumed_again = train(tmp_path / "resumed_again", 3, 120)
    assert len(resumed) == 120 and resumed == resumed_again
    # Not the uninterrupted run past the checkpoint: the environments start anew (their
    # states are not in a checkpoint), docs/reliability.md says why.
    assert resumed[:60] == whole[:60] and resumed[60:] != whole[60:]
