"""--env-import in spawned actor processes: the learner's list runs in each actor, and a failing import is reported by the supervisor."""

from __future__ import annotations

import sys

from support.procs import REPO

from actors.client import EXIT_PERMANENT


def supervisor_args(flags: str) -> list[str]:
    common = "--envs-per-actor 2 --status-every 0 --reconnect-max-backoff 0.2"
    return [sys.executable, "-m", "actors", *common.split(), *flags.split()]

PLUGIN_PATH = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}


def test_spawned_actors_run_the_learners_env_import(learners, processes) -> None:
    stand_in = learners(training_over_after=3, env_id="CustomPluginImport-v0",
                       env_import=["support.custom_env_plugin"])
    supervisor = processes(supervisor_args(f"--num-actors 2 --env= "
                                           f"--learner {stand_in.address}"), env=PLUGIN_PATH)
    assert supervisor.wait() == 0, supervisor.text
    assert len(stand_in.sessions()) == 2
    assert "running the learner's --env-import support.custom_env_plugin" in supervisor.text


def test_supervisor_reports_a_failing_env_import(learners, processes) -> None:
    stand_in = learners()
    flags = (f"--num-actors 1 --actor-id-prefix imp --max-restarts 1 --restart-window 60 "
             f"--env-import no_such_module_for_seed_rl --learner {stand_in.address}")
    supervisor = processes(supervisor_args(flags))
    assert supervisor.wait() == EXIT_PERMANENT, supervisor.text
    text = supervisor.text
    # said once, and not restarted: a permanent error (test_actor_permanent_errors.py)
    assert text.count("--env-import no_such_module_for_seed_rl: actor imp-0") == 1, text
    assert "a permanent error, which a restart cannot fix" in text
    assert "restarting" not in text and "Traceback" not in text
    assert stand_in.handshakes == []
