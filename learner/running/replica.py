"""One learner replica started by the launcher (learner/running/launch.py):
``python -m learner.running.replica CONFIG_JSON`` with torchrun's variables in its
environment. It reads the launcher's resolved config (nothing is resolved again) and runs
the learner process (learner/running/main.py), which joins the replica group.
"""

from __future__ import annotations

import os
import sys

from learner.running.launch import read_config
from learner.running.main import run
from seed_rl.cli import run_role, setup_logging


def main(path: str) -> int:
    """Run the replica; its exit code. An error that stops it before it serves reads as
    ``seed-rl learner``'s own (one prefix, :func:`seed_rl.cli.run_role`)."""
    config = read_config(path)
    setup_logging(os.environ.get("SEED_RL_LOG_LEVEL", "INFO"))
    return run_role("learner", lambda: run(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
