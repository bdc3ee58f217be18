"""The actor's gRPC channel to the learner: TLS / mutual TLS credentials, keepalive and
message size limits (docs/architecture.md, "Wire contract"), one channel shared by the
groups of an actor process (:class:`SharedChannels`), reconnect backoff, and the plumbing of
one Step stream (its request side, :class:`RequestQueue`; a clean end, :func:`finish_stream`).
Torch-free."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from actors.messages import PermanentError
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise PermanentError(f"cannot read {what} {path!r}: {error.strerror}") from None


def channel_credentials(config: Config) -> grpc.ChannelCredentials | None:
    """TLS credentials from ``--tls-ca`` (the learner's CA) and, for mutual TLS,
    ``--tls-cert`` / ``--tls-key``; None for a plaintext channel."""
    if not (config.tls_ca or config.tls_cert):
        return None
    ca = _read_pem(config.tls_ca, "--tls-ca") if config.tls_ca else None
    key = _read_pem(config.tls_key, "--tls-key") if config.tls_key else None
    cert = _read_pem(config.tls_cert, "--tls-cert") if config.tls_cert else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def open_channel(address: str, credentials: grpc.ChannelCredentials | None,
                 max_message_bytes: int) -> grpc.Channel:
    """A channel to ``address`` with keepalive and both message limits at
    ``max_message_bytes`` (the learner's, once a handshake told it)."""
    limit = int(min(max_message_bytes, 2**31 - 1))
    options = [("grpc.max_send_message_length", limit),
               ("grpc.max_receive_message_length", limit), *KEEPALIVE_OPTIONS]
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


class SharedChannels:
    """The channels of one actor process, shared by its groups of environments
    (actors/groups.py): one per (address, message limit), opened by the first group that
    asks, closed when the last one lets go. Each group's streams are calls on it, so G
    groups share one connection. A lost learner fails every group's call, every group
    lets go, and the next attempt opens a fresh channel, as a single group does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], tuple[grpc.Channel, int]] = {}  # -> (channel, users)

    def acquire(self, address: str, credentials: grpc.ChannelCredentials | None,
                max_message_bytes: int) -> grpc.Channel:
        """The shared channel to ``address`` (see :func:`open_channel`); give it back with
        :meth:`release`, once per acquire."""
        key = (address, int(max_message_bytes))
        with self._lock:
            channel, users = self._open.get(key) or (
                open_channel(address, credentials, max_message_bytes), 0)
            self._open[key] = (channel, users + 1)
            return channel

    def release(self, channel: grpc.Channel) -> None:
        """One user fewer; the last one closes the channel (cancelling nothing of others)."""
        with self._lock:
            for key, (open_, users) in self._open.items():
                if open_ is channel:
                    if users > 1:
                        self._open[key] = (open_, users - 1)
                        return
                    del self._open[key]
                    break
        channel.close()


BACKOFF_BASE_S = 0.1  # first reconnect delay; doubles per failure


def redirect_target(redirect: str, dialled: str) -> str:
    """Where a redirect sends us: its "host:port", or the dialled host with its ":port"."""
    if redirect.startswith(":"):
        return f"{dialled.rpartition(':')[0]}{redirect}"
    return redirect


def backoff_delay(failures: int, cap: float, rng: random.Random) -> float:
    """Seconds before reconnect attempt ``failures + 1``: exponential (0.1 s, 0.2 s, ...),
    capped at ``cap``, scaled by a random factor in [0.5, 1] so actors do not retry in step."""
    ceiling = min(cap, BACKOFF_BASE_S * (2.0 ** min(failures, 30)))
    return ceiling * rng.uniform(0.5, 1.0)


class RequestQueue:
    """The request iterator of a Step call: yields what :meth:`put` hands it, ends on
    :meth:`close` (which half-closes the stream)."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, request: pb.StepRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[pb.StepRequest]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            yield item


def finish_stream(requests: RequestQueue, responses: Any, grace_s: float) -> None:
    """End a Step stream cleanly: half-close it and read the learner's end, cancelling the
    call if that takes longer than ``grace_s`` seconds."""
    requests.close()
    timer = threading.Timer(grace_s, responses.cancel)
    timer.daemon = True
    timer.start()
    try:
        for _ in responses:
            pass
    except grpc.RpcError:
        pass
    finally:
        timer.cancel()
