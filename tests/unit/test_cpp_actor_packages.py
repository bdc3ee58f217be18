"""The C++ actor's Debian packages are named alike where a user or CI reads them: the
tests' build helper (tests/support/cpp_actor.py, whose failure names them), .ci/run (which
installs them) and clients/cpp/README.md; and its build generates the stubs from the one
proto/ of the repository."""

from __future__ import annotations

import re

from support.cpp_actor import PACKAGES, SOURCE
from support.procs import REPO


def test_ci_and_the_readme_install_the_packages_the_tests_name() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    listed = re.search(r"cpp_packages=\(([^)]*)\)", ci)
    assert listed, ".ci/run has no cpp_packages=(...) list"
    assert set(listed[1].split()) == set(PACKAGES)
    readme = (SOURCE / "README.md").read_text()
    # the command and its continuation lines (ending in a backslash)
    install = re.search(r"apt-get install -y --no-install-recommends ((?:.*\\\n)*.*)", readme)
    assert install, "clients/cpp/README.md has no apt-get install line"
    assert set(install[1].replace("\\", " ").split()) == set(PACKAGES)


def test_the_build_generates_its_stubs_from_the_repositorys_proto() -> None:
    cmake = (SOURCE / "CMakeLists.txt").read_text()
    assert '"${CMAKE_CURRENT_SOURCE_DIR}/../../proto"' in cmake
    assert "seed_rl/v1/seed_rl.proto" in cmake
    assert (SOURCE / ".." / ".." / "proto" / "seed_rl" / "v1" / "seed_rl.proto").resolve().is_file()
    assert not list(SOURCE.glob("src/*.pb.*")), "generated code is checked in"
