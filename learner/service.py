"""The gRPC face of the learner: handshakes, actor sessions and the step stream.

Every step message is checked against the spec agreed at the handshake before anything
else sees it; bad input ends only that actor's stream, with a status code and a message a
person can act on (DESIGN.md, "The wire"). The other actors keep training.

Status codes (docs/reliability.md has the full table): INVALID_ARGUMENT for anything
malformed (bytes that do not parse, wrong dtype/shape/byte length, non-finite values, ids
that are not printable, more environments than --max-envs-per-actor);
FAILED_PRECONDITION for a protocol version or spaces that do not match, or a Step stream
without a handshake; ALREADY_EXISTS for a second live incarnation of one actor id;
RESOURCE_EXHAUSTED for a message over --max-message-bytes (grpc) or more environments
than --max-total-envs across all actors; UNAUTHENTICATED for a missing or wrong token
(checked by :class:`TokenInterceptor` on every RPC); UNAVAILABLE while shutting down.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
import gymnasium as gym
import numpy as np
import torch

from learner.batcher import InferenceBatcher, InferenceRequest
from learner.metrics import Metrics
from learner.store import QueueClosed, UnrollBuilder, UnrollQueue
from seed_rl import __version__, wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
# A handshake whose Step stream never opens holds its environments (--max-total-envs)
# this long; a real actor opens its stream milliseconds after the handshake.
UNOPENED_SESSION_TTL_S = 10.0
ECHO_CHARS = 80  # at most this much of a client's own text is echoed back in an error


def _echo(value: object) -> str:
    """``repr`` of client-supplied text, cut short: error messages stay small and readable."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + f"... ({len(text)} chars)"


@dataclass(frozen=True)
class MalformedMessage:
    """Stands in for request bytes that are not a valid message, so that the handler (not
    grpc, which would answer INTERNAL) rejects them with INVALID_ARGUMENT and a reason."""

    type_name: str
    size: int
    error: str

    def describe(self) -> str:
        return (f"a {self.size}-byte request is not a valid {self.type_name} ({self.error}); "
                "actor and learner must run matching seed-rl versions")


def lenient_parser(message_type: type) -> Callable[[bytes], object]:
    """A request deserializer that never raises: bad bytes become a MalformedMessage."""
    type_name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> object:
        try:
            return message_type.FromString(data)
        except Exception as error:  # DecodeError: truncated, bad wire types, bad UTF-8
            return MalformedMessage(type_name, len(data), str(error)[:200])

    return parse


def add_to_server(servicer: LearnerServicer, server: grpc.Server) -> None:
    """Register the Learner service like the generated ``add_LearnerServicer_to_server``,
    but with :func:`lenient_parser` so unparseable requests get INVALID_ARGUMENT."""
    handlers = {
        "Handshake": grpc.unary_unary_rpc_method_handler(
            servicer.Handshake, request_deserializer=lenient_parser(pb.HandshakeRequest),
            response_serializer=pb.HandshakeResponse.SerializeToString),
        "Step": grpc.stream_stream_rpc_method_handler(
            servicer.Step, request_deserializer=lenient_parser(pb.StepRequest),
            response_serializer=pb.StepResponse.SerializeToString),
    }
    name = pb.DESCRIPTOR.services_by_name["Learner"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


def token_matches(metadata: Iterable[tuple[str, str | bytes]], token: str) -> bool:
    """Whether ``metadata`` carries ``authorization: Bearer <token>`` (constant time)."""
    given = ""
    for key, value in metadata:
        if key == wire.AUTH_METADATA_KEY:
            given = value if isinstance(value, str) else ""
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


class TokenInterceptor(grpc.ServerInterceptor):
    """Every RPC (the health service and unknown methods included) must carry the token;
    otherwise UNAUTHENTICATED before any handler or parser runs. The token is never logged."""

    MESSAGE = ("missing or wrong auth token: pass the learner's --auth-token (or "
               "SEED_RL_AUTH_TOKEN) to the actors")

    def __init__(self, token: str):
        self._token = token

        def deny(_request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, self.MESSAGE)

        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    def intercept_service(self, continuation, handler_call_details):
        if token_matches(handler_call_details.invocation_metadata or (), self._token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        kind = ((handler.request_streaming, handler.response_streaming) if handler is not None
                else (False, False))
        return self._deny[kind]


class StepRejected(Exception):
    """A step message broke the contract: ends that stream with ``code``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    """One actor incarnation's connection: K environments and their unfinished unrolls."""

    session_id: str
    actor_id: str
    run_id: str
    peer: str
    num_envs: int
    slot_ids: list[int]
    builder: UnrollBuilder
    core_state: tuple[torch.Tensor, ...]
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    context: grpc.ServicerContext | None = None  # set while the stream is open
    closed: bool = False
    busy: bool = False  # the learner holds its request (inference, backpressure): not idle
    steps: int = 0  # messages handled; the first carries x_0 alone, no transition


@dataclass
class LearnerSpec:
    """What the learner serves: the environment and its spaces."""

    env_id: str
    env_kwargs: dict
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Discrete


class LearnerServicer(pb_grpc.LearnerServicer):
    def __init__(
        self,
        config: Config,
        spec: LearnerSpec,
        batcher: InferenceBatcher,
        unroll_queue: UnrollQueue,
        metrics: Metrics,
        initial_core_state: Callable[[int], tuple[torch.Tensor, ...]],
        policy_version: Callable[[], int],
    ):
        self.config = config
        self.spec = spec
        self.batcher = batcher
        self.queue = unroll_queue
        self.metrics = metrics
        self.initial_core_state = initial_core_state
        self.policy_version = policy_version
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # by session id
        self._by_actor: dict[str, Session] = {}
        self._slot_ids = itertools.count()
        self.streaming_envs = 0  # environments of sessions whose stream is open
        self.dropped_partial_unrolls = 0
        obs = spec.observation_space
        self._obs_shape = tuple(obs.shape)
        self._obs_dtype = np.dtype(obs.dtype)
        self._num_actions = int(spec.action_space.n)
        self._action_start = int(spec.action_space.start)

    # -- sessions -------------------------------------------------------------------------
    @property
    def connected_actors(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.context is not None)

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def _close_session(self, session: Session, reason: str) -> None:
        with self._lock:
            if session.closed:
                return
            session.closed = True
            if session.context is not None:
                self.streaming_envs -= session.num_envs
            self._sessions.pop(session.session_id, None)
            if self._by_actor.get(session.actor_id) is session:
                del self._by_actor[session.actor_id]
            # Unfinished unrolls are dropped, never trained on nor resumed by a new session.
            partial = session.num_envs if session.builder.row > 0 else 0
            self.dropped_partial_unrolls += partial
        log.info("actor %s (run %s) disconnected: %s; %d partial unrolls dropped",
                 session.actor_id, session.run_id[:8], reason, partial)

    def expire_idle(self) -> None:
        """Free the slots of actors that went silent (frozen, network cut)."""
        now = time.monotonic()
        for session in self.sessions():
            if session.context is not None:
                if session.busy:
                    continue  # the actor waits for us (inference or backpressure)
                if now - session.last_seen > self.config.stream_idle_timeout:
                    log.warning("actor %s sent nothing for %.0f s: disconnecting it",
                                session.actor_id, now - session.last_seen)
                    session.context.cancel()
                    self._close_session(session, "idle timeout")
            elif now - session.created > UNOPENED_SESSION_TTL_S:
                self._close_session(session, "handshake without a stream")

    # -- RPCs ----------------------------------------------------------------------------
    def Handshake(self, request: pb.HandshakeRequest, context: grpc.ServicerContext):
        self._check_token(context)
        if isinstance(request, MalformedMessage):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        if self.stopping.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "the learner is shutting down")
        if request.protocol_version != wire.PROTOCOL_VERSION:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"protocol version {request.protocol_version} is not supported: this "
                          f"learner speaks version {wire.PROTOCOL_VERSION}; run matching "
                          "seed-rl versions on actors and learner")
        actor_id, run_id = request.actor_id, request.run_id
        for name, value in (("actor_id", actor_id), ("run_id", run_id)):
            if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{name} must be 1-{MAX_ID_LENGTH} printable characters, got "
                              f"{_echo(value)}")
        answer = pb.HandshakeResponse(
            env_id=self.spec.env_id, env_kwargs_json=json.dumps(self.spec.env_kwargs),
            max_message_bytes=self.config.max_message_bytes,
            policy_version=self.policy_version(), learner_version=__version__)
        if not request.env_id:  # the actor asks which environment to make
            return answer
        self._check_spec(request, context)
        k = request.num_envs
        if not 0 < k <= self.config.max_envs_per_actor:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"num_envs={k}: an actor may run 1 to {self.config.max_envs_per_actor} "
                          "environments (learner flag --max-envs-per-actor)")
        obs_bytes = math.prod(self._obs_shape) * self._obs_dtype.itemsize * k
        if obs_bytes * 2 > self.config.max_message_bytes:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{k} environments of {obs_bytes // k} observation bytes do not fit "
                          f"in a message of at most {self.config.max_message_bytes} bytes; use "
                          "fewer --envs-per-actor or raise --max-message-bytes")
        with self._lock:
            existing = self._by_actor.get(actor_id)
            if existing is not None and existing.run_id != run_id and existing.context:
                context.abort(grpc.StatusCode.ALREADY_EXISTS,
                              f"actor id {actor_id!r} is already connected (run "
                              f"{existing.run_id[:8]}, from {existing.peer}); give each actor a "
                              "unique id (--actor-id-prefix), or wait for the old one to time out")
            in_use = sum(s.num_envs for s in self._sessions.values() if s is not existing)
            if in_use + k > self.config.max_total_envs:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the learner is full: {in_use} environments in use, {k} more "
                              f"would exceed --max-total-envs {self.config.max_total_envs}; "
                              "retry later, or raise the learner's --max-total-envs")
            slot_ids = [next(self._slot_ids) for _ in range(k)]
        if existing is not None:  # same incarnation reconnecting, or a stale handshake
            if existing.context is not None:
                existing.context.cancel()
            self._close_session(existing, "replaced by a new connection of the same actor")
        core_state = self.initial_core_state(k)
        session = Session(
            session_id=uuid.uuid4().hex, actor_id=actor_id, run_id=run_id, peer=context.peer(),
            num_envs=k, slot_ids=slot_ids,
            builder=UnrollBuilder(self.config.unroll_length, k, self._obs_shape,
                                  self._obs_dtype, self._num_actions,
                                  tuple(tuple(s.shape) for s in core_state)),
            core_state=core_state)
        with self._lock:
            self._sessions[session.session_id] = session
            self._by_actor[actor_id] = session
        log.info("actor %s (run %s) joined from %s with %d envs", actor_id, run_id[:8],
                 context.peer(), k)
        answer.session_id = session.session_id
        answer.slot_ids.extend(slot_ids)
        return answer

    def Step(self, request_iterator: Iterator[pb.StepRequest], context: grpc.ServicerContext):
        self._check_token(context)
        metadata = dict(context.invocation_metadata())
        session_id = metadata.get(wire.SESSION_METADATA_KEY, "")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.context is None:
                session.context = context
                self.streaming_envs += session.num_envs
            elif session is not None:
                session = None  # the session's stream is already open
        if session is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "no open session for this stream: call Handshake first and send its "
                          f"session_id as metadata {wire.SESSION_METADATA_KEY!r} (once per "
                          "handshake)")
        reason = "stream ended"
        try:
            for request in request_iterator:
                session.last_seen = time.monotonic()
                if isinstance(request, MalformedMessage):
                    reason = "rejected: malformed message"
                    log.warning("actor %s: %s", session.actor_id, request.describe())
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
                if self.stopping.is_set():
                    reason = "training is over"
                    yield pb.StepResponse(training_over=True,
                                          policy_version=self.policy_version())
                    return
                session.busy = True
                try:
                    response = self._step(session, request)
                except StepRejected as rejected:
                    reason = f"rejected: {rejected}"
                    log.warning("actor %s: %s", session.actor_id, rejected)
                    context.abort(rejected.code, str(rejected))
                finally:
                    session.busy = False
                    session.last_seen = time.monotonic()
                yield response
                if session.closed:
                    reason = "closed"
                    return
        finally:
            self._close_session(session, reason)

    # -- one step ------------------------------------------------------------------------
    def _step(self, session: Session, request: pb.StepRequest) -> pb.StepResponse:
        """Check one message, get its actions from the batcher, store the step."""
        started = time.perf_counter()
        k = session.num_envs
        limit = self.config.max_message_bytes
        try:
            observations = wire.decode_tensor(request.observations, name="observations",
                                              max_bytes=limit)
            rewards = wire.decode_tensor(request.rewards, name="rewards", max_bytes=limit)
            terminated = wire.decode_tensor(request.terminated, name="terminated", max_bytes=limit)
            truncated = wire.decode_tensor(request.truncated, name="truncated", max_bytes=limit)
        except wire.WireError as error:
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        expect(observations, "observations", (k, *self._obs_shape), self._obs_dtype)
        if observations.dtype.kind == "f" and not np.isfinite(observations).all():
            bad = np.flatnonzero(~np.isfinite(observations).reshape(k, -1).all(1))[:5]
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"observations: non-finite values at environments "
                               f"{bad.tolist()}; check the environment (NaN observations "
                               "would poison inference and training)")
        expect(rewards, "rewards", (k,), None)
        if rewards.dtype.kind != "f":
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: dtype {rewards.dtype} must be a float type")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf
            finite = np.isfinite(rewards.astype(np.float32, copy=False))
        if not finite.all():
            bad = np.flatnonzero(~finite)[:5].tolist()
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: non-finite values (or beyond float32) at environments "
                               f"{bad}; check the environment (a NaN reward would poison "
                               "training)")
        expect(terminated, "terminated", (k,), np.dtype(bool))
        expect(truncated, "truncated", (k,), np.dtype(bool))
        for name, flags in (("terminated", terminated), ("truncated", truncated)):
            if flags.view(np.uint8).max(initial=0) > 1:
                raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"{name}: bool bytes must be 0 or 1")
        if len(request.episodes) > k or any(
                e.env_index >= k or not math.isfinite(e.episode_return)
                for e in request.episodes):
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"episodes: {len(request.episodes)} entries; at most one per "
                               f"environment, env_index in [0, {k}), finite episode_return")
        final_envs = np.asarray(request.final_observation_envs, dtype=np.int64)
        if len(final_envs):
            try:
                final_obs = wire.decode_tensor(request.final_observations,
                                               name="final_observations", max_bytes=limit)
            except wire.WireError as error:
                raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
            expect(final_obs, "final_observations", (len(final_envs), *self._obs_shape),
                   self._obs_dtype)
            if final_envs.max() >= k or len(np.unique(final_envs)) != len(final_envs):
                raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"final_observation_envs {final_envs[:8].tolist()} must be "
                                   f"distinct indices in [0, {k})")
            if not truncated[final_envs].all():
                raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                   "final_observation_envs lists environments that were not "
                                   "truncated this step")
        else:
            final_obs = np.zeros((0, *self._obs_shape), self._obs_dtype)
        if (truncated & ~terminated & ~np.isin(np.arange(k), final_envs)).any():
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               "truncated environments must send their final observation "
                               "(final_observation_envs / final_observations)")

        episode_start = terminated | truncated
        inference = self.batcher.submit(InferenceRequest(
            observations=observations, episode_start=episode_start,
            core_state=session.core_state, final_env_indices=final_envs,
            final_observations=final_obs))
        handled = time.perf_counter() - started
        inference.wait()
        resumed = time.perf_counter()
        if inference.error is not None:
            raise StepRejected(grpc.StatusCode.UNAVAILABLE,
                               f"inference failed ({inference.error}); the learner is stopping")
        truncation_values = np.zeros(k, np.float32)
        truncation_values[final_envs] = inference.final_values
        unrolls = session.builder.add_step(
            observations, rewards, terminated, truncated, truncation_values,
            inference.actions, inference.logits, inference.policy_version,
            tuple(s.numpy() for s in session.core_state))
        session.core_state = inference.next_core_state
        # A session's first message is x_0 alone (reset observations, or the current ones
        # after a reconnect): no transition led to it in this session, so no env steps.
        transitions = k if session.steps > 0 else 0
        session.steps += 1
        self.metrics.add_env_steps(transitions, [e.episode_return for e in request.episodes],
                                   [e.episode_length for e in request.episodes])
        response = pb.StepResponse(
            actions=wire.encode_tensor(inference.actions + self._action_start),
            policy_version=inference.policy_version)
        self.metrics.add_time("step_handling", handled + time.perf_counter() - resumed)
        if unrolls is not None:
            self._enqueue(unrolls)  # may wait for the trainer: backpressure, not handling
        return response

    def _enqueue(self, unrolls) -> None:
        """Hand complete unrolls to the trainer, waiting (backpressure) while it is behind."""
        while not self.stopping.is_set():
            try:
                if self.queue.put(unrolls, timeout=0.5):
                    return
            except QueueClosed:
                return

    # -- checks --------------------------------------------------------------------------
    def _check_token(self, context: grpc.ServicerContext) -> None:
        token = self.config.auth_token
        if not token:
            return
        if not token_matches(context.invocation_metadata() or (), token):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, TokenInterceptor.MESSAGE)

    def _check_spec(self, request: pb.HandshakeRequest, context: grpc.ServicerContext) -> None:
        try:
            kwargs = json.loads(request.env_kwargs_json or "{}")
            observation_space = wire.decode_space(request.observation_space,
                                                  name="observation_space")
            action_space = wire.decode_space(request.action_space, name="action_space")
        except Exception as error:  # WireError, bad JSON, too deep, spaces gymnasium rejects
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"bad handshake: {type(error).__name__}: {str(error)[:200]}")
        problems = []
        if request.env_id != self.spec.env_id or kwargs != self.spec.env_kwargs:
            problems.append(f"environment: learner runs {self.spec.env_id} "
                            f"{self.spec.env_kwargs}, actor runs {_echo(request.env_id)} "
                            f"{_echo(kwargs)}")
        for name, mine, theirs in (("observation space", self.spec.observation_space,
                                    observation_space),
                                   ("action space", self.spec.action_space, action_space)):
            mismatch = wire.space_mismatch(mine, theirs)
            if mismatch is not None:
                problems.append(f"{name}: {mismatch.what}")
        if problems:
            # The actor's own text is echoed cut short: a hostile handshake cannot bloat it.
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "actor and learner disagree: " + "; ".join(problems)
                          + ". Start the actors with the learner's --env (or no --env).")


def expect(array: np.ndarray, name: str, shape: tuple[int, ...], dtype: np.dtype | None) -> None:
    if array.shape != shape:
        raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{name}: shape {list(array.shape)}, expected {list(shape)}")
    if dtype is not None and array.dtype != dtype:
        raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{name}: dtype {array.dtype}, expected {dtype}")
