"""The committed generated modules match what proto/ generates now."""

from __future__ import annotations

from pathlib import Path

from seed_rl.proto import generate


def test_committed_modules_match_the_proto(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "protoc wrote nothing"
    generated = {p.relative_to(tmp_path): generate.fix_imports(p.read_text()) for p in written}
    committed = {
        p.relative_to(generate.OUTPUT_ROOT): p.read_text()
        for p in generate.OUTPUT_ROOT.rglob("*_pb2*.py*")
        if p.is_file()
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
