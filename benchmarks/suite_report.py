"""What ``benchmarks/learning_suite.py`` prints and draws from its finished runs.

* :func:`runs_table`: one Markdown row per run (entry, seed);
* :func:`summarise` and :func:`summary_table`: one row per entry over its seeds: the median
  and the range (min to max) of the final return and of the return at given env-step counts
  (5M and 10M unless told: issue #20's milestones), how many seeds reached the target and,
  over those, the median env steps and time to target, and the median env steps/s;
* :func:`plot_suite`: ``suite.png``, per entry the median learning curve over the seeds with
  their min-max range as a band, against env steps and against the learner's wall time.

Everything is read from the runs' ``metrics.jsonl`` (one
:meth:`learner.watching.metrics.Metrics.emit` record per line) through
:func:`learner.watching.curves.read_curve`, so runs resumed from disk and new ones are
treated alike.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from learner.watching.curves import Curve, read_curve


@dataclass
class SuiteRun:
    """One finished run of one suite entry and seed: what the tables and the figure read
    (times in seconds; ``metrics`` is its metrics.jsonl)."""

    entry: str
    seed: int
    target: float
    wall_s: float
    learner_s: float
    env_steps: int
    time_to_target: float  # nan when the target was not reached
    steps_to_target: float  # nan when the target was not reached
    final_return: float
    best_return: float
    metrics: Path
    exit_code: int = 0

    @property
    def sps(self) -> float:
        return self.env_steps / self.learner_s if self.learner_s > 0 else math.nan


#: env-step counts at which the summary reads each run's return, unless told others
MILESTONES = (5_000_000, 10_000_000)
#: points of the common grid the seeds' curves are interpolated onto for the figure
GRID_POINTS = 200


def return_at(curve: Curve, env_steps: int) -> float:
    """The mean return (last 100 episodes) of the first record with at least ``env_steps``
    env steps; nan when the run did not get there."""
    return next((r for s, r in zip(curve.env_steps, curve.returns, strict=True)
                 if s >= env_steps), math.nan)


@dataclass
class Spread:
    """Median, min and max of the values that exist (nan: missing), and how many did."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        present = [v for v in values if not math.isnan(v)]
        if not present:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(present), min(present), max(present), len(present))

    def text(self, seeds: int, digits: int = 2) -> str:
        """``median (min to max)``, ``k/n`` appended when only k of n seeds had a value."""
        if self.count == 0:
            return "-"
        shown = (f"{self.median:.{digits}f}" if self.count == 1 else
                 f"{self.median:.{digits}f} ({self.low:.{digits}f} to {self.high:.{digits}f})")
        return shown if self.count == seeds else f"{shown}, {self.count}/{seeds} seeds"


@dataclass
class EntrySummary:
    entry: str
    seeds: list[int]
    target: float
    reached: int  # seeds whose curve crossed the target
    final: Spread
    at: dict[int, Spread]  # by env-step milestone
    steps_to_target: Spread  # over the seeds that reached it
    time_to_target: Spread  # seconds, over the seeds that reached it
    sps: Spread  # env steps per second of learner time


def steps_label(env_steps: int) -> str:
    """``env_steps`` as a table says it: 500000 -> 0.5M, 10000000 -> 10M, 20000 -> 20k."""
    if env_steps >= 100_000:
        return f"{env_steps / 1_000_000:g}M"
    return f"{env_steps / 1_000:g}k" if env_steps >= 1_000 else str(env_steps)


def parse_steps(text: str) -> tuple[int, ...]:
    """``"0.5M,1M,2500k,3000000"`` -> (500000, 1000000, 2500000, 3000000): env-step counts,
    each a number with an optional k or M; a clear ValueError for anything else."""
    counts = []
    for part in (p.strip() for p in text.split(",")):
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:].lower(), 1)
        number = part[:-1] if scale > 1 else part
        try:
            value = float(number) * scale
        except ValueError:
            raise ValueError(f"{part!r} is not a count of env steps (write e.g. 500k, 2M or "
                             "2000000)") from None
        if value <= 0 or value != int(value):
            raise ValueError(f"{part!r} is not a positive whole count of env steps")
        counts.append(int(value))
    return tuple(sorted(set(counts)))


def summarise(runs: Sequence[SuiteRun],
              milestones: Sequence[int] = MILESTONES) -> list[EntrySummary]:
    """One summary per entry, in the order the entries first appear in ``runs``, with the
    return at each of ``milestones`` (env steps)."""
    summaries = []
    for entry in dict.fromkeys(r.entry for r in runs):
        mine = [r for r in runs if r.entry == entry]
        curves = [read_curve(r.metrics) for r in mine]
        summaries.append(EntrySummary(
            entry, [r.seed for r in mine], mine[0].target,
            sum(not math.isnan(r.steps_to_target) for r in mine),
            Spread.of([r.final_return for r in mine]),
            {n: Spread.of([return_at(c, n) for c in curves]) for n in milestones},
            Spread.of([r.steps_to_target for r in mine]),
            Spread.of([r.time_to_target for r in mine]),
            Spread.of([r.sps for r in mine])))
    return summaries


def runs_table(runs: Sequence[SuiteRun]) -> list[str]:
    """The per-run Markdown table, one row per (entry, seed)."""
    lines = ["| entry | seed | target | reached | time to target, s | env steps to target | "
             "final return | best return | env steps | env steps/s |",
             "|---|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        reached = not math.isnan(r.time_to_target)
        lines.append(
            f"| {r.entry} | {r.seed} | {r.target:g} | {'yes' if reached else 'no'} | "
            f"{r.time_to_target:.0f} | {r.steps_to_target:,.0f} | {r.final_return:.2f} | "
            f"{r.best_return:.2f} | {r.env_steps:,} | {r.sps:,.0f} |".replace(" nan |", " - |"))
    return lines


def summary_table(summaries: Sequence[EntrySummary],
                  sources: Mapping[str, str] | None = None) -> list[str]:
    """The per-entry Markdown table: medians and (min to max) ranges over the seeds, with a
    column for each milestone the summaries read; ``sources``: where each entry's target
    comes from (by entry)."""
    sources = sources or {}
    milestones = list(summaries[0].at) if summaries else list(MILESTONES)
    at = " | ".join(f"at {steps_label(n)} env steps" for n in milestones)
    lines = [f"| entry | seeds | target | source | reached | median final return (min to max) "
             f"| {at} | median env steps to target | median time to target, s | env steps/s |",
             "|---|---|---:|---|:---:|---:|" + "---:|" * len(milestones) + "---:|---:|---:|"]
    for s in summaries:
        n = len(s.seeds)
        returns_at = " | ".join(s.at[m].text(n) for m in milestones)
        steps = _thousands(s.steps_to_target) if s.reached else "-"
        seconds = s.time_to_target.text(s.reached, 0) if s.reached else "-"
        lines.append(
            f"| {s.entry} | {','.join(map(str, s.seeds))} | {s.target:g} | "
            f"{sources.get(s.entry) or '-'} | {s.reached}/{n} | "
            f"{s.final.text(n)} | {returns_at} | {steps} | {seconds} | "
            f"{s.sps.median:,.0f} |".replace(" nan |", " - |"))
    return lines


def _thousands(spread: Spread) -> str:
    if spread.count == 1:
        return f"{spread.median:,.0f}"
    return f"{spread.median:,.0f} ({spread.low:,.0f} to {spread.high:,.0f})"


def median_band(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]],
                points: int = GRID_POINTS):
    """The seeds' curves on one common grid: ``(grid, median, low, high)`` arrays.

    Each curve is interpolated linearly onto ``points`` evenly spaced x values spanning all
    the curves; outside its own first-to-last x a curve has no value, so where some seeds
    ended earlier (stopped at the target) the median and range are over the seeds that go
    on."""
    import numpy as np

    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(xs, ys, strict=True)
              if len(x)]
    grid = np.linspace(min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves), points)
    stacked = np.full((len(curves), points), np.nan)
    for row, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        stacked[row, inside] = np.interp(grid[inside], x, y)
    kept = ~np.all(np.isnan(stacked), axis=0)
    grid, stacked = grid[kept], stacked[:, kept]
    return (grid, np.nanmedian(stacked, axis=0), np.nanmin(stacked, axis=0),
            np.nanmax(stacked, axis=0))


def plot_median(axis, xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]],
                label: str) -> None:
    """One curve, or over several seeds their median with the min-max range as a band."""
    if len(xs) == 1:
        axis.plot(xs[0], ys[0], label=label)
        return
    grid, median, low, high = median_band(xs, ys)
    (line,) = axis.plot(grid, median, label=f"{label}, median and range")
    axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def style_axis(axis, xlabel: str, title: str, target: float) -> None:
    """The learning-curve axes of every figure here: the target as a dashed line."""
    if not math.isnan(target):
        axis.axhline(target, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("mean return (last 100 episodes)")
    axis.set_title(title)
    axis.grid(alpha=0.3)


def plot_suite(runs: Sequence[SuiteRun], path: Path) -> None:
    """One row per preset, its entries (variants) side by side: the median over seeds with
    the seeds' min-max band, against env steps and against learner wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(shlex.split(r.entry)[0] for r in runs))
    figure, axes = plt.subplots(len(names), 2, figsize=(11, 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        mine = [r for r in runs if shlex.split(r.entry)[0] == name]
        for entry in dict.fromkeys(r.entry for r in mine):
            seeds = [r for r in mine if r.entry == entry]
            curves = [c for c in (read_curve(r.metrics) for r in seeds) if c.returns]
            if not curves:
                continue
            label = f"{entry} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            for axis, attribute in zip(axes[row], ("env_steps", "wall_time"), strict=True):
                plot_median(axis, [getattr(c, attribute) for c in curves],
                            [c.returns for c in curves], label)
        for axis, xlabel in zip(axes[row], ("env steps", "learner wall time, s"), strict=True):
            style_axis(axis, xlabel, name, mine[0].target)
        axes[row][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
