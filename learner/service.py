"""The gRPC face of the learner: handshakes, actor sessions and the step stream.

Every step message is checked against the spec agreed at the handshake before anything
else sees it; bad input ends only that actor's stream, with a status code and a message a
person can act on (DESIGN.md, "The wire"). The other actors keep training.
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
from collections.abc import Callable, Iterator
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
UNOPENED_SESSION_TTL_S = 60.0


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
    steps: int = 0


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
                              f"{value[:40]!r}")
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
                if self.stopping.is_set():
                    reason = "training is over"
                    yield pb.StepResponse(training_over=True,
                                          policy_version=self.policy_version())
                    return
                try:
                    response = self._step(session, request)
                except StepRejected as rejected:
                    reason = f"rejected: {rejected}"
                    log.warning("actor %s: %s", session.actor_id, rejected)
                    context.abort(rejected.code, str(rejected))
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
        expect(rewards, "rewards", (k,), None)
        if rewards.dtype.kind != "f":
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: dtype {rewards.dtype} must be a float type")
        if not np.isfinite(rewards).all():
            bad = np.flatnonzero(~np.isfinite(rewards))[:5].tolist()
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: non-finite values at environments {bad}; check the "
                               "environment (a NaN reward would poison training)")
        expect(terminated, "terminated", (k,), np.dtype(bool))
        expect(truncated, "truncated", (k,), np.dtype(bool))
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
        session.steps += 1
        self.metrics.add_env_steps(k, [e.episode_return for e in request.episodes],
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
        given = dict(context.invocation_metadata()).get(wire.AUTH_METADATA_KEY, "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong auth token: pass the learner's --auth-token (or "
                          "SEED_RL_AUTH_TOKEN) to the actors")

    def _check_spec(self, request: pb.HandshakeRequest, context: grpc.ServicerContext) -> None:
        try:
            kwargs = json.loads(request.env_kwargs_json or "{}")
            observation_space = wire.decode_space(request.observation_space,
                                                  name="observation_space")
            action_space = wire.decode_space(request.action_space, name="action_space")
        except (wire.WireError, ValueError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad handshake: {error}")
        problems = []
        if request.env_id != self.spec.env_id or kwargs != self.spec.env_kwargs:
            problems.append(f"environment: learner runs {self.spec.env_id} "
                            f"{self.spec.env_kwargs}, actor runs {request.env_id} {kwargs}")
        for name, mine, theirs in (("observation space", self.spec.observation_space,
                                    observation_space),
                                   ("action space", self.spec.action_space, action_space)):
            mismatch = wire.space_mismatch(mine, theirs)
            if mismatch is not None:
                problems.append(f"{name}: {mismatch.what}")
        if problems:
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
