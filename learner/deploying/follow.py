"""Which checkpoint ``seed-rl serve`` serves: the one it starts from, and with ``--follow RUN``
each newer one of a running training job as it appears.

A checkpoint is read with the checks of learner/training/checkpoint.py (torn, truncated,
non-finite files are refused). :func:`load_served` reads ``--checkpoint`` (a file, or a
logdir's newest readable checkpoint) and ends the command with one line when it cannot;
:func:`wait_for_first` waits for the first checkpoint of a run that has none yet.

:class:`CheckpointFollower` is the ``follow`` thread: every ``--follow-every`` seconds it
lists RUN's checkpoints, and one written after the served one (by modification time) is
read, checked against what is served (same environment and model architecture: actors
already connected play that environment) and published through
:class:`~learner.training.weights.PublishedWeights` with its own policy version, which the
actors see in their next answers. A file that cannot be read or does not fit is logged once
and skipped (an older one that is still newer than the served one is tried, as
``checkpoint.load_latest`` does); the served policy goes on. Any other error stops the
server with a non-zero exit (never swallowed).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from learner.running.evaluate import config_from_json
from learner.training import checkpoint
from learner.training.checkpoint import CheckpointError
from learner.training.models import ActorCritic
from learner.training.weights import PublishedWeights
from seed_rl import wire
from seed_rl.config import Config, ConfigError

log = logging.getLogger("serve")

#: what a checkpoint's config must share with the served one to replace it
ENVIRONMENT_FIELDS = ("env", "env_kwargs", "env_wrapper")
MODEL_FIELDS = ("hidden_sizes", "lstm", "lstm_size", "conv_net", "normalize_observations")
WAIT_NOTE_EVERY_S = 60.0  # a progress line while waiting for a run's first checkpoint


@dataclass
class Served:
    """One checkpoint as read for serving: the file, its weights, the config it was trained
    with, its counters, and the file's (mtime_ns, size) when read."""

    path: Path
    model: dict[str, torch.Tensor]
    config: Config
    counters: dict
    stamp: tuple[int, int]

    @property
    def policy_version(self) -> int:
        return int(self.counters.get("policy_version", 0))

    @property
    def train_steps(self) -> int:
        return int(self.counters.get("train_steps", 0))

    def describe(self) -> str:
        return (f"{self.path} ({self.config.env}, policy version {self.policy_version}, "
                f"{self.train_steps} train steps)")


def read_served(path: Path, device: torch.device | str = "cpu") -> Served:
    """Read one checkpoint file; CheckpointError says what is wrong with it."""
    try:
        stat = path.stat()  # before reading: a rewrite meanwhile makes a newer stamp
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} is unreadable ({error.strerror})") from None
    state = checkpoint.load_file(path, map_location=device)
    try:
        config = config_from_json(state["config"])
    except (ConfigError, json.JSONDecodeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {path} holds no readable config ({error})") from None
    return Served(path, state["model"], config, dict(state["counters"]),
                  (stat.st_mtime_ns, stat.st_size))


def load_served(target: str | Path, device: torch.device | str = "cpu") -> Served:
    """``--checkpoint``: a file, or a logdir's newest readable checkpoint (bad newer files are
    logged and skipped). SystemExit says what is missing or broken."""
    target = Path(target)
    if not target.exists():
        raise SystemExit(f"--checkpoint {target} does not exist; give a checkpoint file or the "
                         "logdir of a run (e.g. runs/CartPole-v1)")
    candidates = [target] if target.is_file() else checkpoint.list_checkpoints(target)
    for path in candidates:
        try:
            return read_served(path, device)
        except CheckpointError as error:
            if target.is_file():
                raise SystemExit(f"--checkpoint: {one_line(error)}") from None
            log.warning("%s; trying an older checkpoint", error)
    raise SystemExit(f"no readable checkpoint in {target} (looked in "
                     f"{checkpoint.checkpoint_dir(target)}); train first with `seed-rl train "
                     f"--logdir {target}`, or serve a running job with --follow {target}")


def one_line(error: BaseException, limit: int = 400) -> str:
    """An error's text on one line, cut to ``limit`` characters (torch's are paragraphs)."""
    return wire.shorten(" ".join(str(error).split()), limit)


def run_directory(target: str | Path) -> Path:
    """The logdir a checkpoint file or a logdir belongs to (LOGDIR/checkpoints/ckpt-N.pt)."""
    path = Path(target)
    if path.is_file() or path.suffix == ".pt":
        path = path.parent
    return path.parent if path.name == "checkpoints" else path


def wait_for_first(run: Path, device: torch.device | str, interval: float,
                   stop: threading.Event) -> Served | None:
    """The first readable checkpoint of ``run``, waiting for one with a progress line every
    minute; None when ``stop`` is set first."""
    started = time.monotonic()
    noted = started
    log.info("waiting for the first checkpoint of %s (in %s)", run,
             checkpoint.checkpoint_dir(run))
    refused: set[tuple[Path, tuple[int, int]]] = set()
    while not stop.is_set():
        found = newest_after(run, (0, 0), refused, device)
        if found is not None:
            return found
        if time.monotonic() - noted >= WAIT_NOTE_EVERY_S:
            noted = time.monotonic()
            log.info("still waiting for the first checkpoint of %s (%.0f s)", run,
                     noted - started)
        stop.wait(interval)
    return None


def newest_after(run: Path, after: tuple[int, int], refused: set,
                 device: torch.device | str = "cpu",
                 check: Callable[[Served], str] | None = None) -> Served | None:
    """The newest readable checkpoint of ``run`` written after ``after`` (a stamp: mtime_ns,
    size) that ``check`` finds no fault with (``check`` returns why not, "" when it fits),
    or None. Files that fail are logged once and remembered in ``refused``."""
    stamped = []
    for path in checkpoint.list_checkpoints(run):
        try:
            stat = path.stat()
        except FileNotFoundError:  # rotated away since the listing
            continue
        stamped.append(((stat.st_mtime_ns, stat.st_size), path))
    for stamp, path in sorted(stamped, reverse=True):
        if stamp[0] <= after[0]:
            break
        if (path, stamp) in refused:
            continue
        try:
            served = read_served(path, device)
            fault = check(served) if check is not None else ""
        except CheckpointError as error:
            fault = one_line(error)
            served = None
        if not fault:
            return served
        refused.add((path, stamp))
        log.warning("not serving %s: %s; the served policy goes on", path, fault)
    return None


def incompatibility(served: Config, candidate: Config) -> str:
    """Why a checkpoint trained with ``candidate`` cannot replace one trained with ``served``
    (another environment or architecture), or "" when it can."""
    differ = [f"{name} {getattr(candidate, name)!r} (served: {getattr(served, name)!r})"
              for name in (*ENVIRONMENT_FIELDS, *MODEL_FIELDS)
              if getattr(candidate, name) != getattr(served, name)]
    if not differ:
        return ""
    return ("it was trained with another environment or model: " + ", ".join(differ)
            + "; restart seed-rl serve to serve it")


class CheckpointFollower:
    """The ``follow`` thread: publishes each newer checkpoint of ``run`` (module docstring).

    ``on_new(served)`` runs after each publication; ``on_failure(error)`` when the thread
    fails (the server then stops)."""

    def __init__(self, run: Path, served: Served, weights: PublishedWeights,
                 staging: ActorCritic, device: torch.device, interval: float,
                 on_new: Callable[[Served], None],
                 on_failure: Callable[[BaseException], None]):
        self.run = Path(run)
        self.served = served
        self.weights = weights
        self.staging = staging  # a model of the served architecture, to load candidates into
        self.device = device
        self.interval = interval
        self.on_new = on_new
        self.on_failure = on_failure
        self.refused: set[tuple[Path, tuple[int, int]]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="follow", daemon=True)

    def start(self) -> None:
        log.info("following %s: every %g s, a newer checkpoint replaces %s", self.run,
                 self.interval, self.served.path)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def poll(self) -> Served | None:
        """One look at the run: publish the newest checkpoint written after the served one
        that fits; it, or None."""
        found = newest_after(self.run, self.served.stamp, self.refused, self.device,
                             check=self._fault)
        if found is None:
            return None
        self.weights.publish(self.staging, found.policy_version)  # loaded by _fault
        self.served = found
        log.info("now serving %s", found.describe())
        self.on_new(found)
        return found

    def _fault(self, candidate: Served) -> str:
        """Why ``candidate`` cannot be served ("" when it can; then it is in ``staging``)."""
        fault = incompatibility(self.served.config, candidate.config)
        if fault:
            return fault
        try:
            self.staging.load_state_dict(candidate.model)
        except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
            first = str(error).strip().splitlines()
            return f"its weights do not fit the served model ({first[0] if first else error})"
        return ""

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.poll()
        except BaseException as error:
            log.exception("the checkpoint follower failed; serve stops")
            self.on_failure(error)
