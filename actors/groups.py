"""One actor process: its K environments in G groups, each its own learner session, so the
round trip of one group hides behind the env steps of another (docs/architecture.md,
"Threads").

With one request in flight an actor steps K envs per (round trip + step time): an actor a
few to tens of milliseconds from its learner spends most of its time waiting. With G
groups (G = 2 is double buffering, as in Sample Factory's double-buffered sampling),
group g's thread sends its request and waits on the network, the GIL released, while
another group's thread steps its envs. To the learner each group is a whole actor: its
own actor id (``<actor id>.g<g>``; the plain actor id when G = 1), handshake of K_g envs,
Step stream and reconnects, so the wire contract and the slot convention hold per session
unchanged. The groups share the process's run id (one incarnation), its gRPC channel
(``actors/channel.py``, one connection) and its row of counters (the status line sums
them: one row per process, not per group).

- ``--env-groups``: a number, or ``auto``: 2 when ``--learner`` is another machine, 1 on
  loopback (where the learner shares this machine's cores and double buffering measured
  no gain; docs/architecture.md, "Threads").
- Split: contiguous, as even as possible, larger groups first (K = 5, G = 2: envs 0-2 and
  3-4); every group has at least one env (``--env-groups`` > K is refused). Seeds: env i
  of the process is seeded ``env_seeds(seed, actor id, K)[i]`` whatever G, so the groups'
  seeds together are exactly the seeds of G = 1: distinct and deterministic.
- One group ends, the process ends: a permanent error (exit 2) or a crash (exit 1) in any
  group stops the others (each closes its stream cleanly) and is the process's exit code;
  ``training_over`` in any group ends all with 0; a stop (signal, event) stops all.
- Group 0 finds the environment (asks the learner when there is no ``--env``, runs
  ``--env-import`` once); the others start once it has made its envs, with what it found.

Torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import uuid
from typing import Any

from actors.channel import SharedChannels
from actors.client import EXIT_CRASH, EXIT_OK, EXIT_PERMANENT, ActorClient, Report, actor_id_for
from actors.counters import Counters
from actors.env_loop import env_seeds
from seed_rl import wire
from seed_rl.config import Config, ConfigError

log = logging.getLogger("actors.groups")

AUTO = "auto"
AUTO_REMOTE_GROUPS = 2  # auto's G when the learner is on another machine
POLL_S = 0.1  # how often the process's main thread looks at its groups and stop event


def env_groups(config: Config) -> int:
    """G for this process: ``--env-groups``, or for ``auto`` 2 when the learner is another
    machine (round trips worth hiding) and 1 on loopback, at most K; 1 with
    ``--deterministic``. ConfigError for a
    value that is not ``auto`` or an integer in [1, K]."""
    value, k = str(config.env_groups).strip().lower(), int(config.envs_per_actor)
    if config.deterministic:  # one session per process (seed_rl/config/checks.py)
        return 1
    if value == AUTO:
        return min(k, 1 if wire.is_loopback(config.learner) else AUTO_REMOTE_GROUPS)
    if not (value.isdecimal() and 1 <= int(value) <= k):
        raise ConfigError(f"--env-groups must be auto or an integer from 1 to --envs-per-actor "
                          f"{k} (every group needs an environment), got {config.env_groups!r}")
    return int(value)


def split_envs(num_envs: int, groups: int) -> list[range]:
    """The env indices of each group: contiguous, sizes differ by at most one, larger
    first. ``split_envs(5, 2) == [range(0, 3), range(3, 5)]``."""
    if not 1 <= groups <= num_envs:
        raise ValueError(f"cannot split {num_envs} environments into {groups} groups")
    size, extra = divmod(num_envs, groups)
    bounds = [g * size + min(g, extra) for g in range(groups + 1)]
    return [range(start, end) for start, end in zip(bounds, bounds[1:], strict=False)]


def group_actor_id(actor_id: str, group: int, groups: int) -> str:
    """The learner-side id of group ``group``: ``actor_id`` itself when there is one group
    (as before groups existed), else ``<actor_id>.g<group>``."""
    return actor_id if groups == 1 else f"{actor_id}.g{group}"


class ActorProcess:
    """The G groups of one actor process, each an :class:`ActorClient` in its own thread.

    ``run()`` returns the process's exit code (module docstring). ``stop`` is every
    group's: set it (a signal handler does) to stop them all. ``stop_requested``, the
    caller's event, is passed on to it. ``counters`` is the process's row. ``report``
    (the supervisor's) gets a permanent error instead of the log.
    """

    def __init__(self, config: Config, actor_index: int, *,
                 stop_requested: threading.Event | None = None,
                 counters: Counters | None = None, report: Report | None = None):
        self.config = config
        self.actor_index = actor_index
        self.actor_id = actor_id_for(config, actor_index)
        self.num_groups = env_groups(config)
        self.stop = threading.Event()
        self.stop_reason = ""  # e.g. the signal that stopped it, for the log
        self.stop_requested = stop_requested
        self.report = report
        self.counters = counters if counters is not None else Counters()
        self.run_id = uuid.uuid4().hex  # this incarnation, shared by its groups
        self.clients: list[ActorClient] = []
        seeds = env_seeds(config.seed, self.actor_id, int(config.envs_per_actor))
        self._groups = [(group_actor_id(self.actor_id, g, self.num_groups),
                         [seeds[i] for i in envs])
                        for g, envs in enumerate(split_envs(len(seeds), self.num_groups))]
        self._group_counters = self.counters.groups(self.num_groups)
        self._channels = SharedChannels()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._first_outcome = ""  # how the first group to end ended ("training_over", ...)
        self._failure: tuple[str, int] | None = None  # the first group that exited non-zero

    def run(self) -> int:
        if self.num_groups > 1:
            log.info("actor %s: %d envs in %d groups (%s), one learner session each: the "
                     "actor steps one group while the learner answers another", self.actor_id,
                     int(self.config.envs_per_actor), self.num_groups,
                     ", ".join(f"{gid}: {len(seeds)}" for gid, seeds in self._groups))
        leader = self._start(0, self.config, env_known=False)
        followers_waiting = self.num_groups > 1
        while any(thread.is_alive() for thread in self._threads):
            if self.stop_requested is not None and self.stop_requested.is_set():
                self.stop.set()
            if followers_waiting and (self.stop.is_set() or leader.envs is not None):
                followers_waiting = False
                if not self.stop.is_set():  # group 0 found the env: the others make theirs
                    found = dataclasses.replace(self.config, env=leader.env_id,
                                                env_kwargs=dict(leader.env_kwargs),
                                                env_wrapper=list(leader.env_wrapper))
                    for group in range(1, self.num_groups):
                        self._start(group, found, env_known=True)
            self._wake.wait(POLL_S)
            self._wake.clear()
        return self._finish()

    def _start(self, group: int, config: Config, env_known: bool) -> ActorClient:
        actor_id, seeds = self._groups[group]
        client = ActorClient(config, self.actor_index, stop=self.stop,
                             counters=self._group_counters[group], actor_id=actor_id,
                             seeds=seeds, run_id=self.run_id, channels=self._channels,
                             env_known=env_known, report=self.report)
        thread = threading.Thread(target=self._run_group, args=(client,), daemon=True,
                                  name=f"actor-{actor_id}")
        self.clients.append(client)
        self._threads.append(thread)
        thread.start()
        return client

    def _run_group(self, client: ActorClient) -> None:
        """A group's thread: run it; its end, whatever it is, stops the other groups."""
        try:
            code = client.run()
        except Exception:  # a bug, an environment that raised: logged, and the exit code
            log.exception("actor %s crashed", client.actor_id)
            code = EXIT_CRASH
        with self._lock:
            self._first_outcome = self._first_outcome or client.outcome or "failed"
            if code != EXIT_OK and self._failure is None:
                self._failure = (client.actor_id, code)
        self.stop.set()
        self._wake.set()

    def _finish(self) -> int:
        """One line for the process's end; its exit code (the first failure's, else 0)."""
        if self._failure is not None:
            failed_id, code = self._failure
            if self.num_groups > 1:
                log.error("actor %s: group %s exited with code %d; stopped the other groups too",
                          self.actor_id, failed_id, code)
            return code
        if self._first_outcome == "training_over" and not self.stop_reason:
            log.info("actor %s: the learner says training is over; exiting", self.actor_id)
        else:
            log.info("actor %s: stopped%s", self.actor_id,
                     f" by {self.stop_reason}" if self.stop_reason else "")
        return EXIT_OK


def run_actor(config: Config, actor_index: int, stop: threading.Event | None = None,
              counters: Counters | None = None, report: Report | None = None) -> int:
    """Run actor process ``actor_index`` (its G groups) until training is over or it is
    stopped; returns its exit code. A permanent error goes to ``report`` when given (the
    supervisor's), else to the log.

    Without ``stop``, and in the main thread, SIGTERM and SIGINT stop it cleanly (the
    previous handlers are restored on return). Never raises: an unexpected exception is
    logged and returns ``EXIT_CRASH``.
    """
    previous: dict[int, Any] = {}
    try:
        process = ActorProcess(config, actor_index, stop_requested=stop, counters=counters,
                               report=report)
        if stop is None and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, _frame: Any) -> None:
                process.stop_reason = process.stop_reason or signal.Signals(signum).name
                process.stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        return process.run()
    except ConfigError as error:
        if report is not None:
            report(actor_id_for(config, actor_index), str(error))
        else:
            log.error("actor %s: %s", actor_id_for(config, actor_index), error)
        return EXIT_PERMANENT
    except Exception:
        log.exception("actor %s crashed", actor_id_for(config, actor_index))
        return EXIT_CRASH
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
