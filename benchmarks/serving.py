"""The serving tier under load: M actor sessions x K environments against a real learner
and against a bare gRPC echo server, side by side in one run.

The load generator (benchmarks/serving_load.py) speaks the wire contract
(proto/seed_rl/v1/seed_rl.proto) but steps no environment: each session handshakes as a
CartPole actor with K environments, then keeps one Step request in flight, sending the next
the moment the answer arrives (what an actor does when stepping costs nothing). All sessions
live in this one process on grpc.aio, each on its own channel and TCP connection, as
separate actor processes would be. Requests are serialized once and answers are not parsed,
so the generator stays cheap: its own CPU use is in the table.

For every load point it runs, one after the other:
- ``learner idle``: ``seed-rl learner --env CartPole-v1`` with an unroll length no session
  reaches during the run, so the trainer never gets a batch and only serving is measured;
- ``learner training``: the same learner with the CartPole preset's unrolls (T=16, B=16),
  so the trainer runs and takes its share of the two cores;
- ``echo``: a grpc.aio server in its own process that answers a handshake with a session
  id and every Step request with its own bytes: the ceiling Python gRPC sets on this
  machine.
- ``serve`` (with ``--serve``): ``seed-rl serve`` answering from a checkpoint of the same
  model (a real learner's, written by a one-second ``seed-rl learner`` run, or
  ``--serve-checkpoint``), training off: the serving path without trainer or unroll store.

Columns: messages answered per second in the measurement window, reply latency p50/p99
(send to answer), streams that got at least one answer, refusals by status code, streams
that neither got an answer nor an error by the end (hanging: must be 0), the server's and
the generator's CPU (cores busy on average over the window).

    python benchmarks/serving.py                          # the default load points
    python benchmarks/serving.py --points 64x1 1000x1 --seconds 10
    python benchmarks/serving.py --serve                  # seed-rl serve beside the learner
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving_load import RAMP_PER_S, generator_cpu, run_load_in_processes  # noqa: E402

from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb  # noqa: E402

IDLE_UNROLL_LENGTH = 4000  # longer than any session's message count in one run
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the echo server ----------------------------------------------------------------------
def serve_echo(port: int) -> None:
    """A grpc.aio server that answers Handshake with a session id and echoes Step."""

    async def handshake(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return pb.HandshakeResponse(session_id=uuid.uuid4().hex, slot_ids=[0]).SerializeToString()

    async def step(requests, _context):
        async for request in requests:
            yield request

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "seed_rl.v1.Learner", {
                "Handshake": grpc.unary_unary_rpc_method_handler(handshake),
                "Step": grpc.stream_stream_rpc_method_handler(step)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


# -- servers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def learner_checkpoint(workdir: Path, learner_flags: list[str]) -> Path:
    """A checkpoint of the model the learner rows serve: ``seed-rl learner --env CartPole-v1``
    run for a second (its final checkpoint); the logdir holding it."""
    logdir = workdir / "serve-checkpoint"
    subprocess.run([sys.executable, "-m", "seed_rl", "learner", "--env", "CartPole-v1",
                    "--device", "cpu", "--address", "127.0.0.1:0", "--logdir", str(logdir),
                    "--status-every", "0", "--max-time", "1", *learner_flags],
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return logdir


def start_server(kind: str, port: int, workdir: Path, streams: int, k: int,
                 learner_flags: list[str], repo: Path = REPO,
                 checkpoint: Path | None = None) -> subprocess.Popen:
    """The echo server, ``seed-rl serve`` of ``checkpoint``, or ``seed-rl learner`` run from
    the checkout at ``repo``."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    if kind == "echo":
        command = [sys.executable, __file__, "--serve-echo", str(port)]
    elif kind == "serve":
        command = [sys.executable, "-m", "seed_rl", "serve", "--checkpoint", str(checkpoint),
                   "--device", "cpu", "--address", f"127.0.0.1:{port}",
                   "--logdir", str(workdir / f"{kind}-{streams}x{k}-{port}"),
                   "--status-every", "0", "--max-total-envs", str(max(16384, streams * k))]
    else:
        command = [sys.executable, "-m", "seed_rl", "learner", "--env", "CartPole-v1",
                   "--device", "cpu", "--address", f"127.0.0.1:{port}",
                   "--logdir", str(workdir / f"{kind}-{streams}x{k}-{port}"),
                   "--status-every", "0", "--checkpoint-every", "3600",
                   "--max-total-envs", str(max(16384, streams * k)), *learner_flags]
        if kind == "learner idle":
            command += ["--unroll-length", str(IDLE_UNROLL_LENGTH)]
    return subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure(kind: str, streams: int, k: int, warmup: float, seconds: float, workdir: Path,
            learner_flags: list[str], ramp_per_s: float = RAMP_PER_S,
            repo: Path = REPO, label: str = "", checkpoint: Path | None = None) -> dict:
    port = free_port()
    server = start_server(kind, port, workdir, streams, k, learner_flags, repo, checkpoint)
    try:
        wait_for_port(port, server, time.monotonic() + 120)
        time.sleep(1.0)
        server_cpu, own = cpu_seconds(server.pid), generator_cpu()
        started = time.monotonic()
        load = run_load_in_processes(f"127.0.0.1:{port}", streams, k, warmup, seconds,
                                     ramp_per_s)
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(server.pid) - server_cpu
        own_cpu = generator_cpu() - own
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "server": kind + label, "streams": streams, "k": k,
        "messages_per_s": load.messages_in_window / seconds,
        "p50_ms": 1000 * percentile(load.latencies_s, 0.5),
        "p99_ms": 1000 * percentile(load.latencies_s, 0.99),
        "first_p50_s": percentile(load.first_answer_s, 0.5),
        "first_p99_s": percentile(load.first_answer_s, 0.99),
        "first_max_s": max(load.first_answer_s, default=math.nan),
        "handshake_max_s": max(load.handshake_s, default=math.nan),
        "first_within_5s": sum(t <= 5.0 for t in load.first_answer_s),
        "answered": load.answered_streams, "refused": dict(load.refused),
        "refusal_details": load.refusal_details,
        "hanging": streams - load.answered_streams - sum(
            n for code, n in load.refused.items() if not code.startswith("stream ended")),
        "fewest_per_stream": min(load.per_stream, default=0),
        "median_per_stream": statistics.median(load.per_stream) if load.per_stream else 0,
        "server_cores": server_cpu / elapsed, "generator_cores": own_cpu / elapsed,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_table(rows: list[dict]) -> None:
    print("| streams x K | server | msgs/s | reply p50 / p99 | handshake max | first answer "
          "p50 / p99 / max | first answer within 5 s | streams answered | answers per stream, "
          "fewest / median | refused | hanging | server cores | generator cores |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in rows:
        refused = ", ".join(f"{n} {code}" for code, n in row["refused"].items()) or "-"
        print(f"| {row['streams']} x {row['k']} | {row['server']} | "
              f"{row['messages_per_s']:,.0f} | {row['p50_ms']:.0f} ms / {row['p99_ms']:.0f} ms "
              f"| {row['handshake_max_s']:.1f} s "
              f"| {row['first_p50_s']:.1f} s / {row['first_p99_s']:.1f} s / "
              f"{row['first_max_s']:.1f} s | {row['first_within_5s']} "
              f"| {row['answered']} of {row['streams']} | {row['fewest_per_stream']} / "
              f"{row['median_per_stream']:.0f} | {refused} | {row['hanging']} | "
              f"{row['server_cores']:.2f} | {row['generator_cores']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", nargs="+",
                        default=["64x1", "64x32", "256x1", "1000x1", "1000x32", "5000x1"],
                        help="load points, streams x K")
    parser.add_argument("--servers", nargs="+", default=["learner idle", "learner training",
                                                          "echo"])
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--ramp", type=float, default=RAMP_PER_S,
                        help="new sessions a second; 0 opens them all at once (a storm)")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also run each learner row from this checkout (another commit), "
                             "labelled (before)")
    parser.add_argument("--learner-flags", default="", help="extra seed-rl learner flags")
    parser.add_argument("--serve", action="store_true",
                        help="also run `seed-rl serve` (training off) on a checkpoint of the "
                        "same model, under the same load")
    parser.add_argument("--serve-checkpoint", type=Path, metavar="RUN_OR_FILE",
                        help="the checkpoint --serve serves (default: a learner's, written "
                        "by a one-second run)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per session
    servers = list(args.servers) + (["serve"] if args.serve and "serve" not in args.servers
                                    else [])
    runs = [(kind, REPO, "") for kind in servers]
    if args.before:
        runs = [(kind, args.before.resolve(), " (before)") for kind in servers
                if kind not in ("echo", "serve")] + runs
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-rl-serving-") as workdir:
        checkpoint = args.serve_checkpoint
        if "serve" in servers and checkpoint is None:
            checkpoint = learner_checkpoint(Path(workdir), args.learner_flags.split())
        for point in args.points:
            streams, k = (int(x) for x in point.split("x"))
            for kind, repo, label in runs:
                row = measure(kind, streams, k, args.warmup, args.seconds, Path(workdir),
                              args.learner_flags.split(), args.ramp, repo, label, checkpoint)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
