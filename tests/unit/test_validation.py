"""learner/serving/validation.py on its own: real messages built with the wire encoding, checked
without a server. (test_fuzz.py sends the same kinds of input to a real learner process.)"""

from __future__ import annotations

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support.learner_client import handshake_request, step_request

from learner.serving.validation import (
    HandshakeRejected,
    LearnerSpec,
    MalformedMessage,
    StepRejected,
    StepValidator,
    check_actor_matches,
    check_protocol_and_ids,
    lenient_parser,
)
from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import observation_layout

ENV = "CartPole-v1"
K = 3
LIMIT = 1 << 20


def cartpole_spec() -> LearnerSpec:
    env = gym.make(ENV)
    spec = LearnerSpec(ENV, {}, env.observation_space, env.action_space)
    env.close()
    return spec


def zeros(rows: int = K) -> np.ndarray:
    return np.zeros((rows, 4), np.float32)


def test_a_good_step_is_decoded() -> None:
    validator = StepValidator(cartpole_spec().observation_space, LIMIT)
    step = validator.check(step_request(zeros(), rewards=[1, 2, 3], terminated=[1, 0, 0],
                                        truncated=[0, 1, 0], final_envs=[1],
                                        final_observations=zeros(1),
                                        episodes=[(0, 9.0, 9), (1, 5.0, 5)]), K)
    assert step.observations.shape == (K, 4)
    np.testing.assert_array_equal(step.episode_start, [True, True, False])
    np.testing.assert_array_equal(step.final_envs, [1])
    assert step.final_observations.shape == (1, 4)
    assert (step.episode_returns, step.episode_lengths) == ([9.0, 5.0], [9, 5])


@pytest.mark.parametrize(("request_", "says"), [
    (step_request(zeros(K + 1)), "observations: shape"),
    (step_request(zeros().astype(np.float64)), "observations: dtype"),
    (step_request(np.full((K, 4), np.nan, np.float32)), "non-finite values at environments"),
    (step_request(zeros(), rewards=[0, np.inf, 0]), "rewards: non-finite"),
    (step_request(zeros(), truncated=[0, 1, 0]), "must send their final observation"),
    (step_request(zeros(), final_envs=[0], final_observations=zeros(1)), "were not truncated"),
    (step_request(zeros(), truncated=[1, 0, 0], final_envs=[0, 0],
                  final_observations=zeros(2)), "distinct indices"),
    (step_request(zeros(), episodes=[(K, 1.0, 1)]), "episodes:"),
], ids=["shape", "dtype", "nan-observation", "inf-reward", "missing-final", "final-not-truncated",
        "duplicate-final", "episode-index"])
def test_a_bad_step_is_rejected_with_invalid_argument(request_: pb.StepRequest, says: str) -> None:
    validator = StepValidator(cartpole_spec().observation_space, LIMIT)
    with pytest.raises(StepRejected, match=says) as rejected:
        validator.check(request_, K)
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_bool_bytes_other_than_0_or_1_are_rejected() -> None:
    request = step_request(zeros())
    request.terminated.data = bytes([0, 2, 0])
    with pytest.raises(StepRejected, match="bool bytes must be 0 or 1"):
        StepValidator(cartpole_spec().observation_space, LIMIT).check(request, K)


def test_a_handshake_is_checked_against_the_spec_and_the_limits() -> None:
    spec = cartpole_spec()
    limits = {"max_envs_per_actor": 8, "max_message_bytes": LIMIT}
    check_protocol_and_ids(handshake_request(ENV, K))
    check_actor_matches(handshake_request(ENV, K), spec, **limits)
    cases = [
        (lambda: check_protocol_and_ids(handshake_request(ENV, K, protocol_version=99)),
         grpc.StatusCode.FAILED_PRECONDITION, "protocol version 99"),
        (lambda: check_protocol_and_ids(handshake_request(ENV, K, actor_id="a\nb")),
         grpc.StatusCode.INVALID_ARGUMENT, "actor_id must be"),
        (lambda: check_actor_matches(handshake_request("Acrobot-v1", K), spec, **limits),
         grpc.StatusCode.FAILED_PRECONDITION, "actor and learner disagree"),
        (lambda: check_actor_matches(handshake_request(ENV, 9), spec, **limits),
         grpc.StatusCode.INVALID_ARGUMENT, "--max-envs-per-actor"),
        (lambda: check_actor_matches(handshake_request(ENV, 8), spec, max_envs_per_actor=8,
                                     max_message_bytes=200),
         grpc.StatusCode.INVALID_ARGUMENT, "do not fit"),
    ]
    for check, code, says in cases:
        with pytest.raises(HandshakeRejected, match=says) as rejected:
            check()
        assert rejected.value.code == code


def test_unparseable_bytes_become_a_malformed_message() -> None:
    parse = lenient_parser(pb.StepRequest)
    malformed = parse(b"\xff\xff\xff")
    assert isinstance(malformed, MalformedMessage)
    assert "not a valid seed_rl.v1.StepRequest" in malformed.describe()
    good = step_request(zeros())
    assert parse(good.SerializeToString()) == good
    assert wire.decode_tensor(parse(good.SerializeToString()).observations).shape == (K, 4)


# -- any carried observation space: every part of a row is checked -------------------------

COMPOSITE = gym.spaces.Dict({
    "flags": gym.spaces.Box(0, 1, (2,), bool),
    "position": gym.spaces.Box(-1, 1, (2,), np.float32),
    "room": gym.spaces.Discrete(3, start=1),
    "switches": gym.spaces.MultiBinary(2),
})


def composite_rows(rows: int = K) -> tuple[np.ndarray, dict]:
    """Valid packed rows and, per part path, a function that writes one value of it."""
    layout = observation_layout(COMPOSITE)
    packed = np.zeros((rows, *layout.row_shape), layout.row_dtype)
    for i in range(rows):
        layout.write(packed, i, {"flags": np.array([True, False]), "position": np.zeros(2),
                                 "room": 2, "switches": np.array([1, 0])})
    leaves = {leaf.path: leaf for leaf in layout.leaves}

    def put(path: str, row: int, value) -> None:
        """Write ``value`` as the first value of part ``path`` of row ``row`` (a bool part
        gets the raw byte)."""
        leaf = leaves[path]
        dtype = np.uint8 if leaf.dtype == np.bool_ else leaf.dtype
        packed[row, leaf.offset:leaf.offset + leaf.nbytes].view(dtype)[0] = value

    return packed, put


def test_a_good_packed_row_is_accepted() -> None:
    rows, _ = composite_rows()
    validator = StepValidator(COMPOSITE, LIMIT)
    assert validator.observation_shape == rows.shape[1:] and validator.observation_dtype == np.uint8
    step = validator.check(step_request(rows), K)
    np.testing.assert_array_equal(step.observations, rows)


@pytest.mark.parametrize(("path", "value", "says"), [
    ("position", np.nan, "'position'\\): non-finite values at environments \\[1\\]"),
    ("room", 4, "'room'\\): values outside Discrete\\(3, start=1\\) at environments \\[1\\]"),
    ("room", 0, "'room'\\): values outside"),
    ("switches", 2, "'switches'\\): values outside MultiBinary"),
    ("flags", 7, "'flags'\\): values outside Box"),
], ids=["nan-inside-packed", "discrete-above", "discrete-below-start", "bit-2", "bool-byte-7"])
def test_bad_values_inside_packed_rows_are_rejected(path, value, says) -> None:
    rows, put = composite_rows()
    put(path, 1, value)
    validator = StepValidator(COMPOSITE, LIMIT)
    with pytest.raises(StepRejected, match="^observations \\(part " + says) as rejected:
        validator.check(step_request(rows), K)
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT
    good, _ = composite_rows(1)
    with pytest.raises(StepRejected, match="^final_observations \\(part " + says):  # alike
        validator.check(step_request(good.repeat(K, 0), truncated=[0, 1, 0], final_envs=[1],
                                     final_observations=rows[1:2]), K)


def test_single_categorical_observations_are_range_checked() -> None:
    validator = StepValidator(gym.spaces.Discrete(4, start=-1), LIMIT)
    validator.check(step_request(np.array([-1, 0, 2], np.int64)), K)
    with pytest.raises(StepRejected, match="values outside Discrete.*environments \\[2\\]"):
        validator.check(step_request(np.array([-1, 0, 3], np.int64)), K)
    finals = StepValidator(cartpole_spec().observation_space, LIMIT)
    with pytest.raises(StepRejected, match="final_observations: non-finite"):
        finals.check(step_request(zeros(), truncated=[0, 1, 0], final_envs=[1],
                                  final_observations=np.full((1, 4), np.inf, np.float32)), K)
    grid = StepValidator(gym.spaces.MultiDiscrete([[2, 3]], start=[[0, 5]]), LIMIT)
    grid.check(step_request(np.array([[[1, 7]], [[0, 5]], [[1, 6]]], np.int64)), K)
    with pytest.raises(StepRejected, match="values outside MultiDiscrete.*environments \\[1\\]"):
        grid.check(step_request(np.array([[[1, 7]], [[0, 8]], [[1, 6]]], np.int64)), K)
