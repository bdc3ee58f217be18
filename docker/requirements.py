"""Print the pip requirements of one image role, read from pyproject.toml.

    python3 docker/requirements.py pyproject.toml actor     # the torch-free actor install
    python3 docker/requirements.py pyproject.toml learner   # adds the [learner] extra
    python3 docker/requirements.py pyproject.toml actor atari,box2d   # plus these extras

One line per requirement, plus the build backend (``setuptools``, ``wheel``) so that the
project itself can be installed with ``--no-build-isolation`` in an image that has no
network. The Dockerfile installs these before it copies the source (so a code change does
not reinstall torch), and ``docker/smoke.sh`` downloads the same list into the offline
wheelhouse: pyproject.toml stays the one place dependencies are declared.

Standard library only (Python >= 3.11 for tomllib): it runs in the bare base image.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROLES = ("actor", "learner")


def requirements(pyproject: Path, role: str, extras: str = "") -> list[str]:
    """The requirement strings ``role`` needs: the project's dependencies, for the learner
    its ``learner`` extra too, the comma-separated ``extras`` (e.g. environment families:
    "atari,box2d") and the build backend's requirements."""
    if role not in ROLES:
        raise SystemExit(f"requirements.py: unknown role {role!r}; use one of {ROLES}")
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    declared = project.get("optional-dependencies", {})
    wanted = list(project.get("dependencies", []))
    names = [name.strip() for name in extras.split(",") if name.strip()]
    if role == "learner":
        names.insert(0, "learner")
    for name in names:
        if name not in declared:
            raise SystemExit(
                f"requirements.py: {pyproject} has no [{name}] extra; "
                f"the extras are {', '.join(sorted(declared))}"
            )
        wanted += [line for line in declared[name] if line not in wanted]
    wanted += data.get("build-system", {}).get("requires", [])
    return wanted


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    for line in requirements(Path(argv[0]), argv[1], argv[2] if len(argv) == 3 else ""):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
