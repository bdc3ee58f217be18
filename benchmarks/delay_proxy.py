"""A userspace TCP proxy that adds a fixed delay to every byte, for kernels without netem.

    python benchmarks/delay_proxy.py serve --listen-port 50052 --target-port 50051 --rtt-ms 20
    python benchmarks/delay_proxy.py rtt --rtt-ms 20 [--no-proxy]

``serve`` listens on 127.0.0.1:LISTEN and forwards every connection to 127.0.0.1:TARGET.
Each chunk read from either side is written to the other side ``rtt / 2`` after it arrived,
in arrival order; nothing limits the bandwidth (chunks are read as soon as they arrive and
any number may be in flight), so a request/reply exchange through the proxy takes ``rtt``
longer and nothing else changes. It prints ``proxy listening on ...`` once it accepts
connections and, when stopped (SIGTERM or SIGINT), one line with its CPU seconds: it shares
the machine with the processes it measures.

``rtt`` checks the delay for real: it starts an echo server and a proxy with the same code
(``--no-proxy``: the echo server alone, e.g. to see what netem adds), sends small messages
through it one at a time and prints the measured round trips.

Timers fire on the event loop's clock, whose waits round up to a millisecond, so the delay
added is a lower bound: each direction is late by up to about 1 ms.

Run it inside the network namespace under test (benchmarks/netns.py does), so that every
address it uses is that namespace's own loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import resource
import signal
import statistics
import sys
import time

_EOF = None  # queued marker: half-close the peer once the delay has passed
CHUNK = 1 << 18  # bytes per read


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _DelayedSide(asyncio.Protocol):
    """One TCP connection of a proxied pair. What it reads is queued on its peer's outbound
    queue, which writes each chunk ``delay`` seconds after it was read, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, stats: dict[str, int]):
        self.loop = loop
        self.delay = delay
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.peer: _DelayedSide | None = None
        self.outbound: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.read_eof = False

    # -- reading: hand the chunk to the peer, stamped with its due time --------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.outbound:  # the other side sent data before this connection was up
            self._schedule()

    def data_received(self, data: bytes) -> None:
        self.stats["bytes"] += len(data)
        if self.peer is not None:
            self.peer.send_later(data)

    def eof_received(self) -> bool:
        self.read_eof = True
        if self.peer is not None:
            self.peer.send_later(_EOF)
        return True  # keep our write side open: the reply may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.peer is not None and not self.peer.closed:
            self.peer.send_later(_EOF)  # whatever is queued still goes out, then EOF

    # -- backpressure: a peer that cannot take more stops us reading from the other side ---

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # -- writing: release chunks whose delay has passed -----------------------------------

    def send_later(self, data: bytes | None) -> None:
        if self.closed:
            return
        if self.delay <= 0 and not self.outbound and self.transport is not None:
            self._write(data)
            return
        self.outbound.append((self.loop.time() + self.delay, data))
        if self.timer is None and self.transport is not None:
            self._schedule()

    def _schedule(self) -> None:
        self.timer = self.loop.call_at(self.outbound[0][0], self._release)

    def _release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.outbound and self.outbound[0][0] <= now and not self.closed:
            self._write(self.outbound.popleft()[1])
        if self.outbound and not self.closed:
            self._schedule()

    def _write(self, data: bytes | None) -> None:
        assert self.transport is not None
        if data is _EOF:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            if self.read_eof or self.peer is None or self.peer.closed:
                self.transport.close()  # both directions are over
        else:
            self.transport.write(data)


async def start_proxy(listen_port: int, target_port: int, rtt_ms: float,
                      stats: dict[str, int]) -> asyncio.Server:
    """Listen on 127.0.0.1:listen_port; each connection is paired with a new one to
    127.0.0.1:target_port and both directions are delayed by rtt_ms / 2."""
    loop = asyncio.get_running_loop()
    delay = rtt_ms / 2000.0

    def accepted() -> _DelayedSide:
        downstream = _DelayedSide(loop, delay, stats)
        upstream = _DelayedSide(loop, delay, stats)
        upstream.peer, downstream.peer = downstream, upstream
        stats["connections"] += 1

        async def connect_upstream() -> None:
            try:
                await loop.create_connection(lambda: upstream, "127.0.0.1", target_port)
            except OSError:
                if downstream.transport is not None:
                    downstream.transport.close()

        loop.create_task(connect_upstream())
        return downstream

    return await loop.create_server(accepted, "127.0.0.1", listen_port, backlog=512)


async def serve(listen_port: int, target_port: int, rtt_ms: float) -> None:
    """Run the proxy until SIGTERM or SIGINT, then print its CPU seconds."""
    stats = {"connections": 0, "bytes": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await start_proxy(listen_port, target_port, rtt_ms, stats)
    print(f"proxy listening on 127.0.0.1:{listen_port} -> 127.0.0.1:{target_port}, "
          f"added round trip {rtt_ms:g} ms", flush=True)
    started = time.monotonic()
    await stop.wait()
    server.close()
    print(f"proxy stopped: cpu_s={cpu_seconds():.3f} wall_s={time.monotonic() - started:.3f} "
          f"connections={stats['connections']} bytes={stats['bytes']}", flush=True)


async def measure_rtt(rtt_ms: float, count: int, through_proxy: bool) -> list[float]:
    """Round trips, in ms, of ``count`` 64-byte messages sent one at a time to an echo
    server on this namespace's loopback, through a proxy adding ``rtt_ms`` (or directly)."""

    echoed = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.close()
        echoed.set()

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = echo_server.sockets[0].getsockname()[1]
    proxy = None
    if through_proxy:
        proxy = await start_proxy(0, port, rtt_ms, {"connections": 0, "bytes": 0})
        port = proxy.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = bytes(range(64))
    trips = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(message)
        received = await reader.readexactly(len(message))
        trips.append((time.perf_counter() - started) * 1000.0)
        if received != message:
            raise RuntimeError("the echo came back altered")
    writer.close()
    await asyncio.wait_for(echoed.wait(), 10.0)  # our EOF went through, the echo ended
    for server in (proxy, echo_server):
        if server is not None:
            server.close()
    return trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the proxy until SIGTERM")
    serve_parser.add_argument("--listen-port", type=int, required=True)
    serve_parser.add_argument("--target-port", type=int, required=True)
    serve_parser.add_argument("--rtt-ms", type=float, required=True,
                              help="added round trip: rtt/2 in each direction")
    rtt_parser = commands.add_parser("rtt", help="measure echo round trips through a proxy")
    rtt_parser.add_argument("--rtt-ms", type=float, default=0.0)
    rtt_parser.add_argument("--count", type=int, default=20)
    rtt_parser.add_argument("--no-proxy", action="store_true",
                            help="echo server alone (what the kernel's loopback adds)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.listen_port, args.target_port, args.rtt_ms))
        return 0
    trips = asyncio.run(measure_rtt(args.rtt_ms, args.count, not args.no_proxy))
    print(f"echo round trip: min={min(trips):.2f} p50={statistics.median(trips):.2f} "
          f"max={max(trips):.2f} ms over {len(trips)} messages", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
