"""The auth token: with ``--auth-token`` set, every RPC must carry ``authorization: Bearer
<token>``.

learner/serving/server.py installs :class:`TokenInterceptor` on the grpc.aio server whenever a
token is set. It runs before any request parser or handler, for every method (the health service
and unknown methods included), so the handlers in learner/serving/service.py never see a call
without the token and do not check it again. The token is compared in constant time and
never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

import grpc

from seed_rl import wire

UNAUTHENTICATED_MESSAGE = ("missing or wrong auth token: pass the learner's --auth-token (or "
                           "SEED_RL_AUTH_TOKEN) to the actors")


def token_matches(metadata: Iterable[tuple[str, str | bytes]], token: str) -> bool:
    """Whether ``metadata`` carries ``authorization: Bearer <token>`` (constant time)."""
    given = ""
    for key, value in metadata:
        if key == wire.AUTH_METADATA_KEY:
            given = value if isinstance(value, str) else ""
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every RPC that does not carry the token."""

    def __init__(self, token: str):
        self._token = token

        async def deny(_request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

        # The refusal must have the method's streaming shape, or grpc answers INTERNAL.
        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if token_matches(handler_call_details.invocation_metadata or (), self._token):
            return handler
        kind = ((handler.request_streaming, handler.response_streaming) if handler is not None
                else (False, False))
        return self._deny[kind]
