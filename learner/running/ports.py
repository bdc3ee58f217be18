"""Free TCP ports for the processes ``seed-rl train`` and ``--replicas`` start on this machine.

A port is picked here and bound a few seconds later by another process (the learner, a
replica, the replica group's rendezvous store). Meanwhile every outgoing connection on the
machine takes a local port from the kernel's ephemeral range, and so does any bind to port 0:
the actors alone open dozens while they wait for the learner. A port picked *inside* that
range can be taken in that window, so ports are picked outside it
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), where only a process
that names the port can take it. Where there is no room outside the range, or no such file,
the kernel's own choice is used (bind to port 0)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000  # below: the registered ports of well-known services are dense
TRIES = 200


def free_ports(host: str, count: int = 1) -> int:
    """The first of ``count`` consecutive TCP ports on ``host`` that nothing is bound to
    now (``count`` replicas listen on port, port + 1, ...), outside the ephemeral range."""
    rng = random.Random()
    spans = _spans_outside_ephemeral(count)
    if spans:
        for _ in range(TRIES):
            low, high = rng.choice(spans)
            port = rng.randint(low, high)
            if all(port_free(host, port + offset) for offset in range(count)):
                return port
    for _ in range(TRIES):  # the kernel's choice; the next ports are checked as well
        port = _kernel_port(host)
        if port + count - 1 <= 65535 and all(
                port_free(host, port + offset) for offset in range(1, count)):
            return port
    raise RuntimeError(f"found no {count} consecutive free TCP ports on {host}")


def port_free(host: str, port: int) -> bool:
    """Whether a plain bind to ``host:port`` succeeds now (nothing listens or is bound there)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host.strip("[]"), port))
        return True
    except OSError:
        return False


def _kernel_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]"), 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET


def _spans_outside_ephemeral(count: int) -> list[tuple[int, int]]:
    """Inclusive ranges of first ports whose ``count`` ports all lie outside the kernel's
    ephemeral range and in [LOWEST_PORT, 65535]; empty where the range is unknown."""
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return []
    spans = [(LOWEST_PORT, low - count), (high + 1, 65536 - count)]
    return [(first, last) for first, last in spans if last - first >= 100]
