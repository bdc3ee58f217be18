"""The wire codec: numpy arrays and gymnasium spaces to and from ``seed_rl.v1`` messages.

Tensors travel as dtype name, shape and raw little-endian bytes. Decoding is strict (the
dtype must be on the allow-list, the byte length must equal prod(shape) * itemsize, sizes
are bounded) and copy-free: the array returned by :func:`decode_tensor` is a read-only
``numpy.frombuffer`` view of the message's bytes. Nothing here unpickles anything.

Torch-free: actors import this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

PROTOCOL_VERSION = 1
SESSION_METADATA_KEY = "seed-rl-session"
AUTH_METADATA_KEY = "authorization"

#: dtypes allowed on the wire, by numpy name.
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
     "float16", "float32", "float64"}
)
MAX_TENSOR_DIMS = 8
DEFAULT_MAX_TENSOR_BYTES = 64 * 1024 * 1024


class WireError(ValueError):
    """A message does not follow the wire contract; the text says what was wrong."""


def encode_tensor(array: np.ndarray, out: pb.Tensor | None = None) -> pb.Tensor:
    """Encode ``array`` as a wire Tensor (little-endian bytes, C order)."""
    array = np.asarray(array)
    name = array.dtype.name
    if name not in ALLOWED_DTYPES:
        raise WireError(
            f"dtype {name} cannot travel on the wire; allowed: {sorted(ALLOWED_DTYPES)}"
        )
    little = array.dtype.newbyteorder("<")
    if array.dtype != little and array.dtype.itemsize > 1:
        array = array.astype(little)
    tensor = out if out is not None else pb.Tensor()
    tensor.dtype = name
    del tensor.shape[:]
    tensor.shape.extend(array.shape)
    tensor.data = np.ascontiguousarray(array).tobytes()
    return tensor


def decode_tensor(
    tensor: pb.Tensor,
    *,
    name: str = "tensor",
    max_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> np.ndarray:
    """Decode a wire Tensor to a read-only numpy view of its bytes (no copy).

    Raises:
        WireError: the dtype is not allowed, the shape is negative or too deep, or the
            byte length is not prod(shape) * itemsize. ``name`` appears in the message.
    """
    dtype_name = tensor.dtype
    if dtype_name not in ALLOWED_DTYPES:
        raise WireError(
            f"{name}: dtype {dtype_name!r} is not allowed; use one of {sorted(ALLOWED_DTYPES)}"
        )
    shape = tuple(tensor.shape)
    if len(shape) > MAX_TENSOR_DIMS:
        raise WireError(f"{name}: {len(shape)} dimensions, at most {MAX_TENSOR_DIMS} allowed")
    if any(d < 0 for d in shape):
        raise WireError(f"{name}: negative dimension in shape {list(shape)}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise WireError(f"{name}: shape {list(shape)} of {dtype_name} is {expected} bytes, "
                        f"more than the limit of {max_bytes}")
    if len(tensor.data) != expected:
        raise WireError(
            f"{name}: {len(tensor.data)} bytes of data, but shape {list(shape)} of "
            f"{dtype_name} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------------
# Spaces


@dataclass(frozen=True)
class SpaceMismatch:
    """Why two spaces differ, in words a person can act on."""

    what: str


def describe_space(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete(n={int(space.n)}, start={int(space.start)})"
    if isinstance(space, gym.spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        lo = low[0] if low.size == 1 else "[...]"
        hi = high[0] if high.size == 1 else "[...]"
        return f"Box(shape={tuple(space.shape)}, dtype={space.dtype}, low={lo}, high={hi})"
    return type(space).__name__


def encode_space(space: gym.Space) -> pb.Space:
    """Describe a Box or Discrete space exactly. Other spaces raise :class:`WireError`."""
    if isinstance(space, gym.spaces.Discrete):
        return pb.Space(discrete=pb.DiscreteSpace(n=int(space.n), start=int(space.start)))
    if isinstance(space, gym.spaces.Box):
        return pb.Space(
            box=pb.BoxSpace(
                dtype=space.dtype.name,
                shape=list(space.shape),
                low=encode_tensor(space.low),
                high=encode_tensor(space.high),
            )
        )
    raise WireError(
        f"space {space!r} ({type(space).__name__}) is not supported: seed-rl carries Box "
        "observations and Discrete actions; wrap the environment (e.g. FlattenObservation)"
    )


def decode_space(message: pb.Space, *, name: str = "space") -> gym.Space:
    """Rebuild the gymnasium space described by ``message``."""
    kind = message.WhichOneof("kind")
    if kind == "discrete":
        if message.discrete.n <= 0:
            raise WireError(f"{name}: Discrete space needs n > 0, got {message.discrete.n}")
        return gym.spaces.Discrete(int(message.discrete.n), start=int(message.discrete.start))
    if kind == "box":
        box = message.box
        if box.dtype not in ALLOWED_DTYPES:
            raise WireError(f"{name}: Box dtype {box.dtype!r} is not allowed")
        shape = tuple(int(d) for d in box.shape)
        low = decode_tensor(box.low, name=f"{name}.low")
        high = decode_tensor(box.high, name=f"{name}.high")
        if low.shape != shape or high.shape != shape:
            raise WireError(
                f"{name}: Box bounds have shapes {low.shape} and {high.shape}, expected {shape}"
            )
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=np.dtype(box.dtype))
    raise WireError(f"{name}: no space given (expected a Box or Discrete description)")


def space_mismatch(expected: gym.Space, got: gym.Space) -> SpaceMismatch | None:
    """None when ``got`` equals ``expected`` exactly (type, shape, dtype, bounds)."""
    if type(expected) is not type(got):
        return SpaceMismatch(f"learner has {describe_space(expected)}, "
                             f"actor has {describe_space(got)}")
    if isinstance(expected, gym.spaces.Discrete):
        if expected.n != got.n or expected.start != got.start:
            return SpaceMismatch(f"learner has {describe_space(expected)}, "
                                 f"actor has {describe_space(got)}")
        return None
    if isinstance(expected, gym.spaces.Box):
        if expected.shape != got.shape or expected.dtype != got.dtype:
            return SpaceMismatch(f"learner has {describe_space(expected)}, "
                                 f"actor has {describe_space(got)}")
        if not (np.array_equal(expected.low, got.low) and np.array_equal(expected.high, got.high)):
            return SpaceMismatch(f"bounds differ: learner has {describe_space(expected)}, "
                                 f"actor has {describe_space(got)}")
        return None
    return SpaceMismatch(f"unsupported space {describe_space(expected)}")
