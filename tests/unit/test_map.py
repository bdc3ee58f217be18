"""docs/architecture.md is the map: it names every module of seed_rl/, actors/ and learner/
(by its path), and every path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "architecture.md"
#: not modules a reader looks for: package markers, entry shims, generated wire code
UNNAMED = ("__init__.py", "__main__.py")


def modules() -> list[str]:
    found = []
    for package in ("seed_rl", "actors", "learner"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if path.name in UNNAMED or "proto" in relative.parts:
                continue
            found.append(relative.as_posix())
    return found


def test_the_map_names_every_module() -> None:
    text = MAP.read_text()
    missing = [m for m in modules() if m not in text]
    assert len(modules()) > 40
    assert not missing, f"docs/architecture.md does not name {missing}: add each to its table"


def test_every_path_the_map_names_exists() -> None:
    named = set(re.findall(r"`((?:seed_rl|actors|learner)/[\w/]+\.py)`", MAP.read_text()))
    assert named
    gone = sorted(p for p in named if not (ROOT / p).exists())
    assert not gone, f"docs/architecture.md names files that do not exist: {gone}"
