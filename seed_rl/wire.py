"""The wire codec: numpy arrays and gymnasium spaces to and from ``seed_rl.v1`` messages.

Tensors travel as dtype name, shape and raw little-endian bytes. Decoding is strict (the
dtype must be on the allow-list, the byte length must equal prod(shape) * itemsize, sizes
are bounded) and copy-free: the array returned by :func:`decode_tensor` is a read-only
``numpy.frombuffer`` view of the message's bytes. Nothing here unpickles anything.

Torch-free: actors import this module.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

PROTOCOL_VERSION = 1  # the proto's ProtocolVersion.PROTOCOL_VERSION_1 (tests/unit/test_proto.py)
SESSION_METADATA_KEY = "seed-rl-session"
AUTH_METADATA_KEY = "authorization"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` names this machine's loopback (traffic never leaves it)."""
    return address.rsplit(":", 1)[0] in LOOPBACK_HOSTS

#: dtypes allowed on the wire, by numpy name.
ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
     "float16", "float32", "float64"}
)
# Each allowed dtype, little-endian, by name, and the name of each: per-message
# lookups instead of building dtypes (the learner decodes several tensors per message).
_LITTLE_ENDIAN = {name: np.dtype(name).newbyteorder("<") for name in ALLOWED_DTYPES}
_NAMES = {dtype: name for name, dtype in _LITTLE_ENDIAN.items()}
MAX_TENSOR_DIMS = 8
DEFAULT_MAX_TENSOR_BYTES = 64 * 1024 * 1024


class WireError(ValueError):
    """A message does not follow the wire contract; the text says what was wrong."""


def encode_tensor(array: np.ndarray, out: pb.Tensor | None = None) -> pb.Tensor:
    """Encode ``array`` as a wire Tensor (little-endian bytes, C order)."""
    array = np.asarray(array)
    name = _NAMES.get(array.dtype)
    if name is None:
        name = array.dtype.name
        if name not in ALLOWED_DTYPES:
            raise WireError(
                f"dtype {name} cannot travel on the wire; allowed: {sorted(ALLOWED_DTYPES)}"
            )
        array = array.astype(_LITTLE_ENDIAN[name])  # a big-endian array
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
    if shape and min(shape) < 0:
        raise WireError(f"{name}: negative dimension in shape {list(shape)}")
    dtype = _LITTLE_ENDIAN[dtype_name]
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
#
# Box, Discrete, MultiDiscrete, MultiBinary, and Dict / Tuple of those (nested), described
# exactly: type, shape, dtype, bounds, n, start, Dict keys in gymnasium's order (the order
# packed observations follow, seed_rl/spaces.py). Decoding is bounded: a hostile handshake
# cannot nest deeper than MAX_SPACE_DEPTH or hold more than MAX_SPACE_LEAVES leaves.

MAX_SPACE_DEPTH = 8  # the top-level space is depth 1; a Dict's subspaces are one deeper
MAX_SPACE_LEAVES = 1024  # non-composite spaces in one space, all levels together
MAX_DICT_KEY_LENGTH = 256
MAX_DESCRIPTION = 400  # characters of describe_space


class UnknownSpace(WireError):
    """A Space message of a kind this codec does not know: the peer runs a newer seed-rl.
    The learner answers FAILED_PRECONDITION (run the same version on both sides)."""


_SUPPORTED = ("seed-rl carries Box, Discrete, MultiDiscrete, MultiBinary and Dict / Tuple of "
              "those; wrap the environment to turn it into one of these (e.g. "
              "FlattenObservation)")


def shorten(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """``text``, cut to ``limit`` characters (a hostile peer controls some of it)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _values(array: np.ndarray) -> str:
    """A short text for an integer array: all of it when small, else one value or [...]."""
    if array.size <= 8:
        return str(array.tolist())
    unique = np.unique(array)
    return f"[{unique[0]}, ...]" if unique.size == 1 else "[...]"


def describe_space(space: gym.Space) -> str:
    """A short, exact-enough text for logs and errors (at most MAX_DESCRIPTION chars)."""
    return shorten(_describe(space))


def _describe(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete(n={int(space.n)}, start={int(space.start)})"
    if isinstance(space, gym.spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        lo = low[0] if low.size == 1 else "[...]"
        hi = high[0] if high.size == 1 else "[...]"
        return f"Box(shape={tuple(space.shape)}, dtype={space.dtype}, low={lo}, high={hi})"
    if isinstance(space, gym.spaces.MultiDiscrete):
        dtype = "" if space.dtype == np.int64 else f", dtype={space.dtype}"
        return (f"MultiDiscrete(nvec={_values(space.nvec)}, start={_values(space.start)}"
                f"{dtype})")
    if isinstance(space, gym.spaces.MultiBinary):
        return f"MultiBinary(n={space.n})"
    if isinstance(space, gym.spaces.Dict):
        parts = ", ".join(f"{key!r}: {_describe(sub)}" for key, sub in space.spaces.items())
        return shorten(f"Dict({parts})", 4 * MAX_DESCRIPTION)
    if isinstance(space, gym.spaces.Tuple):
        return shorten(f"Tuple({', '.join(_describe(sub) for sub in space.spaces)})",
                    4 * MAX_DESCRIPTION)
    return type(space).__name__


# -- encode -------------------------------------------------------------------------------


def encode_space(space: gym.Space) -> pb.Space:
    """Describe ``space`` exactly. A space the wire cannot carry (Text, Graph, Sequence,
    ..., a Dict with non-string keys, too deep or too many leaves) raises
    :class:`WireError` naming it."""
    leaves = [0]
    return _encode(space, "", 1, leaves)


def _encode(space: gym.Space, path: str, depth: int, leaves: list[int]) -> pb.Space:
    where = f" at {path}" if path else ""
    if depth > MAX_SPACE_DEPTH:
        raise WireError(f"space{where} nests deeper than {MAX_SPACE_DEPTH} levels; flatten it")
    if isinstance(space, gym.spaces.Dict):
        if not space.spaces:
            raise WireError(f"space{where}: an empty Dict cannot travel")
        message = pb.Space(dict=pb.DictSpace())
        for key, sub in space.spaces.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_DICT_KEY_LENGTH:
                raise WireError(f"space{where}: Dict key {key!r} is not supported: keys must be "
                                f"strings of 1-{MAX_DICT_KEY_LENGTH} characters")
            message.dict.keys.append(key)
            message.dict.spaces.append(_encode(sub, f"{path}[{key!r}]", depth + 1, leaves))
        return message
    if isinstance(space, gym.spaces.Tuple):
        if not space.spaces:
            raise WireError(f"space{where}: an empty Tuple cannot travel")
        message = pb.Space(tuple=pb.TupleSpace())
        for index, sub in enumerate(space.spaces):
            message.tuple.spaces.append(_encode(sub, f"{path}[{index}]", depth + 1, leaves))
        return message
    leaves[0] += 1
    if leaves[0] > MAX_SPACE_LEAVES:
        raise WireError(f"space has more than {MAX_SPACE_LEAVES} leaves; flatten it")
    if isinstance(space, gym.spaces.Discrete):
        return pb.Space(discrete=pb.DiscreteSpace(n=int(space.n), start=int(space.start)))
    if isinstance(space, gym.spaces.Box):
        return pb.Space(box=pb.BoxSpace(dtype=space.dtype.name, shape=list(space.shape),
                                        low=encode_tensor(space.low),
                                        high=encode_tensor(space.high)))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return pb.Space(multi_discrete=pb.MultiDiscreteSpace(
            shape=list(space.nvec.shape), nvec=space.nvec.reshape(-1).tolist(),
            start=space.start.reshape(-1).tolist(), dtype=space.dtype.name))
    if isinstance(space, gym.spaces.MultiBinary):
        return pb.Space(multi_binary=pb.MultiBinarySpace(n=list(space.shape)))
    raise WireError(f"space {space!r}{where} ({type(space).__name__}) is not supported: "
                    f"{_SUPPORTED}")


# -- decode -------------------------------------------------------------------------------


def decode_space(message: pb.Space, *, name: str = "space") -> gym.Space:
    """Rebuild the gymnasium space described by ``message`` (``name`` prefixes errors).

    Raises:
        UnknownSpace: a kind this codec does not know (a newer peer), at any depth.
        WireError: anything else malformed, deeper than MAX_SPACE_DEPTH, or more than
            MAX_SPACE_LEAVES leaves.
    """
    return _decode(message, name, 1, [0])


def _decode(message: pb.Space, name: str, depth: int, leaves: list[int]) -> gym.Space:
    if depth > MAX_SPACE_DEPTH:
        raise WireError(f"{name}: spaces nest deeper than {MAX_SPACE_DEPTH} levels")
    kind = message.WhichOneof("kind")
    if kind == "dict":
        keys, subspaces = list(message.dict.keys), message.dict.spaces
        if not keys or len(keys) != len(subspaces):
            raise WireError(f"{name}: Dict space needs one or more keys and one space per "
                            f"key, got {len(keys)} keys and {len(subspaces)} spaces")
        if len(keys) > MAX_SPACE_LEAVES:
            raise WireError(f"{name}: Dict space has more than {MAX_SPACE_LEAVES} keys")
        if len(set(keys)) != len(keys):
            raise WireError(f"{name}: Dict keys are not distinct")
        for key in keys:
            if not 0 < len(key) <= MAX_DICT_KEY_LENGTH:
                raise WireError(f"{name}: Dict keys must have 1-{MAX_DICT_KEY_LENGTH} "
                                f"characters, got one of {len(key)}")
        return gym.spaces.Dict([(key, _decode(sub, f"{name}[{key!r}]", depth + 1, leaves))
                                for key, sub in zip(keys, subspaces, strict=True)])
    if kind == "tuple":
        subspaces = message.tuple.spaces
        if not 0 < len(subspaces) <= MAX_SPACE_LEAVES:
            raise WireError(f"{name}: Tuple space needs 1-{MAX_SPACE_LEAVES} spaces, got "
                            f"{len(subspaces)}")
        return gym.spaces.Tuple([_decode(sub, f"{name}[{index}]", depth + 1, leaves)
                                 for index, sub in enumerate(subspaces)])
    if kind is None:
        if message.ByteSize() == 0:
            raise WireError(f"{name}: no space given (expected a Box, Discrete, MultiDiscrete, "
                            "MultiBinary, Dict or Tuple description)")
        field = _first_field_number(message.SerializeToString())
        raise UnknownSpace(f"{name}: a kind of space this seed-rl does not know (Space field "
                           f"{field}): the actor runs a newer seed-rl than the learner; run "
                           "the same seed-rl version on actors and learner")
    leaves[0] += 1
    if leaves[0] > MAX_SPACE_LEAVES:
        raise WireError(f"{name}: more than {MAX_SPACE_LEAVES} leaves in one space")
    try:
        if kind == "discrete":
            return _decode_discrete(message.discrete, name)
        if kind == "box":
            return _decode_box(message.box, name)
        if kind == "multi_discrete":
            return _decode_multi_discrete(message.multi_discrete, name)
        return _decode_multi_binary(message.multi_binary, name)
    except (ValueError, TypeError, OverflowError, AssertionError) as error:
        if isinstance(error, WireError):
            raise
        raise WireError(f"{name}: gymnasium refuses this {kind} space: "
                        f"{type(error).__name__}: {shorten(str(error), 200)}") from None


def _first_field_number(data: bytes) -> int | None:
    """The field number of the first field in serialized ``data`` (its tag's varint)."""
    tag, shift = 0, 0
    for byte in data[:10]:
        tag |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return tag >> 3
    return None


def _check_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) > MAX_TENSOR_DIMS:
        raise WireError(f"{name}: {len(shape)} dimensions, at most {MAX_TENSOR_DIMS} allowed")
    if any(d < 0 for d in shape):
        raise WireError(f"{name}: negative dimension in shape {list(shape)}")


def _decode_discrete(discrete: pb.DiscreteSpace, name: str) -> gym.Space:
    if discrete.n <= 0:
        raise WireError(f"{name}: Discrete space needs n > 0, got {discrete.n}")
    return gym.spaces.Discrete(int(discrete.n), start=int(discrete.start))


def _decode_box(box: pb.BoxSpace, name: str) -> gym.Space:
    if box.dtype not in ALLOWED_DTYPES:
        raise WireError(f"{name}: Box dtype {box.dtype!r} is not allowed")
    shape = tuple(int(d) for d in box.shape)
    _check_shape(shape, name)
    low = decode_tensor(box.low, name=f"{name}.low")
    high = decode_tensor(box.high, name=f"{name}.high")
    if low.shape != shape or high.shape != shape:
        raise WireError(
            f"{name}: Box bounds have shapes {low.shape} and {high.shape}, expected {shape}")
    return gym.spaces.Box(low=low, high=high, shape=shape, dtype=np.dtype(box.dtype))


def _decode_multi_discrete(space: pb.MultiDiscreteSpace, name: str) -> gym.Space:
    dtype_name = space.dtype or "int64"
    if dtype_name not in ALLOWED_DTYPES or not np.issubdtype(np.dtype(dtype_name), np.integer):
        raise WireError(f"{name}: MultiDiscrete dtype {dtype_name!r} is not an allowed "
                        "integer dtype")
    shape = tuple(int(d) for d in space.shape)
    _check_shape(shape, name)
    size = math.prod(shape)
    if size == 0 or len(space.nvec) != size or len(space.start) != size:
        raise WireError(f"{name}: MultiDiscrete of shape {list(shape)} needs {size} > 0 "
                        f"values of nvec and of start, got {len(space.nvec)} and "
                        f"{len(space.start)}")
    nvec = np.asarray(space.nvec, dtype=np.int64)
    start = np.asarray(space.start, dtype=np.int64)
    info = np.iinfo(dtype_name)
    if (nvec <= 0).any():
        raise WireError(f"{name}: MultiDiscrete needs nvec > 0, got {_values(nvec)}")
    if start.min() < info.min or (start + (nvec - 1)).max() > info.max:
        raise WireError(f"{name}: MultiDiscrete values do not fit its dtype {dtype_name}")
    return gym.spaces.MultiDiscrete(nvec.reshape(shape), dtype=np.dtype(dtype_name),
                                    start=start.reshape(shape))


def _decode_multi_binary(space: pb.MultiBinarySpace, name: str) -> gym.Space:
    n = tuple(int(d) for d in space.n)
    _check_shape(n, name)
    if not n or min(n) <= 0:
        raise WireError(f"{name}: MultiBinary needs n of one or more dimensions > 0, got "
                        f"{list(n)}")
    if math.prod(n) > DEFAULT_MAX_TENSOR_BYTES:
        raise WireError(f"{name}: MultiBinary of shape {list(n)} is too large")
    return gym.spaces.MultiBinary(n[0] if len(n) == 1 else list(n))
