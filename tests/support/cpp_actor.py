"""The C++ reference actor (clients/cpp/) for tests: built once per test session into
clients/cpp/build with CMake (its stubs generated from proto/ at build time), and the
command line that runs it. A machine without the toolchain fails the tests that need it,
naming the Debian packages to install (.ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from support.procs import REPO

SOURCE = REPO / "clients" / "cpp"
BUILD = SOURCE / "build"
BINARY = BUILD / "seed-rl-cpp-actor"
#: what `apt-get install` needs on Debian bookworm (gRPC 1.51, protobuf 3.21)
PACKAGES = ("libgrpc++-dev", "protobuf-compiler-grpc", "libprotobuf-dev", "protobuf-compiler",
            "cmake", "g++", "pkg-config")
TOOLS = ("cmake", "g++", "pkg-config", "protoc", "grpc_cpp_plugin")
BUILD_TIMEOUT = 900.0  # seconds: a clean build on a 2-core machine takes about one minute


class ToolchainMissing(AssertionError):
    """The C++ toolchain or gRPC's headers are not installed; the text says what to install."""


def missing_toolchain() -> list[str]:
    """The tools (and pkg-config modules) the build needs that this machine lacks."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if "pkg-config" not in missing:
        for module in ("grpc++", "protobuf"):
            found = subprocess.run(["pkg-config", "--exists", module], check=False)
            if found.returncode != 0:
                missing.append(f"pkg-config module {module}")
    return missing


def build() -> Path:
    """Configure (once) and build clients/cpp into clients/cpp/build with ``-j2``; the
    binary's path. Raises :class:`ToolchainMissing` or AssertionError with the build's
    output."""
    missing = missing_toolchain()
    if missing:
        raise ToolchainMissing(
            f"the C++ actor cannot be built here: missing {', '.join(missing)}; install "
            f"them with: apt-get install {' '.join(PACKAGES)}")
    steps = []
    if not (BUILD / "CMakeCache.txt").exists():
        steps.append(["cmake", "-S", str(SOURCE), "-B", str(BUILD),
                      "-DCMAKE_BUILD_TYPE=Release"])
    steps.append(["cmake", "--build", str(BUILD), "-j2"])
    for step in steps:
        done = subprocess.run(step, cwd=REPO, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, check=False)
        assert done.returncode == 0, (
            f"{' '.join(step)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    assert BINARY.is_file(), f"the build made no {BINARY}"
    return BINARY


def cpp_actor_command(binary: Path, port: int, flags: str = "") -> list[str]:
    """The C++ actor for the learner on 127.0.0.1:``port`` with ``flags`` (split on spaces)."""
    return [str(binary), "--learner", f"127.0.0.1:{port}", "--status-every", "0",
            *flags.split()]
