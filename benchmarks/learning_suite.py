"""The suite mode of ``benchmarks/learning.py``: shipped presets, each for a wall-time budget.

Each entry is a preset name, optionally followed by more ``seed-rl train`` flags (a variant:
``"popgym-repeat-previous --no-lstm"``). Every entry runs once per seed as the real command,
``seed-rl train --preset NAME --max-time BUDGET [FLAGS]``, in a fresh logdir, one after the
other (side by side in one run, on the same machine). It prints a Markdown table:

    entry | seed | target | reached | time to target, s | env steps to target |
    final return | best return | env steps | env steps/s

* time to target: the learner's clock at the first metrics record whose mean return (last
  100 episodes) reached the entry's target, plus that run's start-up (wall time minus the
  learner's clock): the time a person waits;
* env steps to target: the env steps counted by that same record;
* final return: the mean return of the last 100 episodes when the run ended;

A run stops at its target (the entry's ``--target-return``, else its preset's
``target_return``) unless ``--past-target`` is given: then every run trains for the whole
budget (``--target-return nan``) and the target, read when the run ends, only marks where
the curve first crossed it.

then per entry: seeds reaching the target and the median time to target. Every run's
``learning_curve.png`` and ``metrics.jsonl`` are copied to ``--out`` and one combined figure,
mean return against wall time and against env steps for every entry, is saved as
``--out/suite.png``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from learner.watching.curves import read_curve  # noqa: E402
from seed_rl import presets  # noqa: E402
from seed_rl.config import load_toml  # noqa: E402


@dataclass
class SuiteRun:
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

    @property
    def sps(self) -> float:
        return self.env_steps / self.learner_s if self.learner_s > 0 else math.nan


def slug(entry: str) -> str:
    return "_".join(part.strip("-").replace("=", "-") for part in entry.split()) or "entry"


def entry_target(name: str, flags: list[str]) -> float:
    """The entry's own ``--target-return`` flag, else its preset's ``target_return``."""
    for i, flag in enumerate(flags):
        if flag == "--target-return" and i + 1 < len(flags):
            return float(flags[i + 1])
        if flag.startswith("--target-return="):
            return float(flag.split("=", 1)[1])
    return float(load_toml(presets.named(name)).get("target_return", math.nan))


def run_entry(entry: str, seed: int, budget: float, workdir: Path,
              past_target: bool = False) -> SuiteRun:
    """``seed-rl train`` for one entry and seed, at most ``budget`` seconds of training."""
    name, *flags = shlex.split(entry)
    run_past = ["--target-return", "nan"] if past_target else []
    logdir = workdir / f"{slug(entry)}-seed{seed}"
    command = [sys.executable, "-m", "seed_rl", "train", "--preset", name, "--seed", str(seed),
               "--max-time", str(budget), "--logdir", str(logdir), "--no-resume",
               "--status-every", "0", *flags, *run_past]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=budget + 300)
    wall = time.perf_counter() - started
    target = entry_target(name, flags)
    if done.returncode != 0:
        sys.stderr.write(f"{entry} seed {seed}: exit code {done.returncode}:\n"
                         + "\n".join((done.stdout + done.stderr).splitlines()[-15:]) + "\n")
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    last = records[-1] if records else {}
    learner_s = float(last.get("elapsed") or 0.0)
    startup = wall - learner_s
    reached = [r for r in records if (r.get("episode_return_mean") is not None
                                      and r["episode_return_mean"] >= target)]
    returns = [r["episode_return_mean"] for r in records
               if r.get("episode_return_mean") is not None]
    return SuiteRun(entry, seed, target, wall, learner_s, int(last.get("env_steps") or 0),
                    reached[0]["elapsed"] + startup if reached else math.nan,
                    float(reached[0]["env_steps"]) if reached else math.nan,
                    returns[-1] if returns else math.nan, max(returns, default=math.nan),
                    logdir / "metrics.jsonl")


def plot_suite(runs: list[SuiteRun], path: Path) -> None:
    """One row per preset: mean return against wall time and against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(shlex.split(r.entry)[0] for r in runs))
    figure, axes = plt.subplots(len(names), 2, figsize=(11, 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for run in (r for r in runs if shlex.split(r.entry)[0] == name):
            curve = read_curve(run.metrics)
            label = f"{run.entry} (seed {run.seed})"
            axes[row][0].plot(curve.wall_time, curve.returns, label=label)
            axes[row][1].plot(curve.env_steps, curve.returns, label=label)
        for axis, xlabel in zip(axes[row], ("learner wall time, s", "env steps"), strict=True):
            if not math.isnan(runs[0].target):
                target = next(r.target for r in runs if shlex.split(r.entry)[0] == name)
                axis.axhline(target, color="grey", linestyle="--", linewidth=1)
            axis.set_xlabel(xlabel)
            axis.set_ylabel("mean return (last 100)")
            axis.set_title(name)
            axis.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run_suite(entries: list[str], seeds: list[int], budget: float, out: Path,
              workdir: Path, past_target: bool = False) -> int:
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for entry in entries:
        for seed in seeds:
            run = run_entry(entry, seed, budget, workdir, past_target)
            runs.append(run)
            print(f"  {entry} seed {seed}: final {run.final_return:.2f}, target reached after "
                  f"{run.time_to_target:.0f} s" if not math.isnan(run.time_to_target) else
                  f"  {entry} seed {seed}: final {run.final_return:.2f}, target not reached",
                  file=sys.stderr, flush=True)
            for name in ("metrics.jsonl", "learning_curve.png"):
                source = run.metrics.parent / name
                if source.is_file():
                    shutil.copyfile(source, out / f"{slug(entry)}-seed{seed}-{name}")
    print(f"Suite: `seed-rl train --preset NAME --max-time {budget:g}` per entry and seed; "
          f"machine: {os.cpu_count()} cores")
    print()
    print("| entry | seed | target | reached | time to target, s | env steps to target | "
          "final return | best return | env steps | env steps/s |")
    print("|---|---:|---:|:---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        reached = not math.isnan(r.time_to_target)
        print(f"| {r.entry} | {r.seed} | {r.target:g} | {'yes' if reached else 'no'} | "
              f"{r.time_to_target:.0f} | {r.steps_to_target:,.0f} | {r.final_return:.2f} | {r.best_return:.2f} | "
              f"{r.env_steps:,} | {r.sps:,.0f} |".replace(" nan |", " - |"))
    print()
    for entry in entries:
        mine = [r for r in runs if r.entry == entry]
        times = [r.time_to_target for r in mine if not math.isnan(r.time_to_target)]
        median = f"{statistics.median(times):.0f} s" if times else "-"
        print(f"{entry}: {len(times)}/{len(mine)} seeds reached {mine[0].target:g}; median "
              f"time to target {median}; median final return "
              f"{statistics.median(r.final_return for r in mine):.2f}")
    plot_suite(runs, out / "suite.png")
    print(f"curves and metrics in {out}/, combined figure {out / 'suite.png'}")
    return 0
