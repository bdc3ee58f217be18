"""Deterministic mode's serving (``--deterministic``): a fixed set of actors in lockstep.

An asynchronous learner is not reproducible: which actor's message comes first decides the
batches, the actions sampled and the weights. Here every choice that arrival order made is
made by a rule instead (docs/reliability.md, "Deterministic mode"):

* **who**: a fixed set of ``--num-actors`` actors of ``--envs-per-actor`` environments
  (:class:`FixedActorSet`); a handshake from one more actor, or with another K, is refused
  with FAILED_PRECONDITION, and an actor that leaves mid-run stops the run (its steps
  cannot be replayed), unless training is over;
* **inference batches**: one per *tick*, holding every environment of the set, in the
  order of the sorted actor ids (:class:`LockstepBatcher`); tick t serves each
  environment's t-th observation of the run;
* **actions**: sampled from noise keyed by (seed, tick, environment) (:func:`counter_noise`,
  numpy's counter-based Philox), not from a generator whose state depends on who came first;
* **policy lag**: tick t acts with the version trained on every unroll completed by tick
  t - D and nothing more (:func:`acting_version`), D = :func:`lag_ticks` = the ticks in
  which the set fills one batch (T B / E, T = ``--unroll-length``, B = ``--batch-size``,
  E environments): one version of lag, as Cleanba (vwxyzjn/cleanba) gives each actor,
  while the trainer trains on the last batch the actors step on. The batcher acts with
  its own copy of that version (kept from its publication, :meth:`PublishedWeights.subscribe`),
  whatever the trainer published since; it waits for it when the trainer is behind;
* **training batches**: each tick's complete unrolls reach the unroll queue in the order of
  the sorted actor ids (:meth:`FixedActorSet.turn`), so the trainer's batches of B unrolls
  are the same in every run.

The forward pass runs inline on the serving loop (learner/serving/requests.py); a tick
waits for every actor, so the slowest actor sets the pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import torch

from learner.serving.requests import BatcherStopped, BatchInputs, InferenceRequest, answer
from learner.serving.validation import HandshakeRejected
from learner.training.weights import PublishedWeights

log = logging.getLogger(__name__)

VERSION_POLL_S = 0.001  # how often a tick waiting for its acting version looks again
OVER_POLL_S = 0.05  # how often a tick waiting for its actors looks whether training is over


class DeterminismBroken(RuntimeError):
    """Something happened that deterministic mode cannot replay; the learner stops."""


class FixedActorSet:
    """The actors a deterministic learner serves: the first ``num_actors`` distinct actor ids
    to handshake, each with ``envs_per_actor`` environments. Their order, the sorted ids,
    is every tick's order of environments and of unrolls.

    A replica (``rank`` of ``world``) serves its share of the group's set: the actors whose
    id ends in ``-I`` (``seed-rl actors`` names them so) with I mod ``world`` = ``rank``,
    ``num_actors`` / ``world`` of them."""

    def __init__(self, num_actors: int, envs_per_actor: int, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        self.num_actors = num_actors // world
        self.envs_per_actor = envs_per_actor
        self.ids: set[str] = set()
        self._order: dict[str, int] = {}  # actor id -> rank, once the set is complete
        self._next_turn = 0
        self._turns: asyncio.Condition | None = None

    @property
    def num_envs(self) -> int:
        return self.num_actors * self.envs_per_actor

    def replica_for(self, actor_id: str) -> int | None:
        """The replica whose share ``actor_id`` is (None: an id without ``-I``)."""
        index = actor_id.rpartition("-")[2].split(".")[0]
        return int(index) % self.world if index.isdecimal() else None

    def redirect(self, actor_id: str, replica_addresses: list[str]) -> str:
        """Where a replica sends ``actor_id``: the address of the replica whose share it is,
        "" for this one's (or an id without ``-I``, which :meth:`admit` refuses).
        UNAVAILABLE (actors retry) while the group has not told every replica's address."""
        share = self.replica_for(actor_id)
        if share is None or share == self.rank:
            return ""
        if len(replica_addresses) != self.world:
            raise HandshakeRejected(grpc.StatusCode.UNAVAILABLE,
                                    "the learner's replica group is still starting; retry")
        return replica_addresses[share]

    def admit(self, actor_id: str, num_envs: int) -> None:
        """Check a handshake (on the serving loop); HandshakeRejected(FAILED_PRECONDITION)
        when it is not one of the set."""
        if self.world > 1 and self.replica_for(actor_id) != self.rank:
            raise HandshakeRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this learner replica {self.rank} of {self.world} runs --deterministic and "
                f"serves the actors whose id ends in -I with I mod {self.world} = {self.rank}; "
                f"actor {actor_id!r} is not one of them: connect it to the replica its index "
                "names (or to rank 0, which redirects it), with ids as seed-rl actors gives")
        if num_envs != self.envs_per_actor:
            raise HandshakeRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this learner runs --deterministic with --envs-per-actor "
                f"{self.envs_per_actor}, and actor {actor_id!r} has {num_envs}: start the "
                f"actors with --envs-per-actor {self.envs_per_actor} and --env-groups 1")
        if actor_id not in self.ids and len(self.ids) >= self.num_actors:
            raise HandshakeRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this learner runs --deterministic with a fixed set of --num-actors "
                f"{self.num_actors} actors ({', '.join(sorted(self.ids))}); actor "
                f"{actor_id!r} is one more: stop it, or restart the learner with "
                f"--num-actors {self.num_actors + 1}")
        self.ids.add(actor_id)

    def freeze(self) -> list[str]:
        """The set is complete (the first tick): fix and return its order."""
        if not self._order:
            self._order = {actor_id: rank for rank, actor_id in enumerate(sorted(self.ids))}
        return sorted(self._order, key=self._order.__getitem__)

    @contextlib.asynccontextmanager
    async def turn(self, actor_id: str) -> AsyncIterator[None]:
        """``async with actors.turn(actor_id):`` waits until every actor before this one (in
        the set's order) had its turn at this tick, so their unrolls reach the queue in
        order; the next actor's turn comes when the block ends."""
        if self._turns is None:
            self._turns = asyncio.Condition()
        rank = self._order[actor_id]
        async with self._turns:
            await self._turns.wait_for(lambda: self._next_turn == rank)
        try:
            yield
        finally:
            async with self._turns:
                self._next_turn = (rank + 1) % self.num_actors
                self._turns.notify_all()


def counter_noise(seed: int, tick: int, rows: int, size: int, kind: str,
                  stream: int = 0) -> np.ndarray:
    """``[rows, size]`` float32 standard Gumbel (``kind`` "gumbel") or normal ("normal")
    values for tick ``tick``: Philox keyed by ``seed`` at counter (``tick``, ``stream``: a
    replica's rank), drawn row by row, so row i depends on (seed, tick, stream, i) alone,
    not on how many rows follow."""
    generator = np.random.Generator(np.random.Philox(
        key=seed % (1 << 128), counter=[tick % (1 << 64), stream, 0, 0]))
    if kind == "gumbel":
        return generator.gumbel(size=(rows, size)).astype(np.float32)
    if kind == "normal":
        return generator.standard_normal((rows, size), dtype=np.float32)
    raise ValueError(f"unknown noise kind {kind!r}")


def use_deterministic_kernels(device: torch.device) -> None:
    """Torch's side of deterministic mode, for the whole learner process: deterministic
    algorithms only, one intra-op thread; on CUDA, the fixed cuBLAS workspace torch's
    reproducibility notes ask for is required (refused at start-up rather than failing at
    the first matrix product)."""
    if device.type == "cuda" and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (
            ":4096:8", ":16:8"):
        raise SystemExit("--deterministic on CUDA needs a fixed cuBLAS workspace: set "
                         "CUBLAS_WORKSPACE_CONFIG=:4096:8 in the learner's environment")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def lag_ticks(unroll_length: int, batch_size: int, num_envs: int) -> int:
    """D: the ticks in which ``num_envs`` environments complete ``batch_size`` unrolls of
    ``unroll_length`` steps (at least 1), the lag of deterministic mode's acting version."""
    return max(1, -(-unroll_length * batch_size // num_envs))


def acting_version(tick: int, lag: int, unroll_length: int, num_envs: int, batch_size: int,
                   first_version: int) -> int:
    """The policy version that acts at ``tick`` (this run's, from 0): the one trained on
    every unroll completed by tick ``tick - lag`` (``num_envs`` unrolls complete at each
    multiple of ``unroll_length``; ``batch_size`` an update), counted from ``first_version``
    (0, or a resumed checkpoint's)."""
    rollouts = (tick - lag) // unroll_length if tick >= lag else 0
    return first_version + rollouts * num_envs // batch_size


class LockstepBatcher:
    """One forward pass per tick over every environment of ``actors``, in their order, with
    the tick's acting version; the same interface as
    :class:`~learner.serving.batcher.InferenceBatcher` (``submit`` on the serving loop).

    ``training_over()`` says whether an actor that leaves is just going home.
    """

    def __init__(self, weights: PublishedWeights, device: torch.device,
                 actors: FixedActorSet, seed: int, unroll_length: int, batch_size: int,
                 on_batch: Callable[[int, float, float], None] | None = None,
                 training_over: Callable[[], bool] = lambda: False):
        self.weights = weights
        self.device = device
        self.actors = actors
        self.seed = seed
        self.unroll_length = unroll_length
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.training_over = training_over
        self.tick = 0
        self.first_version = weights.version
        self.lag = lag_ticks(unroll_length, batch_size, actors.num_envs)
        self._model = weights.clone()  # the acting copy
        self._version = weights.version
        self._kept: dict[int, dict[str, torch.Tensor]] = {}  # later versions, as published
        self._kept_lock = threading.Lock()
        weights.subscribe(self._keep)
        self._pending: dict[str, InferenceRequest] = {}  # by actor id
        self._sessions: dict[str, str] = {}  # session id -> actor id
        self._first_arrived = 0.0
        self._waiting = False  # for the acting version
        self._over_timer: asyncio.TimerHandle | None = None  # looks whether training is over
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.failure: BaseException | None = None
        self.waited_out = 0  # the metrics read it; a tick never starts on a timer

    def start(self) -> None:
        """Nothing to start: the forward pass runs on the serving loop."""

    def stop(self) -> None:
        """Answer every waiting request with BatcherStopped; later ones get it at once.
        Callable from any thread."""
        self._stopped = True
        loop = self._loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._fail_pending, self._stop_error())

    def _stop_error(self) -> BaseException:
        return self.failure or BatcherStopped("the learner is shutting down")

    def submit(self, request: InferenceRequest) -> InferenceRequest:
        """Queue ``request`` (on the serving loop); the tick starts once every actor of the
        set is waiting. Its waiter is done once it is answered."""
        self._loop = loop = asyncio.get_running_loop()
        if request.waiter is None:
            request.waiter = loop.create_future()
        if self._stopped or request.actor_id in self._pending:
            request.error = self._stop_error() if self._stopped else DeterminismBroken(
                f"actor {request.actor_id!r} sent a second request in one tick")
            answer([request])
            return request
        if not self._pending:
            self._first_arrived = time.perf_counter()
        if request.session is not None:
            self._sessions[request.session] = request.actor_id
        self._pending[request.actor_id] = request
        self._maybe_tick()
        return request

    def forget(self, session: str) -> None:
        """``session`` closed (on the serving loop). Before the first tick, or once training
        is over, it just leaves; mid-run its actor's steps cannot be replayed: the run
        stops with DeterminismBroken."""
        actor_id = self._sessions.pop(session, None)
        if actor_id is None:
            return
        request = self._pending.pop(actor_id, None)
        if request is not None:
            request.error = self._stop_error()
            answer([request])
        if self.tick > 0 and not self._stopped and not self.training_over():
            self._fail(DeterminismBroken(
                f"--deterministic: actor {actor_id!r} left at tick {self.tick}; a run whose "
                "actors come and go cannot be reproduced, so the learner stops. Restart it "
                "(with --resume, the run continues from the last checkpoint, "
                "reproducibly from there: docs/reliability.md)"))

    def _maybe_tick(self) -> None:
        if self._stopped or self._waiting or not self._pending:
            return
        if len(self._pending) < self.actors.num_actors and not self.training_over():
            # Training may end while some actors already left: then those still waiting
            # are answered without the others (and hear that training is over next).
            if self._over_timer is None:
                self._over_timer = self._loop.call_later(OVER_POLL_S, self._over_poll)
            return
        if not self._acting_version_ready() and not self.training_over():
            self._waiting = True
            self._loop.call_later(VERSION_POLL_S, self._version_poll)
            return
        self._run_tick()

    def _version_poll(self) -> None:
        self._waiting = False
        self._maybe_tick()

    def _over_poll(self) -> None:
        self._over_timer = None
        self._maybe_tick()

    def _keep(self, model: torch.nn.Module, version: int) -> None:
        """A publication (on the trainer's thread): keep its weights until they act."""
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        with self._kept_lock:
            self._kept[version] = state

    def _acting_version_ready(self) -> bool:
        """Put this tick's acting version into the acting copy; False while the trainer has
        not published it yet."""
        wanted = acting_version(self.tick, self.lag, self.unroll_length, self.actors.num_envs,
                                self.batch_size, self.first_version)
        if wanted == self._version:
            return True
        with self._kept_lock:
            state = self._kept.get(wanted)
            if state is None:
                return False
            for version in [v for v in self._kept if v <= wanted]:
                del self._kept[version]
        with torch.no_grad():
            self._model.load_state_dict(state)
        self._version = wanted
        return True

    def _run_tick(self) -> None:
        """One forward pass over every environment of the set, in the set's order."""
        order = self.actors.freeze()
        batch = [self._pending.pop(actor_id) for actor_id in order if actor_id in self._pending]
        started = time.perf_counter()
        try:
            inputs = BatchInputs.of(batch, self.device)
            distribution = self.weights.distribution
            with torch.inference_mode():
                output = inputs.forward(self._model)
                params = output.policy_params[0, :inputs.num_regular]
                noise = counter_noise(self.seed, self.tick, inputs.num_regular,
                                      distribution.noise_size, distribution.noise_kind,
                                      stream=self.actors.rank)
                actions = distribution.sample_with_noise(
                    params, torch.from_numpy(noise).to(self.device))
            inputs.hand_out(batch, output, actions, self._version)
            if self.on_batch is not None:
                self.on_batch(inputs.num_regular, started - self._first_arrived,
                              time.perf_counter() - started)
            self.tick += 1
        except Exception as error:  # answer every caller, then stop serving
            log.exception("inference failed; the learner stops")
            for request in batch:
                request.error = error
            self._fail(error)
        finally:
            answer(batch)

    def _fail(self, error: BaseException) -> None:
        self.failure = error
        self._stopped = True
        self._fail_pending(error)

    def _fail_pending(self, error: BaseException) -> None:
        failed = list(self._pending.values())
        self._pending.clear()
        for request in failed:
            request.error = error
        answer(failed)
