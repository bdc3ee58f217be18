"""Env steps/s of the C++ reference actor (clients/cpp/) against the Python actors:
CartPole-v1, the same learner command, the same N actor processes x K environments, side
by side in one run, one table.

Each N x K is measured twice, each time against a fresh real learner process (training on,
`python -m learner --env CartPole-v1 --target-return nan`, so that reaching 475 does not
end the window) by benchmarks/throughput.py's ``measure_full``: once with `seed-rl actors
--num-actors N --envs-per-actor K` (Python), once with N `seed-rl-cpp-actor
--envs-per-actor K` processes (C++). The learner counts the env steps; the round trip is the
median of the p50 / p99 the actors' status lines print (Python: the worst actor of each
line; C++: every process's own lines). The question it answers: is the C++ actor the
bottleneck? When C++ and Python reach the same steps/s, the learner is.

    python benchmarks/cpp_actors.py                          # default grid
    python benchmarks/cpp_actors.py --grid 2x32 --seconds 5 --warmup 3   # a smoke run

The C++ actor is built first (cmake, into clients/cpp/build; clients/cpp/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from throughput import measure_full, python_actors

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "clients" / "cpp"
BUILD = SOURCE / "build"
BINARY = BUILD / "seed-rl-cpp-actor"
LEARNER_FLAGS = ("--target-return", "nan")


def build() -> Path:
    """Configure (once) and build the C++ actor; its path. Exits with the build's error."""
    steps = [] if (BUILD / "CMakeCache.txt").exists() else [
        ["cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"]]
    steps.append(["cmake", "--build", str(BUILD), "-j2"])
    for step in steps:
        try:
            subprocess.run(step, check=True, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as error:
            sys.exit(f"cpp_actors.py: cannot build the C++ actor ({error}); see "
                     "clients/cpp/README.md for the packages it needs")
    return BINARY


def cpp_actors(address: str, actors: int, envs: int,
               env: dict[str, str]) -> list[subprocess.Popen]:
    """``actors`` C++ actor processes of ``envs`` environments each."""
    return [subprocess.Popen(
        [str(BINARY), "--learner", address, "--envs-per-actor", str(envs), "--actor-id",
         f"bench-cpp-{i}", "--seed", str(i), "--status-every", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for i in range(actors)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="1x32,2x32,2x64,2x128,4x128",
                        help="comma-separated NxK (actor processes x envs per process)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    args = parser.parse_args()
    grid = [tuple(int(x) for x in item.split("x")) for item in args.grid.split(",")]
    build()
    print(f"CartPole-v1 env steps/s, C++ actors against Python actors, {os.cpu_count()} CPUs; "
          f"window {args.seconds:g} s after {args.warmup:g} s warm-up, a fresh learner "
          "(training on) per measurement")
    rows = []
    for actors, envs in grid:
        python = measure_full(actors, envs, args.seconds, args.warmup, python_actors,
                              LEARNER_FLAGS)
        cpp = measure_full(actors, envs, args.seconds, args.warmup, cpp_actors, LEARNER_FLAGS)
        rows.append((actors, envs, python, cpp))
        print(f"  measured {actors}x{envs}: Python {python['sps']:.0f}, C++ {cpp['sps']:.0f}",
              flush=True)
    print()
    print(f"{'N x K':>8} {'Python':>9} {'C++':>9} {'C++/Py':>7} {'rtt p50 Py':>11} "
          f"{'rtt p50 C++':>12} {'infer Py':>9} {'infer C++':>10} {'train/s Py':>11} "
          f"{'train/s C++':>12}")
    for actors, envs, python, cpp in rows:
        print(f"{f'{actors}x{envs}':>8} {python['sps']:>9.0f} {cpp['sps']:>9.0f} "
              f"{cpp['sps'] / python['sps']:>7.2f} {python['rtt_p50_ms']:>9.2f}ms "
              f"{cpp['rtt_p50_ms']:>10.2f}ms {python['inference']:>9.0%} "
              f"{cpp['inference']:>10.0%} {python['train_steps_per_s']:>11.1f} "
              f"{cpp['train_steps_per_s']:>12.1f}")
    print("env steps/s as the learner counts them; rtt: actor step round trip (request sent "
          "-> actions back);\ninfer: share of the learner's wall time in inference forward "
          "passes; train/s: the learner's updates per second")


if __name__ == "__main__":
    main()
