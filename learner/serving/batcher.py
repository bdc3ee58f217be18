"""Dynamic inference batching: many actors' requests, one forward pass.

Stream handlers (coroutines on the serving loop, learner/serving/service.py) submit one
:class:`InferenceRequest` per actor message (K environments) and await it. The batcher
gathers requests on that same loop and starts a batch once ``max_batch`` environments are
waiting, or every *due* environment is, or ``max_wait`` has passed since the first one
arrived (a partial batch still runs, so one slow or frozen actor never stalls the others);
with the forward pass on the inference thread, also only once the previous batch is done:
requests that arrive during a forward pass gather into the next batch, which starts when
it ends, instead of queueing small batches behind it. It runs the model once under
``torch.inference_mode()``, samples the actions from the model's action distribution
(learner/training/policies.py) and hands each request its slice. Every request waiting when
a batch starts is in it (up to ``max_batch``), in arrival order: no stream is passed over.

Who is due: a session (one stream; :attr:`InferenceRequest.session`) whose request went
into a batch is away (at inference, then stepping) until its next request; sessions step
about equally long, so they come back about as far apart as their batches started. A batch
waits for connected environments not served yet (a session's, from its handshake on: an
actor opens its stream right after, and in a reconnect storm a batch that waits for it
leaves the loop time to accept it) and for the away sessions whose batch
started within ``max_wait`` of the one that served its oldest waiting request's session
(with one env group, usually every actor); not for the others: a later one is still
stepping (an actor's other env group, actors/groups.py, out of phase on purpose), an
earlier one is late (slow, frozen). While no waiting request was served before, no away
session is due; a request without a session (tests, tools) is never away: then every
connected environment is due.

Where the forward pass runs: on a CPU device inline on the loop (a hand-over to another
thread costs more than a small model's forward pass, and the GIL makes it wait for the
loop anyway); on CUDA on one inference thread with its own CUDA stream, so the loop keeps
reading and checking messages while the GPU works and a backward pass on the default
stream never delays it (CUDA events order that stream and the trainer's weight copy:
learner/training/weights.py).

Each request may also carry the final observations of environments that a time limit
truncated this step; their values (the truncation bootstrap) come out of the same forward
pass, computed with the environment's recurrent state before the reset. After
:meth:`InferenceBatcher.stop` every waiting and later request is answered with
:class:`BatcherStopped` (a running batch finishes); nothing is left waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from learner.serving.requests import BatcherStopped, BatchInputs, InferenceRequest, answer
from learner.training.weights import PublishedWeights

log = logging.getLogger(__name__)


class InferenceBatcher:
    """Gathers requests into batches for the published ``weights``' forward passes.

    Each forward pass reads ``weights`` (learner/training/weights.py) through its reader, so
    it sees the weights of one publication and stamps its actions with their version (on
    CUDA, events order its stream and the trainer's copy). ``submit`` is called on the
    serving loop; ``threaded`` (default: on CUDA) runs forward passes on one inference
    thread instead of inline on the loop.
    """

    def __init__(
        self,
        weights: PublishedWeights,
        device: torch.device,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float, float], None] | None = None,
        connected_envs: Callable[[], int] | None = None,
        threaded: bool | None = None,
    ):
        self.weights = weights
        self.device = device
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (envs in the batch, first one's wait s, inference s)
        self.connected_envs = connected_envs  # envs of live sessions: never wait for more
        self.threaded = device.type == "cuda" if threaded is None else threaded
        self._executor: ThreadPoolExecutor | None = None
        self._cuda_stream = None
        self._pending: collections.deque[InferenceRequest] = collections.deque()
        self._pending_envs = 0
        self._first_arrived = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._overdue = False  # max_wait has passed: start the next batch as soon as it can
        self.waited_out = 0  # batches started because max_wait passed, not a rule
        self._running = False  # a batch is on the inference thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.failure: BaseException | None = None
        # Who is due (module docstring): each away session's batch and envs, per batch the
        # envs away and its start, and when the oldest waiting request's session's began.
        self._batches = 0  # batches started so far: the last one's number
        self._away: dict[str, tuple[int, int]] = {}  # session -> (batch, envs)
        self._away_envs: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._reference: float | None = None

    def start(self) -> None:
        if self.threaded:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
            if self.device.type == "cuda":
                self._cuda_stream = torch.cuda.Stream(self.device)

    def stop(self) -> None:
        """Answer every waiting request with BatcherStopped; later ones get it at once.
        Callable from any thread."""
        self._stopped = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        loop = self._loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._fail_pending,
                                          BatcherStopped("the learner is shutting down"))

    def _stop_error(self) -> BaseException:
        return self.failure or BatcherStopped("the learner is shutting down")

    def submit(self, request: InferenceRequest) -> InferenceRequest:
        """Queue ``request`` (on the serving loop); its waiter is done once it is answered."""
        self._loop = loop = asyncio.get_running_loop()
        if request.waiter is None:
            request.waiter = loop.create_future()
        if self._stopped:
            request.error = self._stop_error()
            answer([request])
            return request
        self._come_back(request)
        if not self._pending:
            self._first_arrived = time.perf_counter()
            self._timer = loop.call_later(self.max_wait_s, self._on_timer)
        self._pending.append(request)
        self._pending_envs += request.num_envs
        if self._reference is None:
            self._reference = request.previous_start
        self._maybe_flush()
        return request

    def _come_back(self, request: InferenceRequest) -> None:
        """``request``'s session is no longer away; note when its last batch started."""
        away = self._away.pop(request.session, None)  # None: a session's first request
        if away is not None:
            request.previous_start = self._started.get(away[0])
            self._count_away(*away, -1)

    def forget(self, session: str) -> None:
        """``session`` closed (on the serving loop): stop expecting it back."""
        away = self._away.pop(session, None)
        if away is not None:
            self._count_away(*away, -1)
        for request in self._pending:  # its last request is still answered, then forgotten
            if request.session == session:
                request.session = None

    def _count_away(self, batch: int, envs: int, sign: int) -> None:
        self._away_envs[batch] = self._away_envs.get(batch, 0) + sign * envs
        if not self._away_envs[batch]:
            del self._away_envs[batch], self._started[batch]

    def _due_envs(self) -> int:
        """Connected environments waiting or expected within max_wait: all but those of
        sessions away since a batch that started over max_wait from the reference."""
        reference, window = self._reference, self.max_wait_s
        return self.connected_envs() - sum(
            envs for batch, envs in self._away_envs.items()
            if reference is None or abs(self._started[batch] - reference) > window)

    def _on_timer(self) -> None:
        self._timer = None
        self._overdue = True
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        """Start a batch if one is ready and none is running; after stop(), answer the
        waiting requests with the stop error instead."""
        if self._stopped:
            self._fail_pending(self._stop_error())
            return
        if not self._pending or self._running:
            return  # a running batch ends in _batch_done, which looks again
        target = self.max_batch
        if self.connected_envs is not None:
            target = max(1, min(target, self._due_envs()))
        if self._overdue or self._pending_envs >= target:
            self._flush()

    def _flush(self) -> None:
        """Start a batch of the oldest waiting requests, up to ``max_batch`` environments
        (one request larger than that is a batch of its own)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waited_out += self._overdue
        self._overdue = False
        batch, envs = [], 0
        while self._pending and (not batch or envs + self._pending[0].num_envs
                                 <= self.max_batch):
            request = self._pending.popleft()
            batch.append(request)
            envs += request.num_envs
        self._pending_envs -= envs
        now = time.perf_counter()
        waited = now - self._first_arrived
        self._batches += 1
        for request in batch:
            if request.session is not None:
                self._come_back(request)  # a no-op unless a session sent two at once
                self._away[request.session] = (self._batches, request.num_envs)
                self._started[self._batches] = now
                self._count_away(self._batches, request.num_envs, +1)
        self._reference = next((r.previous_start for r in self._pending
                                if r.previous_start is not None), None)
        if self._pending:  # the rest start the next batch, without waiting again
            self._first_arrived = now
            self._overdue = True
            self._loop.call_soon(self._maybe_flush)
        if self._executor is None:
            self._run(batch, waited)
            return
        self._running = True
        try:
            self._executor.submit(self._run_on_thread, batch, waited)
        except RuntimeError:  # stop() shut the executor down since _maybe_flush looked
            self._running = False
            for request in batch:
                request.error = self._stop_error()
            answer(batch)

    def _run_on_thread(self, batch: list[InferenceRequest], waited: float) -> None:
        try:
            self._run(batch, waited)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                self._loop.call_soon_threadsafe(self._batch_done)

    def _batch_done(self) -> None:
        """The inference thread is free: start what gathered meanwhile, if it is ready."""
        self._running = False
        self._maybe_flush()

    def _run(self, batch: list[InferenceRequest], waited: float) -> None:
        started = time.perf_counter()
        try:
            if self._cuda_stream is not None:
                with torch.cuda.stream(self._cuda_stream):
                    self._infer(batch)
            else:
                self._infer(batch)
            if self.on_batch is not None:
                self.on_batch(sum(r.num_envs for r in batch), waited,
                              time.perf_counter() - started)
        except Exception as error:  # answer every caller, then stop serving
            for request in batch:
                request.error = error
            self.failure = error
            self._stopped = True
            log.exception("inference failed; the learner stops")
            with contextlib.suppress(RuntimeError):  # the waiting ones get the error too
                self._loop.call_soon_threadsafe(self._fail_pending, error)
        finally:
            answer(batch)

    def _fail_pending(self, error: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        failed = list(self._pending)
        self._pending.clear()
        self._pending_envs = 0
        self._reference = None
        for request in failed:
            request.error = error
        answer(failed)

    def _infer(self, batch: list[InferenceRequest]) -> None:
        """One forward pass of the published weights over ``batch`` (and its final
        observations: learner/serving/requests.py)."""
        inputs = BatchInputs.of(batch, self.device)
        with torch.inference_mode(), self.weights.read() as (model, version):
            output = inputs.forward(model)
        params = output.policy_params[0, :inputs.num_regular]
        actions = self._sample(params, [r.greedy for r in batch for _ in range(r.num_envs)])
        inputs.hand_out(batch, output, actions, version)

    def _sample(self, params: torch.Tensor, greedy: list[bool]) -> torch.Tensor:
        """Actions ``[N, *action_shape]`` for ``params [N, P]``: the most likely action for
        the rows whose request asked for ``greedy``, a sample for the others."""
        distribution = self.weights.distribution
        if all(greedy) or not any(greedy):
            return distribution.sample(params, greedy=bool(greedy and greedy[0]))
        sampled = distribution.sample(params)
        mask = torch.tensor(greedy, device=params.device).view(-1, *[1] * (sampled.dim() - 1))
        return torch.where(mask, distribution.sample(params, greedy=True), sampled)
