"""The gRPC client of one actor (or of one group of an actor process's environments,
actors/groups.py): connects to the learner and drives an :class:`EnvLoop` (or the
hand-over of a simulator that owns its loop, actors/simulator.py).

It owns everything about the connection (docs/architecture.md, "Wire contract"): the
channel (keepalive, message size limits), TLS / mutual TLS credentials, the auth token as
metadata on every RPC, the handshake (started without ``--env``, it first asks the learner
which environment to run; started without ``--env-import``, it runs the learner's before it
makes an environment this process has not registered, and when it asked, it takes the
learner's ``--env-wrapper`` unless it has its own), the bidirectional ``Step`` stream
with exactly one request in flight, reconnects, the stop watcher and round-trip timing.
What travels in each message is the env loop's business (``actors/env_loop.py``, which also
explains the slot convention and the spaces); the channel itself is ``actors/channel.py``.

Reconnects: an unreachable or restarted learner is retried with capped, jittered
exponential backoff and a new handshake; the environments keep their state. Errors that a
retry cannot fix (spaces mismatch, bad token, malformed messages, an ``--env-import`` that
fails) end the actor with ``EXIT_PERMANENT``, said once: logged here, or handed to
``report`` (the supervisor's, which logs it once for all its actor processes and restarts
none of them). A stop request or a response with
``training_over`` end it with 0. Signals, and what ends a whole process, are
actors/groups.py's business.

Torch-free.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from actors.channel import (
    RequestQueue,
    SharedChannels,
    backoff_delay,
    channel_credentials,
    finish_stream,
    redirect_target,
)
from actors.counters import Counters
from actors.env_loop import EnvLoop, env_seeds, registered_here
from actors.messages import PermanentError, StepMessages
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.envs.making import EnvImportError, run_env_imports
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

log = logging.getLogger("actors.client")

EXIT_OK = 0
EXIT_CRASH = 1  # an unexpected exception (a bug, an environment that raised)
EXIT_PERMANENT = 2  # the learner refused us, or the setup cannot work; retrying won't help

#: Where a permanent error goes instead of the log: ``report(actor_id, message)``.
Report = Callable[[str, str], None]

#: Status codes a retry cannot fix: the actor logs the learner's message and exits.
PERMANENT_CODES = frozenset({
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,  # not a seed-rl learner, or another protocol
})
#: Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ALREADY_EXISTS,
#: RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, ...) is retried with backoff.

HANDSHAKE_TIMEOUT_S = 30.0
STOP_GRACE_S = 2.0  # after a stop request, how long the current call may take to finish
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30  # until a handshake tells the learner's limit
ROUND_TRIP_WINDOW = 256  # steps per published round-trip percentile
#: reconnect attempts 1, 2, 4, 8, ... are logged as warnings, the others at DEBUG unless this
#: many seconds passed since the last warning: a learner that is down for long says so
#: without a line every backoff
RECONNECT_REPEAT_S = 30.0


class _Stopped(Exception):
    """A stop was requested while a call was in flight."""


def actor_id_for(config: Config, actor_index: int) -> str:
    """``HOST-INDEX`` by default; ``--actor-id-prefix`` replaces the host name part."""
    return f"{config.actor_id_prefix or socket.gethostname()}-{actor_index}"


class ActorClient:
    """Steps environments for the learner at ``config.learner``, over one session at a time.

    ``run()`` blocks until training is over (0, ``outcome`` "training_over"), ``stop`` is
    set (0, "stopped"), or a permanent error (``EXIT_PERMANENT``). Safe to run in any
    thread; it installs no signal handlers. ``env_id`` / ``env_kwargs`` are the config's,
    or what the learner named when the config has no env.

    Alone, it is the whole actor: id ``actor_id_for(config, actor_index)``, K =
    ``config.envs_per_actor`` envs seeded by ``env_seeds`` of that id. As one group of an
    actor process (actors/groups.py) it gets the group's ``actor_id``, the ``seeds`` of its
    envs (K_g = len(seeds)), the process's ``run_id`` and ``channels``; ``env_known`` says
    the process already ran ``--env-import`` and ``config.env`` is the env to make.
    ``report``, when given, gets the permanent error that ends it instead of the log.
    ``envs``, when given, are the environments' messages of a loop it does not own (a
    simulator's, actors/simulator.py): their env id, spaces and K replace the config's.
    """

    def __init__(self, config: Config, actor_index: int, *,
                 stop: threading.Event | None = None, counters: Counters | None = None,
                 actor_id: str = "", seeds: Sequence[int] | None = None, run_id: str = "",
                 channels: SharedChannels | None = None, env_known: bool = False,
                 report: Report | None = None, envs: StepMessages | None = None):
        self.config = config
        self.actor_index = actor_index
        self.actor_id = actor_id or actor_id_for(config, actor_index)
        self.run_id = run_id or uuid.uuid4().hex  # this incarnation
        self.seeds = list(seeds if seeds is not None else
                          env_seeds(config.seed, self.actor_id, int(config.envs_per_actor)))
        self.num_envs = len(self.seeds) if envs is None else envs.num_envs
        self.stop = stop if stop is not None else threading.Event()
        self.counters = counters if counters is not None else Counters()
        self.channels = channels if channels is not None else SharedChannels()
        self.env_known = env_known or envs is not None
        self.report = report
        self.env_id = config.env if envs is None else envs.env_id
        self.env_kwargs: dict[str, Any] = dict(config.env_kwargs)
        self.env_wrapper: list[str] = list(config.env_wrapper)  # or the learner's, if asked
        self.envs: StepMessages | None = envs
        self.session_id = ""
        self.outcome = ""  # how run() ended: "training_over" or "stopped" (exit 0)
        self._max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self._metadata: tuple[tuple[str, str], ...] = ()
        if config.auth_token:
            self._metadata = ((wire.AUTH_METADATA_KEY, f"Bearer {config.auth_token}"),)
        self._rng = random.Random()
        self._call_lock = threading.Lock()
        self._call: grpc.Future | None = None
        self._cancel_all = False
        self._finished = threading.Event()
        self._progressed = False
        self._round_trips: list[float] = []

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        threading.Thread(target=self._watch_stop, name=f"actor-{self.actor_id}-stop",
                         daemon=True).start()
        try:
            return self._run()
        except (PermanentError, EnvImportError) as error:
            if self.report is not None:
                self.report(self.actor_id, str(error))
            else:
                log.error("actor %s: %s", self.actor_id, error)
            return EXIT_PERMANENT
        finally:
            self._finished.set()
            self.counters.set_connected(False)
            if self.envs is not None:
                self.envs.close()

    def _run(self) -> int:
        credentials = channel_credentials(self.config)
        if (credentials is None and self.config.auth_token
                and not wire.is_loopback(self.config.learner)):
            log.warning("actor %s: --auth-token is sent without TLS (no --tls-ca); anyone on "
                        "the network path can read it", self.actor_id)
        if self.config.env_import and not self.env_known:  # its own; the learner's is ignored
            run_env_imports(self.config.env_import, process=f"actor {self.actor_id}")
        if self.envs is not None:
            pass  # a loop it does not own: the environments exist
        elif self.env_id and (self.env_known or self.config.env_import
                              or registered_here(self.env_id)):
            self._make_envs()
        elif self.env_id:
            log.info("actor %s: %s is not registered here and this actor has no --env-import; "
                     "it runs the learner's first", self.actor_id, self.env_id)
        failures, said_at = 0, 0.0
        while not self.stop.is_set():
            self._progressed = False
            channel = self.channels.acquire(self.config.learner, credentials,
                                            self._max_message_bytes)
            try:
                stub = pb_grpc.LearnerStub(channel)
                if self.envs is None:
                    self._ask_learner_for_env(stub)
                handshake = self._handshake(stub)
                if handshake.redirect_address:  # a replica of the learner sends us on
                    target = redirect_target(handshake.redirect_address, self.config.learner)
                    log.info("actor %s: the learner at %s sends this actor to %s",
                             self.actor_id, self.config.learner, target)
                    self.channels.release(channel)
                    channel = self.channels.acquire(target, credentials, self._max_message_bytes)
                    stub = pb_grpc.LearnerStub(channel)
                    handshake = self._handshake(stub, redirected=True)
                outcome = self._stream(stub, handshake)
                if outcome in ("training_over", "stopped"):
                    self.outcome = outcome
                    return EXIT_OK
                reason = "the learner ended the stream"
            except _Stopped:
                break
            except grpc.RpcError as error:
                if self.stop.is_set():
                    break
                code = error.code()
                details = error.details() or ""
                if code in PERMANENT_CODES:
                    raise PermanentError(f"the learner at {self.config.learner} refused this "
                                         f"actor: {code.name}: {details} (not retrying)") from None
                reason = f"{code.name}: {details}"
            finally:
                self.counters.set_connected(False)
                self.channels.release(channel)
            if self._progressed:
                failures = 0
            delay = backoff_delay(failures, self.config.reconnect_max_backoff, self._rng)
            failures += 1
            what = "lost the learner" if self._progressed else "cannot reach the learner"
            now = time.monotonic()
            loud = failures & (failures - 1) == 0 or now - said_at >= RECONNECT_REPEAT_S
            said_at = now if loud else said_at
            log.log(logging.WARNING if loud else logging.DEBUG,
                    "actor %s: %s at %s (%s); reconnecting in %.2f s (attempt %d)",
                    self.actor_id, what, self.config.learner, reason, delay, failures)
            self.stop.wait(delay)
        self.outcome = "stopped"
        return EXIT_OK

    def _make_envs(self) -> None:
        self.envs = EnvLoop(self.env_id, self.env_kwargs, self.seeds, counters=self.counters,
                            process=f"actor {self.actor_id}", env_wrapper=self.env_wrapper)
        log.log(logging.DEBUG if self.env_known else logging.INFO, "actor %s: made %s",
                self.actor_id, self.envs.describe())

    def _watch_stop(self) -> None:
        """Once ``stop`` is set, give the current call STOP_GRACE_S to finish, then cancel it."""
        while not self._finished.is_set():
            if self.stop.wait(0.2):
                break
        else:
            return
        if self._finished.wait(STOP_GRACE_S):
            return
        with self._call_lock:
            self._cancel_all = True
            if self._call is not None:
                self._call.cancel()

    def _set_call(self, call: grpc.Future | None) -> None:
        with self._call_lock:
            self._call = call
            if call is not None and self._cancel_all:
                call.cancel()

    # -- handshake -----------------------------------------------------------------------

    def _base_handshake(self) -> pb.HandshakeRequest:
        return pb.HandshakeRequest(protocol_version=wire.PROTOCOL_VERSION,
                                   actor_id=self.actor_id, run_id=self.run_id,
                                   num_envs=self.num_envs)

    def _call_handshake(self, stub: pb_grpc.LearnerStub,
                        request: pb.HandshakeRequest) -> pb.HandshakeResponse:
        if self.stop.is_set():
            raise _Stopped
        future = stub.Handshake.future(request, timeout=HANDSHAKE_TIMEOUT_S,
                                       metadata=self._metadata)
        self._set_call(future)
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise _Stopped from None
        finally:
            self._set_call(None)

    def _ask_learner_for_env(self, stub: pb_grpc.LearnerStub) -> None:
        """Before the envs are made: a handshake without env or spaces; the learner answers
        with its env id, kwargs, --env-import and --env-wrapper (no session). We run its
        imports and take its wrappers unless we have our own, then make our env (started
        without --env: the learner's)."""
        response = self._call_handshake(stub, self._base_handshake())
        if response.env_import and not self.config.env_import:
            log.info("actor %s: running the learner's --env-import %s", self.actor_id,
                     ",".join(response.env_import))
            run_env_imports(list(response.env_import), process=f"actor {self.actor_id}")
        if response.env_wrapper and not self.config.env_wrapper:
            log.info("actor %s: wrapping its environments with the learner's --env-wrapper %s",
                     self.actor_id, ",".join(response.env_wrapper))
            self.env_wrapper = list(response.env_wrapper)
        if self.env_id:  # our own --env
            self._make_envs()
            return
        if not response.env_id:
            raise PermanentError(f"started without --env, and the learner at "
                                 f"{self.config.learner} named no environment either; give --env")
        try:
            kwargs = json.loads(response.env_kwargs_json or "{}")
        except json.JSONDecodeError as error:
            raise PermanentError(f"the learner sent env kwargs that are not JSON: "
                                 f"{error}") from None
        if not isinstance(kwargs, dict):
            raise PermanentError(f"the learner sent env kwargs that are not a JSON object: "
                                 f"{response.env_kwargs_json!r}")
        log.info("actor %s: the learner runs %s %s", self.actor_id, response.env_id, kwargs)
        self.env_id, self.env_kwargs = response.env_id, kwargs
        self._make_envs()

    def _handshake(self, stub: pb_grpc.LearnerStub,
                   redirected: bool = False) -> pb.HandshakeResponse:
        """Open a session: our env and spaces; the learner's message limit and session id
        (or, from a replica of a data-parallel learner, the address to go to)."""
        assert self.envs is not None
        request = self._base_handshake()
        request.redirected = redirected
        request.env_id = self.env_id
        request.env_kwargs_json = json.dumps(self.env_kwargs, sort_keys=True)
        request.observation_space.CopyFrom(self.envs.observation_space_msg)
        request.action_space.CopyFrom(self.envs.action_space_msg)
        response = self._call_handshake(stub, request)
        if response.max_message_bytes:
            self._max_message_bytes = int(response.max_message_bytes)
            worst = self.envs.worst_request_bytes()
            if worst > self._max_message_bytes:
                raise PermanentError(
                    f"a step of {self.num_envs} environments can take {worst} bytes, more "
                    f"than the learner accepts ({self._max_message_bytes}); lower "
                    "--envs-per-actor or raise the learner's --max-message-bytes"
                )
        self.session_id = response.session_id
        if response.redirect_address and not response.session_id:
            return response
        log.info("actor %s: connected to the learner at %s (session %s, %s x %d envs, "
                 "policy version %d)", self.actor_id, self.config.learner, response.session_id,
                 self.env_id, self.num_envs, response.policy_version)
        return response

    # -- the Step stream -----------------------------------------------------------------

    def _stream(self, stub: pb_grpc.LearnerStub, handshake: pb.HandshakeResponse) -> str:
        """Run one session; returns "training_over", "stopped" or "ended" (by the learner).
        Raises grpc.RpcError when the call fails."""
        envs = self.envs
        assert envs is not None
        metadata = (*self._metadata, (wire.SESSION_METADATA_KEY, handshake.session_id))
        requests = RequestQueue()
        responses = stub.Step(iter(requests), metadata=metadata)
        self._set_call(responses)
        try:
            envs.start_session()
            self.counters.set_connected(True)
            while True:
                request = envs.build_request()
                sent = time.perf_counter()
                requests.put(request)
                try:
                    response = next(responses)
                except StopIteration:
                    return "ended"
                self._record_round_trip(time.perf_counter() - sent)
                self._progressed = True
                if response.training_over:
                    finish_stream(requests, responses, STOP_GRACE_S)
                    return "training_over"
                if self.stop.is_set():
                    finish_stream(requests, responses, STOP_GRACE_S)
                    return "stopped"
                envs.step(envs.decode_actions(response))
                if self.stop.is_set():  # stopped while the envs stepped: nothing to send
                    finish_stream(requests, responses, STOP_GRACE_S)
                    return "stopped"
        finally:
            requests.close()
            self._set_call(None)
            responses.cancel()  # no-op when the call has finished

    def _record_round_trip(self, seconds: float) -> None:
        """Keep the last round trips; publish p50/p99 every ``ROUND_TRIP_WINDOW`` steps."""
        trips = self._round_trips
        trips.append(seconds)
        if len(trips) == ROUND_TRIP_WINDOW:
            p50, p99 = np.percentile(trips, [50, 99]) * 1000.0
            self.counters.set_round_trip(float(p50), float(p99))
            trips.clear()
