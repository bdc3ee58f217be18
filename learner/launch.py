"""``seed-rl learner --replicas N``: N learner replicas on this machine, as torchrun would
start them (learner/distributed.py).

Each child gets torchrun's environment (``RANK`` = ``LOCAL_RANK``, ``WORLD_SIZE`` = N,
``MASTER_ADDR`` 127.0.0.1, a free ``MASTER_PORT``) and this process's resolved config (a
0600 file in a private temporary directory, secrets included, removed at the end), so a
child resolves nothing again. Replica r serves actors on ``--address``'s port + r. Signals
are forwarded; when one replica fails the others are stopped; the exit code is the worst.
``torchrun --nproc-per-node N -m learner ...`` starts the same group without this launcher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seed_rl.config import FIELDS, Config, validate
from seed_rl.lifetime import orphan_safe_command

log = logging.getLogger("learner.launch")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_replicas(config: Config) -> int:
    replicas = config.replicas
    master_port = _free_port()
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
            command = orphan_safe_command([sys.executable, "-m", "learner.launch", str(path)])
            children.append(subprocess.Popen(command, env=env))
        log.info("started %d learner replicas (pids %s)", replicas,
                 ", ".join(str(c.pid) for c in children))

        def forward(signum, _frame):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            failed_at = None
            while any(c.poll() is None for c in children):
                codes = [c.poll() for c in children]
                if failed_at is None and any(code not in (None, 0) for code in codes):
                    failed_at = time.monotonic()
                    log.error("a learner replica exited with %s; stopping the others",
                              [c for c in codes if c not in (None, 0)][0])
                    forward(signal.SIGTERM, None)
                if failed_at is not None and time.monotonic() - failed_at > 30:
                    for child in children:
                        if child.poll() is None:
                            child.kill()
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return max(abs(c.returncode) for c in children)


def read_config(path: str) -> Config:
    data = json.loads(Path(path).read_text())
    for name, value in data.items():  # NaN travels as null
        if value is None and FIELDS[name].type in ("float", float):
            data[name] = math.nan
    config = Config(**data)
    validate(config)
    return config


def _child(path: str) -> int:
    from learner.main import run
    from seed_rl.cli import setup_logging

    config = read_config(path)
    setup_logging(os.environ.get("SEED_RL_LOG_LEVEL", "INFO"))
    return run(config)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
