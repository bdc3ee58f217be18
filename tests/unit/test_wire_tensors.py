"""The wire codec's tensors: numpy arrays to and from seed_rl.v1 Tensor messages (dtype allow
list, little-endian bytes, zero-copy decode, size limits checked before reading)."""

from __future__ import annotations

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
