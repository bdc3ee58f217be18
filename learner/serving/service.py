"""The gRPC face of the learner: handshakes, actor sessions and the step stream.

A handshake opens a session (K environments, their slots, their unfinished unrolls:
learner/serving/session.py); the Step stream on it sends x_t for all K environments and
gets their actions back, through the inference batcher; the unroll recorder
(learner/serving/recording.py) writes the steps into unrolls and hands complete ones to the
trainer's queue (``seed-rl serve`` has none: nothing is kept; docs/architecture.md, "Data
path" and "Wire contract"). The handlers are coroutines on the server's one event loop
(learner/serving/server.py): a stream waiting for its actions costs no thread, and
everything that touches the sessions runs on that loop, one piece at a time. Every request
is checked by learner/serving/validation.py before anything else sees it; bad input ends
only that actor's RPC, with a status code and a message a person can act on. The other
actors keep training.

Codes answered here, besides the validation's (docs/reliability.md has the full table):
NOT_FOUND for a Step stream whose session is not (or no longer) here, which actors retry
with a new handshake; FAILED_PRECONDITION for a second stream on one session;
ALREADY_EXISTS for a second live incarnation of one actor id; RESOURCE_EXHAUSTED for more
environments than --max-total-envs across all actors or more sessions than --max-streams
(grpc itself answers it for a message over --max-message-bytes); UNAVAILABLE while
shutting down. The auth token is not checked here: learner/serving/auth.py's interceptor
refuses every RPC without it before any handler runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import torch

from learner.serving.batcher import InferenceBatcher
from learner.serving.lockstep import FixedActorSet, LockstepBatcher
from learner.serving.recording import UnrollRecorder
from learner.serving.requests import InferenceRequest
from learner.serving.session import EpisodeTally, Session, end_stream, ended_by_learner
from learner.serving.validation import (
    HandshakeRejected,
    LearnerSpec,
    MalformedMessage,
    Rejected,
    StepRejected,
    StepValidator,
    check_actor_matches,
    check_protocol_and_ids,
    lenient_parser,
)
from learner.training.policies import for_action_layout
from learner.training.store import UnrollQueue
from learner.watching.metrics import Metrics
from seed_rl import __version__, wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc
from seed_rl.spaces import action_layout

log = logging.getLogger(__name__)


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


class LearnerServicer(pb_grpc.LearnerServicer):
    """Handshake and Step for all actors; keeps the sessions and frees those gone silent.

    ``unroll_queue`` None (``seed-rl serve``) keeps nothing of the steps for training;
    ``greedy`` answers the most likely actions instead of samples; ``fixed_actors``
    (``--deterministic``) admits only the actors of that set."""

    def __init__(
        self,
        config: Config,
        spec: LearnerSpec,
        batcher: InferenceBatcher | LockstepBatcher,
        unroll_queue: UnrollQueue | None,
        metrics: Metrics,
        initial_core_state: Callable[[int], tuple[torch.Tensor, ...]],
        policy_version: Callable[[], int],
        greedy: bool = False,
        fixed_actors: FixedActorSet | None = None,
    ):
        self.config = config
        self.spec = spec
        self.batcher = batcher
        self.metrics = metrics
        self.greedy = greedy
        self.initial_core_state = initial_core_state
        self.policy_version = policy_version
        self.stopping = threading.Event()  # training is over: actors are told so and exit
        self.unavailable = threading.Event()  # a broken replica group: actors reconnect later
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # by session id
        self._by_actor: dict[str, Session] = {}
        self._slot_ids = itertools.count()
        # Environments of all live sessions, streaming or handshaken and not yet: the
        # batcher expects each of them (a handshaken actor opens its stream at once).
        self.session_envs = 0
        # A replica of a data-parallel learner: its group, every replica's advertised
        # address and connected environments (learner/running/learner.py sets them).
        self.group = None
        self.replica_addresses: list[str] = []
        self.replica_envs = lambda: [0]
        self.dropped_partial_unrolls = 0
        self.fixed_actors = fixed_actors
        self.idle_checks = 0  # rounds of expire_idle done: one a second while serving
        self._validator = StepValidator(spec.observation_space, config.max_message_bytes)
        self._action_layout = action_layout(spec.action_space)
        self.recorder = None if unroll_queue is None else UnrollRecorder(
            config, unroll_queue, self._validator.layout, self._action_layout,
            for_action_layout(self._action_layout).num_params, fixed_actors,
            give_up=lambda session: (self.stopping.is_set() or self.unavailable.is_set()
                                     or bool(session.ended_by_learner)))

    # -- sessions -------------------------------------------------------------------------
    @property
    def connected_actors(self) -> int:
        """Sessions whose Step stream is open."""
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.stream is not None)

    def sessions(self) -> list[Session]:
        """A snapshot of the live sessions (streaming, or handshaken and not yet streaming)."""
        with self._lock:
            return list(self._sessions.values())

    def _open_session(self, request: pb.HandshakeRequest, peer: str) -> Session:
        """A new session for a checked handshake; replaces the actor's previous one of the
        same incarnation (a reconnect). Raises HandshakeRejected when the learner cannot take it."""
        actor_id, run_id, k = request.actor_id, request.run_id, request.num_envs
        with self._lock:
            existing = self._by_actor.get(actor_id)
            if existing is not None and existing.run_id != run_id and existing.stream:
                raise HandshakeRejected(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"actor id {actor_id!r} is already connected (run {existing.run_id[:8]}, "
                    f"from {existing.peer}); give each actor a unique id (--actor-id-prefix), "
                    "or wait for the old one to time out")
            # Counted, not summed: a reconnect storm brings thousands of handshakes.
            others = len(self._sessions) - (existing is not None)
            if others >= self.config.max_streams:
                raise HandshakeRejected(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the learner is full: it serves {others} actor streams, the most "
                    f"--max-streams {self.config.max_streams} allows; retry later (actors "
                    "do), spread the actors over learner replicas (--replicas), or raise "
                    "the learner's --max-streams")
            in_use = self.session_envs - (existing.num_envs if existing is not None else 0)
            if in_use + k > self.config.max_total_envs:
                raise HandshakeRejected(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the learner is full: {in_use} environments in use, {k} more would "
                    f"exceed --max-total-envs {self.config.max_total_envs}; retry later, or "
                    "raise the learner's --max-total-envs")
            if self.fixed_actors is not None:  # last: only a session opened joins the set
                self.fixed_actors.admit(actor_id, k)  # (--deterministic: lockstep.py)
            slot_ids = [next(self._slot_ids) for _ in range(k)]
        if existing is not None:  # same incarnation reconnecting, or a stale handshake
            end_stream(existing, "replaced by a new connection of the same actor")
            self._close_session(existing, "replaced by a new connection of the same actor")
        core_state = self.initial_core_state(k)
        session = Session(
            session_id=uuid.uuid4().hex, actor_id=actor_id, run_id=run_id, peer=peer,
            num_envs=k, slot_ids=slot_ids,
            builder=self.recorder.builder(k, core_state) if self.recorder else None,
            core_state=core_state, episodes=EpisodeTally(k))
        with self._lock:
            self._sessions[session.session_id] = session
            self._by_actor[actor_id] = session
            self.session_envs += k
        log.info("actor %s (run %s) joined from %s with %d envs", actor_id, run_id[:8], peer, k)
        return session

    def has_session(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._sessions

    def _attach_stream(self, session_id: str, stream: asyncio.Task) -> Session | None:
        """The session ``session_id`` with its stream now open; None when there is no such
        session or its stream is already open (one stream per handshake)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.stream is not None:
                return None
            session.stream = stream
            return session

    def _close_session(self, session: Session, reason: str) -> None:
        with self._lock:
            if session.closed:
                return
            session.closed = True
            self.session_envs -= session.num_envs
            self._sessions.pop(session.session_id, None)
            if self._by_actor.get(session.actor_id) is session:
                del self._by_actor[session.actor_id]
            # Unfinished unrolls are dropped, never trained on nor resumed by a new session.
            partial = UnrollRecorder.partial(session)
            self.dropped_partial_unrolls += partial
        self.batcher.forget(session.session_id)  # no longer due (on the loop, as here)
        dropped = f"; {partial} partial unrolls dropped" if self.recorder else ""
        log.info("actor %s (run %s) disconnected: %s%s", session.actor_id, session.run_id[:8],
                 reason, dropped)

    def expire_idle(self) -> None:
        """Free the slots of actors that went silent (frozen, network cut). Runs on the
        server's loop (the watchdog hands it there)."""
        self.idle_checks += 1
        now = time.monotonic()
        for session in self.sessions():
            if session.stream is not None:
                if session.busy:
                    continue  # the actor waits for us (inference or backpressure)
                if now - session.last_seen > self.config.stream_idle_timeout:
                    log.warning("actor %s sent nothing for %.0f s: disconnecting it",
                                session.actor_id, now - session.last_seen)
                    end_stream(session, "idle timeout")
                    self._close_session(session, "idle timeout")
            elif now - session.created > self.config.stream_idle_timeout:
                # A handshake whose stream never opened holds its environments and a
                # stream's place; an actor opens its stream right after, unless the
                # learner is so loaded that it has not seen it yet: the same timeout.
                self._close_session(session, "handshake without a stream")

    # -- RPCs ----------------------------------------------------------------------------
    async def Handshake(self, request: pb.HandshakeRequest | MalformedMessage,
                        context: grpc.aio.ServicerContext) -> pb.HandshakeResponse:
        """Open a session; a handshake without ``env_id`` only asks which env to make."""
        if isinstance(request, MalformedMessage):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        if self.stopping.is_set() or self.unavailable.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the learner is shutting down")
        observation_space, action_space = self.spec.wire_spaces  # on every answer
        answer = pb.HandshakeResponse(
            env_id=self.spec.env_id, env_kwargs_json=json.dumps(self.spec.env_kwargs),
            max_message_bytes=self.config.max_message_bytes,
            policy_version=self.policy_version(), learner_version=__version__,
            env_import=list(self.config.env_import), env_wrapper=list(self.config.env_wrapper),
            observation_space=observation_space, action_space=action_space)
        try:
            check_protocol_and_ids(request)
            if not request.env_id:  # the actor asks which environment to make
                return answer
            check_actor_matches(request, self.spec,
                                max_envs_per_actor=self.config.max_envs_per_actor,
                                max_message_bytes=self.config.max_message_bytes)
            # No await from here to the session: concurrent handshakes see each other's.
            redirect = self.redirect_for(request)
            if redirect:  # another replica should serve it: no session here
                answer.redirect_address = redirect
                return answer
            session = self._open_session(request, context.peer())
        except Rejected as rejected:
            await context.abort(rejected.code, str(rejected))
        answer.session_id = session.session_id
        answer.slot_ids.extend(session.slot_ids)
        return answer

    def redirect_for(self, request: pb.HandshakeRequest) -> str:
        """A replica of a data-parallel learner (learner/training/distributed.py) sends a fresh actor
        to the least loaded replica, by connected environments (the others' as of the last
        tick), when moving it there evens the load; "" serves it here. An actor that came
        by redirect is always served. With ``--deterministic``, each replica its own share
        of the fixed set (learner/serving/lockstep.py)."""
        if self.group is None or not self.group.distributed:
            return ""
        if self.fixed_actors is not None:
            return self.fixed_actors.redirect(request.actor_id, self.replica_addresses)
        if request.redirected or len(self.replica_addresses) != self.group.world_size:
            return ""
        envs = list(self.replica_envs())
        with self._lock:  # ours now: every session but this actor's own previous one
            previous = self._by_actor.get(request.actor_id)
            envs[self.group.rank] = self.session_envs - (previous.num_envs if previous else 0)
        best = min(range(len(envs)), key=lambda r: (envs[r], r))
        if best != self.group.rank and envs[self.group.rank] - envs[best] >= request.num_envs:
            return self.replica_addresses[best]
        return ""

    async def Step(self, request_iterator: AsyncIterator[pb.StepRequest | MalformedMessage],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StepResponse]:
        """Serve one session's stream: actions for each message, until it ends."""
        metadata = dict(context.invocation_metadata() or ())
        session = self._attach_stream(metadata.get(wire.SESSION_METADATA_KEY, ""),
                                      asyncio.current_task())
        if session is None:
            session_id = metadata.get(wire.SESSION_METADATA_KEY, "")
            if self.has_session(session_id):  # a client bug: one stream per handshake
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"session {wire.shorten(session_id)!r} already has its "
                                    "stream: each handshake opens one Step stream")
            # Not (or no longer) here: the learner restarted since the handshake, or freed a
            # session whose stream did not open within --stream-idle-timeout. A client
            # handshakes again (NOT_FOUND is retried, docs/reliability.md).
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no session {wire.shorten(session_id)!r} on this learner (it "
                                "restarted, or freed the session before its stream opened): "
                                "call Handshake again and send its session_id as metadata "
                                f"{wire.SESSION_METADATA_KEY!r}")
        reason = "stream ended"
        requests = aiter(request_iterator)
        try:
            while not session.ended_by_learner:
                session.reading = True  # end_stream cancels the task only while it reads
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    return
                finally:
                    session.reading = False
                session.last_seen = time.monotonic()
                if isinstance(request, MalformedMessage):
                    reason = "rejected: malformed message"
                    log.warning("actor %s: %s", session.actor_id, request.describe())
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
                if self.unavailable.is_set():
                    reason = "the replica group is broken"
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "a learner replica failed; "
                                  "reconnect when the learner is back")
                if self.stopping.is_set():
                    reason = "training is over"
                    yield pb.StepResponse(training_over=True,
                                          policy_version=self.policy_version())
                    return
                session.busy = True
                try:
                    response = await self._step(session, request)
                except StepRejected as rejected:
                    reason = f"rejected: {rejected}"
                    log.warning("actor %s: %s", session.actor_id, rejected)
                    await context.abort(rejected.code, str(rejected))
                finally:
                    session.busy = False
                    session.last_seen = time.monotonic()
                yield response
            reason = session.ended_by_learner  # (session.py, end_stream) after its answer
            await context.abort(grpc.StatusCode.CANCELLED, ended_by_learner(reason))
        except asyncio.CancelledError:
            if session.ended_by_learner:  # tell the actor; a cancelled task alone says nothing
                reason = session.ended_by_learner
                await context.abort(grpc.StatusCode.CANCELLED, ended_by_learner(reason))
            reason = "cancelled"
            raise
        finally:
            self._close_session(session, reason)

    # -- one step ------------------------------------------------------------------------
    async def _step(self, session: Session, request: pb.StepRequest) -> pb.StepResponse:
        """Check one message, get its actions from the batcher, record the step."""
        started = time.perf_counter()
        k = session.num_envs
        step = self._validator.check(request, k, first=session.steps == 0)
        handled = time.perf_counter() - started  # a submit may run the batch: inference
        inference = self.batcher.submit(InferenceRequest(
            observations=step.observations, episode_start=step.episode_start,
            core_state=session.core_state, final_env_indices=step.final_envs,
            final_observations=step.final_observations, greedy=self.greedy,
            session=session.session_id, actor_id=session.actor_id))
        await inference.waiter
        resumed = time.perf_counter()
        if inference.error is not None:
            raise StepRejected(grpc.StatusCode.UNAVAILABLE,
                               f"inference failed ({inference.error}); the learner is stopping")
        unrolls = self.recorder.add(session, step, inference) if self.recorder else None
        session.core_state = inference.next_core_state
        # A session's first message is x_0 alone (reset observations, or the current ones
        # after a reconnect): no transition led to it in this session, so no env steps.
        transitions, returns, lengths = 0, [], []
        if session.steps > 0:
            transitions = k
            returns, lengths = session.episodes.add(
                step.rewards, step.terminated, step.truncated,
                dict(zip(step.episode_envs, step.episode_lengths, strict=True)))
        session.steps += 1
        response = pb.StepResponse(policy_version=inference.policy_version)
        wire.encode_tensor(self._action_layout.to_wire(inference.actions), out=response.actions)
        self.metrics.add_env_steps(transitions, returns, lengths,
                                   handling_s=handled + time.perf_counter() - resumed,
                                   reported_returns=step.episode_returns)
        if unrolls is not None:
            await self.recorder.put(unrolls, session)  # may wait for the trainer
        return response
