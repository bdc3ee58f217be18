"""``seed-rl learner`` (and ``python -m learner``): the learner process.

:func:`main` serves one learner (learner/running/learner.py) until a stop criterion or a
signal; with ``--replicas N`` it hands over to the launcher (learner/running/launch.py),
whose children (learner/running/replica.py) each run :func:`run`. Only rank 0 shows the
status. Exit codes: 0 when a stop criterion or a signal ended it, 1 on a failure.
"""

from __future__ import annotations

import logging
import math
import os
import signal

from learner.running.launch import launch_replicas
from learner.running.learner import Learner
from learner.serving.validation import make_spec
from learner.watching.console import LiveStatus
from seed_rl.config import Config, Resolved


def install_signal_handlers(learner: Learner) -> None:
    def handle(signum, _frame):
        learner.request_stop(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(resolved: Resolved, args=None) -> int:
    """``seed-rl learner``: serve until a stop criterion or a signal; the exit code. With
    ``--replicas N`` (and no torchrun environment) it starts N replica processes."""

    config = resolved.config
    if config.replicas > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        make_spec(config)  # an env that cannot work stops here, said once, not N times
        return launch_replicas(config)
    return run(config)


def run(config: Config) -> int:
    """Serve one learner (or one replica of a group started by torchrun or
    ``--replicas``) until it stops; the exit code. Only rank 0 shows the status."""
    learner = Learner(config)
    install_signal_handlers(learner)
    learner.start()
    if not learner.group.is_main:
        rc = learner.serve_forever()
    else:
        # On a terminal the panel follows every record; in a log (a container, a pipe) one
        # line every --status-every seconds (0: only the final one) is enough.
        line_every = config.status_every if config.status_every > 0 else math.inf
        with LiveStatus(config, title="seed-rl learner", line_every=line_every) as status:
            rc = learner.serve_forever(on_metrics=status.update)
    if learner.group.distributed:  # stopped: a late SIGTERM must not kill the exit
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
    if learner.group_broken:
        rc = rc or 1
    if learner.stuck:  # do not wait for a collective that may never return
        logging.shutdown()
        os._exit(rc)
    return rc
