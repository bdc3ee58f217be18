"""Faults a long-running learner meets on a real cluster, with real processes on loopback:
processes that die or freeze.

Each test starts real ``python -m learner`` / ``python -m actors`` processes (or an
in-process :class:`learner.running.learner.Learner` serving real gRPC where the test must look
inside it), does something bad to one of them (SIGKILL, SIGSTOP, SIGTERM) and checks that
the learner keeps serving and loses nothing it promised to keep. Slow training, full disks
and overflowing losses are in test_faults_resources.py. Figures the tests measure are
printed (``pytest -s``) and recorded in docs/reliability.md. Nothing asserts a timing; every
wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support.learner_harness import make_config
from support.learner_process import (
    RESUMED,
    SERVING,
    actor_pids,
    actors_command,
    last_metric,
    learner_command,
    read_metrics,
    wait_for,
)
from support.procs import WAIT
from support.reveal import REVEAL, REVEAL_EPISODE, check_untorn, reveal_flags

from learner.running.learner import Learner
from learner.training import checkpoint


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
