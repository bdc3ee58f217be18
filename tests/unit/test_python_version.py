"""The Python the project declares is the Python it is tested on.

pyproject's ``requires-python`` floor, ruff's ``target-version`` and the images' base
(docker/Dockerfile) name one version, the one CI tests (.ci/run makes its venv with the
machine's python3, 3.11). A floor below it would promise a Python nothing runs (a 3.10
floor hid a ``TimeoutError`` that is only ``concurrent.futures``' from 3.11 on); newer
interpreters may run the tests; a dependency marker or a ``sys.version_info`` branch for a
version at or below the floor is code no supported interpreter takes the other way of.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("seed_rl", "learner", "actors", "benchmarks", "docker", "examples", "tests")
VERSION_CHECK = re.compile(r"sys\.version_info\s*(?:\[[^]]*\]\s*)?[<>=!]=?\s*\(\s*3\s*,\s*(\d+)")
MARKER = re.compile(r"python_(?:full_)?version\s*[<>=!~]=?\s*['\"]3\.(\d+)")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def floor() -> tuple[int, int]:
    """requires-python's floor, as (3, minor): it must be a plain ``>=3.N``."""
    spec = pyproject()["project"]["requires-python"]
    match = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    assert match, f"requires-python {spec!r}: expected a plain floor '>=3.N'"
    return 3, int(match.group(1))


def test_requires_python_ruff_target_images_and_the_tested_interpreter_agree() -> None:
    lowest = floor()
    name = f"{lowest[0]}.{lowest[1]}"
    target = pyproject()["tool"]["ruff"]["target-version"]
    assert target == f"py{lowest[0]}{lowest[1]}", (
        f"ruff's target-version {target!r} is not requires-python's floor {name}")
    base = re.search(r"^ARG BASE=python:(\d+)\.(\d+)",
                     (ROOT / "docker" / "Dockerfile").read_text(), re.MULTILINE)
    assert base, "docker/Dockerfile: no default 'ARG BASE=python:3.N...'"
    assert (int(base[1]), int(base[2])) == lowest, (
        f"the images run Python {base[1]}.{base[2]}, requires-python's floor is {name}")
    running = sys.version_info[:2]
    assert running >= lowest, (
        f"these tests run on Python {running[0]}.{running[1]}, below requires-python's "
        f"floor {name}")


def test_no_dependency_marker_or_code_branch_for_pythons_below_the_floor() -> None:
    lowest = floor()[1]
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    stale = [r for r in requirements if any(int(m) <= lowest for m in MARKER.findall(r))]
    assert not stale, f"markers for Pythons below the 3.{lowest} floor: {stale}"
    branches = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if any(int(m) <= lowest for m in VERSION_CHECK.findall(line)):
                    branches.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not branches, "version checks that are settled by the 3.{} floor:\n{}".format(
        lowest, "\n".join(branches))
