"""The price of determinism: ``seed-rl train`` on CartPole-v1's preset, asynchronous (the
default) against ``--deterministic``, side by side in one run.

For each seed, the two modes one after the other (alternating, so both see the same load),
each the real command in a fresh logdir (``benchmarks/learning.py``'s runner): wall time to
a mean return of 475 (start-up included), whether it got there within ``--timeout``, env
steps and env steps per second of learner time. Then per mode the median wall time and
SPS, and the machine.

Usage:
    python benchmarks/deterministic.py [--seeds 0,1,2] [--timeout 300] [-- EXTRA FLAGS]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import TARGET, Run, cpu_model, run_once  # noqa: E402

MODES = {"asynchronous": [], "deterministic": ["--deterministic"]}


def median(values: list[float], form: str = ".1f") -> str:
    return format(statistics.median(values), form) if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds before a run counts as failed")
    parser.add_argument("extra", nargs="*", help="more `seed-rl train` flags (after --)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="seed-rl-deterministic-"))
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    try:
        for seed in seeds:
            for mode, flags in MODES.items():
                run = run_once("train", seed, workdir / mode, args.timeout,
                               [*flags, *args.extra])
                runs[mode].append(run)
                print(f"  {mode} seed {seed}: {run.wall_s:.1f} s, reached {TARGET:g}: "
                      f"{'yes' if run.reached else 'NO'}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    extra = f" {' '.join(args.extra)}" if args.extra else ""
    print(f"CartPole-v1 to a mean return of {TARGET:g}, `seed-rl train` (preset){extra}, "
          "asynchronous against --deterministic")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}, Python "
          f"{platform.python_version()}; load average (1 min) {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print()
    print("| mode | seed | wall time, s | reached 475 | env steps | env steps/s |")
    print("|---|---:|---:|:---:|---:|---:|")
    for mode, mode_runs in runs.items():
        for r in mode_runs:
            print(f"| {mode} | {r.seed} | {r.wall_s:.1f} | {'yes' if r.reached else 'no'} | "
                  f"{r.env_steps:,} | {r.sps:,.0f} |")
    print()
    print("| mode | reached | median wall time to 475, s | median env steps/s |")
    print("|---|---:|---:|---:|")
    for mode, mode_runs in runs.items():
        reached = [r.wall_s for r in mode_runs if r.reached]
        print(f"| {mode} | {len(reached)}/{len(mode_runs)} | {median(reached)} | "
              f"{median([r.sps for r in mode_runs], ',.0f')} |")
    return 0 if all(r.exit_code == 0 for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
