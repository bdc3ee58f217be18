"""seed_rl.lifetime with real processes: a wrapped command dies with its parent, even a
SIGKILLed one, and never runs once its parent is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.procs import WAIT, Process, is_running

from seed_rl.lifetime import orphan_safe_command

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_wrapped_command_dies_with_a_sigkilled_parent(processes) -> None:
    # The parent starts the wrapped sleeper, prints its pid and waits; it never reaps it.
    parent_script = textwrap.dedent(f"""
        import subprocess, sys, time
        from seed_rl.lifetime import orphan_safe_command
        child = subprocess.Popen(orphan_safe_command({SLEEPER!r}))
        print("child", child.pid, flush=True)
        time.sleep(120)
    """)
    parent: Process = processes([sys.executable, "-c", parent_script])
    child = int(parent.wait_for_line(r"^child \d+$").split()[1])
    # Wait for the exec: the child is the sleeper itself now, not the lifetime wrapper.
    wait_until(lambda: "time.sleep(120)" in cmdline(child) and "seed_rl.lifetime"
               not in cmdline(child), "exec of the wrapped command")
    assert is_running(child)
    os.kill(parent.popen.pid, signal.SIGKILL)
    parent.popen.wait(WAIT)
    wait_until(lambda: not is_running(child), "death of the orphaned child")


def test_command_whose_parent_is_gone_does_not_run(tmp_path) -> None:
    marker = tmp_path / "ran"
    touch = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is nobody's parent any more (and not ours)
    result = subprocess.run(orphan_safe_command(touch, parent_pid=gone.pid), timeout=WAIT)
    assert result.returncode == 1
    assert not marker.exists()
    # The same command under its living parent runs, with its arguments intact.
    result = subprocess.run(orphan_safe_command(touch), timeout=WAIT)
    assert result.returncode == 0
    assert marker.exists()


def test_orphan_safe_command_wraps_argv() -> None:
    wrapped = orphan_safe_command(["/bin/echo", "a b", "--flag"], parent_pid=1234)
    assert wrapped == [sys.executable, "-m", "seed_rl.lifetime", "1234", "/bin/echo", "a b",
                       "--flag"]
    assert orphan_safe_command(["x"])[3] == str(os.getpid())
