"""``seed-rl learner --replicas N``: N learner replicas on this machine, as torchrun would
start them (learner/training/distributed.py).

Each child gets torchrun's environment (``RANK`` = ``LOCAL_RANK``, ``WORLD_SIZE`` = N,
``MASTER_ADDR`` 127.0.0.1, a free ``MASTER_PORT``) and this process's resolved config (a
0600 file in a private temporary directory, secrets included, removed at the end), so a
child resolves nothing again. Replica r serves actors on ``--address``'s port + r. Signals
are forwarded. When one replica fails (or is killed) the others get SIGTERM (SIGKILL
after ``STOP_GRACE_S``); the launcher then exits with that replica's code (128 + N for
signal N) and says which one it was. docs/reliability.md states what a restart resumes.
``torchrun --nproc-per-node N -m learner ...`` starts the same group without this launcher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from learner.running.ports import free_ports
from seed_rl.config import FIELDS, Config, validate
from seed_rl.lifetime import orphan_safe_command

log = logging.getLogger(__name__)

#: after one replica failed, the others get SIGTERM and this long to stop before SIGKILL
STOP_GRACE_S = 15.0


def launch_replicas(config: Config, on_signal=None) -> int:
    """Run the group until every replica exited; the exit code (module docstring).
    ``on_signal(signum)`` is called for each SIGTERM or SIGINT forwarded to the replicas."""
    replicas = config.replicas
    master_port = free_ports("127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="seed-rl-replicas-") as tmp:
        path = Path(tmp) / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(config.to_json_dict(redact=False), file)
        children = []
        for rank in range(replicas):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
                   "WORLD_SIZE": str(replicas), "LOCAL_WORLD_SIZE": str(replicas),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port)}
            command = orphan_safe_command([sys.executable, "-m", "learner.running.replica", str(path)])
            children.append(subprocess.Popen(command, env=env))
        log.info("started %d learner replicas (pids %s)", replicas,
                 ", ".join(str(c.pid) for c in children))

        def forward(signum, frame):
            if frame is not None and on_signal is not None:
                on_signal(signum)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        first_failure: tuple[int, int] | None = None  # (rank, exit code)
        try:
            failed_at = None
            while any(c.poll() is None for c in children):
                codes = [c.poll() for c in children]
                if first_failure is None:
                    failed = [r for r, code in enumerate(codes) if code not in (None, 0)]
                    if failed:
                        first_failure = (failed[0], codes[failed[0]])
                        failed_at = time.monotonic()
                        log.error("learner replica %d (pid %d) %s; stopping the others (SIGTERM)",
                                  failed[0], children[failed[0]].pid,
                                  describe_exit(codes[failed[0]]))
                        forward(signal.SIGTERM, None)
                if failed_at is not None and time.monotonic() - failed_at > STOP_GRACE_S:
                    for rank, child in enumerate(children):
                        if child.poll() is None:
                            log.error("learner replica %d (pid %d) did not stop within %g s "
                                      "of SIGTERM; killing it", rank, child.pid, STOP_GRACE_S)
                            child.kill()
                time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        codes = [c.returncode for c in children]
        if first_failure is None:
            failed = [r for r, code in enumerate(codes) if code != 0]
            first_failure = (failed[0], codes[failed[0]]) if failed else None
        if first_failure is None:
            return 0
        rank, code = first_failure
        log.error("the learner stopped because replica %d %s; run the same command to resume "
                  "from the last checkpoint", rank, describe_exit(code))
        return 128 - code if code < 0 else code


def describe_exit(code: int) -> str:
    """"exited with code 1", "was killed by SIGKILL"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def read_config(path: str) -> Config:
    data = json.loads(Path(path).read_text())
    for name, value in data.items():  # NaN travels as null
        if value is None and FIELDS[name].type in ("float", float):
            data[name] = math.nan
    config = Config(**data)
    validate(config)
    return config
