"""Shared fixtures (small and generic)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from procs import Process


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(args, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
