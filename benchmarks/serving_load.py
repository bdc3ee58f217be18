"""The load generator of benchmarks/serving.py: actor sessions that speak the wire contract
(proto/seed_rl/v1/seed_rl.proto) but step no environment.

Each session handshakes as a CartPole actor with K environments on its own grpc.aio
channel and TCP connection, as a separate actor process would, then keeps one Step request
in flight, sending the next the moment the answer arrives. Requests are serialized once and
answers are not parsed, so the generator stays cheap. Past STREAMS_PER_PROCESS sessions the
load is split over generator processes whose windows open together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import multiprocessing
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import gymnasium as gym
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seed_rl import wire  # noqa: E402
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb  # noqa: E402

HANDSHAKE = "/seed_rl.v1.Learner/Handshake"
STEP = "/seed_rl.v1.Learner/Step"
STREAMS_PER_PROCESS = 1250
RAMP_PER_S = 500.0  # new sessions a second, all generator processes together


# -- the load generator ---------------------------------------------------------------------
@dataclass
class Load:
    """What all sessions of one load point saw."""

    streams: int
    answered_streams: int = 0
    refused: collections.Counter = field(default_factory=collections.Counter)
    refusal_details: dict[str, str] = field(default_factory=dict)  # one message per code
    handshake_s: list[float] = field(default_factory=list)  # session start to its handshake
    first_answer_s: list[float] = field(default_factory=list)  # session start to 1st answer
    messages_in_window: int = 0
    latencies_s: list[float] = field(default_factory=list)
    per_stream: list[int] = field(default_factory=list)  # answers in the window, by stream
    window: tuple[float, float] = (math.inf, math.inf)
    go: asyncio.Event = field(default_factory=asyncio.Event)  # every session has started

    def check_all_started(self) -> None:
        if self.answered_streams + sum(self.refused.values()) >= self.streams:
            self.go.set()


def step_request(k: int) -> bytes:
    """One Step request of K CartPole environments: x_t, reward 0, no episode ends."""
    request = pb.StepRequest()
    wire.encode_tensor(np.zeros((k, 4), np.float32), out=request.observations)
    wire.encode_tensor(np.zeros(k, np.float32), out=request.rewards)
    wire.encode_tensor(np.zeros(k, bool), out=request.terminated)
    wire.encode_tensor(np.zeros(k, bool), out=request.truncated)
    wire.encode_tensor(np.zeros((0, 4), np.float32), out=request.final_observations)
    return request.SerializeToString()


@functools.cache
def cartpole_spaces() -> tuple[pb.Space, pb.Space]:
    env = gym.make("CartPole-v1")
    return wire.encode_space(env.observation_space), wire.encode_space(env.action_space)


def handshake_request(k: int, index: int) -> pb.HandshakeRequest:
    observation_space, action_space = cartpole_spaces()
    return pb.HandshakeRequest(
        protocol_version=wire.PROTOCOL_VERSION, actor_id=f"load-{uuid.uuid4().hex[:8]}-{index}",
        run_id=uuid.uuid4().hex, num_envs=k, env_id="CartPole-v1", env_kwargs_json="{}",
        observation_space=observation_space, action_space=action_space)


async def one_session(target: str, k: int, index: int, load: Load, deadline: float,
                      ramp_per_s: float) -> None:
    """After ``index / ramp_per_s`` seconds: handshake, send the first step and wait until
    every session has its first answer or its refusal (or ``deadline``), then keep one
    Step request in flight until the window ends. In a storm (``ramp_per_s`` 0) a session
    does not wait after its first answer: it steps on at once, as a reconnected actor does,
    while the others are still handshaking."""
    if ramp_per_s > 0:
        await asyncio.sleep(index / ramp_per_s)
    options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection, like an actor
    started = time.monotonic()
    phase = "handshake"
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        try:
            answer = await channel.unary_unary(
                HANDSHAKE, request_serializer=pb.HandshakeRequest.SerializeToString,
                response_deserializer=pb.HandshakeResponse.FromString)(
                    handshake_request(k, index), timeout=max(1.0, deadline - started))
            phase = "step"
            load.handshake_s.append(time.monotonic() - started)
            call = channel.stream_stream(STEP)(
                metadata=((wire.SESSION_METADATA_KEY, answer.session_id),))
            request = step_request(k)
            answered, in_window = False, 0
            while time.monotonic() < load.window[1]:
                sent = time.monotonic()
                await call.write(request)
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    load.refused["stream ended (step)"] += 1
                    return
                now = time.monotonic()
                if not answered:
                    answered = True
                    load.answered_streams += 1
                    load.first_answer_s.append(now - started)
                    load.check_all_started()
                    if ramp_per_s > 0:  # a ramp starts together; a storm steps on at once
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(load.go.wait(), max(0.0, deadline - now))
                elif load.window[0] <= now < load.window[1]:
                    in_window += 1
                    load.latencies_s.append(now - sent)
            load.messages_in_window += in_window
            load.per_stream.append(in_window)
            call.cancel()
        except grpc.aio.AioRpcError as error:
            code = f"{error.code().name} ({phase})"
            load.refused[code] += 1
            load.refusal_details.setdefault(code, error.details() or "")
            load.check_all_started()


async def run_load(target: str, streams: int, k: int, warmup: float, seconds: float,
                   ramp_per_s: float = 500.0, start_at: float | None = None) -> Load:
    """``streams`` sessions of K environments, starting ``ramp_per_s`` a second (a fleet
    arrives over time; a burst of over ~1,000 connections in a second makes gRPC cancel
    some, even against the bare echo server); each waits after its first answer until all
    have theirs or were refused (at most ``warmup`` seconds), then all run for a window of
    ``seconds``. Every session either answers, fails with a status code, or is counted as
    hanging. ``ramp_per_s`` 0 opens every session at once (a storm, as after a learner
    restart), at wall-clock time ``start_at`` when given (the generator processes together).
    """
    cartpole_spaces()
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    load = Load(streams)
    deadline = time.monotonic() + warmup

    async def open_window() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.go.wait(), warmup)
        now = time.monotonic()
        load.window = (now + 0.5, now + 0.5 + seconds)  # 0.5 s for the release to settle
        load.go.set()

    await asyncio.wait_for(asyncio.gather(open_window(), *(
        one_session(target, k, i, load, deadline, ramp_per_s) for i in range(streams))),
        timeout=warmup + seconds + 60)
    return load


def load_part(args: tuple[str, int, int, float, float, float, float]) -> Load:
    load = asyncio.run(run_load(*args))
    load.go = None  # an asyncio.Event does not cross processes
    return load


def run_load_in_processes(target: str, streams: int, k: int, warmup: float,
                          seconds: float, ramp_per_s: float = RAMP_PER_S) -> Load:
    """run_load with at most STREAMS_PER_PROCESS sessions per generator process (a gRPC
    channel holds several file descriptors; actors are separate processes anyway); the
    parts' windows open together within the warm-up, their counts are summed."""
    parts = math.ceil(streams / STREAMS_PER_PROCESS)
    if parts == 1:
        return asyncio.run(run_load(target, streams, k, warmup, seconds, ramp_per_s))
    shares = [streams // parts + (i < streams % parts) for i in range(parts)]
    with multiprocessing.get_context("spawn").Pool(parts) as pool:
        start_at = time.time() + 5.0  # every part imported and ready: a storm opens together
        results = pool.map(load_part, [(target, n, k, warmup, seconds, ramp_per_s / parts,
                                        start_at) for n in shares])
    total = Load(streams)
    for part in results:
        total.answered_streams += part.answered_streams
        total.refused.update(part.refused)
        for code, detail in part.refusal_details.items():
            total.refusal_details.setdefault(code, detail)
        total.handshake_s += part.handshake_s
        total.first_answer_s += part.first_answer_s
        total.messages_in_window += part.messages_in_window
        total.latencies_s += part.latencies_s
        total.per_stream += part.per_stream
    return total


def generator_cpu() -> float:
    """CPU seconds of this process and its finished children (the generator parts)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)
