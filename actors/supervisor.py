"""``seed-rl actors``: run and supervise N actor processes.

Each actor is a child process (multiprocessing, "spawn" start method: a fresh
interpreter that imports only the actor runtime, never torch) that receives the resolved
:class:`~seed_rl.config.Config`. Children die with the supervisor, even when it is
SIGKILLed (:func:`seed_rl.lifetime.die_with_parent`: ``PR_SET_PDEATHSIG`` on Linux, a
parent watchdog elsewhere).

- A child that exits non-zero crashed: its exit reason is logged and it is restarted after
  a short backoff, at most ``max_restarts`` times within ``restart_window`` seconds; past
  that the supervisor stops every actor and exits 1 (a crash loop needs a person).
- A child that ends on a permanent error (``EXIT_PERMANENT``: an unsupported space, a
  refused handshake, a failing ``--env-import``: what a restart cannot fix) is not
  restarted: the supervisor stops every actor and exits 2. The children hand such an error
  to the supervisor (one pipe each) instead of logging it, and the supervisor logs the
  first one, once: N actors that all meet the same error say it once, not N times.
- A child that exits 0 is done (the learner said training is over) and is not restarted;
  when all are done the supervisor exits 0.
- SIGTERM / SIGINT: every child gets SIGTERM (SIGKILL after a grace period); exit 0.
- Every ``status_every`` seconds one line: connected actors, env steps/s, episodes and
  the mean return of the episodes finished since the previous line. Children report
  through one shared-memory array (:mod:`actors.counters`), one row per process whatever
  its number of env groups (``--env-groups``, :mod:`actors.groups`).

``--actor-index I`` runs the single actor I in this process instead.
"""

from __future__ import annotations

import argparse
import collections
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from typing import Any

from actors import counters as ctr
from actors.client import EXIT_CRASH, EXIT_PERMANENT, actor_id_for
from actors.groups import env_groups, run_actor
from seed_rl.config import Config, Resolved
from seed_rl.lifetime import die_with_parent

log = logging.getLogger("actors.supervisor")

STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL
RESTART_DELAY_S = 0.2  # first restart; doubles per recent crash
RESTART_DELAY_MAX_S = 5.0
POLL_S = 0.2
REPORT_MAX_CHARS = 8192  # of a permanent error handed to the supervisor (pipes buffer 64 KiB)


def main(resolved: Resolved, args: argparse.Namespace | None = None) -> int:
    """``seed-rl actors``: supervise ``num_actors`` actor processes (or, with the hidden
    ``--actor-index``, be one of them); the exit code."""
    config = resolved.config
    log_level = getattr(args, "log_level", "INFO") if args is not None else "INFO"
    actor_index = getattr(args, "actor_index", None) if args is not None else None
    if actor_index is not None:
        return run_actor(config, int(actor_index))
    return Supervisor(config, log_level=str(log_level)).run()


# ---------------------------------------------------------------------------------------
# the child side


def _child_main(
    config: Config, actor_index: int, shared: Any, log_level: str, parent_pid: int,
    reports: multiprocessing.connection.Connection,
) -> None:
    die_with_parent(parent_pid)  # before anything else: never outlive the supervisor
    from seed_rl.cli import setup_logging

    setup_logging(log_level)
    lock = threading.Lock()  # the groups' threads share the pipe

    def report(actor_id: str, message: str) -> None:  # a permanent error: the supervisor's
        with lock:  # cut short: a message the pipe cannot buffer would block the exit
            reports.send((actor_id, message[:REPORT_MAX_CHARS]))

    sys.exit(run_actor(config, actor_index, counters=ctr.Counters(shared, actor_index),
                       report=report))


# ---------------------------------------------------------------------------------------
# the supervisor side


def describe_exit(exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    meaning = {EXIT_CRASH: " (crashed)", EXIT_PERMANENT: " (a permanent error)"}
    return f"exited with code {exitcode}{meaning.get(exitcode, '')}"


class _Child:
    def __init__(self, index: int, actor_id: str):
        self.index = index
        self.actor_id = actor_id
        self.process: Any = None
        self.reports: Any = None  # the reading end of its permanent-error pipe
        self.done = False  # exited 0
        self.restart_at: float | None = None
        self.crashes: collections.deque[float] = collections.deque()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None


class Supervisor:
    def __init__(self, config: Config, *, log_level: str = "INFO"):
        self.config = config
        self.log_level = log_level
        self.context = mp.get_context("spawn")
        self.shared = self.context.RawArray("d", config.num_actors * ctr.WIDTH)
        self.children = [_Child(i, actor_id_for(config, i)) for i in range(config.num_actors)]
        self._signal: str | None = None
        self._last_status = (time.monotonic(), 0.0, 0.0, 0.0)

    # -- processes -----------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        child.restart_at = None
        child.reports, writer = self.context.Pipe(duplex=False)
        child.process = self.context.Process(
            target=_child_main,
            args=(self.config, child.index, self.shared, self.log_level, os.getpid(), writer),
            name=f"seed-rl-actor-{child.index}",
        )
        child.process.start()
        writer.close()  # the child has its own copy
        log.debug("actor %d (%s) started as pid %d", child.index, child.actor_id, child.process.pid)

    def _stop_all(self) -> None:
        live = [c for c in self.children if c.alive]
        if live:
            log.info("stopping %d actor(s)", len(live))
        for child in live:
            child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        while True:
            live = [c for c in self.children if c.alive]
            remaining = deadline - time.monotonic()
            if not live or remaining <= 0:
                break
            mp.connection.wait([c.process.sentinel for c in live], timeout=remaining)
        for child in live:
            log.warning(
                "actor %d (%s) did not stop within %.0f s; killing it",
                child.index,
                child.actor_id,
                STOP_GRACE_S,
            )
            child.process.kill()
        for child in self.children:
            if child.process is not None:
                child.process.join(timeout=STOP_GRACE_S)
                child.process.close()
                child.process = None
            self._close_reports(child)
            ctr.Counters(self.shared, child.index).set_connected(False)

    @staticmethod
    def _close_reports(child: _Child) -> list[tuple[str, str]]:
        """What ``child`` reported (``(actor id, permanent error)`` pairs); closes the pipe."""
        reports: list[tuple[str, str]] = []
        if child.reports is None:
            return reports
        try:
            while child.reports.poll():
                reports.append(child.reports.recv())
        except (EOFError, OSError):  # the child's end is closed: all read
            pass
        child.reports.close()
        child.reports = None
        return reports

    def _on_exit(self, child: _Child, now: float) -> int | None:
        """Handle a child that exited: None to go on, or the supervisor's exit code (a
        permanent error, or the crash-loop limit exceeded)."""
        exitcode = child.process.exitcode
        child.process.join()
        child.process.close()
        child.process = None
        reports = self._close_reports(child)
        ctr.Counters(self.shared, child.index).set_connected(False)
        if exitcode == 0:
            child.done = True
            log.info("actor %d (%s) finished", child.index, child.actor_id)
            return None
        if exitcode == EXIT_PERMANENT:
            actor_id, message = reports[0] if reports else (child.actor_id, "")
            log.error(
                "actor %d (%s): %s; a permanent error, which a restart cannot fix: stopping "
                "every actor (exit code %d)",
                child.index,
                actor_id,
                message or f"exited with code {exitcode} (its log above says why)",
                EXIT_PERMANENT,
            )
            return EXIT_PERMANENT
        window, limit = self.config.restart_window, self.config.max_restarts
        while child.crashes and now - child.crashes[0] > window:
            child.crashes.popleft()
        if len(child.crashes) >= limit:
            log.error(
                "actor %d (%s) %s; it was restarted %d time(s) within %g s, the crash-loop "
                "limit (--max-restarts %d, --restart-window %g): giving up",
                child.index,
                child.actor_id,
                describe_exit(exitcode),
                len(child.crashes),
                window,
                limit,
                window,
            )
            return 1
        child.crashes.append(now)
        delay = min(RESTART_DELAY_MAX_S, RESTART_DELAY_S * 2 ** (len(child.crashes) - 1))
        child.restart_at = now + delay
        log.warning(
            "actor %d (%s) %s; restarting it in %.1f s (restart %d of at most %d within %g s)",
            child.index,
            child.actor_id,
            describe_exit(exitcode),
            delay,
            len(child.crashes),
            limit,
            window,
        )
        return None

    # -- status --------------------------------------------------------------------------

    def _status(self, now: float) -> None:
        rows = [ctr.Counters(self.shared, c.index) for c in self.children]
        connected = sum(r.connected for r in rows)
        steps = float(sum(r.steps for r in rows))
        episodes = float(sum(r.episodes for r in rows))
        return_sum = sum(r.return_sum for r in rows)
        then, last_steps, last_episodes, last_return_sum = self._last_status
        self._last_status = (now, steps, episodes, return_sum)
        rate = (steps - last_steps) / max(now - then, 1e-9)
        new_episodes = episodes - last_episodes
        mean = f"{(return_sum - last_return_sum) / new_episodes:.2f}" if new_episodes else "n/a"
        trips = [r.round_trip_ms for r in rows if r.round_trip_ms[0] > 0]
        p50 = max((t[0] for t in trips), default=float("nan"))
        p99 = max((t[1] for t in trips), default=float("nan"))
        log.info(
            "status: %d/%d actors connected | %.0f env steps/s | %d episodes (+%d) | "
            "mean return %s | round trip p50 %.2f ms, p99 %.2f ms (worst actor)",
            connected,
            len(rows),
            rate,
            episodes,
            new_episodes,
            mean,
            p50,
            p99,
        )

    # -- main loop -----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._signal is not None:  # a second signal: do not wait for the grace period
            for child in self.children:
                if child.alive:
                    child.process.kill()
        self._signal = signal.Signals(signum).name

    def run(self) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        config = self.config
        groups = env_groups(config)
        log.info(
            "starting %d actor(s) x %d env(s) of %s for the learner at %s%s",
            config.num_actors,
            config.envs_per_actor,
            config.env or "(the learner's env)",
            config.learner,
            f", each in {groups} groups (--env-groups {config.env_groups})" if groups > 1 else "",
        )
        for child in self.children:
            self._start(child)
        self._last_status = (time.monotonic(), 0.0, 0.0, 0.0)
        next_status = time.monotonic() + config.status_every if config.status_every > 0 else None
        while True:
            if self._signal is not None:
                log.info("received %s: stopping", self._signal)
                return 0
            live = [c for c in self.children if c.alive]
            if not live and all(c.done for c in self.children):
                log.info("all %d actor(s) finished", len(self.children))
                return 0
            now = time.monotonic()
            timeout = POLL_S
            if next_status is not None:
                timeout = max(0.0, min(timeout, next_status - now))
            if live:
                mp.connection.wait([c.process.sentinel for c in live], timeout=timeout)
            else:
                time.sleep(timeout)
            now = time.monotonic()
            for child in self.children:
                exited = child.process is not None and child.process.exitcode is not None
                code = self._on_exit(child, now) if exited else None
                if code is not None:
                    return code
            if self._signal is not None:
                continue
            for child in self.children:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
            if next_status is not None and now >= next_status:
                self._status(now)
                next_status = now + config.status_every
