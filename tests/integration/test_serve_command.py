"""`seed-rl serve` as a user runs it: a real process serving real `seed-rl actors`
processes (or a scripted gRPC client) from a real checkpoint; its returns against `seed-rl
eval` of the same checkpoint; `--follow` picking up a checkpoint written while it serves;
SIGTERM. The checkpoint is a known CartPole controller (tests/support/serving.py): its
episodes return about 100, an untrained model's about 22."""

from __future__ import annotations

import math
import re
import signal
import socket
import subprocess
import sys

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_process import actors_command, learner_command, read_metrics, wait_for
from support.playing import STATS
from support.procs import REPO
from support.serving import write_checkpoint

from learner.training import checkpoint

WAIT = 60.0
SERVING = re.compile(r"serve answering \S+ actors on 127\.0\.0\.1:(?P<port>\d+) ")
SUMMARY = re.compile(r"(?P<episodes>\d+) episode\(s\), (?P<kind>\w+) actions")


def serve_command(port: int, logdir, *flags: str) -> list[str]:
    return [sys.executable, "-m", "seed_rl", "serve", "--address", f"127.0.0.1:{port}",
            "--logdir", str(logdir), "--device", "cpu", "--listeners", "2",
            "--max-wait-ms", "1", "--log-every", "0.2", "--status-every", "0", *flags]


def statistics(text: str) -> tuple[float, float, float, float]:
    found = STATS.search(text)
    assert found, text
    return tuple(float(x) for x in found.groups())  # type: ignore[return-value]


def test_serve_answers_actors_keeps_nothing_and_returns_what_eval_returns(
        tmp_path, free_port, processes, clean_environment):
    """Real actors get the checkpoint's actions until --episodes is reached; serve stops by
    itself and tells them (they exit 0); it stored nothing but its metrics and config; the
    mean return of its episodes is eval's within the episodes' spread (both sampled)."""
    run = tmp_path / "run"
    path = write_checkpoint(run, policy_version=7)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (run / "checkpoints").iterdir())
    episodes = 60
    server = processes(serve_command(free_port, tmp_path / "serve", "--checkpoint", str(run),
                                     "--episodes", str(episodes)))
    server.wait_for_line(SERVING.pattern, timeout=WAIT)
    fleet = processes(actors_command(free_port, "--num-actors 2 --envs-per-actor 4"))
    assert server.wait(timeout=120) == 0, server.text
    assert fleet.wait(timeout=WAIT) == 0, fleet.text
    assert "training is over" in fleet.text  # told as a training learner tells them
    summary = SUMMARY.search(server.text)
    assert summary and int(summary["episodes"]) == episodes and summary["kind"] == "sampled"
    assert f"seed-rl serve: {path} (CartPole-v1, policy version 7), served {episodes} " \
           "episodes" in server.text

    # nothing kept: no checkpoint written anywhere, the served run untouched
    served_dir = tmp_path / "serve"
    assert sorted(p.name for p in served_dir.iterdir()) == ["config.json", "metrics.jsonl", "tb"]
    assert sorted((p.name, p.stat().st_mtime_ns)
                  for p in (run / "checkpoints").iterdir()) == before
    records = read_metrics(served_dir)
    assert records[-1]["episodes"] >= episodes and records[-1]["policy_version"] == 7
    assert records[-1]["train_steps"] == 7  # of the policy served
    assert any(r["episode_return_mean"] is not None for r in records)

    evaluation = subprocess.run(
        [sys.executable, "-m", "seed_rl", "eval", "--checkpoint", str(run), "--episodes",
         str(episodes), "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert evaluation.returncode == 0, evaluation.stderr
    served_mean, served_std, *_ = statistics(server.text)
    eval_mean, eval_std, *_ = statistics(evaluation.stdout)
    # the controller, not an untrained policy (about 22), in both
    assert served_mean > 60 and eval_mean > 60, (server.text, evaluation.stdout)
    spread = math.sqrt((served_std**2 + eval_std**2) / episodes)  # std of the difference
    assert abs(served_mean - eval_mean) <= 4 * spread, (served_mean, eval_mean, spread)


def test_follow_serves_a_checkpoint_written_while_it_serves_and_sigterm_ends_it(
        tmp_path, free_port, processes, clean_environment):
    """--follow without --checkpoint waits for the run's first checkpoint; a newer one
    written while it serves reaches the actor's answers; a torn one is skipped; health is
    SERVING; SIGTERM tells the actor it is over and exits 0."""
    run = tmp_path / "run"
    server = processes(serve_command(free_port, tmp_path / "serve", "--follow", str(run),
                                     "--follow-every", "0.2", "--greedy"))
    server.wait_for_line(r"waiting for the first checkpoint of", timeout=WAIT)
    write_checkpoint(run, policy_version=3)
    server.wait_for_line(SERVING.pattern, timeout=WAIT)
    address = f"127.0.0.1:{free_port}"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="seed_rl.v1.Learner"), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    actor = ScriptedActor(address, handshake_request("CartPole-v1", 2))
    try:
        x = np.zeros((2, 4), np.float32)
        assert actor.handshake.policy_version == 3
        assert actor.step(step_request(x)).policy_version == 3
        torn = run / "checkpoints" / "ckpt-0000000004.pt"
        torn.write_bytes(b"torn")
        server.wait_for_line(rf"not serving {re.escape(str(torn))}: .*unreadable", timeout=WAIT)
        write_checkpoint(run, policy_version=5)
        server.wait_for_line(r"now serving .*ckpt-0000000005\.pt .*policy version 5",
                             timeout=WAIT)
        assert actor.step(step_request(x)).policy_version == 5
        server.popen.send_signal(signal.SIGTERM)
        over = wait_for(lambda: (r := actor.step(step_request(x))).training_over and r,
                        "training_over", process=server)
        assert over.policy_version == 5
    finally:
        actor.close()
    assert server.wait(timeout=WAIT) == 0, server.text
    assert "stopping: received SIGTERM" in server.text
    assert "0 episode(s), greedy actions" in server.text


def test_follow_tracks_a_training_learner(tmp_path, free_port, processes, clean_environment):
    """A serving tier that tracks training: `seed-rl serve --follow` of a real learner's run
    (its actors training it, a checkpoint a second) answers a client with policy versions
    that rise as the learner's checkpoints appear; the learner's run gets nothing from it."""
    run = tmp_path / "run"
    learner = processes(learner_command(run, free_port, "--checkpoint-every 1"))
    fleet = processes(actors_command(free_port, "--num-actors 1 --envs-per-actor 8"))
    first = wait_for(lambda: [p for p in checkpoint.list_checkpoints(run)
                              if int(p.stem.split("-")[1]) > 0],
                     "a checkpoint with train steps", timeout=120, process=learner)
    assert first
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        serve_port = probe.getsockname()[1]
    server = processes(serve_command(serve_port, tmp_path / "serve", "--follow", str(run),
                                     "--follow-every", "0.2"))
    server.wait_for_line(SERVING.pattern, timeout=WAIT)
    actor = ScriptedActor(f"127.0.0.1:{serve_port}", handshake_request("CartPole-v1", 1))
    try:
        x = np.zeros((1, 4), np.float32)
        start = actor.handshake.policy_version
        assert start > 0
        later = wait_for(lambda: (v := actor.step(step_request(x)).policy_version) > start
                         and v, "a newer policy version", timeout=120, process=server)
        assert re.search(rf"now serving .*policy version {later}\b", server.text), server.text
    finally:
        actor.close()
    for process in (server, learner):
        process.popen.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT) == 0, process.text
    assert fleet.wait(timeout=WAIT) == 0, fleet.text
    assert not any("serve" in p.name for p in run.iterdir())
