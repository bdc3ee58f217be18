"""seed-rl under added network latency and packet loss, side by side in one run.

Creates a network namespace (root), impairs its own loopback (benchmarks/netns.py: tc netem
where the kernel has it, else a userspace delay proxy plus an nftables loss rule) and, for
each condition, runs a fresh learner (`python -m learner --env CartPole-v1`, training on)
and `python -m actors --num-actors N --envs-per-actor K` inside it. It prints a table:

    condition | added RTT | echo RTT | loss | env steps/s | ratio to 0 ms | ratio to no proxy |
    reply p50 | reply p99 | bound E/RTT | model E/(t0+RTT) | proxy CPU | dropped | reconnects

* env steps/s: counted by the learner (metrics.jsonl) over ``--seconds`` after ``--warmup``;
* ratio to 0 ms: to the 0 ms row of the same method (with the proxy, the proxied 0 ms row);
  ratio to no proxy: to the row without any proxy or loss (what the proxy itself costs shows
  in that row's other ratio);
* echo RTT: median round trip of a TCP echo through the same impairment, measured before
  the row's learner starts: the delay is real;
* reply p50/p99: the actors' own step round trip (request sent -> actions back), the worst
  actor's, from their status lines;
* bound E/RTT: with E = N x K envs and one request in flight per env, no env can step more
  often than once per round trip, so steps/s <= E / added RTT, whatever the learner does;
* model E/(t0+RTT): t0 = E / (0 ms rate) is one env's step cycle without added latency; if
  the delay adds to it and nothing overlaps, the rate is E / (t0 + RTT);
* proxy CPU: CPU seconds of the delay proxy over the row, start to stop, and as a share of
  one core (it shares the cores with what it measures);
* dropped: packets the loss rule dropped; reconnects: actor reconnect lines.

    sudo python benchmarks/network.py                        # 0/5/20/50 ms, 1 % loss rows
    sudo python benchmarks/network.py --seconds 20 --actor-flags "--env-groups 2"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from netns import (
    ImpairedPath,
    Impairment,
    NetworkNamespace,
    detect_method,
    echo_round_trip_ms,
    exit_cleanly_on_sigterm,
    remove_stale_namespaces,
)

REPO = Path(__file__).resolve().parents[1]
LEARNER_PORT, PROXY_PORT = 50051, 50052  # inside the namespace: nothing else listens there
TRIP = re.compile(r"round trip p50 ([\d.]+) ms, p99 ([\d.]+) ms")


@dataclass
class Row:
    impairment: Impairment
    echo_ms: float
    sps: float
    reply_p50_ms: float
    reply_p99_ms: float
    proxy_cpu_s: float | None
    proxy_wall_s: float | None
    dropped: int
    reconnects: int


def read_metrics(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                records.append(json.loads(line))
    return records


def measure(ns: NetworkNamespace, method: str, impairment: Impairment,
            args: argparse.Namespace, workdir: Path) -> Row:
    """One condition: a fresh learner and actors inside ``ns`` behind ``impairment``."""
    logdir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(args.repo.resolve()),
                                                       os.environ.get("PYTHONPATH")]))}
    with ImpairedPath(ns, method, impairment, LEARNER_PORT, PROXY_PORT) as path:
        through_proxy = method == "proxy" and impairment.proxied
        echo_ms = echo_round_trip_ms(ns, impairment.added_rtt_ms, through_proxy)[1]
        learner = ns.start(
            [sys.executable, "-P", "-m", "learner", "--env", "CartPole-v1", "--address",
             f"127.0.0.1:{LEARNER_PORT}", "--logdir", str(logdir), "--log-every", "1",
             "--status-every", "0", "--no-resume", "--target-return", "nan",
             "--checkpoint-every", "3600", "--device", "cpu",
             *shlex.split(args.learner_flags)], env)
        actors = None
        try:
            learner.wait_for_line(r"learner serving", 120.0)
            actors = ns.start(
                [sys.executable, "-P", "-m", "actors", "--learner", f"127.0.0.1:{path.port}",
                 "--num-actors", str(args.num_actors), "--envs-per-actor",
                 str(args.envs_per_actor), "--status-every", "2",
                 *shlex.split(args.actor_flags)], env)
            time.sleep(args.warmup)
            begin = time.time()
            first_line = len(actors.lines)
            time.sleep(args.seconds)
            end = time.time()
            window_lines = actors.lines[first_line:]
        finally:
            if actors is not None:
                actors.stop(30.0)
            learner.stop(60.0)
    assert actors is not None
    records = read_metrics(logdir / "metrics.jsonl")
    window = [r for r in records if begin <= r["wall_time"] <= end]
    if len(window) < 2:
        sys.stderr.write(f"{impairment.label}: too few metrics records in the window\n"
                         f"learner:\n{learner.text[-3000:]}\nactors:\n{actors.text[-3000:]}\n")
        sps = math.nan
    else:
        sps = (window[-1]["env_steps"] - window[0]["env_steps"]) / (
            window[-1]["wall_time"] - window[0]["wall_time"])
    trips = [tuple(map(float, m.groups())) for line in window_lines if (m := TRIP.search(line))]
    return Row(impairment, echo_ms, sps,
               statistics.median(t[0] for t in trips) if trips else math.nan,
               statistics.median(t[1] for t in trips) if trips else math.nan,
               path.proxy_cpu_s, path.proxy_wall_s, path.dropped_packets,
               sum("reconnecting" in line for line in actors.lines))


def conditions(method: str, rtts: list[float], loss: float,
               loss_rtts: list[float]) -> list[Impairment]:
    rows = [Impairment(0.0, 0.0, proxied=False)] if method == "proxy" else []
    rows += [Impairment(rtt, 0.0) for rtt in rtts]
    rows += [Impairment(rtt, loss) for rtt in loss_rtts] if loss > 0 else []
    return rows


def fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def print_table(rows: list[Row], total_envs: int) -> None:
    baseline = next((r.sps for r in rows if r.impairment == Impairment(0.0, 0.0)), math.nan)
    direct = next((r.sps for r in rows if not r.impairment.proxied), math.nan)
    cycle_s = total_envs / baseline if baseline > 0 else math.nan
    print("| condition | added RTT | echo RTT | loss | env steps/s | ratio to 0 ms | "
          "ratio to no proxy | reply p50 | reply p99 | bound E/RTT | model E/(t0+RTT) | "
          "proxy CPU | dropped | reconnects |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        rtt_s = row.impairment.added_rtt_ms / 1000.0
        proxy = "-"
        if row.proxy_cpu_s is not None and row.proxy_wall_s:
            proxy = f"{row.proxy_cpu_s:.2f} s ({100 * row.proxy_cpu_s / row.proxy_wall_s:.0f} %)"
        print(f"| {row.impairment.label} | {row.impairment.added_rtt_ms:g} ms | "
              f"{fmt(row.echo_ms, '.2f', ' ms')} | {row.impairment.loss_percent:g} % | "
              f"{fmt(row.sps)} | {fmt(row.sps / baseline, '.2f')} | "
              f"{fmt(row.sps / direct, '.2f')} | "
              f"{fmt(row.reply_p50_ms, '.1f', ' ms')} | {fmt(row.reply_p99_ms, '.1f', ' ms')} | "
              f"{fmt(total_envs / rtt_s) if rtt_s else '-'} | "
              f"{fmt(total_envs / (cycle_s + rtt_s)) if rtt_s else '-'} | {proxy} | "
              f"{row.dropped:,} | {row.reconnects} |")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def parse_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtts", default="0,5,20,50", help="added round trips, ms")
    parser.add_argument("--loss", type=float, default=1.0, help="loss rows: percent of packets")
    parser.add_argument("--loss-rtts", default="0,20", help="added round trips of the loss rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement per row")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    parser.add_argument("--num-actors", type=int, default=2)
    parser.add_argument("--envs-per-actor", type=int, default=64)
    parser.add_argument("--actor-flags", default="", help='more actor flags, e.g. "--env-groups 2"')
    parser.add_argument("--learner-flags", default="", help="more learner flags")
    parser.add_argument("--method", choices=("auto", "netem", "proxy"), default="auto")
    parser.add_argument("--repo", type=Path, default=REPO, metavar="CHECKOUT",
                        help="run the learner and actors from this checkout, e.g. another "
                             "commit's worktree, to measure before and after (python -P: "
                             "PYTHONPATH picks the code, not the working directory)")
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()
    remove_stale_namespaces()
    load_before = os.getloadavg()
    with NetworkNamespace() as ns, tempfile.TemporaryDirectory(prefix="seed-rl-net-") as work:
        method, why = detect_method(ns)
        if args.method != "auto":
            method, why = args.method, f"forced by --method ({why})"
        print(f"namespace {ns.name}; impairment: {method}: {why}")
        print(f"echo round trip, nothing added: {echo_round_trip_ms(ns, 0, False)[1]:.2f} ms")
        rows = []
        for impairment in conditions(method, parse_list(args.rtts), args.loss,
                                     parse_list(args.loss_rtts)):
            row = measure(ns, method, impairment, args, Path(work))
            rows.append(row)
            print(f"  {impairment.label}: {fmt(row.sps)} env steps/s, reply p50 "
                  f"{fmt(row.reply_p50_ms, '.1f', ' ms')}", flush=True)
    total = args.num_actors * args.envs_per_actor
    print(f"\n{args.num_actors} actors x {args.envs_per_actor} envs (E = {total}), CartPole-v1, "
          f"{args.seconds:g} s per row after {args.warmup:g} s; actor flags: "
          f"{args.actor_flags or '(none)'}; impairment: {method}; code: {args.repo}\n")
    print_table(rows, total)
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs; "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the namespace and its processes are gone by now
        sys.stderr.write("interrupted: the namespace and every process in it were removed\n")
        sys.exit(130)
