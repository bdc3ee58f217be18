"""The wire codec: tensors and spaces to and from seed_rl.v1 messages."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

SHAPES = [(), (0,), (5,), (2, 3), (0, 4), (2, 1, 3, 2)]


def sample(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype) * 100
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def wire_copy(tensor: pb.Tensor) -> pb.Tensor:
    """What the receiver sees: the message after a trip through its serialized form."""
    return pb.Tensor.FromString(tensor.SerializeToString())


# -- tensors ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(wire.ALLOWED_DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensor_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    array = sample(dtype, shape, np.random.default_rng(0))
    tensor = wire_copy(wire.encode_tensor(array))
    assert tensor.dtype == dtype
    assert tuple(tensor.shape) == shape
    assert len(tensor.data) == array.nbytes
    decoded = wire.decode_tensor(tensor)
    assert decoded.dtype.name == dtype
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


def test_uint8_image_batch_round_trip() -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(8, 84, 84, 4), dtype=np.uint8)
    decoded = wire.decode_tensor(wire_copy(wire.encode_tensor(images)))
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 84, 84, 4)
    np.testing.assert_array_equal(decoded, images)


@pytest.mark.parametrize("dtype", [">i4", ">f8", ">u2", ">f2", ">i8"])
def test_big_endian_input_travels_little_endian(dtype: str) -> None:
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    assert array.dtype.byteorder == ">"
    tensor = wire.encode_tensor(array)
    little = array.astype(array.dtype.newbyteorder("<"))
    assert tensor.data == little.tobytes()
    assert tensor.dtype == little.dtype.name
    decoded = wire.decode_tensor(wire_copy(tensor))
    np.testing.assert_array_equal(decoded, array)


def test_non_contiguous_input_is_encoded_in_c_order() -> None:
    array = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2].T
    assert not array.flags.c_contiguous
    decoded = wire.decode_tensor(wire_copy(wire.encode_tensor(array)))
    np.testing.assert_array_equal(decoded, array)


def test_encode_into_an_existing_message_replaces_its_shape() -> None:
    request = pb.StepRequest()
    wire.encode_tensor(np.zeros((2, 3), np.float32), out=request.observations)
    wire.encode_tensor(np.zeros((4,), np.float32), out=request.observations)
    assert list(request.observations.shape) == [4]
    assert len(request.observations.data) == 16


def test_decode_is_zero_copy_and_read_only() -> None:
    tensor = wire_copy(wire.encode_tensor(np.arange(1000, dtype=np.float32).reshape(10, 100)))
    data = tensor.data
    decoded = wire.decode_tensor(tensor)
    # a view of the message's bytes, not a copy: the chain of bases ends in a bytes object
    assert not decoded.flags.owndata
    base = decoded
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, bytes)
    assert bytes(base) == data
    view = np.frombuffer(base, dtype=np.float32)
    assert np.shares_memory(decoded, view)
    assert not decoded.flags.writeable
    with pytest.raises(ValueError):
        decoded[0, 0] = 1.0


@pytest.mark.parametrize("bad", ["object", "complex64", "float128", "<f4", "", "int"])
def test_decode_rejects_dtype_not_on_the_allow_list(bad: str) -> None:
    tensor = pb.Tensor(dtype=bad, shape=[1], data=b"\x00" * 4)
    with pytest.raises(wire.WireError, match="not allowed") as info:
        wire.decode_tensor(tensor, name="observations")
    assert repr(bad) in str(info.value)
    assert "observations" in str(info.value)


@pytest.mark.parametrize("dtype", [np.complex64, object, np.str_])
def test_encode_rejects_dtype_not_on_the_allow_list(dtype) -> None:
    array = np.zeros(2, dtype=dtype)
    with pytest.raises(wire.WireError, match="cannot travel") as info:
        wire.encode_tensor(array)
    assert array.dtype.name in str(info.value)


@pytest.mark.parametrize("delta", [-4, -1, 1, 4])
def test_decode_rejects_byte_length_mismatch(delta: int) -> None:
    tensor = pb.Tensor(dtype="float32", shape=[2, 3], data=b"\x00" * (24 + delta))
    with pytest.raises(wire.WireError, match="bytes of data") as info:
        wire.decode_tensor(tensor, name="rewards")
    message = str(info.value)
    assert "rewards" in message and str(24 + delta) in message and "24" in message


def test_decode_rejects_negative_dimension() -> None:
    tensor = pb.Tensor(dtype="uint8", shape=[2, -3], data=b"")
    with pytest.raises(wire.WireError, match="negative dimension") as info:
        wire.decode_tensor(tensor, name="observations")
    assert "[2, -3]" in str(info.value)


def test_decode_rejects_too_many_dimensions() -> None:
    shape = [1] * (wire.MAX_TENSOR_DIMS + 1)
    tensor = pb.Tensor(dtype="uint8", shape=shape, data=b"\x00")
    with pytest.raises(wire.WireError, match="dimensions") as info:
        wire.decode_tensor(tensor, name="observations")
    assert str(wire.MAX_TENSOR_DIMS + 1) in str(info.value)


def test_decode_accepts_the_most_dimensions_allowed() -> None:
    array = np.ones([1] * wire.MAX_TENSOR_DIMS, dtype=np.uint8)
    assert wire.decode_tensor(wire.encode_tensor(array)).shape == array.shape


def test_decode_rejects_tensor_over_max_bytes_before_reading_it() -> None:
    # a huge claimed shape with no data: the size check comes first, no allocation
    tensor = pb.Tensor(dtype="float64", shape=[1 << 20, 1 << 20], data=b"")
    with pytest.raises(wire.WireError, match="limit") as info:
        wire.decode_tensor(tensor, name="observations", max_bytes=1 << 20)
    assert str(1 << 20) in str(info.value)
    small = pb.Tensor(dtype="uint8", shape=[10], data=b"\x00" * 10)
    with pytest.raises(wire.WireError, match="more than the limit of 9"):
        wire.decode_tensor(small, max_bytes=9)
    assert wire.decode_tensor(small, max_bytes=10).shape == (10,)


# -- spaces -------------------------------------------------------------------------------

SPACES = {
    "box-float32": gym.spaces.Box(-1.0, 2.0, shape=(4,), dtype=np.float32),
    "box-float32-unbounded": gym.spaces.Box(-np.inf, np.inf, shape=(3, 2), dtype=np.float32),
    "box-float64-per-element": gym.spaces.Box(
        low=np.array([-1.0, -2.0, 0.0]), high=np.array([1.0, 5.0, 0.5]), dtype=np.float64
    ),
    "box-uint8-image": gym.spaces.Box(0, 255, shape=(84, 84, 3), dtype=np.uint8),
    "box-int32": gym.spaces.Box(-5, 5, shape=(2, 2), dtype=np.int32),
    "box-scalar": gym.spaces.Box(0.0, 1.0, shape=(), dtype=np.float32),
    "discrete": gym.spaces.Discrete(6),
    "discrete-start": gym.spaces.Discrete(3, start=-1),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_space_round_trip(name: str) -> None:
    space = SPACES[name]
    message = pb.Space.FromString(wire.encode_space(space).SerializeToString())
    decoded = wire.decode_space(message)
    assert type(decoded) is type(space)
    assert wire.space_mismatch(space, decoded) is None
    if isinstance(space, gym.spaces.Box):
        assert decoded.shape == space.shape and decoded.dtype == space.dtype
        np.testing.assert_array_equal(decoded.low, space.low)
        np.testing.assert_array_equal(decoded.high, space.high)
    else:
        assert (decoded.n, decoded.start) == (space.n, space.start)
    assert decoded == space


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.Dict({"a": gym.spaces.Discrete(2)}),
        gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))),
        gym.spaces.MultiDiscrete([2, 3]),
        gym.spaces.MultiBinary(4),
        gym.spaces.Text(5),
    ],
    ids=lambda s: type(s).__name__,
)
def test_unsupported_space_is_rejected_by_name(space: gym.Space) -> None:
    with pytest.raises(wire.WireError, match="not supported") as info:
        wire.encode_space(space)
    assert type(space).__name__ in str(info.value)


def test_decode_space_rejects_malformed_descriptions() -> None:
    with pytest.raises(wire.WireError, match="no space given"):
        wire.decode_space(pb.Space(), name="observation_space")
    with pytest.raises(wire.WireError, match="n > 0"):
        wire.decode_space(pb.Space(discrete=pb.DiscreteSpace(n=0)))
    box = wire.encode_space(SPACES["box-float32"])
    box.box.dtype = "object"
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.decode_space(box)
    box = wire.encode_space(SPACES["box-float32"])
    del box.box.shape[:]
    box.box.shape.extend([5])
    with pytest.raises(wire.WireError, match="bounds have shapes") as info:
        wire.decode_space(box, name="observation_space")
    assert "observation_space" in str(info.value)


@pytest.mark.parametrize(
    ("learner", "actor", "fragments"),
    [
        (gym.spaces.Discrete(2), gym.spaces.Discrete(3), ["Discrete(n=2", "Discrete(n=3"]),
        (gym.spaces.Discrete(3), gym.spaces.Discrete(3, start=1), ["start=0", "start=1"]),
        (
            SPACES["box-float32"],
            gym.spaces.Box(-1.0, 2.0, shape=(5,), dtype=np.float32),
            ["shape=(4,)", "shape=(5,)"],
        ),
        (
            SPACES["box-float32"],
            gym.spaces.Box(-1.0, 2.0, shape=(4,), dtype=np.float64),
            ["float32", "float64"],
        ),
        (
            SPACES["box-float32"],
            gym.spaces.Box(-1.0, 3.0, shape=(4,), dtype=np.float32),
            ["bounds differ", "high=2.0", "high=3.0"],
        ),
        (SPACES["box-float32"], gym.spaces.Discrete(4), ["Box(", "Discrete(n=4"]),
    ],
)
def test_space_mismatch_names_both_sides(learner, actor, fragments) -> None:
    mismatch = wire.space_mismatch(learner, actor)
    assert mismatch is not None
    assert "learner has" in mismatch.what and "actor has" in mismatch.what
    for fragment in fragments:
        assert fragment in mismatch.what, (fragment, mismatch.what)


def test_space_mismatch_is_none_for_equal_spaces() -> None:
    for space in SPACES.values():
        assert wire.space_mismatch(space, space) is None
