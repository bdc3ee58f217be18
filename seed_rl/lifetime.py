"""Child processes that do not outlive their parent, even when the parent is SIGKILLed.

Two ways in, one mechanism:

- in the child, :func:`die_with_parent` (the actor supervisor's spawned children call it
  first thing);
- for a command started with ``subprocess``, :func:`orphan_safe_command` wraps it as
  ``python -m seed_rl.lifetime PARENT_PID ARGV...``: that interpreter arms the death signal
  and then ``exec``s ARGV, which keeps it. (A ``preexec_fn`` could do the same, but it is
  unsafe in a process that has threads, as the learner and ``seed-rl train`` do.)

On Linux the kernel sends SIGKILL to the child when the parent dies
(``prctl(PR_SET_PDEATHSIG)``). Strictly, when the parent *thread* that forked it exits: start
such children from a thread that lives as long as the process (the main thread). Either way
the child then checks that its parent is still the one it expects: a parent that died before
the signal was armed cannot trigger it, so the child exits at once (exit code 1) instead.
Elsewhere there is no such signal: :func:`die_with_parent` falls back to a daemon thread
that polls the parent id, which does not survive an ``exec``, so a wrapped command is then
protected only by the "parent already gone" check.

Torch-free: the actors import it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PARENT_GONE_EXIT_CODE = 1
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCHDOG_POLL_S = 1.0


def _arm_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int) -> None:
    """Make sure this process does not outlive ``parent_pid`` (its parent).

    Arms the Linux parent-death signal, then exits at once (code 1) if the parent is
    already gone (this process was re-parented). Where the signal cannot be armed, a
    daemon thread checks the parent id every second and exits the process when it changes.
    """
    armed = _arm_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(PARENT_GONE_EXIT_CODE)
    if not armed:

        def watchdog() -> None:
            while os.getppid() == parent_pid:
                time.sleep(_WATCHDOG_POLL_S)
            os._exit(PARENT_GONE_EXIT_CODE)

        threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def orphan_safe_command(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped so that it dies with ``parent_pid`` (default: this process, the
    one that will start it): ``[python, -m, seed_rl.lifetime, PARENT_PID, *argv]``.

    ``argv[0]`` is looked up on PATH when it has no slash, as a shell would.
    """
    if not argv:
        raise ValueError("orphan_safe_command needs a command to run")
    parent = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "seed_rl.lifetime", str(parent), *argv]


def _main(args: list[str]) -> None:
    if len(args) < 2 or not args[0].isdigit():
        sys.stderr.write("usage: python -m seed_rl.lifetime PARENT_PID COMMAND [ARGS...]\n")
        sys.exit(2)
    die_with_parent(int(args[0]))
    command = args[1:]
    os.execvp(command[0], command)  # the death signal survives exec


if __name__ == "__main__":
    _main(sys.argv[1:])
