"""Faults of a data-parallel learner (``python -m learner --replicas 2``), with real
processes on loopback: one replica is SIGKILLed or hangs while actors train.

The rule (docs/reliability.md): the job stops as a whole and resumes as a whole from
rank 0's last checkpoint. Nothing is half-applied (an update whose gradient all-reduce did
not complete is applied nowhere, a checkpoint holds one completed update) and nothing is
trained twice (unrolls of the lost interval are gone, not replayed). Every wait is bounded;
nothing asserts a timing.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from support.learner_process import (
    RESUMED,
    actors_command,
    last_metric,
    learner_command,
    read_metrics,
    wait_for,
)
from support.procs import WAIT

from learner.running.launch import STOP_GRACE_S
from learner.training import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

FLAGS = "--replicas 2 --checkpoint-every 1 --replica-wait 0.2 --status-every 0"
PIDS = re.compile(r"started 2 learner replicas \(pids (\d+), (\d+)\)")
STOPPED = re.compile(r"learner stopped \(.*\): (\d+) env steps, (\d+) train steps, "
                     r"policy version (\d+), weights (\w+)")


def start_group(processes, logdir, port):
    learner = processes(learner_command(logdir, port, FLAGS))
    pids = PIDS.search(learner.wait_for_line(PIDS.pattern))
    for rank in range(2):
        learner.wait_for_line(rf"learner serving .*:{port + rank} ", timeout=2 * WAIT)
    return learner, [int(pids[1]), int(pids[2])]


def blocked_in_a_collective(logdir) -> bool:
    records = read_metrics(logdir)
    if not records:
        return False
    silent_s = time.time() - records[-1]["wall_time"]
    return last_metric(logdir, "replica_collective_wait_s") > 1.0 or silent_s > 2.0


def assert_consistent(logdir):
    """The newest checkpoint is one completed update: every update bumped the policy
    version once, the counters are whole."""
    state, path = checkpoint.load_latest(logdir)
    counters = state["counters"]
    assert counters["policy_version"] == counters["train_steps"] > 0, (path, counters)
    return counters


def test_sigkilled_replica_stops_the_job_and_the_same_command_resumes(
        tmp_path, processes, free_port):
    logdir = tmp_path / "run"
    learner, pids = start_group(processes, logdir, free_port)
    actors = processes(actors_command(free_port, "--num-actors 2 --envs-per-actor 4 "
                                                 "--actor-id-prefix rep"))
    wait_for(lambda: len(checkpoint.list_checkpoints(logdir)) >= 2, "two checkpoints",
             timeout=2 * WAIT, process=learner)
    wait_for(lambda: "sends this actor to" in actors.text, "a redirect to replica 1")

    os.kill(pids[1], signal.SIGKILL)
    rc = learner.wait(timeout=WAIT)
    assert rc != 0, learner.text
    assert f"learner replica 1 (pid {pids[1]}) was killed by SIGKILL" in learner.text
    assert "Traceback" not in learner.text.split("was killed by SIGKILL")[-1]
    # The survivor did not tell its actors that training is over: they wait to reconnect.
    assert "training is over" not in actors.text and actors.popen.poll() is None
    saved = assert_consistent(logdir)

    again, _ = start_group(processes, logdir, free_port)
    resumed = [RESUMED.search(line) for line in again.lines if RESUMED.search(line)]
    assert len(resumed) == 2  # both replicas start from rank 0's checkpoint
    for match in resumed:
        assert (int(match["env_steps"]), int(match["train_steps"]),
                int(match["policy_version"])) == (saved["env_steps"], saved["train_steps"],
                                                  saved["policy_version"])
    # python -m actors came back by itself, through the address it was given
    wait_for(lambda: len(re.findall(r"actor rep-\d .* joined from", again.text)) >= 2,
             "both actors to rejoin", timeout=2 * WAIT, process=again)
    wait_for(lambda: last_metric(logdir, "train_steps") >= saved["train_steps"] + 20,
             "training after the restart", timeout=2 * WAIT, process=again)
    again.popen.send_signal(signal.SIGTERM)
    assert again.wait(timeout=WAIT) == 0, again.text
    stopped = [STOPPED.search(line) for line in again.lines if STOPPED.search(line)]
    assert len(stopped) == 2, again.text
    # identical weights, policy version and train steps on both replicas
    assert len({(m[2], m[3], m[4]) for m in stopped}) == 1, stopped
    assert int(stopped[0][3]) > saved["policy_version"]
    final = assert_consistent(logdir)
    assert final["policy_version"] == int(stopped[0][3])
    assert actors.wait(timeout=WAIT) == 0, actors.text  # a clean stop: training is over


def test_sigterm_does_not_wait_for_a_collective_stuck_on_a_hung_replica(
        tmp_path, processes, free_port):
    logdir = tmp_path / "run"
    learner, pids = start_group(processes, logdir, free_port)
    actors = processes(actors_command(free_port, "--num-actors 2 --envs-per-actor 4"))
    wait_for(lambda: checkpoint.list_checkpoints(logdir) and checkpoint.load_latest(logdir)[0][
        "counters"]["train_steps"] > 0, "a checkpoint after training", timeout=2 * WAIT,
        process=learner)
    os.kill(pids[1], signal.SIGSTOP)  # hangs: its connections stay open, nothing answers
    try:
        # rank 0's trainer reaches a collective with the hung peer and blocks in it: in a
        # tick, its metrics say so (the collective waits far longer than a healthy one
        # does); in an update's gradient all-reduce, the periodic checkpoint waits for that
        # update and rank 0's records (one every 0.2 s) stop
        wait_for(lambda: blocked_in_a_collective(logdir),
                 "rank 0 to block in a collective with the hung replica", process=learner)
        learner.popen.send_signal(signal.SIGTERM)
        # rank 0 stops long before the 120 s collective timeout; the launcher then kills
        # the hung replica after its grace period
        learner.wait_for_line(r"replica group is broken \(a collective is stuck\)")
        learner.wait_for_line(r"learner stopped \(received SIGTERM\)")
        rc = learner.wait(timeout=WAIT + STOP_GRACE_S)
    finally:
        if os.path.exists(f"/proc/{pids[1]}"):
            os.kill(pids[1], signal.SIGCONT)
    assert rc != 0, learner.text
    assert "did not stop within" in learner.text  # the hung one was killed
    assert "training is over" not in actors.text and actors.popen.poll() is None
    assert_consistent(logdir)
