"""The checking learner: the real serving path with a scripted policy instead of a model.

The gRPC server (learner/serving/server.py, with its token interceptor), the servicer's
handshakes, sessions and Step handler (learner/serving/service.py) and the message checks
(learner/serving/validation.py) are the learner's own, so a client is refused with the
codes and messages a real learner gives. What differs: a recording interceptor before the
token check sees every RPC, :class:`CheckingServicer` hands each handshake, stream and
message to the :class:`~learner.conformance.judge.Judge`, and a step is answered with the
judge's scripted actions (no batcher, no unrolls, no training). :class:`CheckingLearner`
serves it on a free loopback port, and restarts it on the same port.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import numpy as np

from learner.conformance.judge import Judge
from learner.conformance.rules import ENV_ID
from learner.serving.auth import token_matches
from learner.serving.server import LearnerServer
from learner.serving.service import LearnerServicer
from learner.serving.validation import (
    LearnerSpec,
    MalformedMessage,
    Rejected,
    StepRejected,
    check_actor_matches,
    check_protocol_and_ids,
    make_spec,
)
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb

BIND_TIMEOUT_S = 10.0  # a restart may find the port still held for a moment


class RecordingInterceptor(grpc.aio.ServerInterceptor):
    """Tells the judge of every RPC, and whether it carries the token, before the token
    interceptor refuses it."""

    def __init__(self, judge: Judge, token: str):
        self._judge, self._token = judge, token

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method.rsplit("/", 1)[-1]
        self._judge.rpc(method, token_matches(handler_call_details.invocation_metadata or (),
                                              self._token))
        return await continuation(handler_call_details)


class _NoBatcher:
    """The servicer tells its batcher when a session closes; here there is none."""

    def forget(self, session: str) -> None:
        pass


class CheckingServicer(LearnerServicer):
    """The learner's servicer, answering with the judge's actions."""

    def __init__(self, config: Config, spec: LearnerSpec, judge: Judge):
        super().__init__(config, spec, batcher=_NoBatcher(), unroll_queue=None, metrics=None,
                         initial_core_state=lambda k: (), policy_version=lambda: 0)
        self.judge = judge

    async def Handshake(self, request: pb.HandshakeRequest | MalformedMessage,
                        context: grpc.aio.ServicerContext) -> pb.HandshakeResponse:
        if isinstance(request, MalformedMessage):
            self.judge.handshake("?", "?", request.describe(), "INVALID_ARGUMENT")
        else:
            refusal, code = "", ""
            try:  # the checks the servicer makes next, for the judge's evidence
                check_protocol_and_ids(request)
                if request.env_id:
                    check_actor_matches(request, self.spec,
                                        max_envs_per_actor=self.config.max_envs_per_actor,
                                        max_message_bytes=self.config.max_message_bytes)
            except Rejected as rejected:
                refusal, code = str(rejected), rejected.code.name
            self.judge.handshake(request.actor_id, request.env_id, refusal, code)
        return await super().Handshake(request, context)

    async def Step(self, request_iterator: AsyncIterator[pb.StepRequest | MalformedMessage],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StepResponse]:
        metadata = dict(context.invocation_metadata() or ())
        session_id = metadata.get(wire.SESSION_METADATA_KEY, "")
        live = {s.session_id: s for s in self.sessions()}
        if not session_id:
            self.judge.stream_refused("NOT_FOUND", "a Step stream without the "
                                      f"{wire.SESSION_METADATA_KEY!r} metadata")
        elif session_id in live and live[session_id].stream is not None:
            self.judge.stream_refused("FAILED_PRECONDITION", "a second Step stream for "
                                      "one session")
        elif session_id in live:
            self.judge.verdicts.held("step stream")
        actor_id = live[session_id].actor_id if session_id in live else "?"
        async for response in super().Step(self._malformed_told(request_iterator, actor_id),
                                           context):
            if response.training_over:
                self.judge.told_training_over()
            yield response

    async def _malformed_told(self, requests: AsyncIterator[pb.StepRequest | MalformedMessage],
                              actor_id: str) -> AsyncIterator[pb.StepRequest | MalformedMessage]:
        """The stream's requests; bytes that do not parse are told to the judge (the
        servicer refuses them, INVALID_ARGUMENT)."""
        async for request in requests:
            if isinstance(request, MalformedMessage):
                self.judge.step_refused(actor_id, "message format", "INVALID_ARGUMENT",
                                        request.describe())
            yield request

    async def _step(self, session, request: pb.StepRequest) -> pb.StepResponse:
        """Check one message as the learner does; answer the judge's actions."""
        k, first = session.num_envs, session.steps == 0
        try:
            step = self._validator.check(request, k, first=first)
        except StepRejected as rejected:
            self.judge.step_refused(session.actor_id, self._rule_of(request, k, first),
                                    rejected.code.name, str(rejected))
            raise
        episodes = [(e.env_index, e.episode_return, e.episode_length) for e in request.episodes]
        actions = self.judge.step(session.actor_id, session.run_id, first, step, episodes)
        session.steps += 1
        response = pb.StepResponse(policy_version=0)
        wire.encode_tensor(self._action_layout.to_wire(actions), out=response.actions)
        return response

    def _rule_of(self, request: pb.StepRequest, k: int, first: bool) -> str:
        """Which rule a refused message broke: the first-message rule when only that one
        failed, the truncation rule for a truncated env without its final observation,
        else the message format."""
        if first:
            try:
                self._validator.check(request, k, first=False)
                return "first message"
            except StepRejected:
                pass
        try:
            terminated = wire.decode_tensor(request.terminated).astype(bool).reshape(k)
            truncated = wire.decode_tensor(request.truncated).astype(bool).reshape(k)
        except (wire.WireError, ValueError):
            return "message format"
        cut = np.flatnonzero(truncated & ~terminated)
        if not set(cut.tolist()) <= set(request.final_observation_envs):
            return "truncated"
        return "message format"


class PollerNoise(logging.Filter):
    """Drops one known, harmless error of grpc.aio: a process whose servers ran on more than
    one event loop (the checking learner restarts on a new loop) gets, from the old loop,
    ``OSError: [Errno 9]`` or ``BlockingIOError`` out of ``PollerCompletionQueue.
    _handle_events`` through asyncio's exception handler (grpc/grpc#25364, fix proposed in
    grpc/grpc#36096). Every other asyncio error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, OSError) and "_handle_events" in _last_frame(record))


def _last_frame(record: logging.LogRecord) -> str:
    return "".join(traceback.format_tb(record.exc_info[2])[-1:]) if record.exc_info else ""


class CheckingLearner:
    """A checking learner on 127.0.0.1 (a free port, kept across restarts) with a token."""

    def __init__(self, judge: Judge, token: str):
        self.judge, self.token = judge, token
        self.port = 0
        self._spec: LearnerSpec | None = None
        self._server: LearnerServer | None = None
        self.servicer: CheckingServicer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve (the same port as before, after a restart); SystemExit when it cannot."""
        asyncio_log = logging.getLogger("asyncio")
        if not any(isinstance(f, PollerNoise) for f in asyncio_log.filters):
            asyncio_log.addFilter(PollerNoise())
        deadline = time.monotonic() + BIND_TIMEOUT_S
        while True:
            config = Config(env=ENV_ID, address=self.address, auth_token=self.token,
                            listeners=1, max_streams=256)
            if self._spec is None:
                self._spec = make_spec(config)
            servicer = CheckingServicer(config, self._spec, self.judge)
            server = LearnerServer(config, servicer,
                                   interceptors=[RecordingInterceptor(self.judge, self.token)])
            try:
                self.port = server.start()
                break
            except SystemExit:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.set_serving(True)
        self._server, self.servicer = server, servicer

    def stop(self) -> None:
        """Stop at once, as a crashed learner would: open streams fail."""
        if self._server is not None:
            self._server.stop(grace=0)
            self._server = None

    def end_training(self) -> None:
        """Answer every stream's next request with ``training_over``, then end it (OK)."""
        if self.servicer is not None:
            self.servicer.stopping.set()
