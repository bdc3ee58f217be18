"""``seed-rl train``'s run, as its parts share and report it: the state the signal
handlers, the actor monitor and the main thread share (:class:`RunState`), the totals of a
finished run (:class:`RunTotals`, from the learner in this process or, with replicas, from
rank 0's ``metrics.jsonl``), the learning curve, and the one-screen summary at exit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from learner.running.local_actors import LocalActors
from learner.watching.console import format_return
from seed_rl.config import Config

log = logging.getLogger("train")


@dataclasses.dataclass
class RunState:
    """What the signal handlers and the actor monitor share with the main thread."""

    signals: list[int] = dataclasses.field(default_factory=list)
    actors_failure: str = ""
    learner: Any = None
    actors: LocalActors | None = None

    def stop_actors(self) -> None:
        """Stop the actors once training is over; a non-zero exit then is only a warning
        (unless their failure or a signal already explains it)."""
        code = self.actors.stop() if self.actors is not None else None
        if code not in (0, None) and not self.actors_failure and not self.signals:
            log.warning("the actor processes exited with code %d after training", code)


@dataclasses.dataclass
class RunTotals:
    """What the summary reports of a finished run."""

    env_steps: int
    train_steps: int
    episodes: int
    final_return: float  # mean of the last ``window`` episodes (nan: none finished)
    best_return: float
    window: int
    resumed_from: Path | None

    @classmethod
    def of_learner(cls, learner: Any) -> RunTotals:
        metrics = learner.metrics
        return cls(metrics.env_steps, metrics.train_steps, metrics.episodes,
                   metrics.return_mean(), metrics.best_return_mean, len(metrics.returns),
                   learner.resumed_from)


def write_curve(config: Config) -> Path | None:
    """``LOGDIR/learning_curve.png``; None (and the traceback in the log) when it failed."""
    try:
        from learner.watching.curves import plot_learning_curve

        return plot_learning_curve(config.logdir, title=config.env,
                                   target_return=config.target_return)
    except Exception:
        log.exception("could not write the learning curve")
        return None


def summary_lines(config: Config, totals: RunTotals, wall_s: float, curve: Path | None,
                  outcome: str) -> list[str]:
    """The one-screen summary printed at exit."""
    logdir = Path(config.logdir)
    ckpts = sorted((logdir / "checkpoints").glob("ckpt-*.pt"))
    lines = [
        f"seed-rl train: {config.env}: {outcome}",
        f"  env steps     {totals.env_steps:,} ({totals.train_steps:,} train steps, "
        f"{totals.episodes:,} episodes)",
        f"  wall time     {wall_s:.1f} s (this command)",
        f"  mean return   final {format_return(totals.final_return)}, best "
        f"{format_return(totals.best_return)} (mean of the last {totals.window} episodes)"
        if math.isfinite(totals.final_return)
        else "  mean return   - (no episode finished)",
        f"  written to    {logdir}/",
        f"    checkpoint  {ckpts[-1] if ckpts else '(none)'}",
        f"    curve       {curve if curve else '(not written)'}",
        f"    metrics     {logdir / 'metrics.jsonl'} and {logdir / 'tb'}/ (TensorBoard)",
        f"    config      {logdir / 'config.json'}",
        f"  watch it      seed-rl eval --checkpoint {logdir} --greedy --video "
        f"{logdir / 'episodes.gif'}",
    ]
    if totals.resumed_from is not None:
        lines.insert(2, f"  resumed from  {totals.resumed_from}")
        lines.insert(3, "                (to start afresh: --no-resume, or another --logdir)")
    return lines


def totals_from_metrics(logdir: Path, resumed_from: Path | None) -> RunTotals:
    """The summary's totals from the last ``metrics.jsonl`` record (torn lines skipped)."""
    records = []
    path = logdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    last = records[-1] if records else {}
    means = [r["episode_return_mean"] for r in records
             if isinstance(r.get("episode_return_mean"), (int, float))]
    episodes = int(last.get("episodes", 0))
    return RunTotals(int(last.get("env_steps", 0)), int(last.get("train_steps", 0)), episodes,
                     float(last.get("episode_return_mean") or math.nan),
                     max(means) if means else -math.inf, min(episodes, 100), resumed_from)
