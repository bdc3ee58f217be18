"""``seed-rl train``: a learner and its actors on this machine, one command.

With no arguments it trains CartPole-v1 with the shipped preset until the preset's target
return. What it does:

1. Take the resolved config (:func:`seed_rl.config.resolve`: the shipped preset of the
   environment, CartPole-v1 when no ``--env`` is given, then ``--config FILE``,
   ``SEED_RL_*`` environment variables and flags). Knobs nobody set get local defaults: the logdir ``runs/<env>`` (so the same command resumes), the learner on
   ``127.0.0.1`` port 0 (a free one), and the number of actor processes and environments
   per actor from the CPU count.
2. Start the learner in this process (:class:`learner.running.learner.Learner`) and the actors as ONE
   child process, ``python -m actors`` (the supervisor, which runs and restarts N actor
   processes). Unless one is given, every run makes a fresh auth token (never printed);
   the child gets it through its environment, never on the command line, and is killed by
   the kernel if this process dies, even by SIGKILL (:mod:`seed_rl.lifetime`).
   With ``--replicas N`` the learner is N replica processes instead (the launcher of
   ``seed-rl learner --replicas N``, learner/running/launch.py); the actors dial rank 0, which
   redirects some of them to the others; rank 0 shows the status and writes the logdir.
3. Show a live status until a stop criterion (the preset's target return, ``--total-steps``,
   ``--max-time``), Ctrl-C / SIGTERM, or a failure of the learner or the actors.
4. At exit, whatever the reason: the final checkpoint (the learner writes it), then
   ``LOGDIR/learning_curve.png`` and a one-screen summary.

Exit codes: 0 when a stop criterion ended the run, 1 on a failure (learner, actors, or the
curve), 128 + N when signal N stopped it (130 for Ctrl-C). Results are kept in every case;
running the same command again resumes from the latest checkpoint.

This module never imports ``actors``: the actors are a subprocess (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from learner.running import local_actors
from learner.running.local_actors import LocalActors, connect_host
from learner.running.local_replicas import run_replicas
from learner.running.local_state import RunState, RunTotals, summary_lines, write_curve
from learner.running.ports import free_ports
from seed_rl import config as cfg
from seed_rl.config import Config
from seed_rl.envs.making import EnvImportError, EnvironmentUnavailable, make_env

log = logging.getLogger("train")

#: The actors start before the learner listens and retry until it does (every
#: STARTUP_BACKOFF_S at most); their "cannot reach" warnings are expected until then.
STARTUP_BACKOFF_S = 0.25

# ---------------------------------------------------------------------------------------
# config


def local_actor_layout(cpus: int) -> tuple[int, int]:
    """(actor processes, environments per actor) for a machine with ``cpus`` cores.

    The learner (inference, training, gRPC) needs about one core; the rest step
    environments. Measured on a 2-core machine (docs/train.md): 2 processes x 32 CartPole
    environments keep the learner's batches full while both cores stay busy.
    """
    actors = max(2, min(cpus - 1, 16))
    return actors, 32


def slug(env_id: str) -> str:
    """A directory name for an environment id: ``ALE/Pong-v5`` -> ``ALE-Pong-v5``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env_id).strip("-") or "env"


def local_config(resolved: cfg.Resolved, cpus: int | None = None) -> Config:
    """The run's config: ``resolved`` with local defaults for the knobs nobody set (see the
    module docstring) and an auth token made for this run when none was given."""
    config, given = resolved.config, resolved.given
    changes: dict[str, Any] = {}
    if "logdir" not in given:
        changes["logdir"] = str(Path("runs") / slug(config.env))
    if "address" not in given:
        changes["address"] = "127.0.0.1:0"
    actors, envs = local_actor_layout(cpus or os.cpu_count() or 1)
    if "num_actors" not in given:
        changes["num_actors"] = actors
    if "envs_per_actor" not in given:
        changes["envs_per_actor"] = envs
    if "reconnect_max_backoff" not in given:  # loopback: retrying often costs nothing
        changes["reconnect_max_backoff"] = STARTUP_BACKOFF_S
    if not config.auth_token:
        changes["auth_token"] = secrets.token_urlsafe(32)
    config = dataclasses.replace(config, **changes)
    cfg.validate(config)
    return config


def check_environment(config: Config) -> None:
    """Make the environment once, so that a missing dependency, an unknown id or a failing
    --env-import stops the run before anything starts, saying what to do (SystemExit; the
    CLI adds the ``seed-rl train:`` prefix)."""
    try:
        make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper,
                 "seed-rl train").close()
    except (EnvImportError, EnvironmentUnavailable) as error:
        raise SystemExit(str(error)) from None


# ---------------------------------------------------------------------------------------
# the run


def _install_signal_handlers(state: RunState) -> dict[int, Any]:
    def handle(signum: int, _frame: Any) -> None:
        state.signals.append(signum)
        name = signal.Signals(signum).name
        if len(state.signals) == 1:
            if state.learner is not None:
                state.learner.request_stop(f"received {name}")
            return
        if state.actors is not None:  # a second signal: do not wait for the actors
            state.actors.kill()
        if len(state.signals) == 2:
            sys.stderr.write(
                f"\nseed-rl train: {name} again: actors killed; the learner is "
                "writing its final checkpoint (a third one aborts without it)\n"
            )
            return
        os._exit(128 + signum)

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def _monitor_actors(state: RunState) -> None:
    """Stop the learner if the actors' supervisor exits while training is on."""
    actors, learner = state.actors, state.learner
    assert actors is not None and learner is not None
    rc = actors.popen.wait()
    if learner.stop_requested.is_set():
        return
    tail = "\n    ".join(list(actors.tail)[-15:]) or "(no output)"
    state.actors_failure = (
        f"the actor processes exited with code {rc} while training was "
        f"running; their last output:\n    {tail}"
    )
    log.error("%s", state.actors_failure)
    learner.request_stop(f"the actors exited (code {rc})")


def main(resolved: cfg.Resolved, args: argparse.Namespace | None = None) -> int:
    """Run ``seed-rl train``; returns the exit code (see the module docstring).

    Start-up is overlapped: the actors are spawned on a free port picked here *before*
    torch is imported and the learner built (about 2 s on a 2-core machine), so their
    interpreters, imports and environments are ready when the learner starts serving.
    """
    started = time.monotonic()
    config = local_config(resolved)  # a ConfigError: the CLI says so and exits 2
    preset = resolved.preset
    log_level = str(getattr(args, "log_level", "INFO") or "INFO").upper()
    check_environment(config)
    if config.tls_cert or config.tls_ca:
        log.warning(
            "seed-rl train runs the learner and its actors on this machine over "
            "loopback; the TLS flags are ignored (use `seed-rl learner` and `seed-rl "
            "actors` for TLS)"
        )
        config = dataclasses.replace(config, tls_cert="", tls_key="", tls_ca="", tls_client_ca="")
    bind_host, _, bind_port = config.address.rpartition(":")
    if bind_port == "0":
        port = free_ports(bind_host, config.replicas)  # replica r listens on port + r
        config = dataclasses.replace(config, address=f"{bind_host}:{port}")
    log.info(
        "training %s with %s; %d actor process(es) x %d environments; logdir %s",
        config.env,
        f"preset {preset.name}" if preset else "no preset (the defaults)",
        config.num_actors,
        config.envs_per_actor,
        config.logdir,
    )

    from learner.watching.console import LiveStatus

    state = RunState()
    previous_handlers = _install_signal_handlers(state)
    status = LiveStatus(config)
    serving = threading.Event()
    actor_log_level = "INFO" if log_level == "DEBUG" else "WARNING"

    def spawn_actors(address: str) -> LocalActors:
        host, _, port = address.rpartition(":")
        return LocalActors(
            local_actors.actor_command(config, f"{connect_host(host)}:{port}", actor_log_level),
            local_actors.actor_environment(config.auth_token),
            status.print_line,
            serving,
        )

    if config.replicas > 1:
        try:
            return run_replicas(config, state, spawn_actors, serving, started)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)

    learner = None
    curve_path: Path | None = None
    rc = 0
    try:
        with status:
            state.actors = spawn_actors(config.address)
            from learner.running.learner import Learner  # torch: while the actors start

            learner = Learner(config)
            state.learner = learner
            if state.signals:
                learner.request_stop(f"received {signal.Signals(state.signals[0]).name}")
            try:
                learner.start()
            except (SystemExit, RuntimeError) as error:  # the picked port was taken
                log.warning(
                    "could not listen on %s (%s); using a free port instead", config.address, error
                )
                state.actors.kill()
                state.actors.stop()
                learner.config = dataclasses.replace(learner.config, address=f"{bind_host}:0")
                port = learner.start()
                state.actors = spawn_actors(f"{bind_host}:{port}")
            serving.set()
            threading.Thread(
                target=_monitor_actors, args=(state,), name="actor-monitor", daemon=True
            ).start()
            rc = learner.serve_forever(on_metrics=status.update)
            state.stop_actors()
        curve_path = write_curve(config)
        if curve_path is None:
            rc = rc or 1
    finally:
        if state.actors is not None and state.actors.poll() is None:
            state.actors.kill()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    if state.actors_failure:
        rc = 1
        outcome = "stopped: the actors failed"
    elif rc != 0:
        outcome = f"stopped: {learner.stop_reason}"
    elif state.signals:
        rc = 128 + state.signals[0]
        outcome = f"interrupted ({learner.stop_reason}); run the same command to resume"
    else:
        outcome = f"done: {learner.stop_reason}"
    for line in summary_lines(config, RunTotals.of_learner(learner),
                              time.monotonic() - started, curve_path, outcome):
        print(line, flush=True)
    return rc
