"""The learner's gRPC server: one asyncio event loop serving every actor stream.

:class:`LearnerServer` runs a ``grpc.aio`` server on its own thread (``serving-loop``):
the Learner service (:mod:`learner.serving.service`), whose handlers are coroutines, and the
standard gRPC health service. A stream costs a coroutine, not a thread, so one learner
holds thousands of actor streams; past ``--max-streams`` a handshake is answered
RESOURCE_EXHAUSTED at once (learner/serving/service.py), and gRPC itself refuses RPCs beyond that
limit plus a margin for handshakes and health checks, so nothing waits unanswered.
``--listeners`` servers share the port (SO_REUSEPORT), all serving the one servicer on the
one loop: a grpc.aio server takes new RPCs one per round trip through its loop, which a
loop busy with thousands of streams makes slow; several take a reconnect storm faster.

Keepalives are tuned for actors on other machines (a dead peer is noticed in ~15 s); the
token interceptor (:mod:`learner.serving.auth`) runs before any handler; with ``--tls-cert`` the
port is TLS, with ``--tls-client-ca`` mutual TLS. Other threads reach the loop only through
:meth:`LearnerServer.call_soon` (the session watchdog) and :meth:`set_serving`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from learner.serving.auth import TokenInterceptor
from learner.serving.service import LearnerServicer, add_to_server
from seed_rl import wire
from seed_rl.config import Config

log = logging.getLogger("learner")

SERVICE_NAME = "seed_rl.v1.Learner"
# RPCs gRPC admits beyond --max-streams: handshakes in flight, health checks, streams
# being replaced by their actor's reconnect.
RPC_MARGIN = 256


class LearnerServer:
    """The gRPC server of one learner process on its own event loop thread."""

    def __init__(self, config: Config, servicer: LearnerServicer,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()):
        self.config = config
        self.servicer = servicer
        # Run before the token check, on every RPC: the conformance checker's recorder.
        self.interceptors = list(interceptors)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="serving-loop",
                                        daemon=True)
        self._servers: list[grpc.aio.Server] = []  # the listeners (--listeners)
        self._health: health.aio.HealthServicer | None = None
        self.port = 0

    def start(self) -> int:
        """Bind ``config.address`` and start serving (health NOT_SERVING until
        :meth:`set_serving`); returns the port. SystemExit says why when the address cannot
        be used or a PEM file cannot be read."""
        check_config(self.config)
        credentials = server_credentials(self.config)
        raise_open_file_limit(self.config.max_streams + RPC_MARGIN + self.config.listeners)
        self._thread.start()
        self.port = self._run(self._start(credentials))
        if self.port == 0:
            self.stop(grace=0)
            raise SystemExit(f"cannot listen on {self.config.address}: the address is in "
                             "use or invalid; pick another --address")
        return self.port

    async def _start(self, credentials: grpc.ServerCredentials | None) -> int:
        """The bound port (0: the address cannot be used), every listener started.

        ``--listeners`` gRPC servers share the port (SO_REUSEPORT; the kernel spreads new
        connections over them), all with the one servicer on this loop: a grpc.aio server
        asks gRPC core for one new RPC at a time, a round trip through a busy loop, so
        several listeners accept a reconnect storm several times faster. SO_REUSEPORT
        would also let a second learner of the same user bind the port: a plain bind
        checks first that nothing listens there."""
        config = self.config
        self._health = health.aio.HealthServicer()
        for name in (SERVICE_NAME, ""):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if config.listeners > 1 and port_in_use(config.address):
            return 0
        host = config.address.rsplit(":", 1)[0]
        port = 0
        for index in range(config.listeners):
            server = self._new_server()
            address = config.address if index == 0 else f"{host}:{port}"
            try:
                bound = (server.add_secure_port(address, credentials) if credentials
                         else server.add_insecure_port(address))
            except RuntimeError:  # recent grpc raises where older ones returned port 0
                bound = 0
            if not bound or (index and bound != port):
                return 0
            port = bound
            await server.start()
            self._servers.append(server)
        return port

    def _new_server(self) -> grpc.aio.Server:
        """One listener: the learner and health services, the token interceptor."""
        config = self.config
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", int(config.listeners > 1)),
            # New RPCs wait in gRPC core until the loop takes them (slowly while every
            # stream is busy): let them wait rather than be cancelled at core's limits.
            ("grpc.server.max_pending_requests", config.max_streams + RPC_MARGIN),
            ("grpc.server.max_pending_requests_hard_limit", 2 * (config.max_streams + RPC_MARGIN)),
            ("grpc.server_max_unrequested_time_in_server", 120),
        ]
        # The token is checked on every RPC (health included) before any handler runs.
        interceptors = [*self.interceptors,
                        *([TokenInterceptor(config.auth_token)] if config.auth_token else [])]
        server = grpc.aio.server(options=options, interceptors=interceptors or None,
                                 maximum_concurrent_rpcs=config.max_streams + RPC_MARGIN)
        add_to_server(self.servicer, server)  # unparseable requests: INVALID_ARGUMENT
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        return server

    def set_serving(self, serving: bool) -> None:
        """What the health service reports for the learner service and overall."""
        if self._health is None:
            return
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)

        async def set_all() -> None:
            for name in (SERVICE_NAME, ""):
                await self._health.set(name, status)

        try:
            self._run(set_all(), timeout=10)
        except TimeoutError:  # a stuck loop must not stop a shutdown: say so and go on
            log.error("the serving loop did not take the health status within 10 s")

    def call_soon(self, function: Callable[[], Any]) -> None:
        """Run ``function`` on the serving loop (where the sessions live), not waiting; an
        exception it raises is logged with its traceback."""

        def guarded() -> None:
            try:
                function()
            except Exception:
                log.exception("%s failed on the serving loop", function.__qualname__)

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(guarded)

    def stop(self, grace: float) -> None:
        """Stop accepting RPCs, give open ones ``grace`` seconds, then stop the loop."""
        if self._servers:
            async def stop_all() -> None:
                await asyncio.gather(*(server.stop(grace) for server in self._servers))

            try:
                self._run(stop_all(), timeout=grace + 5)
            except TimeoutError:
                log.warning("the gRPC server did not stop within %.0f s", grace + 5)
            self._servers = []
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    def _run(self, coroutine, timeout: float | None = 30) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)


def check_config(config: Config) -> None:
    if config.tls_client_ca and not config.tls_cert:
        raise SystemExit("--tls-client-ca (mutual TLS) needs the learner's own "
                         "--tls-cert and --tls-key")
    if not wire.is_loopback(config.address) and not (config.auth_token or config.tls_cert):
        log.warning("listening on %s without --auth-token or TLS: anyone who can reach "
                    "this port can join and feed training data", config.address)


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials with ``--tls-cert`` (mutual with ``--tls-client-ca``), else None."""
    if not config.tls_cert:
        return None
    return grpc.ssl_server_credentials(
        [(read_pem(config.tls_key, "--tls-key"), read_pem(config.tls_cert, "--tls-cert"))],
        root_certificates=(read_pem(config.tls_client_ca, "--tls-client-ca")
                           if config.tls_client_ca else None),
        require_client_auth=bool(config.tls_client_ca))


def raise_open_file_limit(wanted: int) -> None:
    """Each actor stream is a socket: lift the soft limit on open files to the hard one,
    and say so when even that is below ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("this process may open %d files, fewer than --max-streams plus margin "
                    "(%d): streams beyond it fail to connect; raise `ulimit -n`", hard, wanted)


def port_in_use(address: str) -> bool:
    """Whether something listens on ``HOST:PORT`` already (port 0: never). A plain bind
    (SO_REUSEADDR, as gRPC's own, so a restart's TIME_WAIT connections do not count)
    fails on a port with a listener, SO_REUSEPORT or not."""
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return False
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port),
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # gRPC says the address cannot be used
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
    return False


def read_pem(path: str, flag: str) -> bytes:
    """The bytes of a PEM file named by ``flag``; a clear exit when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SystemExit(f"cannot read {flag} {path!r}: {error.strerror}") from None
