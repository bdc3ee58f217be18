"""Regenerate the committed Python modules for the wire contract from ``proto/``.

Run ``python -m seed_rl.proto.generate`` after editing a ``.proto`` file (needs the
``test`` extra for grpcio-tools). ``tests/unit/test_proto.py`` fails when the committed
modules differ from what this produces.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
OUTPUT_ROOT = Path(__file__).resolve().parent  # seed_rl/proto


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(output_root: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on every file in proto/; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc  # only at development time

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p for p in output_root.rglob("*_pb2*.py*") if p.is_file())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp))
        for path in written:
            rel = path.relative_to(tmp)
            target = OUTPUT_ROOT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            text = fix_imports(path.read_text())
            target.write_text(text)
            print(f"wrote {target.relative_to(REPO_ROOT)}")
    return 0


def fix_imports(text: str) -> str:
    """protoc writes ``from seed_rl.v1 import ...``; the modules live in seed_rl.proto."""
    return text.replace("from seed_rl.v1 import", "from seed_rl.proto.seed_rl.v1 import")


if __name__ == "__main__":
    sys.exit(main())
