"""A real learner process and two real actor processes train CartPole-v1 on loopback, with
the settings a user gets: the shipped CartPole preset, applied by ``seed-rl learner``."""

from __future__ import annotations

import json
import sys

import pytest
from support.procs import WAIT

from learner.training import checkpoint

RANDOM_PLAY_RETURN = 22.0  # CartPole-v1 under a uniform random policy


@pytest.mark.slow
def test_learner_and_two_actor_processes_learn_cartpole(tmp_path, free_port, processes):
    logdir = tmp_path / "run"
    address = f"127.0.0.1:{free_port}"
    learner = processes([
        sys.executable, "-m", "learner", "--env", "CartPole-v1", "--address", address,
        "--logdir", str(logdir), "--total-steps", "600000", "--log-every", "1",
    ])
    learner.wait_for_line(r"learner serving CartPole-v1 .*preset cartpole")
    actors = processes([
        sys.executable, "-m", "actors", "--learner", address, "--num-actors", "2",
        "--envs-per-actor", "32", "--status-every", "2",
    ])
    # The learner stops at the preset's target return (475) or the step budget, whichever
    # comes first, and tells the actors, which then exit 0.
    assert learner.wait(timeout=6 * WAIT) == 0, learner.text
    assert actors.wait(timeout=WAIT) == 0, actors.text
    assert "actor(s) finished" in actors.text

    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_steps"] > 100
    assert max(r["connected_actors"] for r in records) == 2
    returns = [r["episode_return_mean"] for r in records if r["episode_return_mean"]]
    # The first record comes after a second of training (already past random play when
    # serving is fast): the run must end far above where that record stood.
    assert max(returns) > 4 * RANDOM_PLAY_RETURN, f"no learning: {returns}"
    assert max(returns) > 2 * returns[0], f"no learning after the first record: {returns}"
    for key in ("loss_total", "loss_pg", "loss_baseline", "loss_entropy", "entropy",
                "batch_size_mean", "policy_lag_mean", "queue_depth", "dropped_unrolls", "sps",
                "episode_length_mean", "policy_version", "wall_time", "episodes"):
        assert any(r.get(key) is not None for r in records), key
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["preset"] == "cartpole" and saved["optimizer"] == "adam"
    assert list((logdir / "tb").glob("events.out.tfevents.*"))
    state, _ = checkpoint.load_latest(logdir)
    assert state["counters"]["env_steps"] == records[-1]["env_steps"]
    assert state["counters"]["policy_version"] == records[-1]["policy_version"] > 0
