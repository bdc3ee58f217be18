"""Faults a long-running learner meets on a real cluster, with real processes on loopback.

Each test starts real ``python -m learner`` / ``python -m actors`` processes (or an
in-process :class:`learner.running.learner.Learner` serving real gRPC where the test must look
inside it), does something bad to one of them (SIGKILL, SIGSTOP, SIGTERM, a torn or
unwritable checkpoint, a reward that overflows the loss) and checks that the learner keeps
serving and loses nothing it promised to keep. Figures the tests measure are printed
(``pytest -s``) and recorded in docs/reliability.md. Nothing asserts a timing; every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
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
    actor_pids,
    actors_command,
    last_metric,
    learner_command,
    read_metrics,
    rss_bytes,
    wait_for,
)
from support.procs import WAIT

from learner.running.learner import Learner
from learner.training import checkpoint

REVEAL = "seed_rl.testing:RevealAction-v0"
REVEAL_EPISODE = 4


def reveal_flags(**kwargs) -> str:
    """``--env``/``--env-kwargs`` flags of RevealAction (kwargs as compact JSON)."""
    kwargs = {"episode_length": REVEAL_EPISODE, **kwargs}
    return f"--env {REVEAL} --env-kwargs {json.dumps(kwargs, separators=(',', ':'))}"


def check_untorn(unrolls, episode_length: int) -> int:
    """Every transition of ``unrolls`` follows RevealAction's dynamics; returns how many
    were checked. A torn unroll (steps of two incarnations or two environments glued
    together) breaks the step counter, the episode counter or the reward that reveals
    the action taken at the previous step."""
    obs = unrolls.observations  # [T+1, N, 2]: (t within the episode, episode)
    t, episode = obs[..., 0], obs[..., 1]
    starts = unrolls.terminated[1:] | unrolls.truncated[1:]
    expected_reward = 10 * t[:-1] + unrolls.actions[:-1]
    np.testing.assert_array_equal(unrolls.rewards[1:], expected_reward)
    np.testing.assert_array_equal(t[1:], np.where(starts, 0, t[:-1] + 1))
    np.testing.assert_array_equal(episode[1:], np.where(starts, episode[:-1] + 1, episode[:-1]))
    assert (t[:-1][starts] == episode_length - 1).all()
    return starts.size


def stepping_session(servicer, actor_id: str):
    """The session of ``actor_id`` once it has stepped (None before)."""
    return next((s for s in servicer.sessions() if s.actor_id == actor_id and s.steps > 0), None)


# -- an actor dies -------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkilled_actor_drops_its_partial_unrolls_and_its_restart_rejoins(
    tmp_path, processes
) -> None:
    k = 4
    config = make_config(
        tmp_path,
        env=REVEAL,
        env_kwargs={"episode_length": REVEAL_EPISODE},
        unroll_length=6,
        batch_size=4,
        hidden_sizes=[16],
    )
    learner = Learner(config)
    trained = []  # every batch the trainer takes, to check none of it is torn
    take = learner.queue.get

    def recording_get(*args, **kwargs):
        unrolls = take(*args, **kwargs)
        if unrolls is not None:
            trained.append(unrolls)
        return unrolls

    learner.queue.get = recording_get
    learner.start()
    try:
        supervisor = processes(
            actors_command(
                learner.port,
                f"--num-actors 2 --envs-per-actor {k} --actor-id-prefix kill "
                f"{reveal_flags()} --reconnect-max-backoff 0.5",
            )
        )
        servicer = learner.servicer
        wait_for(
            lambda: servicer.connected_actors == 2 and learner.metrics.train_steps >= 3,
            "two actors training",
            process=supervisor,
        )
        before = {s.actor_id: s for s in servicer.sessions()}
        dropped_before = servicer.dropped_partial_unrolls
        victim_pid = actor_pids(supervisor, 2)[0]
        os.kill(victim_pid, signal.SIGKILL)

        # The learner sees the connection reset, drops the partial unrolls, frees the slots.
        victim = wait_for(
            lambda: next((s for s in before.values() if s.closed), None),
            "the killed actor's session to close",
            process=supervisor,
        )
        survivor = next(s for s in before.values() if s is not victim)
        dropped = servicer.dropped_partial_unrolls - dropped_before
        assert dropped == k
        assert victim.session_id not in {s.session_id for s in servicer.sessions()}
        trained_at_kill = learner.metrics.train_steps
        survivor_steps = survivor.steps

        # The others keep training, and `seed-rl actors` restarts the victim: it rejoins
        # under the same actor id as a new incarnation (a new run id).
        supervisor.wait_for_line(r"was killed by SIGKILL; restarting")

        reborn = wait_for(
            lambda: stepping_session(servicer, victim.actor_id),
            "the restarted actor stepping",
            process=supervisor,
        )
        assert reborn.run_id != victim.run_id
        wait_for(
            lambda: learner.metrics.train_steps >= trained_at_kill + 10,
            "training to go on",
            process=supervisor,
        )
        assert not survivor.closed and survivor.steps > survivor_steps
        assert servicer.connected_actors == 2
        assert learner.failure is None and learner.batcher.failure is None
    finally:
        learner.request_stop("test finished")
        learner.shutdown()
    checked = sum(check_untorn(unrolls, REVEAL_EPISODE) for unrolls in trained)
    assert checked > 0
    print(
        f"\nSIGKILLed actor: its {dropped} partial unrolls dropped; "
        f"{len(trained)} batches ({checked} transitions) trained, none torn"
    )


# -- the learner dies ---------------------------------------------------------------------


@pytest.mark.slow
def test_sigkilled_learner_resumes_and_actors_reconnect_by_themselves(
    tmp_path, processes, free_port
) -> None:
    logdir = tmp_path / "run"
    checkpoint_every, log_every = 1.0, 0.05
    flags = f"--checkpoint-every {checkpoint_every} --log-every {log_every}"
    first = processes(learner_command(logdir, free_port, flags))
    first.wait_for_line(SERVING.pattern)
    # the default reconnect backoff: what a user gets
    supervisor = processes(
        actors_command(free_port, "--num-actors 2 --envs-per-actor 4 --actor-id-prefix back")
    )
    wait_for(
        lambda: len(checkpoint.list_checkpoints(logdir)) >= 2, "two checkpoints", process=first
    )
    time.sleep(checkpoint_every / 2)  # kill mid-interval: the typical case, not the best
    first.popen.kill()
    first.wait()
    killed_at = time.monotonic()
    newest = checkpoint.list_checkpoints(logdir)[0]
    # What the learner had counted: its last metrics line, at most log_every before the kill.
    counted = read_metrics(logdir)[-1]

    second = processes(learner_command(logdir, free_port, flags))
    resumed = RESUMED.search(second.wait_for_line(RESUMED.pattern))
    second.wait_for_line(SERVING.pattern)
    back_at = time.monotonic()
    env_steps, train_steps = int(resumed["env_steps"]), int(resumed["train_steps"])
    version = int(resumed["policy_version"])
    assert Path(resumed["path"]) == newest  # the latest checkpoint
    assert env_steps > 0 and train_steps > 0
    assert version == train_steps  # every update bumps the policy version once

    def both_joined():
        joined = [line for line in second.lines if " joined from " in line]
        return joined if len(joined) >= 2 else None

    joined = wait_for(both_joined, "both actors to reconnect", process=second)
    reconnected_in = time.monotonic() - back_at
    assert {line.split("actor ")[1].split()[0] for line in joined} == {"back-0", "back-1"}
    # Counters continue from the checkpoint, not from 0, and training goes on. (Only the
    # restarted learner's records count: the killed one may have logged past train_steps + 10
    # after its last checkpoint.)
    wait_for(
        lambda: any(r["wall_time"] > counted["wall_time"] and r["train_steps"] >= train_steps + 10
                    for r in read_metrics(logdir)),
        "training after the restart",
        process=second,
    )
    after = [r for r in read_metrics(logdir) if r["wall_time"] > counted["wall_time"]]
    assert after and all(r["env_steps"] >= env_steps for r in after)
    assert after[-1]["policy_version"] > version
    # No human action: the supervisor never restarted anyone; the actors retried.
    assert "restarting" not in supervisor.text
    assert "lost the learner" in supervisor.text
    lost_steps = counted["env_steps"] - env_steps
    lost_train_steps = counted["train_steps"] - train_steps
    print(
        f"\nSIGKILLed learner (--checkpoint-every {checkpoint_every:g}): counted about "
        f"{counted['env_steps']} env steps / {counted['train_steps']} train steps (+ at most "
        f"{log_every:g} s), resumed from {env_steps} / {train_steps}: lost about "
        f"{lost_steps} env steps ({lost_steps / max(counted['sps'], 1):.2f} s of acting) and "
        f"{lost_train_steps} train steps; learner back {back_at - killed_at:.1f} s after the "
        f"kill, both actors reconnected {reconnected_in:.1f} s after that"
    )
    second.popen.terminate()
    assert second.wait() == 0, second.text
    assert supervisor.wait() == 0, supervisor.text


@pytest.mark.slow
def test_sigterm_learner_writes_a_final_checkpoint_and_actors_exit_0(
    tmp_path, processes, free_port
) -> None:
    logdir = tmp_path / "run"
    # no periodic checkpoints; a status line every 0.3 s (the log is not a terminal)
    learner = processes(learner_command(logdir, free_port, "--status-every 0.3"))
    learner.wait_for_line(SERVING.pattern)
    supervisor = processes(
        actors_command(free_port, "--num-actors 2 --envs-per-actor 4 --actor-id-prefix term")
    )
    wait_for(lambda: last_metric(logdir, "train_steps") >= 5, "training", process=learner)
    learner.wait_for_line(r"steps [\d,]+ \| sps [\d,]+ \| return .* \| actors 2 \| elapsed")
    assert checkpoint.list_checkpoints(logdir) == []
    learner.popen.send_signal(signal.SIGTERM)
    assert learner.wait() == 0, learner.text
    assert "stopping: received SIGTERM" in learner.text
    (final,) = checkpoint.list_checkpoints(logdir)
    state = checkpoint.load_file(final)
    assert state["counters"]["train_steps"] == read_metrics(logdir)[-1]["train_steps"] > 0
    # Both actors heard "training is over" and exited 0; so did the supervisor.
    assert supervisor.wait() == 0, supervisor.text
    assert supervisor.text.count("the learner says training is over") == 2
    assert "all 2 actor(s) finished" in supervisor.text
    assert "restarting" not in supervisor.text and "Traceback" not in learner.text


# -- an actor freezes ---------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_actor_is_disconnected_without_stalling_others_and_rejoins(
    tmp_path, processes
) -> None:
    idle_timeout = 2.0
    config = make_config(
        tmp_path, stream_idle_timeout=idle_timeout, unroll_length=5, batch_size=4, hidden_sizes=[16]
    )
    learner = Learner(config)
    learner.start()
    try:
        supervisor = processes(
            actors_command(
                learner.port,
                "--num-actors 2 --envs-per-actor 2 --actor-id-prefix frozen "
                "--env CartPole-v1 --log-level INFO",
            )
        )
        servicer = learner.servicer
        wait_for(
            lambda: servicer.connected_actors == 2 and learner.metrics.train_steps >= 2,
            "two actors training",
            process=supervisor,
        )
        before = {s.session_id: s for s in servicer.sessions()}
        frozen_pid = actor_pids(supervisor, 2)[0]
        os.kill(frozen_pid, signal.SIGSTOP)  # frozen: connected, but silent
        try:
            frozen = wait_for(
                lambda: next((s for s in before.values() if s.closed), None),
                "the idle watchdog to disconnect the frozen actor",
                timeout=idle_timeout + WAIT,
                process=supervisor,
            )
            other = next(s for s in before.values() if s is not frozen)
            # The batcher never waited for it: the other actor kept stepping all along.
            other_steps, train_steps = other.steps, learner.metrics.train_steps
            wait_for(lambda: other.steps >= other_steps + 50, "the other actor stepping")
            assert learner.metrics.train_steps > train_steps
            assert servicer.connected_actors == 1 and not other.closed
        finally:
            os.kill(frozen_pid, signal.SIGCONT)

        # Thawed, it finds its stream cancelled and reconnects with a new session.
        again = wait_for(
            lambda: stepping_session(servicer, frozen.actor_id),
            "the thawed actor to rejoin",
            process=supervisor,
        )
        assert again.session_id != frozen.session_id
        assert servicer.connected_actors == 2
        assert "restarting" not in supervisor.text  # it reconnected by itself
        assert learner.batcher.failure is None and learner.failure is None
    finally:
        learner.request_stop("test finished")
        learner.shutdown()


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
