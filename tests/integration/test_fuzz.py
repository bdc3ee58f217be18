"""Hostile and malformed input against a live learner, while a real actor keeps training.

A real ``python -m learner`` serves CartPole and a real ``python -m actors`` process trains
against it. Four client threads then send well over 1000 malformed or hostile messages:
random bytes, invalid UTF-8, wrong dtypes, shapes and byte lengths, oversized messages,
NaN/inf values, streams without a handshake, wrong protocol versions, duplicate actor ids,
far too many environments... Each case names the status code docs/reliability.md
documents for it and words its message must contain. The learner must answer every one
so, never crash (no traceback in its log), keep its memory flat, keep training the good
actor (never disturbing its session), and still serve a new actor afterwards. The counts
per status code are printed (``pytest -s``).
"""

from __future__ import annotations

import collections
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_process import (
    SERVING,
    actors_command,
    last_metric,
    learner_command,
    rss_bytes,
    wait_for,
)

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

CODE = grpc.StatusCode
ENV = "CartPole-v1"
MAX_MESSAGE = 1 << 20  # the learner's --max-message-bytes
MAX_ENVS_PER_ACTOR = 64
MAX_TOTAL_ENVS = 256
GOOD_ACTOR = "good-0"
HOSTILE_MESSAGES = 1000
THREADS = 4
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


class Fuzzer:
    """One client thread's channel and the hostile cases it can send."""

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
        self.cases: list[Callable[[], Outcome]] = [
            getattr(self, name) for name in dir(self) if name.startswith("case_")
        ]

    def close(self) -> None:
        self.channel.close()

    # -- plumbing --------------------------------------------------------------------------

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

    # -- handshakes ------------------------------------------------------------------------

    def case_random_bytes_handshake(self) -> Outcome:
        data = self.rng.randbytes(self.rng.randint(1, 2000))
        return self.outcome(
            "random bytes (handshake)",
            self.handshake_bytes(data),
            {CODE.INVALID_ARGUMENT, CODE.FAILED_PRECONDITION},
            r".",
        )

    def case_invalid_utf8_in_handshake(self) -> Outcome:
        field = self.rng.choice([2, 3, 5, 6])  # actor_id, run_id, env_id, env_kwargs_json
        junk = b"\xff\xfe" + self.rng.randbytes(8) + b"\xc3\x28"
        data = self.good_handshake.SerializeToString() + bytes([field << 3 | 2, len(junk)]) + junk
        return self.outcome(
            "invalid UTF-8 (handshake)",
            self.handshake_bytes(data),
            {CODE.INVALID_ARGUMENT},
            r"UTF-8",
        )

    def case_wrong_protocol_version(self) -> Outcome:
        version = self.rng.choice([0, 2, 3, 2**31, 2**32 - 1])
        return self.outcome(
            "wrong protocol version",
            self.handshake(protocol_version=version),
            {CODE.FAILED_PRECONDITION},
            r"protocol version",
        )

    def case_bad_actor_id(self) -> Outcome:
        bad = self.rng.choice(["", "tab\there", "nul\x00", "x" * 10_000, "\u202eevil\n"])
        key = self.rng.choice(["actor_id", "run_id"])
        return self.outcome(
            "unprintable or empty id", self.handshake(**{key: bad}), {CODE.INVALID_ARGUMENT}, key
        )

    def case_far_too_many_envs(self) -> Outcome:
        k = self.rng.choice([0, MAX_ENVS_PER_ACTOR + 1, 10**6, 2**32 - 1])
        return self.outcome(
            "far too many (or zero) environments",
            self.handshake(num_envs=k),
            {CODE.INVALID_ARGUMENT},
            r"num_envs",
        )

    def case_bad_env_kwargs(self) -> Outcome:
        text = self.rng.choice(["{", "[" * 100_000, '{"a": ' * 50_000, "\x00"])
        return self.outcome(
            "bad env kwargs JSON",
            self.handshake(env_kwargs_json=text),
            {CODE.INVALID_ARGUMENT},
            r"bad handshake",
        )

    def case_spaces_mismatch(self) -> Outcome:
        space = self.rng.choice(
            [
                ("action_space", wire.encode_space(gym.spaces.Discrete(3))),
                (
                    "observation_space",
                    wire.encode_space(gym.spaces.Box(-1, 1, shape=(5,), dtype=np.float32)),
                ),
                ("env_id", "Pong-v5"),
            ]
        )
        return self.outcome(
            "spaces/env mismatch",
            self.handshake(**{space[0]: space[1]}),
            {CODE.FAILED_PRECONDITION},
            r"disagree",
        )

    def case_malformed_space(self) -> Outcome:
        box = pb.Space(
            box=pb.BoxSpace(
                dtype=self.rng.choice(["float32", "object", "complex64"]),
                shape=[self.rng.choice([2**40, -3, 4])],
                low=pb.Tensor(dtype="float32", shape=[4], data=b"\0" * 3),
            )
        )
        return self.outcome(
            "malformed space",
            self.handshake(observation_space=box),
            {CODE.INVALID_ARGUMENT},
            r"bad handshake",
        )

    def case_duplicate_actor_id(self) -> Outcome:
        return self.outcome(
            "duplicate actor id",
            self.handshake(actor_id=GOOD_ACTOR),
            {CODE.ALREADY_EXISTS},
            r"already connected",
        )

    def case_oversized_handshake(self) -> Outcome:
        result = self.handshake(env_kwargs_json=json.dumps({"pad": "x" * (MAX_MESSAGE + 1000)}))
        return self.outcome(
            "oversized handshake", result, {CODE.RESOURCE_EXHAUSTED}, r"larger than max"
        )

    def case_unknown_method(self) -> Outcome:
        try:
            self.channel.unary_unary("/seed_rl.v1.Learner/Nope")(b"", timeout=CALL_TIMEOUT)
            result = (CODE.OK, "")
        except grpc.RpcError as error:
            result = (error.code(), error.details() or "")
        return self.outcome("unknown method", result, {CODE.UNIMPLEMENTED}, r"unimplemented|method")

    # -- step streams ----------------------------------------------------------------------

    def case_stream_without_handshake(self) -> Outcome:
        session = self.rng.choice([None, "", "no-such-session", "f" * 4000])
        result = self.stream([self.good_step().SerializeToString()], session)
        return self.outcome(
            "Step without a handshake", result, {CODE.NOT_FOUND}, r"call Handshake again"
        )

    def case_second_stream_on_a_session(self) -> Outcome:
        session_id = self.session()
        first = ScriptedActorStream(self.raw_step, session_id)
        try:
            first.send(self.good_step().SerializeToString())
            result = self.stream([self.good_step().SerializeToString()], session_id)
        finally:
            first.close()
        return self.outcome(
            "second stream on one session", result, {CODE.FAILED_PRECONDITION},
            r"already has its stream"
        )

    def case_random_bytes_step(self) -> Outcome:
        data = self.rng.randbytes(self.rng.randint(1, 4000))
        return self.outcome("random bytes (step)", self.step(data), {CODE.INVALID_ARGUMENT}, r".")

    def case_invalid_utf8_in_step(self) -> Outcome:
        tensor = pb.Tensor(shape=[2, 4], data=b"\0" * 32).SerializeToString()
        tensor += bytes([1 << 3 | 2, 4]) + b"\xff\xfefl"  # Tensor.dtype: not UTF-8
        data = bytes([1 << 3 | 2, len(tensor)]) + tensor  # StepRequest.observations
        return self.outcome(
            "invalid UTF-8 (step)", self.step(data), {CODE.INVALID_ARGUMENT}, r"UTF-8"
        )

    def case_wrong_dtype(self) -> Outcome:
        request = self.good_step()
        field, array = self.rng.choice(
            [
                ("observations", np.zeros((2, 4), np.float64)),
                ("observations", np.zeros((2, 4), np.int32)),
                ("terminated", np.zeros(2, np.uint8)),
                ("rewards", np.zeros(2, np.int64)),
            ]
        )
        getattr(request, field).CopyFrom(wire.encode_tensor(array))
        return self.outcome(
            "wrong dtype", self.step(request.SerializeToString()), {CODE.INVALID_ARGUMENT}, r"dtype"
        )

    def case_wrong_shape(self) -> Outcome:
        request = self.good_step()
        field, array = self.rng.choice(
            [
                ("observations", np.zeros((3, 4), np.float32)),
                ("observations", np.zeros((2, 5), np.float32)),
                ("observations", np.zeros((8,), np.float32)),
                ("rewards", np.zeros((2, 1), np.float32)),
                ("truncated", np.zeros(7, bool)),
            ]
        )
        getattr(request, field).CopyFrom(wire.encode_tensor(array))
        return self.outcome(
            "wrong shape", self.step(request.SerializeToString()), {CODE.INVALID_ARGUMENT}, r"shape"
        )

    def case_byte_length_mismatch(self) -> Outcome:
        request = self.good_step()
        request.observations.data = self.rng.randbytes(self.rng.choice([0, 31, 33, 1000]))
        return self.outcome(
            "byte length does not match shape",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"bytes of data",
        )

    def case_bad_tensor_header(self) -> Outcome:
        request = self.good_step()
        dtype, shape = self.rng.choice(
            [
                ("object", [2, 4]),
                ("complex64", [2, 4]),
                ("<script>", [2, 4]),
                ("", [2, 4]),
                ("float32", [2] * 9),
                ("float32", [-2, -4]),
                ("float32", [10**12, 4]),
            ]
        )
        del request.observations.shape[:]
        request.observations.dtype = dtype
        request.observations.shape.extend(shape)
        return self.outcome(
            "bad dtype name, rank or shape",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"not allowed|dimension|limit",
        )

    def case_non_finite_values(self) -> Outcome:
        bad = self.rng.choice([np.nan, np.inf, -np.inf])
        if self.rng.random() < 0.5:
            request = self.good_step(rewards=[0.0, bad])
        else:
            observations = np.zeros((2, 4), np.float32)
            observations[1, self.rng.randrange(4)] = bad
            request = step_request(observations)
        return self.outcome(
            "NaN/inf reward or observation",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"non-finite",
        )

    def case_reward_beyond_float32(self) -> Outcome:
        request = self.good_step()
        request.rewards.CopyFrom(wire.encode_tensor(np.array([1e300, 0.0])))
        return self.outcome(
            "float64 reward beyond float32",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"non-finite",
        )

    def case_bool_bytes(self) -> Outcome:
        request = self.good_step()
        request.terminated.data = bytes([0, self.rng.randint(2, 255)])
        return self.outcome(
            "bool bytes other than 0/1",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"0 or 1",
        )

    def case_bad_final_observations(self) -> Outcome:
        final = np.zeros((1, 4), np.float32)
        request = self.rng.choice(
            [
                self.good_step(truncated=[True, False], final_envs=[7], final_observations=final),
                self.good_step(truncated=[False, False], final_envs=[0], final_observations=final),
                self.good_step(
                    truncated=[True, True],
                    final_envs=[0, 0],
                    final_observations=np.zeros((2, 4), np.float32),
                ),
                self.good_step(truncated=[True, False]),
            ]
        )
        return self.outcome(
            "bad final observations",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"final",
        )

    def case_bad_episode_stats(self) -> Outcome:
        episodes = self.rng.choice(
            [[(5, 1.0, 3)], [(0, float("nan"), 3)], [(0, 1.0, 1)] * 3, [(1, float("inf"), 2)]]
        )
        request = self.good_step(episodes=episodes)
        return self.outcome(
            "bad episode stats",
            self.step(request.SerializeToString()),
            {CODE.INVALID_ARGUMENT},
            r"episodes",
        )

    def case_oversized_step(self) -> Outcome:
        request = self.good_step()
        request.observations.data = b"\0" * (MAX_MESSAGE + 1000)
        return self.outcome(
            "oversized step",
            self.step(request.SerializeToString()),
            {CODE.RESOURCE_EXHAUSTED},
            r"larger than max",
        )

    def case_good_then_bad(self) -> Outcome:
        bad = self.good_step()
        bad.rewards.CopyFrom(wire.encode_tensor(np.array([np.nan, 0], np.float32)))
        result = self.step(self.good_step().SerializeToString(), bad.SerializeToString())
        return self.outcome(
            "a good step, then a bad one", result, {CODE.INVALID_ARGUMENT}, r"non-finite"
        )


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
    fuzzer = Fuzzer(address, seed=99)
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


@pytest.mark.slow
def test_fuzz_the_learner_while_a_good_actor_trains(tmp_path, processes, free_port) -> None:
    logdir = tmp_path / "run"
    learner = processes(
        learner_command(
            logdir,
            free_port,
            f"--env {ENV} --max-message-bytes {MAX_MESSAGE} "
            f"--max-envs-per-actor {MAX_ENVS_PER_ACTOR} --max-total-envs {MAX_TOTAL_ENVS} ",
        )
    )
    learner.wait_for_line(SERVING.pattern)
    actor = processes(
        actors_command(
            free_port, f"--actor-index 0 --actor-id-prefix good --env {ENV} --envs-per-actor 4"
        )
    )
    wait_for(
        lambda: last_metric(logdir, "train_steps") >= 3, "the good actor training", process=learner
    )
    address = f"127.0.0.1:{free_port}"
    pid = learner.popen.pid

    outcomes: list[Outcome] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    rss_after_warmup: list[int] = []

    def fire(seed: int, count: int) -> None:
        fuzzer = Fuzzer(address, seed)
        try:
            for _ in range(count):
                outcome = fuzzer.rng.choice(fuzzer.cases)()
                with lock:
                    outcomes.append(outcome)
                    if len(outcomes) == 200:
                        rss_after_warmup.append(rss_bytes(pid))
        except BaseException as error:  # surfaced below, never swallowed
            errors.append(error)
        finally:
            fuzzer.close()

    steps_before = last_metric(logdir, "env_steps")
    trained_before = last_metric(logdir, "train_steps")
    started = time.monotonic()
    per_thread = -(-HOSTILE_MESSAGES // THREADS) + 10
    threads = [threading.Thread(target=fire, args=(seed, per_thread)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "fuzz threads did not finish"
    assert not errors, f"a fuzz client failed: {errors[0]!r}"
    outcomes.append(fill_the_learner(address))
    elapsed = time.monotonic() - started
    rss_end = rss_bytes(pid)

    bad = [o for o in outcomes if not o.ok]
    assert not bad, "unexpected answers:\n" + "\n".join(
        f"  {o.case}: {o.code.name} {o.details[:200]!r} (expected "
        f"{sorted(c.name for c in o.expected)} matching {o.words!r})"
        for o in bad[:10]
    )
    assert len(outcomes) >= HOSTILE_MESSAGES
    assert learner.popen.poll() is None, learner.text
    # Memory stays flat (a loose bound: no leak per message).
    growth = rss_end - rss_after_warmup[0]
    assert growth < 100 * 2**20, f"learner RSS grew {growth / 2**20:.0f} MiB"
    # The good actor trained throughout, never disturbed (one session the whole time).
    wait_for(
        lambda: last_metric(logdir, "train_steps") > trained_before + 5,
        "the good actor to keep training",
        process=learner,
    )
    assert last_metric(logdir, "env_steps") > steps_before
    # And a new, well-behaved actor is still served.
    newcomer = ScriptedActor(address, handshake_request(ENV, 3, actor_id="newcomer"))
    for _ in range(3):
        response = newcomer.step(step_request(np.zeros((3, 4), np.float32)))
        assert newcomer.actions(response).shape == (3,)
    newcomer.close()

    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    assert "Traceback" not in learner.text, learner.text[-5000:]
    assert actor.text.count("connected to the learner") == 1, actor.text

    by_code = collections.Counter(o.code.name for o in outcomes)
    by_case = collections.Counter(o.case for o in outcomes)
    print(
        f"\nfuzz: {len(outcomes)} hostile messages in {elapsed:.1f} s from {THREADS} "
        f"threads; learner RSS {rss_after_warmup[0] / 2**20:.0f} -> "
        f"{rss_end / 2**20:.0f} MiB; the good actor trained on"
    )
    for code, count in by_code.most_common():
        print(f"  {code:20s} {count}")
    print(
        f"  ({len(by_case)} kinds of message: "
        + ", ".join(f"{case} {count}" for case, count in sorted(by_case.items()))
        + ")"
    )
