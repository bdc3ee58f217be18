"""A minimal stand-in for the learner's gRPC service, for actor tests.

A real grpc server on 127.0.0.1 that implements ``seed_rl.v1.Learner`` without a model:
it accepts handshakes (recording them, answering a fresh session id), records every
StepRequest decoded to numpy, and answers deterministic actions: in the n-th response
of a session (n = 0, 1, ...), env k gets

- Discrete: ``start + (n + k) % n_actions``;
- MultiDiscrete: head j gets ``start[j] + (n + k + j) % nvec[j]``;
- Box: ``(n + k) % 5 - 2 + 0.25 * j`` for element j (flat), float32: outside [-1, 1]
  often, so the actor must clip.

It answers its ``env_import`` and ``env_wrapper`` lists in every handshake response. It can
set ``training_over`` after N responses of a session, refuse handshakes with a given
status (all, or those of given actor ids), require a token, serve TLS, and be stopped and
started again on the same port. A test may change ``training_over_after``,
``handshake_error`` and ``handshake_errors`` while actors run.

Run it by hand, from tests/: ``python -m support.stand_in_learner [PORT]``.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc
from seed_rl.spaces import ActionLayout, action_layout
from support.procs import WAIT


@dataclass
class Handshake:
    request: pb.HandshakeRequest
    metadata: dict[str, str]
    session_id: str  # "" when the actor only asked for the environment
    peer: str = ""  # the client's address: one TCP connection, one peer


@dataclass
class Step:
    session_id: str
    actor_id: str
    index: int  # within the session
    observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_envs: list[int]
    final_observations: np.ndarray
    episodes: list[tuple[int, float, int]]
    actions: np.ndarray | None  # what the stand-in answered (None: training over)
    metadata: dict[str, str] = field(repr=False, default_factory=dict)


class StandInLearner(pb_grpc.LearnerServicer):
    def __init__(
        self,
        *,
        port: int = 0,
        env_id: str = "CartPole-v1",
        env_kwargs: dict[str, Any] | None = None,
        training_over_after: int | None = None,
        handshake_error: tuple[grpc.StatusCode, str] | None = None,
        handshake_errors: dict[str, tuple[grpc.StatusCode, str]] | None = None,
        auth_token: str = "",
        server_credentials: grpc.ServerCredentials | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,  # announced in handshakes only
        env_import: list[str] | None = None,
        env_wrapper: list[str] | None = None,
        forget_sessions: int = 0,
    ):
        self.port = port
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.training_over_after = training_over_after
        self.handshake_error = handshake_error
        self.handshake_errors = dict(handshake_errors or {})  # by actor id, before the above
        self.auth_token = auth_token
        self.server_credentials = server_credentials
        self.max_message_bytes = max_message_bytes
        self.env_import = list(env_import or [])
        self.env_wrapper = list(env_wrapper or [])
        # the first N sessions are forgotten right after their handshake, as a learner that
        # restarted in between would have forgotten them: their streams get NOT_FOUND
        self.forget_sessions = forget_sessions
        self.handshakes: list[Handshake] = []
        self.steps: list[Step] = []
        self.ended_sessions: list[str] = []  # Step streams the actor half-closed
        self._sessions: dict[str, pb.HandshakeRequest] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> StandInLearner:
        """Serve on ``port`` (a free one the first time when 0); same port on restarts."""
        deadline = time.monotonic() + timeout
        while True:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=16),
                options=[
                    ("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            )
            pb_grpc.add_LearnerServicer_to_server(self, server)
            target = f"127.0.0.1:{self.port}"
            try:
                if self.server_credentials is not None:
                    port = server.add_secure_port(target, self.server_credentials)
                else:
                    port = server.add_insecure_port(target)
            except RuntimeError:
                port = 0
            if port:
                break
            server.stop(0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"stand-in learner: cannot bind {target}")
            time.sleep(0.05)
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait(10)
            self._server = None

    def __enter__(self) -> StandInLearner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation helpers -------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[StandInLearner], bool], timeout: float, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"stand-in learner: timed out after {timeout} s waiting for {what} "
                        f"({len(self.handshakes)} handshakes, {len(self.steps)} steps)"
                    )
                self._lock.wait(min(remaining, 0.1))

    def steps_of(self, session_id: str) -> list[Step]:
        with self._lock:
            return [s for s in self.steps if s.session_id == session_id]

    def sessions(self) -> list[Handshake]:
        with self._lock:
            return [h for h in self.handshakes if h.session_id]

    def actor_ids(self) -> set[str]:
        with self._lock:
            return {h.request.actor_id for h in self.handshakes}

    # -- the service ---------------------------------------------------------------------

    def _check_token(self, context: grpc.ServicerContext, metadata: dict[str, str]) -> None:
        if self.auth_token and metadata.get(wire.AUTH_METADATA_KEY) != f"Bearer {self.auth_token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong auth token")

    def Handshake(self, request: pb.HandshakeRequest, context: grpc.ServicerContext):
        metadata = dict(context.invocation_metadata())
        self._check_token(context, metadata)
        session_id = ""
        error = self.handshake_errors.get(request.actor_id, self.handshake_error)
        if request.env_id and error is None:
            session_id = f"session-{next(self._ids)}"
        with self._lock:
            self.handshakes.append(Handshake(request, metadata, session_id, context.peer()))
            if session_id and self.forget_sessions > 0:
                self.forget_sessions -= 1
            elif session_id:
                self._sessions[session_id] = request
            self._lock.notify_all()
        if error is not None:
            context.abort(*error)
        return pb.HandshakeResponse(
            env_id=self.env_id,
            env_kwargs_json=json.dumps(self.env_kwargs),
            session_id=session_id,
            slot_ids=list(range(request.num_envs)),
            max_message_bytes=self.max_message_bytes,
            policy_version=0,
            learner_version="stand-in",
            env_import=self.env_import,
            env_wrapper=self.env_wrapper,
        )

    def Step(self, request_iterator, context: grpc.ServicerContext):
        metadata = dict(context.invocation_metadata())
        self._check_token(context, metadata)
        session_id = metadata.get(wire.SESSION_METADATA_KEY, "")
        with self._lock:
            hello = self._sessions.get(session_id)
        if hello is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no session {session_id!r} on this learner: call Handshake again")
        layout = action_layout(wire.decode_space(hello.action_space, name="action_space"))
        k = int(hello.num_envs)
        for index, request in enumerate(request_iterator):
            over = self.training_over_after is not None and index + 1 >= self.training_over_after
            actions = None if over else stand_in_actions(layout, index, k)
            step = Step(
                session_id=session_id,
                actor_id=hello.actor_id,
                index=index,
                observations=wire.decode_tensor(request.observations).copy(),
                rewards=wire.decode_tensor(request.rewards).copy(),
                terminated=wire.decode_tensor(request.terminated).copy(),
                truncated=wire.decode_tensor(request.truncated).copy(),
                final_envs=list(request.final_observation_envs),
                final_observations=wire.decode_tensor(request.final_observations).copy(),
                episodes=[
                    (e.env_index, e.episode_return, e.episode_length) for e in request.episodes
                ],
                actions=actions,
                metadata=metadata,
            )
            with self._lock:
                self.steps.append(step)
                self._lock.notify_all()
            if over:
                yield pb.StepResponse(training_over=True)
            else:
                yield pb.StepResponse(actions=wire.encode_tensor(actions))
        with self._lock:  # the request stream ended without a cancellation
            self.ended_sessions.append(session_id)
            self._lock.notify_all()


def stand_in_actions(layout: ActionLayout, index: int, k: int) -> np.ndarray:
    """The actions of response ``index`` for ``k`` envs (see the module docstring)."""
    base = index + np.arange(k, dtype=np.int64)
    if layout.kind == "discrete":
        return layout.start + base % layout.nvec[0]
    if layout.kind == "multi_discrete":
        heads = np.arange(len(layout.nvec))
        return layout.start + (base[:, None] + heads) % np.asarray(layout.nvec)
    elements = 0.25 * np.arange(int(np.prod(layout.shape)), dtype=np.float32)
    values = (base % 5 - 2).astype(np.float32)[:, None] + elements
    return values.reshape(k, *layout.shape).astype(np.float32)


if __name__ == "__main__":
    learner = StandInLearner(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"stand-in learner on {learner.address}", flush=True)
    try:
        learner._server.wait_for_termination()
    except KeyboardInterrupt:
        learner.stop()


def groups_of(learner: StandInLearner) -> list[Handshake]:
    """The sessions the stand-in opened, in group order."""
    return sorted(learner.sessions(), key=lambda h: h.request.actor_id)


def wait_streaming(learner: StandInLearner, groups: int, steps: int = 1) -> list[Handshake]:
    """Wait until ``groups`` sessions have sent ``steps`` requests each."""
    learner.wait_until(
        lambda s: len(s.sessions()) == groups
        and all(len(s.steps_of(h.session_id)) >= steps for h in s.sessions()),
        WAIT, f"{groups} sessions with {steps} steps each")
    return groups_of(learner)


def check_reveal_trajectory(steps: list[Step], num_envs: int, length: int, truncate: bool):
    """Prove the slot convention on RevealAction: request n+1 carries, for each env, the
    reward 10 * t + a of the action a answered to request n at observation [t, episode];
    episode ends carry the right flag, the next episode's first observation and, on
    truncation only, the final observation [length, episode]. Returns the episodes seen."""
    first = steps[0]
    np.testing.assert_array_equal(first.observations, np.zeros((num_envs, 2)))
    np.testing.assert_array_equal(first.rewards, 0.0)
    assert not first.terminated.any() and not first.truncated.any()
    returns = [0.0] * num_envs
    episodes = []
    for previous, current in zip(steps, steps[1:], strict=False):
        assert previous.actions is not None
        finals = dict(zip(current.final_envs, current.final_observations, strict=True))
        for k in range(num_envs):
            t, episode = previous.observations[k]
            action = int(previous.actions[k])
            assert current.rewards[k] == 10 * t + action, (previous.index, k)
            returns[k] += float(current.rewards[k])
            ended = t + 1 == length
            assert bool(current.terminated[k]) == (ended and not truncate)
            assert bool(current.truncated[k]) == (ended and truncate)
            if ended:
                np.testing.assert_array_equal(current.observations[k], [0, episode + 1])
                if truncate:
                    np.testing.assert_array_equal(finals.pop(k), [length, episode])
                assert (k, returns[k], length) in current.episodes
                episodes.append((k, returns[k], length))
                returns[k] = 0.0
            else:
                np.testing.assert_array_equal(current.observations[k], [t + 1, episode])
        assert not finals, f"final observations for envs that were not truncated: {finals}"
        assert len(current.episodes) == sum(
            bool(a or b) for a, b in zip(current.terminated, current.truncated, strict=True)
        )
    return episodes


def run_actor_to_end(config: Any) -> int:
    """``run_actor`` (one actor, in a thread of this process) until it returns, bounded in
    time (a stand-in with ``training_over_after`` ends it); its exit code."""
    from actors.groups import run_actor

    stop, result = threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(run_actor(config, 0, stop=stop)),
                              daemon=True)
    thread.start()
    thread.join(WAIT)
    stop.set()
    thread.join(WAIT)
    assert result, "the actor did not return"
    return result[0]
