"""The wire codec's spaces: gymnasium spaces to and from seed_rl.v1 Space messages, the
refusals of what the wire cannot carry or a hostile peer sends, and the learner's message
when the two sides' spaces differ (learner.serving.space_match)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from learner.serving.space_match import space_mismatch
from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

S = gym.spaces
IMAGE = S.Box(0, 255, shape=(6, 5, 3), dtype=np.uint8)
SPACES = {
    "box-float32": S.Box(-1.0, 2.0, shape=(4,), dtype=np.float32),
    "box-float32-unbounded": S.Box(-np.inf, np.inf, shape=(3, 2), dtype=np.float32),
    "box-float64-per-element": S.Box(
        low=np.array([-1.0, -2.0, 0.0]), high=np.array([1.0, 5.0, 0.5]), dtype=np.float64
    ),
    "box-float16": S.Box(-1.0, 1.0, shape=(2,), dtype=np.float16),
    "box-uint8-image": S.Box(0, 255, shape=(84, 84, 3), dtype=np.uint8),
    "box-int32": S.Box(-5, 5, shape=(2, 2), dtype=np.int32),
    "box-int64": S.Box(-(2**40), 2**40, shape=(3,), dtype=np.int64),
    "box-bool": S.Box(0, 1, shape=(2, 3), dtype=bool),
    "box-scalar": S.Box(0.0, 1.0, shape=(), dtype=np.float32),
    "discrete": S.Discrete(6),
    "discrete-start": S.Discrete(3, start=-1),
    "multi-discrete": S.MultiDiscrete([3, 4, 2]),
    "multi-discrete-start": S.MultiDiscrete([3, 4], start=[1, -2]),
    "multi-discrete-2d-int32": S.MultiDiscrete([[2, 3], [4, 5]], dtype=np.int32,
                                               start=[[0, 1], [2, -3]]),
    "multi-binary": S.MultiBinary(5),
    "multi-binary-2d": S.MultiBinary([2, 3]),
    "dict": S.Dict({"image": IMAGE, "speed": S.Box(-1.0, 1.0, shape=(2,)),
                    "gear": S.Discrete(4, start=1)}),
    "dict-insertion-order": S.Dict({"z": S.Discrete(2), "a": S.MultiBinary(3)},
                                   sort_keys=False),
    "tuple": S.Tuple((S.Discrete(2), S.Box(0.0, 1.0, shape=(3,)), S.MultiDiscrete([2, 2]))),
    "dict-in-tuple": S.Tuple((S.Dict({"b": S.Discrete(3), "a": S.Tuple((IMAGE, S.MultiBinary(2)))}),
                              S.Box(-1, 1, shape=(1,), dtype=np.int8))),
}


def round_trip(space: gym.Space, name: str = "space") -> gym.Space:
    message = pb.Space.FromString(wire.encode_space(space).SerializeToString())
    return wire.decode_space(message, name=name)


def assert_same_space(decoded: gym.Space, space: gym.Space) -> None:
    """Exactly the same space: type, shape, dtype, bounds, n, start, Dict keys in order."""
    assert type(decoded) is type(space)
    if isinstance(space, S.Dict):
        assert list(decoded.spaces) == list(space.spaces)  # gymnasium's == ignores order
        for key in space.spaces:
            assert_same_space(decoded[key], space[key])
    elif isinstance(space, S.Tuple):
        assert len(decoded.spaces) == len(space.spaces)
        for mine, theirs in zip(decoded.spaces, space.spaces, strict=True):
            assert_same_space(mine, theirs)
    else:
        assert decoded.shape == space.shape and decoded.dtype == space.dtype
    if isinstance(space, S.Box):
        np.testing.assert_array_equal(decoded.low, space.low)
        np.testing.assert_array_equal(decoded.high, space.high)
        assert decoded.low.dtype == space.low.dtype
    elif isinstance(space, S.Discrete):
        assert (decoded.n, decoded.start) == (space.n, space.start)
    elif isinstance(space, S.MultiDiscrete):
        np.testing.assert_array_equal(decoded.nvec, space.nvec)
        np.testing.assert_array_equal(decoded.start, space.start)
    elif isinstance(space, S.MultiBinary):
        assert decoded.n == space.n
    assert decoded == space


@pytest.mark.parametrize("name", list(SPACES))
def test_space_round_trip(name: str) -> None:
    space = SPACES[name]
    decoded = round_trip(space)
    assert_same_space(decoded, space)
    assert space_mismatch(space, decoded) is None
    assert space_mismatch(decoded, space) is None
    assert wire.describe_space(decoded) == wire.describe_space(space)


def test_dict_keys_travel_in_gymnasium_order() -> None:
    ordered = SPACES["dict-insertion-order"]
    assert list(ordered.spaces) == ["z", "a"]
    assert list(round_trip(ordered).spaces) == ["z", "a"]
    assert list(round_trip(SPACES["dict"]).spaces) == ["gear", "image", "speed"]  # sorted


def test_describe_space_is_short_and_names_the_parts() -> None:
    text = wire.describe_space(SPACES["dict-in-tuple"])
    for fragment in ("Tuple(Dict(", "'b': Discrete(n=3", "MultiBinary(n=2)", "dtype=uint8"):
        assert fragment in text, text
    assert wire.describe_space(
        SPACES["multi-discrete-start"]) == "MultiDiscrete(nvec=[3, 4], start=[1, -2])"
    huge = S.Tuple([S.Box(0.0, 1.0, shape=(2,))] * 500)
    assert len(wire.describe_space(huge)) <= wire.MAX_DESCRIPTION


@pytest.mark.parametrize(
    "space",
    [
        S.Text(5),
        S.Sequence(S.Discrete(2)),
        S.Graph(node_space=S.Discrete(3), edge_space=None),
        S.Dict({"ok": S.Discrete(2), "text": S.Text(3)}),
        S.Tuple((S.Discrete(2), S.Sequence(S.Discrete(2)))),
    ],
    ids=["Text", "Sequence", "Graph", "Text-in-Dict", "Sequence-in-Tuple"],
)
def test_unsupported_space_is_rejected_by_name(space: gym.Space) -> None:
    with pytest.raises(wire.WireError, match="not supported") as info:
        wire.encode_space(space)
    assert any(name in str(info.value) for name in ("Text", "Sequence", "Graph"))


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(wire.WireError, match="empty Dict"):
        wire.encode_space(S.Dict({}))
    with pytest.raises(wire.WireError, match="empty Tuple"):
        wire.encode_space(S.Tuple(()))
    with pytest.raises(wire.WireError, match="Dict key 3"):
        wire.encode_space(S.Dict({3: S.Discrete(2)}))
    deep: gym.Space = S.Discrete(2)
    for _ in range(wire.MAX_SPACE_DEPTH):
        deep = S.Tuple((deep,))
    with pytest.raises(wire.WireError, match="deeper than 8"):
        wire.encode_space(deep)
    assert round_trip(deep.spaces[0])  # one level less travels
    with pytest.raises(wire.WireError, match="more than 1024 leaves"):
        wire.encode_space(S.Tuple([S.Discrete(2)] * (wire.MAX_SPACE_LEAVES + 1)))


def nested(depth: int) -> pb.Space:
    """A chain of ``depth`` spaces: Tuples around one Discrete."""
    message = pb.Space(discrete=pb.DiscreteSpace(n=2))
    for _ in range(depth - 1):
        message = pb.Space(tuple=pb.TupleSpace(spaces=[message]))
    return message


def test_hostile_nested_spaces_are_refused() -> None:
    assert wire.decode_space(nested(wire.MAX_SPACE_DEPTH))
    with pytest.raises(wire.WireError, match="deeper than 8") as info:
        wire.decode_space(nested(wire.MAX_SPACE_DEPTH + 1), name="observation_space")
    assert "observation_space[0][0]" in str(info.value)
    # near protobuf's own parse limit (100 messages, 2 per level): refused at level 9
    deep = pb.Space.FromString(nested(45).SerializeToString())
    with pytest.raises(wire.WireError, match="deeper than"):
        wire.decode_space(deep)
    leaf = pb.Space(discrete=pb.DiscreteSpace(n=2))
    wide = pb.Space(tuple=pb.TupleSpace(spaces=[leaf] * (wire.MAX_SPACE_LEAVES + 1)))
    with pytest.raises(wire.WireError, match="1024"):
        wire.decode_space(wide)
    # many leaves spread over levels: 32 x 33 > 1024
    inner = pb.Space(tuple=pb.TupleSpace(spaces=[leaf] * 32))
    spread = pb.Space(tuple=pb.TupleSpace(spaces=[inner] * 33))
    with pytest.raises(wire.WireError, match="more than 1024 leaves"):
        wire.decode_space(spread)
    keys = [f"k{i}" for i in range(wire.MAX_SPACE_LEAVES + 1)]
    wide_dict = pb.Space(dict=pb.DictSpace(keys=keys, spaces=[leaf] * len(keys)))
    with pytest.raises(wire.WireError, match="1024"):
        wire.decode_space(wide_dict)


def test_unknown_space_kind_is_told_apart() -> None:
    # a newer actor's kind (field 15, a message): an older codec sees no kind but bytes
    unknown = pb.Space.FromString(bytes([15 << 3 | 2, 2, 8, 1]))
    assert unknown.WhichOneof("kind") is None
    with pytest.raises(wire.UnknownSpace, match="field 15") as info:
        wire.decode_space(unknown, name="observation_space")
    assert "observation_space" in str(info.value) and "version" in str(info.value)
    assert isinstance(info.value, wire.WireError)
    inside = pb.Space(dict=pb.DictSpace(keys=["x"], spaces=[unknown]))
    with pytest.raises(wire.UnknownSpace, match=r"action_space\['x'\]"):
        wire.decode_space(inside, name="action_space")
    with pytest.raises(wire.WireError, match="no space given") as empty:
        wire.decode_space(pb.Space(), name="observation_space")
    assert not isinstance(empty.value, wire.UnknownSpace)


def box_with(**changes) -> pb.Space:
    message = wire.encode_space(SPACES["box-float32"])
    for key, value in changes.items():
        field = getattr(message.box, key)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(message.box, key, value)
    return message


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (pb.Space(discrete=pb.DiscreteSpace(n=0)), "n > 0"),
        (box_with(dtype="object"), "not allowed"),
        (box_with(shape=[5]), "bounds have shapes"),
        (box_with(shape=[1] * 9), "dimensions"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[2], nvec=[2, 3], start=[0])),
         "needs 2 > 0 values"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[2], nvec=[2, 0], start=[0, 0])),
         "nvec > 0"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[0])), "needs 0 > 0"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[1], nvec=[2], start=[0],
                                                       dtype="float32")), "integer dtype"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[1], nvec=[200], start=[0],
                                                       dtype="int8")), "fit its dtype"),
        (pb.Space(multi_discrete=pb.MultiDiscreteSpace(shape=[-1, -2], nvec=[2, 2],
                                                       start=[0, 0])), "negative"),
        (pb.Space(multi_binary=pb.MultiBinarySpace()), "one or more dimensions"),
        (pb.Space(multi_binary=pb.MultiBinarySpace(n=[3, 0])), "one or more dimensions"),
        (pb.Space(multi_binary=pb.MultiBinarySpace(n=[1 << 20, 1 << 20])), "too large"),
        (pb.Space(dict=pb.DictSpace()), "one or more keys"),
        (pb.Space(dict=pb.DictSpace(keys=["a", "b"], spaces=[pb.Space(
            discrete=pb.DiscreteSpace(n=2))])), "one space per key"),
        (pb.Space(dict=pb.DictSpace(keys=["a", "a"], spaces=[pb.Space(
            discrete=pb.DiscreteSpace(n=2))] * 2)), "not distinct"),
        (pb.Space(dict=pb.DictSpace(keys=["x" * 257], spaces=[pb.Space(
            discrete=pb.DiscreteSpace(n=2))])), "characters"),
        (pb.Space(tuple=pb.TupleSpace()), "1-1024 spaces"),
    ],
)
def test_decode_space_rejects_malformed_descriptions(message: pb.Space, match: str) -> None:
    with pytest.raises(wire.WireError, match=match) as info:
        wire.decode_space(pb.Space.FromString(message.SerializeToString()),
                          name="observation_space")
    assert "observation_space" in str(info.value)
    assert not isinstance(info.value, wire.UnknownSpace)


@pytest.mark.parametrize(
    ("learner", "actor", "fragments"),
    [
        (S.Discrete(2), S.Discrete(3), ["Discrete(n=2", "Discrete(n=3"]),
        (S.Discrete(3), S.Discrete(3, start=1), ["start=0", "start=1"]),
        (
            SPACES["box-float32"],
            S.Box(-1.0, 2.0, shape=(5,), dtype=np.float32),
            ["shape=(4,)", "shape=(5,)"],
        ),
        (
            SPACES["box-float32"],
            S.Box(-1.0, 2.0, shape=(4,), dtype=np.float64),
            ["float32", "float64"],
        ),
        (
            SPACES["box-float32"],
            S.Box(-1.0, 3.0, shape=(4,), dtype=np.float32),
            ["bounds differ", "high=2.0", "high=3.0"],
        ),
        (SPACES["box-float32"], S.Discrete(4), ["Box(", "Discrete(n=4"]),
        (S.MultiDiscrete([3, 4]), S.MultiDiscrete([3, 5]), ["nvec=[3, 4]", "nvec=[3, 5]"]),
        (S.MultiDiscrete([3, 4]), S.MultiDiscrete([3, 4], start=[0, 1]), ["start=[0, 1]"]),
        (S.MultiDiscrete([3, 4]), S.MultiDiscrete([3, 4], dtype=np.int32), ["dtype=int32"]),
        (S.MultiBinary(4), S.MultiBinary([2, 2]), ["MultiBinary(n=4)", "n=(2, 2)"]),
        (SPACES["dict"], S.Dict({"image": IMAGE, "speed": S.Box(-1.0, 1.0, shape=(2,))}),
         ["Dict keys differ", "'gear'"]),
        (SPACES["dict-insertion-order"],
         S.Dict({"a": S.MultiBinary(3), "z": S.Discrete(2)}),
         ["another order", "['z', 'a']", "['a', 'z']"]),
        (SPACES["dict"], S.Dict({"image": IMAGE, "speed": S.Box(-1.0, 1.0, shape=(2,)),
                                 "gear": S.Discrete(5, start=1)}),
         ["at ['gear']", "Discrete(n=4", "Discrete(n=5"]),
        (SPACES["dict-in-tuple"],
         S.Tuple((S.Dict({"b": S.Discrete(3), "a": S.Tuple((S.Box(0, 254, shape=(6, 5, 3),
                                                                  dtype=np.uint8),
                                                            S.MultiBinary(2)))}),
                  S.Box(-1, 1, shape=(1,), dtype=np.int8))),
         ["bounds differ at [0]['a'][0]", "high=255", "high=254"]),
        (SPACES["tuple"], S.Tuple((S.Discrete(2),)), ["Tuple lengths differ (3 and 1)"]),
    ],
)
def test_space_mismatch_names_both_sides(learner, actor, fragments) -> None:
    mismatch = space_mismatch(learner, actor)
    assert mismatch is not None
    assert "learner has" in mismatch.what and "actor has" in mismatch.what
    for fragment in fragments:
        assert fragment in mismatch.what, (fragment, mismatch.what)


def test_space_mismatch_is_none_for_equal_spaces() -> None:
    for space in SPACES.values():
        assert space_mismatch(space, space) is None


def test_differing_bounds_are_printed_value_by_value_and_shortened() -> None:
    """The first element that differs, with both values exact (float32 as float32), how
    many differ, and both sides' bounds: every value when few, the ends when many."""
    learner = S.Dict({"pos": S.Box(np.float32(-1), np.array([1, 2, 3], np.float32)),
                      "image": IMAGE})
    actor = S.Dict({"pos": S.Box(np.float32(-1), np.array([1, 2, 3.0000002], np.float32)),
                    "image": IMAGE})
    what = space_mismatch(learner, actor).what
    assert what == (
        "bounds differ at ['pos']: high[2] is 3.0 on the learner, 3.0000002 on the actor (1 of "
        "3 values differ); learner has Box(shape=(3,), dtype=float32, low=-1.0, high=[1.0, "
        "2.0, 3.0]), actor has Box(shape=(3,), dtype=float32, low=-1.0, high=[1.0, 2.0, "
        "3.0000002])")
    high = np.full(IMAGE.shape, 255, np.uint8)
    high[1, 2, 0] = high[-1, -1, -1] = 254
    what = space_mismatch(learner, S.Dict({"pos": learner["pos"], "image": S.Box(
        0, high, dtype=np.uint8)})).what
    assert what == (
        "bounds differ at ['image']: high[1, 2, 0] is 255 on the learner, 254 on the actor "
        "(2 of 90 values differ); learner has Box(shape=(6, 5, 3), dtype=uint8, low=0, "
        "high=255), actor has Box(shape=(6, 5, 3), dtype=uint8, low=0, high=[255, 255, 255, "
        "..., 255, 255, 254])")
    low = np.arange(1000, dtype=np.float64)
    what = space_mismatch(S.Box(low, 1e6, dtype=np.float64),
                          S.Box(2 * low, 1e6, dtype=np.float64)).what
    assert what.startswith("bounds differ: low[1] is 1.0 on the learner, 2.0 on the actor "
                           "(999 of 1000 values differ)")
    assert "learner has Box(shape=(1000,), dtype=float64, low=[0.0, 1.0, 2.0, ..., 997.0, " \
           "998.0, 999.0], high=1000000.0)" in what
    assert "actor has Box(shape=(1000,), dtype=float64, low=[0.0, 2.0, 4.0, ..., 1994.0, " \
           "1996.0, 1998.0], high=1000000.0)" in what


def test_differing_multi_discrete_values_are_named() -> None:
    what = space_mismatch(S.MultiDiscrete([3] * 20), S.MultiDiscrete([3] * 19 + [4])).what
    assert what == ("nvec[19] is 3 on the learner, 4 on the actor (1 of 20 values differ); "
                    "learner has MultiDiscrete(shape=(20,), dtype=int64, nvec=3, start=0), "
                    "actor has MultiDiscrete(shape=(20,), dtype=int64, nvec=[3, 3, 3, ..., 3, "
                    "3, 4], start=0)")
