"""Wall time to a mean return of 475 on CartPole-v1, start-up included.

Runs the real commands, as subprocesses, exactly what a person types, with the shipped
CartPole preset, once per seed, each in a fresh temporary logdir (so nothing resumes):

* ``--launch train`` (default): ``seed-rl train``;
* ``--launch server``: ``seed-rl learner --env CartPole-v1`` and, once it serves,
  ``seed-rl actors --num-actors 2 --envs-per-actor 32`` (the 2x32 layout ``seed-rl train``
  picks on two cores), timed from the learner's start to its exit;
* ``--launch both``: the two, alternating per seed, side by side in one table.

It prints a Markdown table:

    launch | seed | wall time, s | reached 475 | env steps | learner time, s | overhead, s | SPS

* wall time: from starting the command to its exit (interpreter start, imports, spawning
  the actors, training, final checkpoint, learning curve, summary, exit);
* learner time: the learner's own clock (its last metrics record), and overhead = wall
  time - learner time (mostly start-up);
* SPS: env steps per second of learner time.

Then the median and the spread (min-max) of the wall time, and the machine: CPU model,
core count and the load average before and after (the load of other processes skews
timings; compare runs made side by side).

Usage:
    python benchmarks/learning.py [--seeds 0,1,2] [--launch train|server|both]
                                  [--timeout 300] [--save-curve FILE.png] [-- EXTRA FLAGS]

``--save-curve`` copies the learning curve of the median run (e.g. into docs/).

Suite mode (benchmarks/learning_suite.py): ``--suite "pendulum; minatar-breakout;
popgym-repeat-previous --no-lstm" --budget 300 --out DIR`` runs each shipped preset (an
entry may add flags) for a wall-time budget per seed and prints a table per run (target
reached, time and env steps to target, final return, env steps/s) and one per entry over
the seeds (median and range of the final return and of the return at 5M and 10M env steps,
seeds reaching the target, median steps and time to target), with every curve and a
combined figure (median and range over seeds) in DIR. Runs already finished in DIR are read
back, not rerun: the same command resumes a suite that was stopped. ``--compact`` keeps only
the curve columns of each run's metrics in DIR, small enough to keep in git.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from learning_suite import PROGRESS_EVERY_S

REPO = Path(__file__).resolve().parents[1]
TARGET = 475.0


@dataclass
class Run:
    launch: str
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_train(logdir: Path, seed: int, timeout: float, extra: list[str]) -> tuple[int, str]:
    """``seed-rl train``: (exit code, output)."""
    command = [sys.executable, "-m", "seed_rl", "train", "--logdir", str(logdir),
               "--seed", str(seed), *extra]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout
        return -1, out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def run_server(logdir: Path, seed: int, timeout: float, extra: list[str]) -> tuple[int, str]:
    """``seed-rl learner`` plus ``seed-rl actors`` started once it serves: (the learner's
    exit code, both outputs)."""
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryFile("w+") as learner_log, tempfile.TemporaryFile("w+") as actor_log:
        learner = subprocess.Popen(
            [sys.executable, "-m", "seed_rl", "learner", "--env", "CartPole-v1", "--address",
             address, "--logdir", str(logdir), "--seed", str(seed), "--status-every", "0",
             *extra], cwd=REPO, stdout=learner_log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while learner.poll() is None and time.monotonic() < deadline:
            learner_log.seek(0)
            if re.search(r"learner serving", learner_log.read()):
                break
            time.sleep(0.05)
        actors = subprocess.Popen(
            [sys.executable, "-m", "seed_rl", "actors", "--learner", address, "--num-actors",
             "2", "--envs-per-actor", "32", "--seed", str(seed), "--status-every", "0"],
            cwd=REPO, stdout=actor_log, stderr=subprocess.STDOUT, text=True)
        try:
            code = learner.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            learner.kill()
            code = -1
        try:
            actors.wait(30)
        except subprocess.TimeoutExpired:
            actors.kill()
        learner_log.seek(0)
        actor_log.seek(0)
        return code, learner_log.read() + actor_log.read()


def run_once(launch: str, seed: int, workdir: Path, timeout: float, extra: list[str]) -> Run:
    logdir = workdir / f"{launch}-seed-{seed}"
    started = time.perf_counter()
    runner = run_train if launch == "train" else run_server
    exit_code, output = runner(logdir, seed, timeout, extra)
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
            f"{launch} seed {seed}: exit code {exit_code}; last output:\n"
            + "\n".join(output.splitlines()[-20:])
            + "\n"
        )
    return Run(
        launch,
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
    parser.add_argument("--launch", choices=("train", "server", "both"), default="train",
                        help="seed-rl train, seed-rl learner + seed-rl actors, or both")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--suite", default=None, metavar="ENTRIES",
                        help="suite mode: ';'-separated presets, each optionally with flags")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="suite mode: seconds of training per preset and seed")
    parser.add_argument("--out", default="benchmarks/results/suite",
                        help="suite mode: where curves, metrics, results and suite.png go; "
                             "runs already finished there are read back, not rerun")
    parser.add_argument("--past-target", action="store_true",
                        help="suite mode: train for the whole budget instead of stopping at "
                             "the preset's target (the table still marks where it was reached)")
    parser.add_argument("--compact", action="store_true",
                        help="suite mode: keep only the curve columns of each run's metrics "
                             "and no per-run figure in --out (small enough for git)")
    parser.add_argument("--at", default=None, metavar="STEPS",
                        help="suite mode: env-step counts at which the summary table reads "
                             "each entry's return, comma-separated, e.g. 1M,2M,3M (default "
                             "5M,10M, issue #20's milestones)")
    parser.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S, metavar="S",
                        help="suite mode: a progress line on stderr every S seconds of each "
                             "run (env steps, mean return, env steps/s)")
    parser.add_argument("extra", nargs="*", help="more `seed-rl train` flags (after --)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.suite:
        from learning_suite import run_suite
        from suite_report import MILESTONES, parse_steps

        try:
            milestones = parse_steps(args.at) if args.at else MILESTONES
        except ValueError as error:
            parser.error(f"--at: {error}")
        entries = [e.strip() for e in args.suite.split(";") if e.strip()]
        workdir = Path(tempfile.mkdtemp(prefix="seed-rl-suite-"))
        try:
            return run_suite(entries, seeds, args.budget, Path(args.out), workdir,
                             args.past_target, args.compact, milestones,
                             args.progress_every)
        except KeyboardInterrupt:
            print(f"interrupted: the finished runs are in {args.out}; the same command "
                  "resumes the suite", file=sys.stderr)
            return 130
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="seed-rl-learning-"))
    runs: list[Run] = []
    try:
        launches = ["train", "server"] if args.launch == "both" else [args.launch]
        for seed in seeds:
            for launch in launches:
                run = run_once(launch, seed, workdir, args.timeout, args.extra)
                runs.append(run)
                print(
                    f"  {launch} seed {seed}: {run.wall_s:.1f} s, reached {TARGET:g}: "
                    f"{'yes' if run.reached else 'NO'}",
                    file=sys.stderr,
                    flush=True,
                )
        load_after = os.getloadavg()
        print(
            f"CartPole-v1 to a mean return of {TARGET:g} (last 100 episodes), whole "
            f"commands{' ' + ' '.join(args.extra) if args.extra else ''}; train = `seed-rl "
            "train`, server = `seed-rl learner` + `seed-rl actors --num-actors 2 "
            "--envs-per-actor 32`"
        )
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}, Python "
            f"{platform.python_version()}; load average (1 min) {load_before[0]:.1f} "
            f"before, {load_after[0]:.1f} after"
        )
        print()
        print(
            "| launch | seed | wall time, s | reached 475 | env steps | learner time, s | "
            "overhead, s | SPS |"
        )
        print("|---|---:|---:|:---:|---:|---:|---:|---:|")
        for r in runs:
            print(
                f"| {r.launch} | {r.seed} | {r.wall_s:.1f} | {'yes' if r.reached else 'no'} | "
                f"{r.env_steps:,} | {r.learner_s:.1f} | {r.wall_s - r.learner_s:.1f} | "
                f"{r.sps:,.0f} |"
            )
        print()
        for launch in launches:
            mine = [r for r in runs if r.launch == launch]
            walls = [r.wall_s for r in mine]
            print(
                f"{launch}: median wall time {statistics.median(walls):.1f} s (min "
                f"{min(walls):.1f}, max {max(walls):.1f}); reached {TARGET:g}: "
                f"{sum(r.reached for r in mine)}/{len(mine)}; median SPS "
                f"{statistics.median(r.sps for r in mine):,.0f}"
            )
        if args.save_curve:
            first = [r for r in runs if r.launch == launches[0]]
            median_run = sorted(first, key=lambda r: r.wall_s)[len(first) // 2]
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
