"""gRPC clients for the security tests: the token in metadata, TLS channels, the status a
call ended with."""

from __future__ import annotations

from pathlib import Path

import grpc

from seed_rl import wire

ENV = "CartPole-v1"
TOKEN = "s3cret-token-that-must-never-be-logged"
REFUSAL_TIMEOUT = 5.0


def status_of(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def bearer(token: str) -> list[tuple[str, str]]:
    return [(wire.AUTH_METADATA_KEY, f"Bearer {token}")]


def secure_channel(
    port: int, ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)
