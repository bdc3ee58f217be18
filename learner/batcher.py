"""Dynamic inference batching: many actors' requests, one forward pass.

Stream handlers submit one :class:`InferenceRequest` per actor message (K environments)
and wait on it. The batcher thread gathers requests until ``max_batch`` environments are
waiting, or every connected environment is, or ``max_wait`` has passed since the first one
arrived (a partial batch still runs, so one slow or frozen actor never stalls the others),
runs the model once under ``torch.inference_mode()``, samples the actions from the model's
action distribution (learner/policies.py) and hands each request its slice.

Each request may also carry the final observations of environments that a time limit
truncated this step; their values (the truncation bootstrap) come out of the same forward
pass, computed with the environment's recurrent state before the reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from learner.models import ActorCritic

log = logging.getLogger(__name__)


@dataclass
class InferenceRequest:
    """One actor message. Arrays are numpy; ``core_state`` is the env's state before x_t."""

    observations: np.ndarray  # [K, *row_shape]
    episode_start: np.ndarray  # [K] bool: x_t starts an episode (reset the core state)
    core_state: tuple[torch.Tensor, ...]  # per layer [K, H] (CPU tensors); () without a core
    final_env_indices: np.ndarray  # [F] int: envs whose final observation follows
    final_observations: np.ndarray  # [F, *row_shape]
    greedy: bool = False  # the most likely actions (argmax, Gaussian mean), not samples
    # Filled by the batcher:
    actions: np.ndarray | None = None  # [K, *action_shape]: int64 0-based, or float32
    policy_params: np.ndarray | None = None  # [K, P] float32: mu(.|x_t)
    final_values: np.ndarray | None = None  # [F] float32
    next_core_state: tuple[torch.Tensor, ...] = ()
    policy_version: int = -1
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # A caller on an event loop (learner/service.py) awaits this instead of ``done``.
    waiter: asyncio.Future | None = None

    @property
    def num_envs(self) -> int:
        return len(self.observations)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class BatcherStopped(Exception):
    """The batcher was stopped before it answered this request."""


class InferenceBatcher:
    """Gathers requests into batches for ``model``; ``weights_lock`` guards its weights.

    ``version_fn`` returns the policy version of the weights; it is read under the lock so
    the version stamped on an action is the version that produced it.
    """

    def __init__(
        self,
        model: ActorCritic,
        device: torch.device,
        weights_lock: threading.Lock,
        version_fn: Callable[[], int],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float, float], None] | None = None,
        connected_envs: Callable[[], int] | None = None,
    ):
        self.model = model
        self.device = device
        self.weights_lock = weights_lock
        self.version_fn = version_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # (environments in the batch, seconds the first one waited, seconds of inference)
        self.on_batch = on_batch
        # Environments that can be waiting at all: no point waiting for more than these.
        self.connected_envs = connected_envs
        self._requests: queue.SimpleQueue[InferenceRequest | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-batcher", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._requests.put(None)
        self._thread.join(timeout=10)
        self._fail_pending(BatcherStopped("the learner is shutting down"))

    def submit(self, request: InferenceRequest) -> InferenceRequest:
        if self._stopped.is_set():
            request.error = BatcherStopped("the learner is shutting down")
            answer([request])
        else:
            self._requests.put(request)
        return request

    def _fail_pending(self, error: BaseException) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                request.error = error
                answer([request])

    def _gather(self) -> tuple[list[InferenceRequest], float]:
        first = self._requests.get()
        if first is None:
            return [], 0.0
        arrived = time.perf_counter()
        batch, envs = [first], first.num_envs
        deadline = arrived + self.max_wait_s
        target = self.max_batch
        if self.connected_envs is not None:
            target = max(1, min(target, self.connected_envs()))
        while envs < target:
            remaining = deadline - time.perf_counter()
            try:
                request = (self._requests.get(timeout=remaining) if remaining > 0
                           else self._requests.get_nowait())
            except queue.Empty:
                break
            if request is None:
                self._requests.put(None)  # keep the stop signal for the loop
                break
            batch.append(request)
            envs += request.num_envs
        return batch, time.perf_counter() - arrived

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                batch, waited = self._gather()
                if not batch:
                    continue
                started = time.perf_counter()
                try:
                    self._infer(batch)
                except Exception as error:  # answer every caller, then stop serving
                    for request in batch:
                        request.error = error
                    raise
                finally:
                    answer(batch)
                if self.on_batch is not None:
                    self.on_batch(sum(r.num_envs for r in batch), waited,
                                  time.perf_counter() - started)
        except BaseException as error:
            self.failure = error
            log.exception("inference batcher failed; the learner stops")
            self._stopped.set()
            self._fail_pending(error)

    def _infer(self, batch: list[InferenceRequest]) -> None:
        """One forward pass over all environments of ``batch`` plus their final observations.

        Rows [0, N) are the K_i observations of each request, rows [N, N + F) the final
        observations; a final observation uses its environment's state before the reset
        and is never an episode start.
        """
        observations = np.concatenate(
            [r.observations for r in batch] + [r.final_observations for r in batch])
        starts = np.concatenate(
            [r.episode_start for r in batch] + [np.zeros(len(r.final_env_indices), bool)
                                                for r in batch])
        num_regular = sum(r.num_envs for r in batch)
        obs = torch.from_numpy(observations).to(self.device, non_blocking=True)
        episode_start = torch.from_numpy(starts).to(self.device, non_blocking=True)
        core_state: tuple[torch.Tensor, ...] = ()
        if batch[0].core_state:
            layers = len(batch[0].core_state)
            core_state = tuple(
                torch.cat([r.core_state[i] for r in batch]
                          + [r.core_state[i][torch.from_numpy(r.final_env_indices)]
                             for r in batch]).to(self.device, non_blocking=True)
                for i in range(layers))
        with torch.inference_mode(), self.weights_lock:
            output = self.model(obs.unsqueeze(0), episode_start.unsqueeze(0), core_state)
            version = self.version_fn()
        params = output.policy_params[0, :num_regular]
        actions = self._sample(params, [r.greedy for r in batch for _ in range(r.num_envs)])
        actions_np = actions.cpu().numpy()
        params_np = params.float().cpu().numpy()
        values_np = output.values[0].float().cpu().numpy()
        next_state = tuple(s[:num_regular].cpu() for s in output.core_state)
        start, final_start = 0, num_regular
        for request in batch:
            stop = start + request.num_envs
            final_stop = final_start + len(request.final_env_indices)
            request.actions = actions_np[start:stop]
            request.policy_params = params_np[start:stop]
            request.final_values = values_np[final_start:final_stop]
            request.next_core_state = tuple(s[start:stop] for s in next_state)
            request.policy_version = version
            start, final_start = stop, final_stop

    def _sample(self, params: torch.Tensor, greedy: list[bool]) -> torch.Tensor:
        """Actions ``[N, *action_shape]`` for ``params [N, P]``: the most likely action for
        the rows whose request asked for ``greedy``, a sample for the others."""
        distribution = self.model.distribution
        if all(greedy) or not any(greedy):
            return distribution.sample(params, greedy=bool(greedy and greedy[0]))
        sampled = distribution.sample(params)
        mask = torch.tensor(greedy, device=params.device).view(-1, *[1] * (sampled.dim() - 1))
        return torch.where(mask, distribution.sample(params, greedy=True), sampled)


def answer(requests: list[InferenceRequest]) -> None:
    """Wake the callers of ``requests``: threads through ``done``, coroutines through their
    waiter, with one hand-over per event loop for the whole batch."""
    waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for request in requests:
        request.done.set()
        if request.waiter is not None:
            waiters.setdefault(request.waiter.get_loop(), []).append(request.waiter)
    for loop, futures in waiters.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():  # a cancelled stream no longer waits
            future.set_result(None)
