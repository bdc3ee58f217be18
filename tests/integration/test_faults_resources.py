"""Faults a long-running learner meets on a real cluster, with real processes on loopback:
resources that run short (a trainer slower than the actors, a full disk, torn checkpoints)
and updates that overflow.

Each test starts real ``python -m learner`` / ``python -m actors`` processes (or an
in-process :class:`learner.running.learner.Learner` serving real gRPC where the test must look
inside it), does something bad to it and checks that the learner keeps serving and loses
nothing it promised to keep. Processes that die or freeze are in test_faults.py. Figures
the tests measure are printed (``pytest -s``) and recorded in docs/reliability.md. Nothing
asserts a timing; every wait is bounded.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner
from support.learner_process import (
    RESUMED,
    SERVING,
    actors_command,
    last_metric,
    learner_command,
    read_metrics,
    rss_bytes,
    wait_for,
)
from support.procs import WAIT
from support.reveal import reveal_flags

from learner.training import checkpoint

# -- training is slower than acting -------------------------------------------------------


def test_an_actor_held_by_backpressure_is_not_taken_for_a_silent_one(tmp_path) -> None:
    """With no trainer the unroll queue fills and the actor's next step waits inside the
    learner, for longer than --stream-idle-timeout: the watchdog must leave it alone (it
    waits for us), and still disconnect it once it is really silent."""
    idle_timeout = 0.5
    config = make_config(
        tmp_path,
        stream_idle_timeout=idle_timeout,
        unroll_length=2,
        batch_size=2,
        queue_size=1,
        hidden_sizes=[8],
    )
    with running_learner(config, train=False) as learner:
        actor = ScriptedActor(f"127.0.0.1:{learner.port}", handshake_request("CartPole-v1", 2))
        (session,) = learner.servicer.sessions()
        request = step_request(np.zeros((2, 4), np.float32))
        for _ in range(3):  # T+1 = 3 steps complete 2 unrolls: the queue (capacity 2) is full
            actor.step(request)
        assert learner.queue.depth == 2
        actor.step(request)
        answered = threading.Event()
        blocked = threading.Thread(target=lambda: (actor.step(request), answered.set()))
        blocked.start()  # completes 2 more unrolls: put() waits for room
        wait_for(lambda: session.busy and learner.queue.depth == 2, "the step to wait")
        held_since, checks = time.monotonic(), learner.servicer.idle_checks
        # several watchdog rounds, each after the step had waited past the idle timeout
        wait_for(lambda: learner.servicer.idle_checks >= checks + 3
                 and time.monotonic() - held_since > idle_timeout, "three idle checks")
        assert not session.closed and not answered.is_set()
        assert learner.queue.get(2, learner.trainer.policy_version, timeout=5) is not None  # room
        blocked.join(WAIT)
        assert answered.is_set() and not session.closed
        # Really silent now: the watchdog disconnects it.
        wait_for(lambda: session.closed, "the idle watchdog", timeout=idle_timeout + WAIT)
        actor.close()


@pytest.mark.slow
def test_slow_trainer_keeps_memory_bounded_and_policy_lag_within_the_limit(
    tmp_path, processes, free_port
) -> None:
    """Big image observations (84x84 uint8, Nature conv net) make training the bottleneck.
    The queue fills up, backpressure holds the actors, stale unrolls are dropped: the
    learner's memory stays flat and no trained step is older than --max-policy-lag."""
    logdir = tmp_path / "run"
    batch, queue_batches, max_lag, pixels, unroll, k = 4, 2, 2, 84, 10, 8
    capacity = batch * queue_batches
    # put() takes one actor's K unrolls at once while the queue holds fewer than capacity
    bound = capacity + k - 1
    learner = processes(
        learner_command(
            logdir,
            free_port,
            f"{reveal_flags(pixels=pixels, episode_length=20)} "
            f"--batch-size {batch} --queue-size {queue_batches} --max-policy-lag {max_lag} "
            f"--unroll-length {unroll} --stream-idle-timeout 5",
        )
    )
    learner.wait_for_line(SERVING.pattern)
    supervisor = processes(
        actors_command(
            free_port,
            f"--num-actors 3 --envs-per-actor {k} --actor-id-prefix slow "
            f"{reveal_flags(pixels=pixels, episode_length=20)}",
        )
    )
    pid = learner.popen.pid
    wait_for(
        lambda: last_metric(logdir, "train_steps") >= 3, "training", timeout=60, process=learner
    )
    baseline, steps_at_baseline = rss_bytes(pid), last_metric(logdir, "env_steps")
    samples = [baseline]
    allowed = 64 * 2**20  # RSS growth
    frame_bytes = pixels * pixels
    # Watch until an unbounded queue would have grown by twice the allowance (every step's
    # frame, once): only then can flat memory tell a bounded queue from a leak.
    needed_steps = 2 * allowed // frame_bytes + 1

    def watched_enough() -> bool:
        samples.append(rss_bytes(pid))
        time.sleep(0.25)
        return last_metric(logdir, "env_steps") - steps_at_baseline >= needed_steps

    wait_for(watched_enough, f"{needed_steps} env steps", timeout=120, process=learner)
    wait_for(
        lambda: last_metric(logdir, "train_steps") >= 10,
        "more training",
        timeout=60,
        process=learner,
    )
    records = read_metrics(logdir)
    learner.popen.terminate()
    assert learner.wait(60) == 0, learner.text
    assert supervisor.wait(60) == 0, supervisor.text

    stepped = records[-1]["env_steps"] - steps_at_baseline
    growth = max(samples) - baseline
    unbounded = stepped * frame_bytes  # what an unbounded queue would have held
    depth = max(r["queue_depth"] for r in records)
    # Actors held by backpressure wait for the learner: never mistaken for silent ones.
    assert "sent nothing for" not in learner.text
    assert "lost the learner" not in supervisor.text
    assert capacity <= depth <= bound  # the trainer was behind, and the queue held
    trained = [r for r in records if r.get("policy_lag_max") is not None]
    assert trained and all(r["policy_lag_max"] <= max_lag for r in trained)
    assert growth < allowed, f"learner RSS grew by {growth / 2**20:.0f} MiB"
    assert unbounded > 2 * allowed  # the test can tell a bounded queue from a leak
    print(
        f"\nslow trainer: {stepped} env steps in the window (an unbounded queue would hold "
        f"{unbounded / 2**20:.0f} MiB more); learner RSS {baseline / 2**20:.0f} MiB -> max "
        f"{max(samples) / 2**20:.0f} MiB; queue depth max {depth} (bound {bound}); policy "
        f"lag max {max(r['policy_lag_max'] for r in trained):g} <= {max_lag}; "
        f"{records[-1]['dropped_stale_unrolls']} stale unrolls dropped"
    )


# -- checkpoints cut short, disks full ------------------------------------------------------


def limited_learner_command(command: list[str], max_file_bytes: int) -> list[str]:
    """``command`` (a ``python -m learner`` line) with RLIMIT_FSIZE set: writing past
    ``max_file_bytes`` fails with EFBIG, as a full disk fails a write (Python ignores
    SIGXFSZ)."""
    script = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, "
        f"{max_file_bytes})); sys.argv = ['learner'] + sys.argv[1:]; "
        "runpy.run_module('learner', run_name='__main__')"
    )
    assert command[1:3] == ["-m", "learner"]
    return [command[0], "-c", script, *command[3:]]


@pytest.mark.slow
def test_full_disk_and_torn_checkpoints_fall_back_to_the_previous_good_one(
    tmp_path, processes, free_port
) -> None:
    logdir = tmp_path / "run"
    flags = "--checkpoint-every 0.3 --hidden-sizes 256,256"  # ~0.5 MB checkpoints
    actor_command = actors_command(
        free_port, "--num-actors 1 --envs-per-actor 4 --actor-id-prefix ckpt"
    )
    actor = processes(actor_command)

    # 1. A healthy run leaves two good checkpoints behind.
    first = processes(learner_command(logdir, free_port, flags))
    wait_for(
        lambda: len(checkpoint.list_checkpoints(logdir)) >= 2, "two checkpoints", process=first
    )
    first.popen.kill()
    first.wait()
    good_newest, good_older = checkpoint.list_checkpoints(logdir)

    # 2. The disk fills up: checkpoint writes, then metrics writes fail half way. Each is
    #    logged; the learner trains on; nothing torn is left under a checkpoint name and no
    #    temporary file stays behind.
    room = (logdir / "metrics.jsonl").stat().st_size + 4096  # a few metrics lines more
    full = processes(limited_learner_command(learner_command(logdir, free_port, flags), room))
    resumed = RESUMED.search(full.wait_for_line(RESUMED.pattern))
    assert Path(resumed["path"]) == good_newest
    full.wait_for_line(r"ERROR .*could not write checkpoint .*File too large")
    full.wait_for_line(r"ERROR .*cannot write metrics.jsonl .*the learner goes on")
    trained = int(resumed["train_steps"])
    # it trains on with a full disk: a checkpoint write of a later update fails too (the
    # file is named after its train step)
    full.wait_for_line(rf"ERROR .*could not write checkpoint .*ckpt-0*(?!{trained}\.pt)[1-9]\d*\.pt")
    full.popen.terminate()
    assert full.wait() == 0, full.text
    stopped = re.search(
        r"learner stopped \(received SIGTERM\): \d+ env steps, (\d+) train", full.text
    )
    assert stopped and int(stopped[1]) > trained, full.text
    assert full.text.count("cannot write metrics.jsonl") == 1  # said once, not per line
    assert actor.wait() == 0, actor.text  # told that training is over
    assert checkpoint.list_checkpoints(logdir) == [good_newest, good_older]
    assert not list((logdir / "checkpoints").glob(".*tmp*"))

    # 3. The newest file is then cut short (a crash mid-write on storage that lost the
    #    tail), and a writer killed mid-write left its temporary file.
    data = good_newest.read_bytes()
    good_newest.write_bytes(data[: len(data) // 3])
    stray = logdir / "checkpoints" / f".{good_newest.name}.tmp-999999"
    stray.write_bytes(data[:1000])
    third = processes(learner_command(logdir, free_port, flags))
    actor = processes(actor_command)
    warning = third.wait_for_line(r"is unreadable .*trying an older checkpoint")
    assert good_newest.name in warning
    resumed = RESUMED.search(third.wait_for_line(RESUMED.pattern))
    assert Path(resumed["path"]) == good_older
    older = checkpoint.load_file(good_older)["counters"]
    assert int(resumed["train_steps"]) == older["train_steps"]
    # It trains on and checkpoints again; the stray temporary file is cleaned up.
    wait_for(
        lambda: (
            checkpoint.list_checkpoints(logdir)[0].name not in (good_newest.name, good_older.name)
        ),
        "a new checkpoint",
        process=third,
    )
    assert not stray.exists()
    third.popen.terminate()
    assert third.wait() == 0, third.text
    actor.popen.terminate()
    assert actor.wait() == 0, actor.text


# -- updates that overflow ------------------------------------------------------------------


@pytest.mark.slow
def test_non_finite_loss_skips_the_update_and_training_continues(
    tmp_path, processes, free_port
) -> None:
    logdir = tmp_path / "run"
    env = (
        "--env seed_rl.testing:SpikeReward-v0 --env-kwargs "
        '{"spike_probability":0.02,"episode_length":5}'
    )
    learner = processes(learner_command(logdir, free_port, env))
    learner.wait_for_line(SERVING.pattern)
    actor = processes(
        actors_command(
            free_port, f"--num-actors 1 --envs-per-actor 8 --actor-id-prefix spike {env}"
        )
    )

    def both():
        records = read_metrics(logdir)
        return (
            records and records[-1]["skipped_updates"] >= 3 and (records[-1]["train_steps"] >= 20)
        )

    wait_for(both, "skipped and completed updates", timeout=60, process=learner)
    learner.wait_for_line(r"WARNING .*skipped an update: non-finite loss")
    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    last = read_metrics(logdir)[-1]
    # The final checkpoint loads, and load_file checks every weight is finite.
    state = checkpoint.load_file(checkpoint.list_checkpoints(logdir)[0])
    assert state["counters"]["train_steps"] == last["train_steps"]
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    print(
        f"\nnon-finite updates: {last['skipped_updates']} skipped, {last['train_steps']} "
        "applied; final weights finite"
    )
