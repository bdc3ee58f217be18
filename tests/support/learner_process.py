"""Real learner and actor processes for the fault, fuzz and security tests.

``python -m learner`` and ``python -m actors`` run exactly what ``seed-rl learner`` and
``seed-rl actors`` run. Helpers read what a run leaves behind (the learner's log lines,
``metrics.jsonl``, checkpoints) and the processes' memory from /proc; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from support.procs import WAIT, Process, children_of

T = TypeVar("T")

#: fast, small learner settings for tests; flags given later override them
LEARNER_DEFAULTS = (
    "--device cpu --log-every 0.2 --checkpoint-every 3600 --max-wait-ms 1 "
    "--unroll-length 10 --batch-size 8 --hidden-sizes 32,32"
)
ACTOR_DEFAULTS = "--status-every 0"  # and the default reconnect backoff

SERVING = re.compile(r"learner serving .* on (?P<host>\S+):(?P<port>\d+) ")
RESUMED = re.compile(
    r"resumed from (?P<path>\S+): (?P<env_steps>\d+) env steps, (?P<train_steps>\d+) train "
    r"steps, policy version (?P<policy_version>\d+)"
)


def learner_command(logdir: Path, port: int, flags: str = "") -> list[str]:
    """``python -m learner`` on 127.0.0.1:``port`` with ``logdir`` and extra ``flags``."""
    return [
        sys.executable, "-m", "learner", "--address", f"127.0.0.1:{port}",
        "--logdir", str(logdir), *LEARNER_DEFAULTS.split(), *flags.split(),
    ]  # fmt: skip


def actors_command(port: int, flags: str = "") -> list[str]:
    """``python -m actors`` (the supervisor) for the learner on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "actors", "--learner", f"127.0.0.1:{port}",
        *ACTOR_DEFAULTS.split(), *flags.split(),
    ]  # fmt: skip


def wait_for(
    predicate: Callable[[], T], what: str, timeout: float = WAIT, process: Process | None = None
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s
    (with ``process``'s output, and at once if that process has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        detail = f"\n--- output ---\n{process.text}" if process is not None else ""
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"exited ({process.popen.returncode}) before {what}{detail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s{detail}")
        time.sleep(0.05)


def read_metrics(logdir: Path) -> list[dict]:
    """The complete lines of ``logdir/metrics.jsonl`` (a line being written is skipped)."""
    path = Path(logdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            records.append(json.loads(line))
    return records


def last_metric(logdir: Path, key: str, default: float = 0) -> float:
    """``key`` of the newest metrics line that has it (``default`` when none does)."""
    for record in reversed(read_metrics(logdir)):
        if record.get(key) is not None:
            return record[key]
    return default


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``, bytes (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def actor_pids(supervisor: Process, expected: int) -> list[int]:
    """PIDs of the supervisor's actor children (spawned interpreters), once ``expected``
    of them run."""

    def find() -> list[int]:
        pids = []
        for pid in children_of(supervisor.popen.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(pid)
        return pids if len(pids) >= expected else []

    return wait_for(find, f"{expected} actor processes", process=supervisor)
