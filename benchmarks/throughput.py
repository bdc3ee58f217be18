"""End-to-end throughput of seed-rl on this machine: CartPole-v1, N actors x K envs.

For each N x K it measures, side by side in one run:
  (a) limit  the same N x K environments stepped with random actions in N processes by the
             actor's own env loop, with no learner and no network;
  (b) full   a real learner process (training on) and a real `seed-rl actors` process
             tree, env steps/s counted by the learner;
  (c) the actors' step round trip (request sent -> actions back), p50 and p99;
  (d) where the learner's time goes: share of wall time in inference, training and
      per-message handling (decode, checks, store), from its metrics.jsonl;
and prints (b)/(a).

    python benchmarks/throughput.py                 # default grid
    python benchmarks/throughput.py --grid 2x64 --seconds 20
    python benchmarks/throughput.py --learner-flags "--queue-size 8"   # against the default
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ENV = "CartPole-v1"
BATCH_SIZE, UNROLL_LENGTH = 16, 16  # the CartPole preset's B and T (the learner applies it)


def _limit_worker(num_envs: int, seconds: float, seed: int, out: mp.Queue) -> None:
    from actors.env_loop import EnvLoop, env_seeds

    envs = EnvLoop(ENV, {}, env_seeds(seed, f"bench-{seed}", num_envs))
    rng = np.random.default_rng(seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.build_request()  # the per-message encode work an actor does
        envs.step(rng.integers(0, 2, num_envs).tolist())
        steps += num_envs
    rate = steps / (time.perf_counter() - start)
    envs.close()
    out.put(rate)


def measure_limit(actors: int, envs: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_limit_worker, args=(envs, seconds, i, out))
             for i in range(actors)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Reader:
    def __init__(self, popen: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(popen,), daemon=True)
        self.thread.start()

    def _read(self, popen: subprocess.Popen) -> None:
        for line in popen.stdout:
            self.lines.append(line.rstrip())


def python_actors(address: str, actors: int, envs: int,
                  env: dict[str, str]) -> list[subprocess.Popen]:
    """A real `seed-rl actors` process tree: ``actors`` processes x ``envs`` environments."""
    return [subprocess.Popen(
        [sys.executable, "-m", "actors", "--learner", address, "--num-actors", str(actors),
         "--envs-per-actor", str(envs), "--status-every", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)]


#: starts the actors of a measurement: (address, N, K, environment) -> their processes
StartActors = Callable[[str, int, int, dict[str, str]], list[subprocess.Popen]]


def measure_full(actors: int, envs: int, seconds: float, warmup: float,
                 start_actors: StartActors = python_actors,
                 learner_flags: Sequence[str] = ()) -> dict:
    """A real learner (training on; ``learner_flags`` added to its command) and the actors
    ``start_actors`` starts: env steps/s counted by the learner in the window, the actors'
    round trip (median of the p50 / p99 their status lines print), where the learner's
    time goes."""
    logdir = Path(tempfile.mkdtemp(prefix="seed-rl-throughput-"))
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    learner = subprocess.Popen(
        [sys.executable, "-m", "learner", "--env", ENV, "--address", address, "--logdir",
         str(logdir), "--log-every", "1", "--no-resume", *learner_flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    learner_log = Reader(learner)
    deadline = time.monotonic() + 60
    while not any("learner serving" in line for line in learner_log.lines):
        if learner.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the learner did not start:\n" + "\n".join(learner_log.lines))
        time.sleep(0.1)
    actor_procs = start_actors(address, actors, envs, env)
    actor_logs = [Reader(p) for p in actor_procs]
    try:
        time.sleep(warmup)
        begin = time.time()
        time.sleep(seconds)
        end = time.time()
    finally:
        for process in actor_procs:
            process.send_signal(signal.SIGTERM)
        learner.send_signal(signal.SIGTERM)
        for process in actor_procs:
            process.wait(60)
        learner.wait(60)
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(logdir, ignore_errors=True)
    window = [r for r in records if begin <= r["wall_time"] <= end]
    if len(window) < 2:
        raise RuntimeError(f"too few metrics records in the window: {len(window)}")
    sps = (window[-1]["env_steps"] - window[0]["env_steps"]) / (
        window[-1]["wall_time"] - window[0]["wall_time"])
    trains = (window[-1]["train_steps"] - window[0]["train_steps"]) / (
        window[-1]["wall_time"] - window[0]["wall_time"])

    def mean_of(key: str) -> float:
        values = [r[key] for r in window if r.get(key) is not None]
        return statistics.fmean(values) if values else float("nan")

    trips = [tuple(map(float, m.groups())) for log in actor_logs for line in log.lines
             if (m := re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", line))]
    p50 = statistics.median(t[0] for t in trips[1:]) if len(trips) > 1 else float("nan")
    p99 = statistics.median(t[1] for t in trips[1:]) if len(trips) > 1 else float("nan")
    return {"sps": sps, "train_steps_per_s": trains,
            # share of the acted steps that reached a training batch (the rest: unrolls
            # dropped as older than --max-policy-lag, or cut by a disconnect)
            "trained": trains * BATCH_SIZE * UNROLL_LENGTH / sps,
            "rtt_p50_ms": p50, "rtt_p99_ms": p99,
            "batch": mean_of("batch_size_mean"), "inference": mean_of("time/inference_busy"),
            "train": mean_of("time/train_busy"), "handling": mean_of("time/step_handling_busy"),
            "return": window[-1]["episode_return_mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="1x64,2x32,2x64,2x128,2x256,2x512,4x128",
                        help="comma-separated NxK (actors x envs per actor)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--learner-flags", default="",
                        help="more `seed-rl learner` flags for (b), e.g. '--queue-size 8'")
    args = parser.parse_args()
    learner_flags = shlex.split(args.learner_flags)
    grid = [tuple(int(x) for x in item.split("x")) for item in args.grid.split(",")]
    print(f"CartPole-v1 throughput, {os.cpu_count()} CPUs, torch threads default; "
          f"window {args.seconds:g} s after {args.warmup:g} s warm-up; learner flags: "
          f"{shlex.join(learner_flags) or 'none'}")
    header = (f"{'N x K':>8} {'(a) limit':>10} {'(b) full':>9} {'(b)/(a)':>8} {'train/s':>8} "
              f"{'batch':>6} {'rtt p50':>8} {'rtt p99':>8} {'infer':>6} {'train':>6} "
              f"{'handle':>6} {'trained':>7}")
    rows = []
    for actors, envs in grid:
        limit = measure_limit(actors, envs, args.seconds)
        full = measure_full(actors, envs, args.seconds, args.warmup,
                            learner_flags=learner_flags)
        rows.append((actors, envs, limit, full))
        print(f"  measured {actors}x{envs}: limit {limit:.0f}, full {full['sps']:.0f}",
              flush=True)
    print()
    print(header)
    for actors, envs, limit, full in rows:
        print(f"{f'{actors}x{envs}':>8} {limit:>10.0f} {full['sps']:>9.0f} "
              f"{full['sps'] / limit:>8.2f} {full['train_steps_per_s']:>8.1f} "
              f"{full['batch']:>6.0f} {full['rtt_p50_ms']:>6.2f}ms {full['rtt_p99_ms']:>6.2f}ms "
              f"{full['inference']:>6.0%} {full['train']:>6.0%} {full['handling']:>6.0%} "
              f"{full['trained']:>7.0%}")
    best = max(rows, key=lambda r: r[3]["sps"])
    print(f"\nbest: {best[0]}x{best[1]} at {best[3]['sps']:.0f} env steps/s with training on, "
          f"(b)/(a) = {best[3]['sps'] / best[2]:.2f}")
    print("infer / train / handle: share of the learner's wall time spent in inference "
          "forward passes, training steps, and per-message handling (decode, checks, store);\n"
          f"trained: share of the acted env steps that reached a training batch "
          f"(B x T = {BATCH_SIZE} x {UNROLL_LENGTH} per train step)")


if __name__ == "__main__":
    main()
