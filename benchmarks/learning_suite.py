"""The suite mode of ``benchmarks/learning.py``: shipped presets, each for a wall-time budget.

Each entry is a preset name, optionally followed by more ``seed-rl train`` flags (a variant:
``"popgym-repeat-previous --no-lstm"``). Every entry runs once per seed as the real command,
``seed-rl train --preset NAME --max-time BUDGET [FLAGS]``, in a fresh logdir, one after the
other (side by side in one run, on the same machine).

A run stops at its target (the entry's ``--target-return``, else its preset's
``target_return``) unless ``--past-target`` is given: then every run trains for the whole
budget (``--target-return nan``) and the target, read when the run ends, only marks where
the curve first crossed it.

Resume, for suites that take several sessions: each finished run leaves in ``--out`` its
``metrics.jsonl`` and ``learning_curve.png`` (``<slug>-seed<N>-...``) and, last, the marker
``<slug>-seed<N>-result.json`` (the :class:`SuiteRun` fields, the command, the budget, the
values of the preset file it ran). Started again with the same ``--out``, the suite reads
those runs back instead of rerunning them and says which; a run without its marker (the
suite was killed while it trained) or whose command failed is run again from scratch.
Killing the suite (SIGTERM, Ctrl-C) stops the ``seed-rl train`` it was running. A marker
written with another ``--budget`` or ``--past-target``, or by a run of a preset whose values
have changed since (a suite resumed sessions later), is an error naming what differs: the
runs would not compare.

``--compact`` keeps ``--out`` small enough to keep in git (docs/results/): each run's
metrics are reduced to :data:`CURVE_KEYS` (what the tables, the figure and a reader of the
curve need) and gzip-compressed, ``<slug>-seed<N>-metrics.jsonl.gz`` (about 40 KB for 10M
env steps on MinAtar instead of 800 KB), and no per-run figure.

Then (benchmarks/suite_report.py) two Markdown tables, resumed and new runs alike:

    entry | seed | target | reached | time to target, s | env steps to target |
    final return | best return | env steps | env steps/s

    entry | seeds | target | reached | median final return (min to max) |
    at 5M env steps | at 10M env steps | median env steps to target |
    median time to target, s | env steps/s

* time to target: the learner's clock at the first metrics record whose mean return (last
  100 episodes) reached the entry's target, plus that run's start-up (wall time minus the
  learner's clock): the time a person waits;
* env steps to target: the env steps counted by that same record;
* final return: the mean return of the last 100 episodes when the run ended;
* at 5M / 10M env steps (issue #20's milestones; ``--at 1M,2M,3M`` reads others, so a
  table of a shorter ablation comes from the suite too): the mean return of the first record
  with at least that many env steps ("-" for a run that did not get there);
* per entry: the median and range over the seeds, the steps and time to target over the
  seeds that reached it ("k/n" of them).

The combined figure ``--out/suite.png`` draws, per entry, the median curve over its seeds
with their min-max range as a band, against env steps and against learner wall time.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suite_report import (  # noqa: E402
    MILESTONES,
    SuiteRun,
    plot_suite,
    runs_table,
    summarise,
    summary_table,
)

from learner.watching.curves import metrics_records  # noqa: E402
from seed_rl import presets  # noqa: E402
from seed_rl.config import load_toml  # noqa: E402

#: the columns of metrics.jsonl a ``--compact`` suite keeps: the learning curve, the clock,
#: and what explains a curve (policy lag, entropy, the losses, the gradient's norm before
#: clipping and how often the clip cut it, PopArt's scale)
CURVE_KEYS = ("run_started", "elapsed", "env_steps", "episodes", "episode_return_mean",
              "sps", "policy_version", "policy_lag_mean", "policy_lag_max", "entropy",
              "loss_pg", "loss_baseline", "grad_norm", "grad_clipped", "popart_sigma")

#: seconds a killed suite gives its ``seed-rl train`` to stop after SIGTERM, then SIGKILL
STOP_GRACE_S = 30.0
#: seconds between the progress lines of a run in training (``--progress-every``)
PROGRESS_EVERY_S = 60.0


def slug(entry: str) -> str:
    return "_".join(part.strip("-").replace("=", "-") for part in entry.split()) or "entry"


def flag_target(flags: list[str]) -> float | None:
    """The value of a ``--target-return`` among an entry's flags; None without one."""
    for i, flag in enumerate(flags):
        if flag == "--target-return" and i + 1 < len(flags):
            return float(flags[i + 1])
        if flag.startswith("--target-return="):
            return float(flag.split("=", 1)[1])
    return None


def entry_target(name: str, flags: list[str]) -> float:
    """The entry's own ``--target-return`` flag, else its preset's ``target_return``."""
    own = flag_target(flags)
    if own is not None:
        return own
    return float(load_toml(presets.named(name)).get("target_return", math.nan))


def entry_target_source(entry: str) -> str:
    """Where the entry's target comes from: its preset's ``target_source``, or the entry's
    own ``--target-return``."""
    name, *flags = shlex.split(entry)
    if flag_target(flags) is not None:
        return "the entry's --target-return"
    return str(load_toml(presets.named(name)).get("target_source", ""))


def preset_values(entry: str) -> dict:
    """The values of the entry's preset file as it is now (JSON types: what a finished run's
    marker records, and what a resumed run is checked against)."""
    return json.loads(json.dumps(load_toml(presets.named(shlex.split(entry)[0]))))


def preset_change(recorded: dict, now: dict) -> str:
    """The keys whose value differs between two sets of preset values, ``key old -> new``."""
    def value(values: dict, key: str) -> str:
        return json.dumps(values[key]) if key in values else "(unset)"

    return ", ".join(f"{key} {value(recorded, key)} -> {value(now, key)}"
                     for key in sorted(set(recorded) | set(now))
                     if recorded.get(key) != now.get(key))


def train_command(entry: str, seed: int, budget: float, logdir: Path,
                  past_target: bool = False) -> list[str]:
    """The ``seed-rl train`` command line of one entry and seed."""
    name, *flags = shlex.split(entry)
    run_past = ["--target-return", "nan"] if past_target else []
    return [sys.executable, "-m", "seed_rl", "train", "--preset", name, "--seed", str(seed),
            "--max-time", f"{budget:g}", "--logdir", str(logdir), "--no-resume",
            "--status-every", "0", *flags, *run_past]


def run_command(command: list[str], timeout: float, log: Path,
                while_waiting: Callable[[], None] | None = None,
                every: float = PROGRESS_EVERY_S) -> tuple[int, str]:
    """Run ``command`` to its end, its output into ``log``; ``(exit code, output)``, -1 when
    it ran past ``timeout``. Every ``every`` seconds while it runs, ``while_waiting()``.

    It runs in its own process group. If this process is interrupted (Ctrl-C, or SIGTERM
    made into an exception by :func:`run_suite`), ``seed-rl train`` gets SIGTERM (it stops
    its actors) and ``STOP_GRACE_S`` seconds, then its whole group is killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    with open(log, "w") as output:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                child.wait(timeout=max(min(every, deadline - time.monotonic()), 0.0))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    _stop(child)
                    return -1, log.read_text() + f"\nkilled after {timeout:.0f} s"
                if while_waiting is not None:
                    while_waiting()
    except BaseException:
        _stop(child)
        raise
    return child.returncode, log.read_text()


def progress_line(label: str, metrics: Path) -> str | None:
    """One line on a run in training, from the last record of its ``metrics``: env steps,
    the mean return of the last 100 episodes, the learner's seconds and env steps/s; None
    before its first record."""
    last: dict = {}
    if metrics.is_file():
        last = next(iter(collections.deque(metrics_records(metrics), maxlen=1)), {})
    if not last.get("env_steps"):
        return None
    mean = last.get("episode_return_mean")
    shown = "no episode yet" if mean is None else f"return {mean:.2f} (last 100 episodes)"
    return (f"  {label}: {last['env_steps'] / 1e6:.2f}M env steps, {shown}, "
            f"{last.get('elapsed', 0.0):.0f} s, {last.get('sps', 0.0):,.0f} env steps/s")


def _stop(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # whatever is left of it: its actors
    child.wait()


def run_entry(entry: str, seed: int, budget: float, workdir: Path,
              past_target: bool = False,
              progress_every: float = PROGRESS_EVERY_S) -> tuple[SuiteRun, list[str]]:
    """``seed-rl train`` for one entry and seed, at most ``budget`` seconds of training, a
    progress line on stderr every ``progress_every`` seconds; the run and its command."""
    name, *flags = shlex.split(entry)
    logdir = workdir / f"{slug(entry)}-seed{seed}"
    command = train_command(entry, seed, budget, logdir, past_target)

    def show_progress() -> None:
        line = progress_line(f"{entry} seed {seed}", logdir / "metrics.jsonl")
        if line:
            print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    exit_code, output = run_command(command, budget + 300, workdir / f"{logdir.name}.log",
                                    show_progress, progress_every)
    wall = time.perf_counter() - started
    target = entry_target(name, flags)
    if exit_code != 0:
        sys.stderr.write(f"{entry} seed {seed}: exit code {exit_code}:\n"
                         + "\n".join(output.splitlines()[-15:]) + "\n")
    run = read_run(entry, seed, target, wall, logdir / "metrics.jsonl", exit_code)
    return run, command


def read_run(entry: str, seed: int, target: float, wall_s: float, metrics: Path,
             exit_code: int = 0) -> SuiteRun:
    """The :class:`SuiteRun` of a run that took ``wall_s`` seconds, from its ``metrics.jsonl``
    (a missing file: a run without any record)."""
    records = list(metrics_records(metrics)) if metrics.is_file() else []
    last = records[-1] if records else {}
    learner_s = float(last.get("elapsed") or 0.0)
    startup = wall_s - learner_s
    reached = [r for r in records if (r.get("episode_return_mean") is not None
                                      and r["episode_return_mean"] >= target)]
    returns = [r["episode_return_mean"] for r in records
               if r.get("episode_return_mean") is not None]
    return SuiteRun(entry, seed, target, wall_s, learner_s, int(last.get("env_steps") or 0),
                    reached[0]["elapsed"] + startup if reached else math.nan,
                    float(reached[0]["env_steps"]) if reached else math.nan,
                    returns[-1] if returns else math.nan, max(returns, default=math.nan),
                    metrics, exit_code)


def result_path(out: Path, entry: str, seed: int) -> Path:
    """The marker of a finished run in ``out``."""
    return out / f"{slug(entry)}-seed{seed}-result.json"


def compact_metrics(source: Path, destination: Path) -> None:
    """Write ``source``'s records to ``destination`` (gzip-compressed, no name or time in
    the header: the same records give the same bytes) with only :data:`CURVE_KEYS`, floats
    rounded to 4 decimals (lines that are not JSON objects are left out)."""
    lines = [json.dumps({key: round(record[key], 4) if isinstance(record[key], float)
                         else record[key] for key in CURVE_KEYS if key in record})
             for record in metrics_records(source)]
    with open(destination, "wb") as file, gzip.GzipFile(filename="", fileobj=file,
                                                         mode="wb", mtime=0) as packed:
        packed.write("".join(line + "\n" for line in lines).encode())


def save_result(out: Path, run: SuiteRun, command: list[str], budget: float,
                past_target: bool, compact: bool = False) -> SuiteRun:
    """Copy the run's metrics and curve into ``out`` (``compact``: the metrics'
    :data:`CURVE_KEYS` only, no curve), then write its marker (atomically, so a kill leaves
    either no marker or a whole one); the run, its metrics now those in ``out``."""
    prefix = f"{slug(run.entry)}-seed{run.seed}-"
    metrics = out / (prefix + ("metrics.jsonl.gz" if compact else "metrics.jsonl"))
    if run.metrics.is_file() and compact:
        compact_metrics(run.metrics, metrics)
    elif run.metrics.is_file():
        shutil.copyfile(run.metrics, metrics)
    figure = run.metrics.parent / "learning_curve.png"
    if figure.is_file() and not compact:
        shutil.copyfile(figure, out / (prefix + "learning_curve.png"))
    saved = SuiteRun(**{**asdict(run), "metrics": metrics})
    data = {**asdict(saved), "metrics": saved.metrics.name, "command": shlex.join(command),
            "budget": budget, "past_target": past_target, "preset": preset_values(run.entry)}
    data = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
    path = result_path(out, run.entry, run.seed)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)
    return saved


def load_result(out: Path, entry: str, seed: int, budget: float,
                past_target: bool) -> SuiteRun | None:
    """The finished run of ``entry`` and ``seed`` in ``out``; None when there is none (not
    run, interrupted) or its command failed: those are run again."""
    path = result_path(out, entry, seed)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        values = {f.name: data[f.name] for f in fields(SuiteRun)}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SystemExit(f"{path} is not a suite result ({error}); remove it to rerun "
                         "that run") from None
    if (data.get("budget"), data.get("past_target")) != (budget, past_target):
        raise SystemExit(
            f"{path} was run with --budget {data.get('budget'):g}"
            f"{' --past-target' if data.get('past_target') else ''}, not --budget {budget:g}"
            f"{' --past-target' if past_target else ''}: give another --out, or the same "
            "arguments to resume")
    recorded, now = data.get("preset"), preset_values(entry)
    if recorded is None:
        print(f"note: {path.name} does not record its preset's values (written before the "
              "suite kept them), so it is not checked against the preset now", file=sys.stderr)
    elif recorded != now:
        raise SystemExit(
            f"{path} was run with another {shlex.split(entry)[0]} preset "
            f"({preset_change(recorded, now)}): give another --out, or remove that run's "
            "files from it to run it again with the preset as it is now")
    if values["exit_code"] != 0:
        return None
    values = {k: math.nan if v is None else v for k, v in values.items()}
    values["metrics"] = out / values["metrics"]
    return SuiteRun(**values)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_suite(entries: list[str], seeds: list[int], budget: float, out: Path,
              workdir: Path, past_target: bool = False, compact: bool = False,
              milestones: Sequence[int] = MILESTONES,
              progress_every: float = PROGRESS_EVERY_S) -> int:
    """Run (or read back from ``out``) every entry and seed, a progress line every
    ``progress_every`` seconds of each run; print the tables (the summary with the return at
    each of ``milestones``, env steps), draw ``out/suite.png``."""
    out.mkdir(parents=True, exist_ok=True)
    plan = [(entry, seed) for entry in entries for seed in seeds]
    found = {key: load_result(out, *key, budget, past_target) for key in plan}
    resumed = [f"{entry} seed {seed}" for (entry, seed), run in found.items() if run]
    if resumed:
        print(f"Resumed from {out} (finished earlier, not rerun): {'; '.join(resumed)}",
              flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so the running train is stopped
    try:
        runs = []
        for entry, seed in plan:
            run = found[(entry, seed)]
            if run is None:
                run, command = run_entry(entry, seed, budget, workdir, past_target,
                                         progress_every)
                run = save_result(out, run, command, budget, past_target, compact)
            runs.append(run)
            print(f"  {entry} seed {seed}: final {run.final_return:.2f}, " + (
                  f"target reached after {run.time_to_target:.0f} s"
                  if not math.isnan(run.time_to_target) else "target not reached"),
                  file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"Suite: `seed-rl train --preset NAME --max-time {budget:g}` per entry and seed; "
          f"machine: {os.cpu_count()} cores")
    print()
    print("\n".join(runs_table(runs)))
    print()
    sources = {entry: entry_target_source(entry) for entry in dict.fromkeys(r.entry for r in runs)}
    print("\n".join(summary_table(summarise(runs, milestones), sources)))
    plot_suite(runs, out / "suite.png")
    print(f"curves and metrics in {out}/, combined figure {out / 'suite.png'}")
    return 0
