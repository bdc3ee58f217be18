"""Run ``seed-rl conformance`` on a client command as a real process and read its verdicts
(tests/integration/test_conformance.py, test_cpp_actor.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from learner.conformance.rules import RULE_NAMES
from support.procs import REPO

BROKEN_CLIENT = REPO / "tests" / "support" / "broken_clients.py"
#: short bounds for clients that fail: the checker itself must finish well within RUN_BOUND
FLAGS = ("--connect-timeout", "20", "--reconnect-timeout", "15", "--exit-timeout", "10")
RUN_BOUND = 300  # s: a checker that has not finished by then hangs


def conformance(*command: str, flags: tuple[str, ...] = FLAGS) -> tuple[int, str, dict[str, str]]:
    """Run the checker on ``command``; its exit code, output and verdict per rule."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    done = subprocess.run([sys.executable, "-m", "seed_rl", "conformance", *flags, "--",
                           *command], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=RUN_BOUND)
    output = done.stdout + done.stderr
    verdicts = {}
    for name in RULE_NAMES:
        found = re.search(rf"^  {re.escape(name)} +(held|BROKEN|not reached) ", done.stdout,
                          re.MULTILINE)
        assert found, f"no verdict for {name!r}:\n{output}"
        verdicts[name] = found.group(1)
    return done.returncode, output, verdicts
