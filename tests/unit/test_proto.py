"""The committed generated modules match what proto/ generates now."""

from __future__ import annotations

import re
from pathlib import Path

from seed_rl import wire
from seed_rl.proto import generate


def test_committed_modules_match_the_proto(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "protoc wrote nothing"
    generated = {p.relative_to(tmp_path): generate.fix_imports(p.read_text()) for p in written}
    committed = {
        p.relative_to(generate.OUTPUT_ROOT): p.read_text()
        for p in generate.OUTPUT_ROOT.rglob("*_pb2*.py*")
        if p.is_file() and p.suffix in (".py", ".pyi")  # not __pycache__/*.pyc
    }
    assert sorted(map(str, generated)) == sorted(map(str, committed)), (
        "generated and committed module sets differ; run `python -m seed_rl.proto.generate`"
    )
    for rel, text in generated.items():
        assert committed[rel] == text, (
            f"seed_rl/proto/{rel} is stale; run `python -m seed_rl.proto.generate`"
        )


def test_every_proto_file_is_covered() -> None:
    protos = generate.proto_files()
    assert [p.relative_to(generate.PROTO_ROOT).as_posix() for p in protos] == [
        "seed_rl/v1/seed_rl.proto"
    ]


def test_generated_imports_point_into_the_package() -> None:
    grpc_module = (generate.OUTPUT_ROOT / "seed_rl/v1/seed_rl_pb2_grpc.py").read_text()
    assert "from seed_rl.proto.seed_rl.v1 import seed_rl_pb2" in grpc_module
    assert "from seed_rl.v1 import" not in grpc_module
    from seed_rl.proto.seed_rl.v1 import seed_rl_pb2, seed_rl_pb2_grpc

    assert seed_rl_pb2.DESCRIPTOR.package == "seed_rl.v1"
    assert hasattr(seed_rl_pb2_grpc, "LearnerStub")


# The seed_rl.v1 fields as first shipped: (number, type). The contract only grows; an old
# actor or learner keeps reading these exactly (docs/architecture.md, "Wire contract").
SHIPPED_V1 = {
    "Tensor": {"dtype": (1, "string"), "shape": (2, "repeated int64"), "data": (3, "bytes")},
    "BoxSpace": {"dtype": (1, "string"), "shape": (2, "repeated int64"), "low": (3, "Tensor"),
                 "high": (4, "Tensor")},
    "DiscreteSpace": {"n": (1, "int64"), "start": (2, "int64")},
    "Space": {"box": (1, "BoxSpace"), "discrete": (2, "DiscreteSpace")},
    "HandshakeRequest": {
        "protocol_version": (1, "uint32"), "actor_id": (2, "string"), "run_id": (3, "string"),
        "num_envs": (4, "uint32"), "env_id": (5, "string"), "env_kwargs_json": (6, "string"),
        "observation_space": (7, "Space"), "action_space": (8, "Space")},
    "HandshakeResponse": {
        "env_id": (1, "string"), "env_kwargs_json": (2, "string"), "session_id": (3, "string"),
        "slot_ids": (4, "repeated uint64"), "max_message_bytes": (5, "uint64"),
        "policy_version": (6, "uint64"), "learner_version": (7, "string")},
    "EpisodeStats": {"env_index": (1, "uint32"), "episode_return": (2, "double"),
                     "episode_length": (3, "uint64")},
    "StepRequest": {
        "observations": (1, "Tensor"), "rewards": (2, "Tensor"), "terminated": (3, "Tensor"),
        "truncated": (4, "Tensor"), "final_observation_envs": (5, "repeated uint32"),
        "final_observations": (6, "Tensor"), "episodes": (7, "repeated EpisodeStats")},
    "StepResponse": {"actions": (1, "Tensor"), "policy_version": (2, "uint64"),
                     "training_over": (3, "bool")},
}
ADDED_V1 = {  # additions since, all new numbers
    "Space": {"multi_discrete": (3, "MultiDiscreteSpace"), "multi_binary": (4, "MultiBinarySpace"),
              "dict": (5, "DictSpace"), "tuple": (6, "TupleSpace")},
    "HandshakeResponse": {"env_import": (8, "repeated string"),
                          "redirect_address": (9, "string"),
                          "env_wrapper": (10, "repeated string"),
                          "observation_space": (11, "Space"), "action_space": (12, "Space")},
    "HandshakeRequest": {"redirected": (9, "bool")},
    "MultiDiscreteSpace": {"shape": (1, "repeated int64"), "nvec": (2, "repeated int64"),
                           "start": (3, "repeated int64"), "dtype": (4, "string")},
    "MultiBinarySpace": {"n": (1, "repeated int64")},
    "DictSpace": {"keys": (1, "repeated string"), "spaces": (2, "repeated Space")},
    "TupleSpace": {"spaces": (1, "repeated Space")},
}


def _field_type(field) -> str:
    from google.protobuf.descriptor import FieldDescriptor as F

    scalar = {F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_INT64: "int64",
              F.TYPE_UINT64: "uint64", F.TYPE_UINT32: "uint32", F.TYPE_DOUBLE: "double",
              F.TYPE_BOOL: "bool"}
    name = field.message_type.name if field.message_type else scalar[field.type]
    return f"repeated {name}" if field.is_repeated else name


def test_the_wire_contract_only_grows() -> None:
    from seed_rl.proto.seed_rl.v1 import seed_rl_pb2

    messages = seed_rl_pb2.DESCRIPTOR.message_types_by_name
    for pinned in (SHIPPED_V1, ADDED_V1):
        for message, fields in pinned.items():
            descriptor = messages[message]
            actual = {f.name: (f.number, _field_type(f)) for f in descriptor.fields}
            for name, expected in fields.items():
                assert actual.get(name) == expected, (message, name, actual.get(name))
    # the new space kinds sit in the same oneof, so an old peer sees "no kind set"
    kind = messages["Space"].oneofs_by_name["kind"]
    assert [f.name for f in kind.fields] == ["box", "discrete", "multi_discrete",
                                             "multi_binary", "dict", "tuple"]
    for message, fields in ADDED_V1.items():  # every field of a message added since is pinned
        if message in SHIPPED_V1 or message in ("Space", "HandshakeResponse", "HandshakeRequest"):
            continue
        assert {f.name for f in messages[message].fields} == set(fields), message


def test_the_proto_states_the_protocol_version_that_seed_rl_wire_speaks() -> None:
    """A client in another language reads the version from the .proto: the comment on
    HandshakeRequest.protocol_version and the ProtocolVersion enum name it."""
    from seed_rl.proto.seed_rl.v1 import seed_rl_pb2

    text = (generate.PROTO_ROOT / "seed_rl/v1/seed_rl.proto").read_text()
    comment = re.search(r"((?:  //.*\n)+)  uint32 protocol_version = 1;", text)
    assert comment, "no comment on HandshakeRequest.protocol_version"
    stated = re.search(r"the current value is (\d+)", " ".join(comment.group(1).split()))
    assert stated and int(stated.group(1)) == wire.PROTOCOL_VERSION
    versions = {int(name): int(number)
                for name, number in re.findall(r"PROTOCOL_VERSION_(\d+) = (\d+);", text)}
    assert versions and all(name == number for name, number in versions.items())
    assert max(versions) == wire.PROTOCOL_VERSION
    prose = " ".join(re.sub(r"^\s*//", "", text, flags=re.M).split())  # comments as text
    assert re.search(rf"current version is PROTOCOL_VERSION_{wire.PROTOCOL_VERSION} = "
                     rf"{wire.PROTOCOL_VERSION}\b", prose)
    enum = seed_rl_pb2.ProtocolVersion
    assert enum.Value(f"PROTOCOL_VERSION_{wire.PROTOCOL_VERSION}") == wire.PROTOCOL_VERSION
    assert max(enum.values()) == wire.PROTOCOL_VERSION
