"""Container healthcheck of the learner: asks its gRPC health service whether it serves.

    python /opt/seed-rl/healthcheck.py [HOST:PORT]

Exit 0 when the standard gRPC health service (grpc.health.v1) reports SERVING for the
learner's service ``seed_rl.v1.Learner``; exit 1, with one line saying why, otherwise
(refused, timed out, NOT_SERVING while the learner shuts down). The address defaults to
127.0.0.1 and the port of ``SEED_RL_ADDRESS`` (the learner's own listen address).

With an auth token (``SEED_RL_AUTH_TOKEN``) the check carries it, as every RPC to the learner
must (the learner refuses the health service too without it). With TLS (``SEED_RL_TLS_CERT``) the check uses a TLS
channel that trusts ``SEED_RL_TLS_CA`` if set, else the learner's own certificate (right for
a self-signed one), and expects the certificate to name ``localhost``
(``SEED_RL_HEALTHCHECK_TLS_NAME`` overrides that name). Mutual TLS is not supported here:
point the healthcheck elsewhere (e.g. a TCP check) for such a learner.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE = "seed_rl.v1.Learner"
TIMEOUT_S = 3.0


def target_from_environment(environ: dict[str, str]) -> str:
    """127.0.0.1 and the port of SEED_RL_ADDRESS (default 50051)."""
    address = environ.get("SEED_RL_ADDRESS") or "0.0.0.0:50051"
    port = address.rsplit(":", 1)[-1]
    if not port.isdigit() or port == "0":
        raise SystemExit(
            f"healthcheck: cannot tell the learner's port from SEED_RL_ADDRESS="
            f"{address!r}; pass HOST:PORT as the argument"
        )
    return f"127.0.0.1:{port}"


def open_channel(target: str, environ: dict[str, str]) -> grpc.Channel:
    cert = environ.get("SEED_RL_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(target)
    trusted = Path(environ.get("SEED_RL_TLS_CA") or cert).read_bytes()
    name = environ.get("SEED_RL_HEALTHCHECK_TLS_NAME") or "localhost"
    return grpc.secure_channel(
        target,
        grpc.ssl_channel_credentials(root_certificates=trusted),
        options=[("grpc.ssl_target_name_override", name)],
    )


def check(target: str, environ: dict[str, str]) -> tuple[bool, str]:
    """(healthy, a line saying what the health service answered or why it did not)."""
    with open_channel(target, environ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            token = environ.get("SEED_RL_AUTH_TOKEN", "")
            metadata = [("authorization", f"Bearer {token}")] if token else None
            reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE),
                               timeout=TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as error:
            return False, (
                f"learner at {target} did not answer the health check: "
                f"{error.code().name}: {error.details()}"
            )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, (
        f"learner at {target}: {SERVICE} is {status}"
    )


def main(argv: list[str]) -> int:
    environ = dict(os.environ)
    target = argv[0] if argv else target_from_environment(environ)
    healthy, line = check(target, environ)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
