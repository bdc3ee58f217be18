"""``seed-rl train --replicas N``: the learner replicas run as child processes (the
torchrun-style launcher of :mod:`learner.running.launch`) instead of in this process; the actors
dial rank 0. The summary is read from what rank 0 wrote (``metrics.jsonl``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from learner.running.local_actors import connect_host
from learner.running.local_state import RunState, summary_lines, totals_from_metrics, write_curve
from seed_rl.config import Config

log = logging.getLogger("train")


def run_replicas(config: Config, state: RunState, spawn_actors, serving: threading.Event,
                   started: float) -> int:
    """``seed-rl train --replicas N``: the launcher's replicas as child processes (rank 0
    shows the status and writes the logdir), the actors pointed at rank 0's address; the
    same summary, curve, signals and exit codes as with one learner."""
    from learner.running.launch import launch_replicas
    from learner.training import checkpoint

    resumed_from = None
    if config.resume:
        found = checkpoint.list_checkpoints(config.logdir)
        resumed_from = found[0] if found else None
    state.actors = spawn_actors(config.address)
    host, _, port = config.address.rpartition(":")
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not serving.is_set():  # rank 0 listens: say so
            with contextlib.suppress(OSError), socket.create_connection(
                    (connect_host(host).strip("[]"), int(port)), timeout=0.5):
                serving.set()
            done.wait(0.2)
        rc = state.actors.popen.wait() if state.actors is not None else 0
        if rc != 0 and not done.is_set() and not state.signals:  # 0: training is over
            tail = "\n    ".join(list(state.actors.tail)[-15:]) or "(no output)"
            state.actors_failure = (f"the actor processes exited with code {rc} while "
                                    f"training was running; their last output:\n    {tail}")
            log.error("%s", state.actors_failure)
            os.kill(os.getpid(), signal.SIGTERM)  # the launcher stops the replicas

    def on_signal(signum: int) -> None:
        if state.actors_failure:
            return
        state.signals.append(signum)
        if len(state.signals) >= 2 and state.actors is not None:
            state.actors.kill()  # a second signal: do not wait for the actors

    threading.Thread(target=watch, name="actor-monitor", daemon=True).start()
    rc = launch_replicas(config, on_signal=on_signal)
    done.set()
    state.stop_actors()
    curve_path = write_curve(config)
    if curve_path is None:
        rc = rc or 1
    if state.actors_failure:
        rc, outcome = 1, "stopped: the actors failed"
    elif state.signals:
        rc = 128 + state.signals[0]
        outcome = (f"interrupted (received {signal.Signals(state.signals[0]).name}); run "
                   "the same command to resume")
    elif rc != 0:
        outcome = "stopped: a learner replica failed (see its log above)"
    else:
        outcome = f"done ({config.replicas} learner replicas)"
    totals = totals_from_metrics(Path(config.logdir), resumed_from)
    for line in summary_lines(config, totals, time.monotonic() - started, curve_path,
                              outcome):
        print(line, flush=True)
    return rc
