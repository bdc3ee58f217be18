"""An actor that ends on a permanent error is not restarted, and the error is said once
(issue 25: the supervisor restarted actors after what the log itself called a permanent
error, so the same line came up to seven times). Real ``python -m actors`` supervisors
against the stand-in learner (tests/stand_in_learner.py) and the real learner, on free
loopback ports."""

from __future__ import annotations

import collections
import json

import grpc
from support.learner_process import actors_command, learner_command
from support.procs import REPO, WAIT

from actors.client import EXIT_PERMANENT

PLUGIN_PATH = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}  # custom_env_plugin
PERMANENT = "a permanent error, which a restart cannot fix"
#: two actor processes, each would be restarted 5 times in 60 s if it merely crashed
FLAGS = ("--num-actors 2 --envs-per-actor 2 --max-restarts 5 --restart-window 60 "
         "--reconnect-max-backoff 0.2 --actor-id-prefix perm")


def lines_with(text: str, words: str) -> list[str]:
    return [line for line in text.splitlines() if words in line]


def test_an_unsupported_space_stops_every_actor_once_with_exit_2(learners, processes,
                                                                  free_port) -> None:
    stand_in = learners(port=free_port)
    supervisor = processes(actors_command(free_port, f"{FLAGS} --env "
                                          "support.custom_env_plugin:TextObservation-v0"),
                           env=PLUGIN_PATH)
    assert supervisor.wait(WAIT) == EXIT_PERMANENT, supervisor.text
    text = supervisor.text
    errors = lines_with(text, "not supported")
    assert len(errors) == 1, text  # two actor processes met it: said once
    assert "Text" in errors[0] and PERMANENT in errors[0] and "ERROR" in errors[0]
    assert "restarting" not in text and "giving up" not in text and "Traceback" not in text
    assert stand_in.handshakes == []  # the environment failed before any connection


def test_a_refused_handshake_stops_every_actor_once_with_exit_2(learners, processes,
                                                                free_port) -> None:
    reason = "observation spaces differ (the stand-in says no)"
    stand_in = learners(port=free_port, env_id="seed_rl.testing:RevealAction-v0",
                        handshake_error=(grpc.StatusCode.FAILED_PRECONDITION, reason))
    supervisor = processes(actors_command(
        free_port, f"{FLAGS} --env seed_rl.testing:RevealAction-v0"))
    assert supervisor.wait(WAIT) == EXIT_PERMANENT, supervisor.text
    text = supervisor.text
    errors = lines_with(text, reason)
    assert len(errors) == 1, text
    assert "FAILED_PRECONDITION" in errors[0] and PERMANENT in errors[0]
    assert "restarting" not in text
    # no actor came back: at most one handshake per actor process, one incarnation each
    per_actor = collections.Counter(h.request.actor_id for h in stand_in.handshakes)
    assert 1 <= len(stand_in.handshakes) <= 2 and set(per_actor.values()) == {1}, per_actor


def test_actors_of_another_env_than_the_real_learners_stop_once(processes, free_port,
                                                                tmp_path) -> None:
    learner = processes(learner_command(tmp_path / "run", free_port,
                                        "--env CartPole-v1 --preset none"))
    supervisor = processes(actors_command(free_port, f"{FLAGS} --env Acrobot-v1"))
    assert supervisor.wait(2 * WAIT) == EXIT_PERMANENT, supervisor.text + learner.text
    text = supervisor.text
    errors = lines_with(text, PERMANENT)
    assert len(errors) == 1, text
    assert "FAILED_PRECONDITION" in errors[0] and "space" in errors[0], errors
    assert "restarting" not in text and "Traceback" not in text
    assert learner.popen.poll() is None  # the learner is not the one that failed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env"] == "CartPole-v1"
