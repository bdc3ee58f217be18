"""``LOGDIR/learning_curve.png``: the mean return against env steps and against wall time.

Read from ``LOGDIR/metrics.jsonl`` (one :meth:`learner.watching.metrics.Metrics.emit` record per
line). A resumed run appends to the same file and its ``elapsed`` starts again from 0, so
the wall-time axis is cumulative training time: each restart continues where the previous
run's last record left off (the time between runs is not counted).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.png"


@dataclass
class Curve:
    """The points of a learning curve, one per metrics record that had a mean return."""

    env_steps: list[int] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)  # seconds, cumulative over runs
    returns: list[float] = field(default_factory=list)  # mean of the last 100 episodes
    eval_steps: list[int] = field(default_factory=list)
    eval_returns: list[float] = field(default_factory=list)  # greedy evaluations
    runs: int = 0  # how many runs (the first and each resume) wrote the file


def metrics_lines(path: Path) -> Iterator[str]:
    """The lines of a metrics file: ``metrics.jsonl``, or a gzip-compressed copy (``.gz``,
    as benchmarks/learning.py --suite --compact keeps them)."""
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as file:
        yield from file


def metrics_records(path: Path) -> Iterator[dict]:
    """The records of a metrics file (see :func:`metrics_lines`); lines that are not JSON
    objects (a torn last line after a crash, a blank line) are skipped."""
    for line in metrics_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def read_curve(metrics_path: str | os.PathLike) -> Curve:
    """Parse ``metrics.jsonl`` (see :func:`metrics_records`)."""
    curve = Curve()
    offset, previous_elapsed, previous_started = 0.0, None, None
    path = Path(metrics_path)
    if not path.is_file():
        return curve
    for record in metrics_records(path):
        elapsed = record.get("elapsed")
        if not isinstance(elapsed, (int, float)):
            continue
        started = record.get("run_started")  # older files: elapsed going back
        if previous_elapsed is None or (
                started != previous_started if started is not None
                else elapsed < previous_elapsed):  # a new run
            offset += previous_elapsed or 0.0
            curve.runs += 1
        previous_elapsed, previous_started = elapsed, started
        steps = record.get("env_steps")
        mean = record.get("episode_return_mean")
        if isinstance(mean, (int, float)) and math.isfinite(mean) and steps is not None:
            curve.env_steps.append(int(steps))
            curve.wall_time.append(offset + float(elapsed))
            curve.returns.append(float(mean))
        evaluated = record.get("eval/episode_return_mean")
        if isinstance(evaluated, (int, float)) and math.isfinite(evaluated):
            curve.eval_steps.append(int(steps or 0))
            curve.eval_returns.append(float(evaluated))
    return curve


def plot_learning_curve(
    logdir: str | os.PathLike, *, title: str = "", target_return: float = math.nan
) -> Path:
    """Write ``LOGDIR/learning_curve.png`` from ``LOGDIR/metrics.jsonl``; returns its path.

    Two panels: mean return (last 100 episodes) against env steps and against wall time;
    greedy evaluations as points, the target return as a dashed line. A run without any
    finished episode still gets a (labelled, empty) figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed
    import matplotlib.pyplot as plt

    logdir = Path(logdir)
    curve = read_curve(logdir / "metrics.jsonl")
    figure, (by_steps, by_time) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    try:
        by_steps.plot(
            curve.env_steps,
            curve.returns,
            color="tab:blue",
            label="mean return (last 100 episodes)",
        )
        by_time.plot(curve.wall_time, curve.returns, color="tab:blue")
        if curve.eval_returns:
            by_steps.plot(
                curve.eval_steps,
                curve.eval_returns,
                "o",
                color="tab:orange",
                markersize=3,
                label="greedy evaluation",
            )
        for axes in (by_steps, by_time):
            if not math.isnan(target_return):
                axes.axhline(target_return, color="gray", linestyle="--", linewidth=1)
            axes.grid(alpha=0.3)
        if not math.isnan(target_return):
            by_steps.plot([], [], color="gray", linestyle="--", label=f"target {target_return:g}")
        by_steps.set_xlabel("env steps")
        by_steps.set_ylabel("episode return")
        by_time.set_xlabel(
            "wall time of training, s" + (f" ({curve.runs} runs)" if curve.runs > 1 else "")
        )
        if not curve.returns:
            by_steps.text(
                0.5, 0.5, "no finished episodes yet", ha="center", transform=by_steps.transAxes
            )
        by_steps.legend(loc="lower right", fontsize=8)
        figure.suptitle(title or logdir.name)
        figure.tight_layout()
        path = logdir / CURVE_FILE
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
    return path
