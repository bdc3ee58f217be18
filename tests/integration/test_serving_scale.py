"""The serving tier at fleet scale, against a real learner process and real gRPC clients:
more concurrent actor streams than the old thread pool had workers, each answered fairly,
and a full learner refusing new streams at once with RESOURCE_EXHAUSTED.

The clients are the load generator of benchmarks/serving.py (benchmarks/serving_load.py: the
wire contract over grpc.aio, one channel and connection per session, no environment
stepping)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from support.learner_process import SERVING, learner_command
from support.procs import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the load generator is shared with the benchmark
from serving_load import run_load  # noqa: E402

OLD_THREAD_POOL = 256  # the grpc worker threads that used to cap concurrent streams
TRAINER_IDLE = "--env CartPole-v1 --unroll-length 4000"  # no unroll completes in a test


def start_learner(processes, tmp_path, port: int, flags: str = "") -> str:
    learner = processes(learner_command(tmp_path / "run", port, f"{TRAINER_IDLE} {flags}"))
    learner.wait_for_line(SERVING.pattern)
    return f"127.0.0.1:{port}"


def test_hundreds_of_concurrent_streams_are_all_answered_fairly(
        tmp_path, processes, free_port) -> None:
    streams = OLD_THREAD_POOL + 144
    target = start_learner(processes, tmp_path, free_port, "--max-wait-ms 2")
    # The window opens once every session has had its first answer (each then waits), so
    # an answer in it means all streams were open and served together.
    load = asyncio.run(run_load(target, streams, 1, warmup=60.0, seconds=4.0))
    assert not load.refused, load.refusal_details
    assert load.answered_streams == streams
    assert len(load.per_stream) == streams
    assert min(load.per_stream) >= 1, "a stream got no answer while the others ran"
    # Fair: no stream gets far fewer answers than the typical one.
    assert min(load.per_stream) >= statistics.median(load.per_stream) / 4, sorted(
        load.per_stream)[:10]


def test_a_full_learner_refuses_new_streams_at_once_and_serves_the_others(
        tmp_path, processes, free_port) -> None:
    limit, extra = 5, 3
    target = start_learner(processes, tmp_path, free_port, f"--max-streams {limit}")
    started = time.monotonic()
    load = asyncio.run(run_load(target, limit + extra, 1, warmup=3.0, seconds=2.0))
    assert load.answered_streams == limit
    assert load.refused == {"RESOURCE_EXHAUSTED (handshake)": extra}
    detail = load.refusal_details["RESOURCE_EXHAUSTED (handshake)"]
    assert f"--max-streams {limit}" in detail and "retry later" in detail, detail
    assert min(load.per_stream) >= 1  # the admitted ones were served throughout
    assert time.monotonic() - started < 60  # nothing hung until a deadline

    # Once the first sessions are gone, new streams are admitted again.
    again = asyncio.run(run_load(target, limit, 1, warmup=2.0, seconds=1.0))
    assert again.answered_streams == limit and not again.refused
