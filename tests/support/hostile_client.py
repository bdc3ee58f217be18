"""A hostile client for a live learner (tests/integration/test_fuzz.py): its channel, raw
and well-formed handshakes and Step streams (:class:`HostileClient`), what the learner
answered one hostile message against the status code docs/reliability.md documents for it
(:class:`Outcome`), a Step stream held open by hand, and a learner filled past
--max-total-envs. The learner under test runs with the limits named here; the cases
themselves are in hostile_cases.py."""

from __future__ import annotations

import collections
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc
from support.learner_client import handshake_request, step_request

CODE = grpc.StatusCode

ENV = "CartPole-v1"
MAX_MESSAGE = 1 << 20  # the learner's --max-message-bytes
MAX_ENVS_PER_ACTOR = 64
MAX_TOTAL_ENVS = 256
GOOD_ACTOR = "good-0"
CALL_TIMEOUT = 20.0
HANDSHAKE_METHOD = "/seed_rl.v1.Learner/Handshake"
STEP_METHOD = "/seed_rl.v1.Learner/Step"


@dataclass
class Outcome:
    """What the learner answered one hostile message."""

    case: str
    code: grpc.StatusCode
    details: str
    expected: frozenset
    words: str  # a regex the details must match (what was wrong)

    @property
    def ok(self) -> bool:
        return self.code in self.expected and re.search(self.words, self.details, re.I) is not None


class HostileClient:
    """One client thread's channel to the learner: raw and well-formed handshakes and Step
    streams, whose answers come back as (status code, details)."""

    def __init__(self, address: str, seed: int):
        self.address = address
        self.rng = random.Random(seed)
        self.channel = grpc.insecure_channel(
            address,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.stub = pb_grpc.LearnerStub(self.channel)
        self.raw_handshake = self.channel.unary_unary(HANDSHAKE_METHOD)
        self.raw_step = self.channel.stream_stream(STEP_METHOD)
        self.good_handshake = handshake_request(ENV, 2)

    def close(self) -> None:
        self.channel.close()

    def handshake_bytes(self, data: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            self.raw_handshake(data, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return CODE.OK, ""

    def handshake(self, **overrides) -> tuple[grpc.StatusCode, str]:
        request = pb.HandshakeRequest()
        request.CopyFrom(self.good_handshake)
        request.actor_id = f"fuzz-{self.rng.getrandbits(48):x}"
        request.run_id = f"{self.rng.getrandbits(64):x}"
        for key, value in overrides.items():
            if isinstance(value, pb.Space):
                getattr(request, key).CopyFrom(value)
            else:
                setattr(request, key, value)
        return self.handshake_bytes(request.SerializeToString())

    def session(self, num_envs: int = 2) -> str:
        request = pb.HandshakeRequest()
        request.CopyFrom(self.good_handshake)
        request.actor_id = f"fuzz-{self.rng.getrandbits(48):x}"
        request.run_id = f"{self.rng.getrandbits(64):x}"
        request.num_envs = num_envs
        return self.stub.Handshake(request, timeout=CALL_TIMEOUT).session_id

    def stream(self, messages: list[bytes], session_id: str | None) -> tuple[grpc.StatusCode, str]:
        metadata = [(wire.SESSION_METADATA_KEY, session_id)] if session_id is not None else []
        try:
            for _ in self.raw_step(iter(messages), metadata=metadata, timeout=CALL_TIMEOUT):
                pass
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return CODE.OK, ""

    def step(self, *messages: bytes, num_envs: int = 2) -> tuple[grpc.StatusCode, str]:
        """A fresh session, then ``messages`` on its stream."""
        return self.stream(list(messages), self.session(num_envs))

    def good_step(self, k: int = 2, **kwargs) -> pb.StepRequest:
        return step_request(np.zeros((k, 4), np.float32), **kwargs)

    @staticmethod
    def outcome(
        case: str, result: tuple[grpc.StatusCode, str], expected: set, words: str
    ) -> Outcome:
        return Outcome(case, result[0], result[1], frozenset(expected), words)


class ScriptedActorStream:
    """A Step stream held open by hand: send one message, read its answer."""

    def __init__(self, raw_step, session_id: str):
        self._requests: collections.deque = collections.deque()
        self._ready = threading.Semaphore(0)
        self._closed = False
        self._responses = raw_step(
            self._iterate(),
            timeout=CALL_TIMEOUT,
            metadata=[(wire.SESSION_METADATA_KEY, session_id)],
        )

    def _iterate(self) -> Iterator[bytes]:
        while True:
            self._ready.acquire()
            if not self._requests:
                return
            yield self._requests.popleft()

    def send(self, data: bytes) -> bytes:
        self._requests.append(data)
        self._ready.release()
        return next(self._responses)

    def close(self) -> None:
        self._ready.release()  # an empty queue ends the request stream
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass


def fill_the_learner(address: str) -> Outcome:
    """More environments than --max-total-envs across live sessions: RESOURCE_EXHAUSTED,
    and the capacity comes back as soon as the sessions close."""
    fuzzer = HostileClient(address, seed=99)
    holders = []
    try:
        per_actor = MAX_ENVS_PER_ACTOR
        while True:
            try:
                session_id = fuzzer.session(per_actor)
            except grpc.RpcError as error:
                return Outcome(
                    "more than --max-total-envs",
                    error.code(),
                    error.details() or "",
                    frozenset({CODE.RESOURCE_EXHAUSTED}),
                    r"max-total-envs",
                )
            holder = ScriptedActorStream(fuzzer.raw_step, session_id)
            holder.send(fuzzer.good_step(per_actor).SerializeToString())
            holders.append(holder)
            assert len(holders) * per_actor <= MAX_TOTAL_ENVS, "the cap was not enforced"
    finally:
        for holder in holders:
            holder.close()
        fuzzer.close()
