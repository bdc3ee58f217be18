"""The learner's gRPC server: options, the auth interceptor, TLS, the health service, binding.

One :func:`build_server` call gives the learner process a server that is not started yet,
holding the Learner service (:mod:`learner.service`) and the standard gRPC health service.
Keepalives are tuned for actors on other machines (a dead peer is noticed in ~15 s); the
token interceptor (:mod:`learner.auth`) runs before any handler; with ``--tls-cert`` the
port is TLS, with ``--tls-client-ca`` mutual TLS.
"""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from learner.auth import TokenInterceptor
from learner.service import LearnerServicer, add_to_server
from seed_rl import wire
from seed_rl.config import Config

log = logging.getLogger("learner")

SERVICE_NAME = "seed_rl.v1.Learner"


def build_server(config: Config, servicer: LearnerServicer,
                 health_servicer: health.HealthServicer) -> tuple[grpc.Server, int]:
    """(the server, the port it is bound to) on ``config.address``; SystemExit says why
    when the address cannot be used or a PEM file cannot be read."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]
    # The token is checked on every RPC (health included) before any handler runs.
    interceptors = [TokenInterceptor(config.auth_token)] if config.auth_token else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256, thread_name_prefix="grpc"),
                         options=options, maximum_concurrent_rpcs=1024,
                         interceptors=interceptors)
    add_to_server(servicer, server)  # unparseable requests: INVALID_ARGUMENT
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.tls_client_ca and not config.tls_cert:
        raise SystemExit("--tls-client-ca (mutual TLS) needs the learner's own "
                         "--tls-cert and --tls-key")
    try:
        if config.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(read_pem(config.tls_key, "--tls-key"), read_pem(config.tls_cert, "--tls-cert"))],
                root_certificates=(read_pem(config.tls_client_ca, "--tls-client-ca")
                                   if config.tls_client_ca else None),
                require_client_auth=bool(config.tls_client_ca))
            port = server.add_secure_port(config.address, credentials)
        else:
            port = server.add_insecure_port(config.address)
    except RuntimeError:  # recent grpc raises where older ones returned port 0
        port = 0
    if port == 0:
        raise SystemExit(f"cannot listen on {config.address}: the address is in use or "
                         "invalid; pick another --address")
    if not wire.is_loopback(config.address) and not (config.auth_token or config.tls_cert):
        log.warning("listening on %s without --auth-token or TLS: anyone who can reach "
                    "this port can join and feed training data", config.address)
    return server, port


def advertised_address(host: str, port: int) -> str:
    """The address a replica gives in a redirect: "host:port", or ":port" when it listens
    on every interface (the actor then keeps the host it dialled)."""
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        return f":{port}"
    return f"{host}:{port}"


def read_pem(path: str, flag: str) -> bytes:
    """The bytes of a PEM file named by ``flag``; a clear exit when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SystemExit(f"cannot read {flag} {path!r}: {error.strerror}") from None
