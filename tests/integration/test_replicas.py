"""``seed-rl learner --replicas 2`` and ``seed-rl actors`` through the public commands: one
address for the actors (the busier replica redirects a fresh actor to the other), rank 0
alone writes the logdir, and the group learns CartPole."""

from __future__ import annotations

import json
import sys

import pytest
from support.procs import WAIT

from learner.training import checkpoint

RANDOM_PLAY_RETURN = 22.0  # CartPole-v1 under a uniform random policy


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_replicas_and_two_actors_learn_cartpole(tmp_path, free_port, processes):
    logdir = tmp_path / "run"
    address = f"127.0.0.1:{free_port}"
    learner = processes([
        sys.executable, "-m", "learner", "--env", "CartPole-v1", "--address", address,
        "--replicas", "2", "--logdir", str(logdir), "--max-time", "240", "--log-every", "1",
        "--status-every", "5",
    ])
    learner.wait_for_line(rf"learner serving CartPole-v1 .*:{free_port} ", timeout=2 * WAIT)
    learner.wait_for_line(rf"learner serving CartPole-v1 .*:{free_port + 1} ",
                          timeout=2 * WAIT)
    actors = processes([
        sys.executable, "-m", "actors", "--learner", address, "--num-actors", "2",
        "--envs-per-actor", "16", "--status-every", "5",
    ])
    assert learner.wait(timeout=300) == 0, learner.text
    assert actors.wait(timeout=WAIT) == 0, actors.text
    # Both actors dialled rank 0's address; one was sent on to rank 1.
    assert f"sends this actor to 127.0.0.1:{free_port + 1}" in actors.text, actors.text

    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    returns = [r["episode_return_mean"] for r in records if r["episode_return_mean"]]
    best = max(returns)
    assert best >= 475 or best > 4 * RANDOM_PLAY_RETURN, (
        f"two replicas did not learn CartPole: best mean return {best:.1f} (target 475, "
        f"random play {RANDOM_PLAY_RETURN}); returns {returns}")
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["replicas"] == 2 and saved["address"] == address
    state, _ = checkpoint.load_latest(logdir)
    assert state["counters"]["policy_version"] == records[-1]["policy_version"] > 0
    # the checkpoint holds the counters rank 0 logged last (the group's, shared each tick)
    assert records[-1]["env_steps"] == state["counters"]["env_steps"]
    assert sorted(p.name for p in logdir.iterdir()) == [
        "checkpoints", "config.json", "metrics.jsonl", "tb"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_starts_the_same_group(tmp_path, free_port, processes):
    """``torchrun --standalone --nproc-per-node 2 -m learner`` (torchrun is
    ``python -m torch.distributed.run``): the group trains with an actor process, stops
    at its step budget, exits 0, and rank 0 alone wrote the logdir."""
    logdir = tmp_path / "run"
    address = f"127.0.0.1:{free_port}"
    learner = processes([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        "2", "-m", "learner", "--env", "CartPole-v1", "--address", address, "--device", "cpu",
        "--logdir", str(logdir), "--total-steps", "4000", "--batch-size", "8",
        "--unroll-length", "10", "--max-wait-ms", "1", "--log-every", "0.5",
        "--status-every", "0", "--advertise-address", f"localhost:{free_port}",
    ])
    for port in (free_port, free_port + 1):
        learner.wait_for_line(rf"learner serving CartPole-v1 .*:{port} ", timeout=3 * WAIT)
    actors = processes([sys.executable, "-m", "actors", "--learner", address,
                        "--num-actors", "2", "--envs-per-actor", "4", "--status-every", "0"])
    assert learner.wait(timeout=240) == 0, learner.text
    assert actors.wait(timeout=WAIT) == 0, actors.text
    assert learner.text.count("stopping: reached 4000 env steps") >= 1, learner.text
    # --advertise-address: the name each replica gives in redirects (port + local rank)
    assert f"replica 1 of 2: actors are redirected here as localhost:{free_port + 1}" \
        in learner.text
    assert f"sends this actor to localhost:{free_port + 1}" in actors.text, actors.text
    state, _ = checkpoint.load_latest(logdir)
    assert state["counters"]["env_steps"] >= 4000
    assert state["counters"]["policy_version"] == state["counters"]["train_steps"] > 0
    assert sorted(p.name for p in logdir.iterdir()) == [
        "checkpoints", "config.json", "metrics.jsonl", "tb"]
