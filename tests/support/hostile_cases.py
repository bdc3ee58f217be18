"""The hostile cases a :class:`Fuzzer` sends a live learner (tests/integration/test_fuzz.py):
each one message or stream that is malformed or hostile (random bytes, invalid UTF-8, wrong
dtypes, shapes and byte lengths, oversized messages, NaN/inf, streams without a handshake,
wrong protocol versions, duplicate actor ids, far too many environments...), and the
status code docs/reliability.md documents for it with the words its details must contain."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import gymnasium as gym
import numpy as np

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from support.hostile_client import (
    CALL_TIMEOUT,
    CODE,
    GOOD_ACTOR,
    MAX_ENVS_PER_ACTOR,
    MAX_MESSAGE,
    HostileClient,
    Outcome,
    ScriptedActorStream,
)
from support.learner_client import step_request


class Fuzzer(HostileClient):
    """A :class:`HostileClient` with every hostile case it can send (``cases``)."""

    def __init__(self, address: str, seed: int):
        super().__init__(address, seed)
        self.cases: list[Callable[[], Outcome]] = [
            getattr(self, name) for name in dir(self) if name.startswith("case_")
        ]

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
