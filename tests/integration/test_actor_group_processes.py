"""Env groups in supervised actor processes: two groups per process report and stop as processes (against the stand-in learner)."""

from __future__ import annotations

import re
import signal
import sys

from support.procs import WAIT
from support.stand_in_learner import wait_streaming

REVEAL = "seed_rl.testing:RevealAction-v0"


def test_supervised_processes_of_two_groups_report_and_stop_as_processes(
        learners, processes) -> None:
    learner = learners(env_id=REVEAL)
    flags = (f"--num-actors 2 --envs-per-actor 3 --env-groups 2 --actor-id-prefix sup "
             f"--env {REVEAL} --status-every 0.5 --reconnect-max-backoff 0.2 "
             f"--learner {learner.address}")
    supervisor = processes([sys.executable, "-m", "actors", *flags.split()])
    sessions = wait_streaming(learner, 4, steps=3)
    assert [(h.request.actor_id, h.request.num_envs) for h in sessions] == [
        ("sup-0.g0", 2), ("sup-0.g1", 1), ("sup-1.g0", 2), ("sup-1.g1", 1)]
    supervisor.wait_for_line(r"each in 2 groups \(--env-groups 2\)")
    # one status row per process: 2 actors, however many groups
    supervisor.wait_for_line(r"status: 2/2 actors connected \| \d+ env steps/s")
    supervisor.popen.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.text
    learner.wait_until(lambda s: len(s.ended_sessions) == 4, WAIT, "four streams closed")
    text = supervisor.text
    assert "Traceback" not in text
    # one line per process, not per group
    assert sorted(re.findall(r"actor (\S+): stopped by SIGTERM", text)) == ["sup-0", "sup-1"]
