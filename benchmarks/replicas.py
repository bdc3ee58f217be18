"""One learner vs data-parallel replicas on this machine, side by side in one run.

For each replica count: ``seed-rl learner --env CartPole-v1 [--replicas N]`` (the CartPole
preset) and ``seed-rl actors --num-actors 2 --envs-per-actor 32`` for a fixed wall time
(the learner's ``--max-time``; the preset's target return is off, so every run lasts it). From rank 0's metrics.jsonl: env steps/s and train steps/s
over the training window, the mean return at the end, and the milliseconds per update
(``time/train_ms``: forward, backward and, with replicas, the gradient all-reduce and the
tick's control exchange). Prints a Markdown table.

    python benchmarks/replicas.py                   # 1 vs 2 replicas, 60 s each
    python benchmarks/replicas.py --replicas 1 2 4 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no learner on port {port}")


def measure(replicas: int, seconds: float, workdir: Path) -> dict:
    port = free_port()
    logdir = workdir / f"replicas-{replicas}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    learner = subprocess.Popen(
        [sys.executable, "-m", "seed_rl", "learner", "--env", "CartPole-v1", "--device", "cpu",
         "--address", f"127.0.0.1:{port}", "--logdir", str(logdir), "--replicas",
         str(replicas), "--max-time", str(seconds), "--log-every", "1", "--status-every", "0",
         "--checkpoint-every", "3600", "--target-return", "nan"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for rank in range(replicas):
            wait_for_port(port + rank, time.monotonic() + 120)
        actors = subprocess.Popen(
            [sys.executable, "-m", "seed_rl", "actors", "--learner", f"127.0.0.1:{port}",
             "--num-actors", "2", "--envs-per-actor", "32", "--status-every", "0"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        learner.wait(seconds + 120)
        actors.wait(60)
    finally:
        for proc in (learner,):
            if proc.poll() is None:
                proc.kill()
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    active = [r for r in records if r["env_steps"] > 0]
    first, last = active[0], active[-1]
    window = last["wall_time"] - first["wall_time"]
    train_ms = [r["time/train_ms"] for r in active if r.get("time/train_ms")]
    return {
        "replicas": replicas,
        "window_s": window,
        "env_sps": (last["env_steps"] - first["env_steps"]) / window,
        "train_sps": (last["train_steps"] - first["train_steps"]) / window,
        "return": last["episode_return_mean"],
        "train_ms": statistics.median(train_ms) if train_ms else float("nan"),
        "env_steps": last["env_steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seed-rl-replicas-bench-") as tmp:
        rows = [measure(n, args.seconds, Path(tmp)) for n in args.replicas]
    print(f"\nCartPole-v1 preset, 2 actors x 32 envs, {args.seconds:g} s per run, "
          f"{os.cpu_count()} CPU cores\n")
    print("| replicas | env steps/s | train steps/s | ms per update (rank 0) | "
          "mean return at the end | env steps |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ret = f"{r['return']:.1f}" if r["return"] is not None else "-"
        print(f"| {r['replicas']} | {r['env_sps']:,.0f} | {r['train_sps']:.1f} | "
              f"{r['train_ms']:.1f} | {ret} | {r['env_steps']:,} |")


if __name__ == "__main__":
    main()
