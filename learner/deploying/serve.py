"""``seed-rl serve``: a trained policy served to actors, training off.

``seed-rl serve --checkpoint RUN_OR_FILE [--follow RUN] [--greedy] [--episodes N]`` answers
any number of actors (``seed-rl actors``, or any client of docs/protocol.md) with the
actions of a checkpoint's policy, through the learner's own serving path
(learner/deploying/policy_server.py): same protocol, handshake checks, health service,
token, TLS, ``--max-streams`` and shutdown. Nothing is kept for training and no checkpoint
is written; the episodes the actors report are logged as a run's are (the console,
``metrics.jsonl`` and TensorBoard in ``--logdir``, default ``runs/serve``), so an evaluation
at fleet scale is one command: ``--episodes N`` stops after N episodes and prints their mean,
std, min and max return, as ``seed-rl eval`` does for local episodes.

The model and the environment are the checkpoint's (the config it was trained with); the
serving knobs are serve's own (flags, ``SEED_RL_*``, ``--config``). ``--follow RUN`` serves
the newest checkpoint of a running job as it appears (learner/deploying/follow.py); without
``--checkpoint`` it first waits for RUN's first one. SIGTERM or SIGINT stops it cleanly
(actors are told it is over, exit 0); a failure exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import sys
import threading
import time
from pathlib import Path

from learner.deploying.follow import Served, load_served, run_directory, wait_for_first
from learner.deploying.policy_server import PolicyServer
from learner.running.learner import select_device
from learner.watching.console import LiveStatus
from seed_rl import config as cfg
from seed_rl.config import Config

#: the logdir of serve when none is given (never the served run's own)
DEFAULT_LOGDIR = "runs/serve"


def serving_config(trained: Config, resolved: cfg.Resolved) -> Config:
    """The checkpoint's training config (model, environment) with every knob that ``seed-rl
    serve`` reads taken from serve's own sources instead (its defaults included)."""
    mine = {f.name: getattr(resolved.config, f.name) for f in cfg.fields_for("serve")}
    if "logdir" not in resolved.given:
        mine["logdir"] = DEFAULT_LOGDIR
    return dataclasses.replace(trained, **mine)


def check_logdir(logdir: str, *runs: Path | None) -> None:
    """Serve's metrics never go into a served or followed run's own logdir."""
    for run in runs:
        if run is not None and Path(logdir).resolve() == run.resolve():
            raise SystemExit(f"--logdir {logdir} is the logdir of the run being served: its "
                             "metrics.jsonl is the training's; give serve a --logdir of its "
                             f"own (default {DEFAULT_LOGDIR})")


def main(resolved: cfg.Resolved, args: argparse.Namespace | None = None) -> int:
    """``seed-rl serve``: serve until a stop criterion or a signal; the exit code."""
    target = getattr(args, "checkpoint", None)
    follow = getattr(args, "follow", None)
    episodes = int(getattr(args, "episodes", 0) or 0)
    greedy = bool(getattr(args, "greedy", False))
    if not target and not follow:
        raise SystemExit("give --checkpoint RUN_OR_FILE (a checkpoint file or a run's logdir), "
                         "or --follow RUN to serve a running job's newest checkpoint")
    if episodes < 0:
        raise SystemExit(f"--episodes must be >= 0 (0: no limit), got {episodes}")
    follow_run = Path(follow) if follow else None
    check_logdir(resolved.config.logdir if "logdir" in resolved.given else DEFAULT_LOGDIR,
                 run_directory(target) if target else None, follow_run)
    stop = threading.Event()
    reason: list[str] = []

    def handle(signum, _frame) -> None:
        reason.append(f"received {signal.Signals(signum).name}")
        stop.set()
        if server is not None:
            server.request_stop(reason[-1])

    server: PolicyServer | None = None
    device = select_device(resolved.config.device)
    if target:
        served = load_served(target, device)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    if not target:
        served = wait_for_first(follow_run, device, resolved.config.follow_every, stop)
        if served is None:  # stopped while waiting: nothing served, nothing to say
            print(f"seed-rl serve: stopped ({reason[-1]}) before {follow_run} had a checkpoint")
            return 0
    config = serving_config(served.config, resolved)
    server = PolicyServer(config, served, greedy=greedy, episodes=episodes, follow=follow_run)
    server.start()
    if stop.is_set():  # a signal while it started
        server.request_stop(reason[-1])
    started = time.monotonic()
    line_every = config.status_every if config.status_every > 0 else math.inf
    with LiveStatus(config, title="seed-rl serve", line_every=line_every) as status:
        rc = server.serve_forever(on_metrics=status.update)
    print_summary(server, greedy, time.monotonic() - started)
    return rc


def print_summary(server: PolicyServer, greedy: bool, seconds: float) -> None:
    """The episodes served (the first ``--episodes``), as ``seed-rl eval`` prints its own."""
    summary = server.tally.summary()
    served: Served = server.served
    print(f"seed-rl serve: {served.path} ({served.config.env}, policy version "
          f"{served.policy_version}), {server.stop_reason}")
    print(f"  {summary['episodes']} episode(s), {'greedy' if greedy else 'sampled'} actions, "
          f"{server.metrics.env_steps:,} env steps, {seconds:.1f} s")
    if summary["episodes"]:
        print(f"  return  mean {summary['episode_return_mean']:.2f}  std "
              f"{summary['episode_return_std']:.2f}  min {summary['episode_return_min']:.2f}  "
              f"max {summary['episode_return_max']:.2f}")
        print(f"  length  mean {summary['episode_length_mean']:.1f}")
    else:
        print("  no episode completed")
    sys.stdout.flush()
