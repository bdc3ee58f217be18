"""Wall time of ``seed-rl train`` to a mean return of 475 on CartPole-v1, start-up included.

Runs the real command (``python -m seed_rl train``, a subprocess, exactly what a person
types, with the shipped CartPole preset) once per seed, each in a fresh temporary logdir
(so nothing resumes), and prints a Markdown table:

    seed | wall time, s | reached 475 | env steps | learner time, s | overhead, s | SPS

* wall time: from starting the command to its exit (interpreter start, imports, spawning
  the actors, training, final checkpoint, learning curve, summary, exit);
* learner time: the learner's own clock (its last metrics record), and overhead = wall
  time - learner time (mostly start-up);
* SPS: env steps per second of learner time.

Then the median and the spread (min-max) of the wall time, and the machine: CPU model,
core count and the load average before and after (the load of other processes skews
timings; compare runs made side by side).

Usage:
    python benchmarks/learning.py [--seeds 0,1,2] [--timeout 300] [--save-curve FILE.png]
                                  [-- EXTRA TRAIN FLAGS]

``--save-curve`` copies the learning curve of the median run (e.g. into docs/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 475.0


@dataclass
class Run:
    seed: int
    wall_s: float
    reached: bool
    env_steps: int
    learner_s: float
    exit_code: int
    logdir: Path

    @property
    def sps(self) -> float:
        return self.env_steps / self.learner_s if self.learner_s > 0 else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_once(seed: int, workdir: Path, timeout: float, extra: list[str]) -> Run:
    logdir = workdir / f"seed-{seed}"
    command = [
        sys.executable,
        "-m",
        "seed_rl",
        "train",
        "--logdir",
        str(logdir),
        "--seed",
        str(seed),
        *extra,
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        exit_code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        exit_code = -1
        output = (
            (expired.stdout or b"").decode(errors="replace")
            if isinstance(expired.stdout, bytes)
            else (expired.stdout or "")
        )
    wall = time.perf_counter() - started
    records = []
    metrics = logdir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                records.append(json.loads(line))
    last = records[-1] if records else {}
    reached = exit_code == 0 and "reached the target" in output
    if exit_code != 0:
        sys.stderr.write(
            f"seed {seed}: exit code {exit_code}; last output:\n"
            + "\n".join(output.splitlines()[-20:])
            + "\n"
        )
    return Run(
        seed,
        wall,
        reached,
        int(last.get("env_steps") or 0),
        float(last.get("elapsed") or 0.0),
        exit_code,
        logdir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a run counts as failed"
    )
    parser.add_argument(
        "--save-curve", default=None, help="copy the median run's learning_curve.png here"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("extra", nargs="*", help="more `seed-rl train` flags (after --)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="seed-rl-learning-"))
    runs: list[Run] = []
    try:
        for seed in seeds:
            run = run_once(seed, workdir, args.timeout, args.extra)
            runs.append(run)
            print(
                f"  seed {seed}: {run.wall_s:.1f} s, reached {TARGET:g}: "
                f"{'yes' if run.reached else 'NO'}",
                file=sys.stderr,
                flush=True,
            )
        load_after = os.getloadavg()
        print(
            f"`seed-rl train` on CartPole-v1 to a mean return of {TARGET:g} (last 100 "
            f"episodes), whole command{' ' + ' '.join(args.extra) if args.extra else ''}"
        )
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}, Python "
            f"{platform.python_version()}; load average (1 min) {load_before[0]:.1f} "
            f"before, {load_after[0]:.1f} after"
        )
        print()
        print(
            "| seed | wall time, s | reached 475 | env steps | learner time, s | "
            "overhead, s | SPS |"
        )
        print("|---:|---:|:---:|---:|---:|---:|---:|")
        for r in runs:
            print(
                f"| {r.seed} | {r.wall_s:.1f} | {'yes' if r.reached else 'no'} | "
                f"{r.env_steps:,} | {r.learner_s:.1f} | {r.wall_s - r.learner_s:.1f} | "
                f"{r.sps:,.0f} |"
            )
        walls = [r.wall_s for r in runs]
        print()
        print(
            f"median wall time {statistics.median(walls):.1f} s (min {min(walls):.1f}, max "
            f"{max(walls):.1f}); reached {TARGET:g}: {sum(r.reached for r in runs)}/"
            f"{len(runs)}; median SPS {statistics.median(r.sps for r in runs):,.0f}"
        )
        if args.save_curve:
            median_run = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
            source = median_run.logdir / "learning_curve.png"
            if source.is_file():
                Path(args.save_curve).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, args.save_curve)
                print(
                    f"learning curve of seed {median_run.seed} (the median run) -> "
                    f"{args.save_curve}"
                )
        return 0 if all(r.reached for r in runs) else 1
    finally:
        if args.keep:
            print(f"run directories kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
