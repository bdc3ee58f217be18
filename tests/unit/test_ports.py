"""learner/running/ports.py: the ports ``seed-rl train`` and the replica launcher pick lie
outside the kernel's ephemeral range, where no outgoing connection can take them."""

from __future__ import annotations

import socket

from learner.running.ports import EPHEMERAL_RANGE_FILE, free_ports, port_free


def test_picked_ports_are_free_consecutive_and_outside_the_ephemeral_range() -> None:
    low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    for count in (1, 2, 4):
        first = free_ports("127.0.0.1", count)
        ports = range(first, first + count)
        assert all(port < low or port > high for port in ports), (first, count, low, high)
        for port in ports:  # each can be listened on
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
                sock.listen()


def test_a_port_something_is_bound_to_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        taken = sock.getsockname()[1]
        assert not port_free("127.0.0.1", taken)
        sock.listen()
        assert not port_free("127.0.0.1", taken)
    assert port_free("127.0.0.1", taken)


def test_outgoing_connections_take_their_local_ports_from_the_ephemeral_range() -> None:
    """Why the ports are picked outside it: the local port of a connection lies inside."""
    low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_ports("127.0.0.1")))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            assert low <= client.getsockname()[1] <= high


def test_without_room_outside_the_range_the_kernel_picks(tmp_path, monkeypatch) -> None:
    from learner.running import ports

    whole = tmp_path / "ip_local_port_range"
    whole.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", whole)
    first = ports.free_ports("127.0.0.1", 2)
    assert all(port_free("127.0.0.1", port) for port in (first, first + 1))
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "absent")
    assert port_free("127.0.0.1", ports.free_ports("127.0.0.1"))
