"""Actor processes as a user runs them: `seed-rl actors` (the supervisor and its children) and one actor process, against the stand-in learner (tests/support/stand_in_learner.py): signals, restarts, crash loops, exit codes, no torch."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import time

from support.procs import REPO, WAIT, children_of, cmdline, is_running

from actors.env_loop import env_seeds

REVEAL = "seed_rl.testing:RevealAction-v0"


def wait_gone(pids: list[int], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while any(is_running(p) for p in pids):
        left = {p: cmdline(p) for p in pids if is_running(p)}
        assert time.monotonic() < deadline, f"processes left behind: {left}"
        time.sleep(0.05)

def actor_children(supervisor_pid: int, expected: int) -> list[int]:
    """Wait until ``expected`` actor children (spawned interpreters) are running."""
    deadline = time.monotonic() + WAIT
    while True:
        children = children_of(supervisor_pid)
        actors = [p for p in children if "spawn_main" in cmdline(p)]
        if len(actors) >= expected:
            return children
        assert time.monotonic() < deadline, f"children: {[cmdline(p) for p in children]}"
        time.sleep(0.05)

def supervisor_args(flags: str) -> list[str]:
    """``python -m actors`` with small, fast settings and ``flags`` (split on spaces)."""
    common = "--envs-per-actor 2 --status-every 0.5 --reconnect-max-backoff 0.2"
    return [sys.executable, "-m", "actors", *common.split(), *flags.split()]


def test_supervisor_runs_actors_and_stops_them_on_sigterm(learners, processes) -> None:
    learner = learners()
    # the learner address comes from the environment (SEED_RL_LEARNER), not a flag
    supervisor = processes(
        supervisor_args("--num-actors 2 --actor-id-prefix sup"),
        env={"SEED_RL_LEARNER": learner.address},
    )
    learner.wait_until(lambda s: s.actor_ids() == {"sup-0", "sup-1"}, WAIT, "two actors")
    learner.wait_until(
        lambda s: {x.actor_id for x in s.steps} == {"sup-0", "sup-1"}, WAIT, "steps of both"
    )
    supervisor.wait_for_line(r"status: 2/2 actors connected \| \d+ env steps/s")
    children = actor_children(supervisor.popen.pid, 2)
    supervisor.popen.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.text
    wait_gone(children)
    assert "received SIGTERM" in supervisor.text
    assert "Traceback" not in supervisor.text
    # both actors closed their streams (half-close) rather than dropping them
    learner.wait_until(lambda s: len(s.ended_sessions) == 2, WAIT, "both streams closed")


def test_sigkilled_supervisor_leaves_no_orphans(learners, processes) -> None:
    learner = learners()
    supervisor = processes(
        supervisor_args(f"--num-actors 2 --actor-id-prefix orphan --learner {learner.address}")
    )
    learner.wait_until(lambda s: len(s.actor_ids()) == 2, WAIT, "two actors")
    children = actor_children(supervisor.popen.pid, 2)
    supervisor.popen.kill()
    supervisor.wait()
    wait_gone(children)


def test_supervisor_restarts_crashed_actors_up_to_the_limit(learners, processes) -> None:
    # a crash (an environment that raises at its first step), not a permanent error: those
    # are not restarted (test_actor_permanent_errors.py)
    crash_seed = env_seeds(0, "crash-0", 2)[0]
    learner = learners(env_id=REVEAL)
    flags = (f"--num-actors 1 --actor-id-prefix crash --max-restarts 2 --restart-window 60 "
             f"--env support.custom_env_plugin:CrashOnSeed-v0 "
             f"--env-kwargs {{\"crash_seed\":{crash_seed}}}")
    supervisor = processes(supervisor_args(f"{flags} --learner {learner.address}"),
                           env={"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    rc = supervisor.wait()
    text = supervisor.text
    assert rc == 1, text
    assert len(learner.handshakes) == 3, text  # the first run and two restarts
    assert {h.request.actor_id for h in learner.handshakes} == {"crash-0"}
    assert len({h.request.run_id for h in learner.handshakes}) == 3  # three incarnations
    assert text.count(f"the env seeded {crash_seed} exploded") == 3  # each incarnation's
    assert len(re.findall(r"actor 0 \(crash-0\) exited with code 1 .*restarting", text)) == 2
    assert "giving up" in text and "--max-restarts 2" in text


def test_supervisor_exits_0_when_training_is_over(learners, processes) -> None:
    learner = learners(training_over_after=5)
    supervisor = processes(
        supervisor_args(f"--num-actors 2 --actor-id-prefix done --learner {learner.address}")
    )
    assert supervisor.wait() == 0, supervisor.text
    assert learner.actor_ids() == {"done-0", "done-1"}
    assert "all 2 actor(s) finished" in supervisor.text
    assert "restarting" not in supervisor.text


def test_actor_process_never_imports_torch(learners, processes) -> None:
    learner = learners(training_over_after=5)
    script = textwrap.dedent(f"""
        import sys
        import actors, actors.client, actors.env_loop, actors.supervisor, actors.counters
        from seed_rl.cli import main
        rc = main(["actors", "--actor-index", "0", "--learner", "{learner.address}",
                   "--env", "{REVEAL}", "--envs-per-actor", "2", "--actor-id-prefix", "pure"])
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("torch modules:", loaded)
        sys.exit(rc if not loaded else 99)
    """)
    process = processes([sys.executable, "-c", script])
    assert process.wait() == 0, process.text
    assert "torch modules: []" in process.text
    assert len(learner.steps) == 5 and learner.actor_ids() == {"pure-0"}


def test_supervisor_restarts_a_killed_actor(learners, processes) -> None:
    learner = learners()
    supervisor = processes(
        supervisor_args(f"--num-actors 2 --actor-id-prefix kill --learner {learner.address}")
    )
    learner.wait_until(lambda s: len(s.sessions()) == 2, WAIT, "two actors")
    children = actor_children(supervisor.popen.pid, 2)
    victim = next(p for p in children if "spawn_main" in cmdline(p))
    os.kill(victim, signal.SIGKILL)
    line = supervisor.wait_for_line(r"was killed by SIGKILL; restarting")
    index = re.search(r"actor (\d) \(", line).group(1)
    learner.wait_until(lambda s: len(s.sessions()) == 3, WAIT, "the restarted actor's handshake")
    ids = [h.request for h in learner.sessions() if h.request.actor_id == f"kill-{index}"]
    assert len(ids) == 2 and ids[0].run_id != ids[1].run_id  # same id, new incarnation
    children += children_of(supervisor.popen.pid)  # the restarted one too
    supervisor.popen.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.text
    wait_gone(children)


def test_single_actor_process_stops_cleanly_on_sigterm(learners, processes) -> None:
    learner = learners()
    flags = f"--actor-index 3 --actor-id-prefix one --env CartPole-v1 --learner {learner.address}"
    actor = processes(supervisor_args(flags))
    learner.wait_until(lambda s: len(s.steps) >= 5, WAIT, "steps")
    actor.popen.send_signal(signal.SIGTERM)
    assert actor.wait() == 0, actor.text
    assert learner.actor_ids() == {"one-3"}
    assert "stopped by SIGTERM" in actor.text
    learner.wait_until(lambda s: len(s.ended_sessions) == 1, WAIT, "the stream closed")
