"""Checkpoints: atomic writes, the previous one kept, safe loads, corruption detected.

A checkpoint is one ``torch.save`` file of plain containers and tensors (model and optimizer
state, counters, the config as JSON text, RNG states), so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects. Files are ``LOGDIR/checkpoints/
ckpt-<train_steps>.pt``, written to a temporary file, flushed, fsynced and renamed, so a
crash mid-write never leaves a torn file under the final name; the newest ``keep`` files
stay. Loading walks from the newest to older ones and skips (and reports) any that fail
to load or fail validation.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the text says which file and why."""


def checkpoint_dir(logdir: str | os.PathLike) -> Path:
    return Path(logdir) / "checkpoints"


def list_checkpoints(logdir_or_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files, newest (most train steps) first."""
    directory = Path(logdir_or_dir)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def all_finite(state_dict: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in state_dict.values()
               if isinstance(t, torch.Tensor) and t.is_floating_point())


def save(logdir: str | os.PathLike, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` (must hold "model" and "counters" with "train_steps") atomically.

    Raises CheckpointError, and writes nothing, when the model has NaN or inf weights.
    """
    if not all_finite(state["model"]):
        raise CheckpointError("refusing to write a checkpoint: the model has non-finite "
                              "weights")
    directory = checkpoint_dir(logdir)
    path = directory / f"ckpt-{int(state['counters']['train_steps']):010d}.pt"
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    payload = {"format_version": FORMAT_VERSION, **state}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as error:  # torch.save turns a failed write (a full
        # disk) into a RuntimeError of its zip writer, the OSError as its context
        cause = error.__context__ if isinstance(error.__context__, OSError) else error
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {cause}") from error
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    for torn in directory.glob(".ckpt-*.pt.tmp-*"):  # left by a writer killed mid-write
        if torn != tmp:
            log.info("removing %s, the remains of an interrupted checkpoint write", torn.name)
            torn.unlink(missing_ok=True)
    return path


def load_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate one checkpoint file; CheckpointError says what is wrong with it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torn, truncated, not a checkpoint at all
        # the first line of the reason only: torch's unpickler explains itself in a page
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(error).__name__}: "
                              f"{reason})") from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a seed-rl checkpoint of format "
                              f"{FORMAT_VERSION}")
    for key in ("model", "optimizer", "counters", "config"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} has no {key!r} entry")
    if not all_finite(state["model"]):
        raise CheckpointError(f"checkpoint {path} has non-finite weights")
    return state


def load_latest(logdir_or_file: str | os.PathLike,
                map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
    """The newest loadable checkpoint of a logdir (or the given file); None if there is none.

    Bad files are skipped with a warning naming them and the reason, so a crash during a
    write or a full disk costs at most the newest checkpoint.
    """
    target = Path(logdir_or_file)
    candidates = [target] if target.is_file() else list_checkpoints(target)
    for path in candidates:
        try:
            return load_file(path, map_location), path
        except CheckpointError as error:
            if target.is_file():
                raise
            log.warning("%s; trying an older checkpoint", error)
    return None


def capture_rng() -> dict:
    """The torch RNG states (CPU, and every CUDA device when there is one): action sampling
    in the batcher is the learner's only randomness."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Restore what :func:`capture_rng` captured (CUDA states only where CUDA is)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
