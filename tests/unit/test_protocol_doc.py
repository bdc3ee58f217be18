"""docs/protocol.md, the actor protocol for clients in any language, cannot drift from the
code: its worked byte-level examples are recomputed with seed_rl/wire.py and
seed_rl/spaces.py, its slot convention is the env loop's, and it names every field of the
proto, every status code of docs/reliability.md, the protocol version and the defaults it
quotes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np

from actors.channel import BACKOFF_BASE_S
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import observation_layout

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def example(first_key: str) -> dict[str, str]:
    """The ```text block of the doc whose first line starts with ``first_key:``, as
    {key: value} (each line ``key: value``)."""
    (block,) = re.findall(rf"```text\n({first_key}:.*?)```", DOC, flags=re.S)
    return dict(line.split(":", 1) for line in block.strip().splitlines())


def hex_groups(data: bytes, width: int) -> str:
    text = data.hex()
    return " ".join(text[i:i + 2 * width] for i in range(0, len(text), 2 * width))


def test_the_worked_tensor_example_is_what_the_codec_writes() -> None:
    lines = {key: value.strip() for key, value in example("array").items()}
    array = np.array(json.loads(lines["array"]), dtype=np.float32)
    tensor = wire.encode_tensor(array)
    assert json.loads(lines["dtype"]) == tensor.dtype == "float32"
    assert json.loads(lines["shape"]) == list(tensor.shape) == [2, 3]
    assert lines["data"] == hex_groups(tensor.data, 4)
    assert lines["message"] == hex_groups(tensor.SerializeToString(), 1)
    # ... and the bytes as written decode back to the array.
    message = pb.Tensor.FromString(bytes.fromhex(lines["message"].replace(" ", "")))
    np.testing.assert_array_equal(wire.decode_tensor(message), array)


def test_the_packed_row_example_is_what_the_layout_writes() -> None:
    lines = {key: value.strip() for key, value in example("space").items()}
    space = gym.spaces.Dict({"room": gym.spaces.Discrete(3),
                             "pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    assert lines["space"] == ('Dict({"room": Discrete(3), "pos": Box(-1.0, 1.0, (2,), '
                              'float32)})')  # the space built above
    keys = json.loads(lines["keys"])
    assert keys == list(space.spaces) == list(wire.encode_space(space).dict.keys)
    value = json.loads(lines["value"])
    layout = observation_layout(space)
    rows = np.zeros((1, *layout.row_shape), layout.row_dtype)
    layout.write(rows, 0, {"pos": np.array(value["pos"], np.float32), "room": value["room"]})
    tensor = wire.encode_tensor(rows)
    assert json.loads(lines["dtype"]) == tensor.dtype == "uint8"
    assert json.loads(lines["shape"]) == list(tensor.shape)
    assert lines["data"] == hex_groups(tensor.data, 4)
    assert [(leaf.path, leaf.offset, leaf.nbytes) for leaf in layout.leaves] == [
        ("pos", 0, 8), ("room", 8, 8)]  # as the text under the block says


def test_the_slot_convention_is_the_env_loops() -> None:
    env_loop = (ROOT / "actors" / "env_loop.py").read_text()
    for side in ("request t:", "response t:"):
        (mine,) = [line for line in DOC.splitlines() if line.strip().startswith(side)]
        (theirs,) = [line for line in env_loop.splitlines() if line.strip().startswith(side)]
        assert mine == theirs


def section(heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    return DOC.split(f"{heading}\n")[1].split("\n## ")[0].split("\n### ")[0]


def test_every_field_of_the_proto_is_described() -> None:
    """Each field of the handshake and step messages has a row ``name`` (number) in its
    message's table; every other message's fields are named somewhere."""
    missing = []
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        tabled = message.name.endswith(("Request", "Response"))
        text = section(f"### {message.name}") if tabled else DOC
        for field in message.fields:
            name = f"`{field.name}` ({field.number})" if tabled else f"`{field.name}`"
            if name not in text:
                missing.append(f"{message.name}.{field.name}")
    assert not missing, f"docs/protocol.md does not describe {missing}"


def test_every_status_code_of_the_reliability_table_is_in_the_protocol_table() -> None:
    reliability = (ROOT / "docs" / "reliability.md").read_text().split("## Status codes")[1]
    codes = re.findall(r"^\| ([A-Z_]+) \|", reliability, flags=re.M)
    assert len(codes) >= 9
    table = DOC.split("## Status codes")[1].split("\n## ")[0]
    described = set(re.findall(r"^\| ([A-Z_]+)[ ,]", table, flags=re.M))
    assert set(codes) <= described, set(codes) - described


def test_the_version_and_the_defaults_quoted_are_the_codes() -> None:
    assert f"The current protocol version is **{wire.PROTOCOL_VERSION}**" in DOC
    defaults = Config()
    limits = DOC.split("## Limits")[1].split("\n## ")[0]
    for quoted, value in (("64 MiB (`--max-message-bytes`)", defaults.max_message_bytes >> 20),
                          ("4096 (`--max-envs-per-actor`)", defaults.max_envs_per_actor),
                          ("16384 (`--max-total-envs`)", defaults.max_total_envs),
                          ("4096 (`--max-streams`)", defaults.max_streams),
                          ("30 s (`--stream-idle-timeout`)", defaults.stream_idle_timeout)):
        assert quoted in limits and float(quoted.split()[0]) == value, quoted
    assert f"min(cap, {BACKOFF_BASE_S} s * 2 ** failures) * uniform(0.5, 1.0)" in DOC
    assert f"(default {defaults.reconnect_max_backoff:g} s)" in DOC
    assert wire.MAX_TENSOR_DIMS == 8 and wire.MAX_SPACE_DEPTH == 8
    assert wire.MAX_SPACE_LEAVES == 1024 and wire.MAX_DICT_KEY_LENGTH == 256
    assert sorted(wire.ALLOWED_DTYPES) == sorted(re.findall(
        r"`(\w+)`", DOC.split("a numpy dtype name from the allow-list:")[1].split("|")[0]))
