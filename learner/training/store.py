"""Trajectory store: per-environment unrolls of T+1 slots, and the bounded queue to the trainer.

Slot convention (docs/architecture.md). Slot t of an unroll holds
  - the observation x_t,
  - the reward and the terminated/truncated flags of the transition that LED to x_t
    (so slot t's flags say "x_t starts a new episode"), and, when that transition was
    truncated, the value of the true final observation (``truncation_value``),
  - the inference outputs computed FROM x_t: the action a_t, the behaviour policy's
    parameters mu(.|x_t) (learner/training/policies.py), the policy version that produced them,
and each unroll keeps the recurrent state before its slot 0. The trainer pairs
pi(.|x_t), mu(.|x_t), a_t with the reward and flags of slot t + 1.

An unroll is complete at T+1 slots; its last slot becomes the next unroll's slot 0, so
consecutive unrolls overlap by one step and no transition is lost.

All K environments of one actor step together, so a session's unfinished unrolls live in
one block of arrays ``[T+1, K, ...]`` and every step is a row write: per message, not per
environment. The store never looks inside an observation row or an action: shapes and
dtypes come from the layouts (seed_rl/spaces.py) and the action distribution.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from seed_rl.spaces import ActionLayout, ObservationLayout


@dataclass
class Unrolls:
    """A group of complete unrolls, time-major: arrays ``[T+1, N, ...]``; core state [N, H]."""

    observations: np.ndarray  # [T+1, N, *row_shape], the observation layout's row dtype
    rewards: np.ndarray  # float32
    terminated: np.ndarray  # bool
    truncated: np.ndarray  # bool
    truncation_values: np.ndarray  # float32, V(final observation) where truncated
    actions: np.ndarray  # [T+1, N, *action_shape]: int64 0-based indices, or float32 samples
    behaviour_params: np.ndarray  # float32 [T+1, N, P]: mu(.|x_t)'s parameters
    policy_versions: np.ndarray  # int64
    core_state: tuple[np.ndarray, ...] = ()

    FIELDS = ("observations", "rewards", "terminated", "truncated", "truncation_values",
              "actions", "behaviour_params", "policy_versions")

    @property
    def size(self) -> int:
        return self.rewards.shape[1]

    def select(self, columns: slice | np.ndarray) -> Unrolls:
        """The unrolls in ``columns`` (a view for slices)."""
        return Unrolls(*(getattr(self, name)[:, columns] for name in self.FIELDS),
                       core_state=tuple(s[columns] for s in self.core_state))

    @staticmethod
    def concatenate(parts: list[Unrolls]) -> Unrolls:
        if len(parts) == 1:
            return parts[0]
        return Unrolls(
            *(np.concatenate([getattr(p, name) for p in parts], axis=1) for name in
              Unrolls.FIELDS),
            core_state=tuple(np.concatenate(states, axis=0) for states in
                             zip(*(p.core_state for p in parts), strict=True)),
        )


@dataclass
class UnrollBuilder:
    """The unfinished unrolls of one actor session's K environments.

    Shapes are per environment: ``observation_shape`` the row shape, ``action_shape`` one
    action's; ``num_policy_params`` is P. :meth:`for_layouts` takes them from the layouts.
    """

    unroll_length: int
    num_envs: int
    observation_shape: tuple[int, ...]
    observation_dtype: np.dtype
    num_policy_params: int
    action_shape: tuple[int, ...] = ()
    action_dtype: np.dtype = np.dtype(np.int64)
    core_state_shapes: tuple[tuple[int, ...], ...] = ()
    row: int = 0
    _block: Unrolls = field(init=False)

    @staticmethod
    def for_layouts(unroll_length: int, num_envs: int, observations: ObservationLayout,
                    actions: ActionLayout, num_policy_params: int,
                    core_state_shapes: tuple[tuple[int, ...], ...] = ()) -> UnrollBuilder:
        """A builder for observation rows and actions as these layouts carry them (actions
        as the learner samples them: 0-based indices, or raw Gaussian samples)."""
        return UnrollBuilder(unroll_length, num_envs, observations.row_shape,
                             observations.row_dtype, num_policy_params, actions.shape,
                             actions.dtype, core_state_shapes)

    def __post_init__(self) -> None:
        slots, k = self.unroll_length + 1, self.num_envs
        self._block = Unrolls(
            observations=np.zeros((slots, k, *self.observation_shape), self.observation_dtype),
            rewards=np.zeros((slots, k), np.float32),
            terminated=np.zeros((slots, k), bool),
            truncated=np.zeros((slots, k), bool),
            truncation_values=np.zeros((slots, k), np.float32),
            actions=np.zeros((slots, k, *self.action_shape), self.action_dtype),
            behaviour_params=np.zeros((slots, k, self.num_policy_params), np.float32),
            policy_versions=np.zeros((slots, k), np.int64),
            core_state=tuple(np.zeros(shape, np.float32) for shape in self.core_state_shapes),
        )

    def add_step(
        self,
        observations: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        truncation_values: np.ndarray,
        actions: np.ndarray,
        behaviour_params: np.ndarray,
        policy_version: int,
        core_state_before: tuple[np.ndarray, ...] = (),
    ) -> Unrolls | None:
        """Write slot ``row`` for all K environments; return the K unrolls when complete.

        ``core_state_before`` is the recurrent state before x_t (before any episode-start
        reset); it is kept when x_t is an unroll's slot 0.
        """
        block, row = self._block, self.row
        if row == 0:
            for kept, state in zip(block.core_state, core_state_before, strict=True):
                kept[...] = state
        block.observations[row] = observations
        block.rewards[row] = rewards
        block.terminated[row] = terminated
        block.truncated[row] = truncated
        block.truncation_values[row] = truncation_values
        block.actions[row] = actions
        block.behaviour_params[row] = behaviour_params
        block.policy_versions[row] = policy_version
        if row < self.unroll_length:
            self.row = row + 1
            return None
        complete = Unrolls(*(getattr(block, name).copy() for name in Unrolls.FIELDS),
                           core_state=tuple(s.copy() for s in block.core_state))
        for name in Unrolls.FIELDS:  # the last slot starts the next unroll
            array = getattr(block, name)
            array[0] = array[row]
        self.row = 1
        # The next unroll starts at x_T: its initial state is the state before x_T.
        for kept, state in zip(block.core_state, core_state_before, strict=True):
            kept[...] = state
        return complete


class QueueClosed(Exception):
    """The unroll queue was closed (the learner is shutting down)."""


@dataclass(eq=False)
class _PutWaiter:
    """One put waiting for room: admitted (appended) by whoever frees room, in arrival order."""

    unrolls: Unrolls
    future: asyncio.Future[bool] | None = None  # an async put's (True: admitted, False: closed)
    admitted: bool = False


def _settle(future: asyncio.Future[bool], admitted: bool) -> None:
    """Wake an async put from any thread: its loop sets the result (a cancelled put's
    future, or one whose loop is closed, has nobody to wake)."""

    def resolve() -> None:
        if not future.done():
            future.set_result(admitted)

    with contextlib.suppress(RuntimeError):  # the loop is closed
        future.get_loop().call_soon_threadsafe(resolve)


class UnrollQueue:
    """Bounded FIFO of complete unrolls from all sessions to the trainer.

    A put waits while ``capacity`` unrolls are waiting: when training falls behind, the
    stream handlers (and so the actors) wait instead of memory growing. Waiting puts get in
    strictly in arrival order: they queue as waiters, and whoever frees room (``get``, on
    the trainer's thread) appends the first waiters' unrolls itself and then wakes them, so
    a put that arrives later never overtakes one that waits. The serving loop uses
    :meth:`put_async`, an asyncio future per waiting stream (no thread held); threads (and
    tests) use :meth:`put`. ``get`` drops unrolls whose oldest step is more than
    ``max_policy_lag`` policy versions behind.
    """

    def __init__(self, capacity: int, max_policy_lag: int):
        self.capacity = capacity
        self.max_policy_lag = max_policy_lag
        self._parts: deque[Unrolls] = deque()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()
        self._waiters: deque[_PutWaiter] = deque()
        self.dropped_stale = 0

    @property
    def depth(self) -> int:
        """Unrolls waiting."""
        return self._size

    @property
    def waiting_puts(self) -> int:
        """Puts waiting for room."""
        return len(self._waiters)

    def close(self) -> None:
        """Refuse every put from now on; waiting ones raise QueueClosed, ``get`` returns None."""
        with self._cond:
            self._closed = True
            for waiter in self._waiters:
                if waiter.future is not None:
                    _settle(waiter.future, False)
            self._waiters.clear()
            self._cond.notify_all()

    def put(self, unrolls: Unrolls, timeout: float | None = None) -> bool:
        """Append, after the puts already waiting; waits for room. False on timeout (the
        put withdrawn); raises QueueClosed once closed."""
        with self._cond:
            if self._try_append(unrolls):
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter = _PutWaiter(unrolls)
            self._waiters.append(waiter)
            self._cond.wait_for(lambda: waiter.admitted or self._closed, timeout)
            if waiter.admitted:
                return True
            if self._closed:
                raise QueueClosed
            self._waiters.remove(waiter)
            return False

    async def put_async(self, unrolls: Unrolls, give_up: Callable[[], bool] | None = None,
                        poll: float = 0.5) -> bool:
        """Append from an event loop, after the puts already waiting: waits for room on an
        asyncio future that ``get`` sets from its thread, so a waiting stream holds no
        thread and the loop serves the others. ``give_up`` is asked before and every
        ``poll`` s while waiting; True withdraws the put (returns False). Raises QueueClosed
        once closed. Cancelled while waiting, the put is withdrawn (unless already in)."""
        if give_up is not None and give_up():
            return False
        with self._cond:
            if self._try_append(unrolls):
                return True
            waiter = _PutWaiter(unrolls, asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
        try:
            while not waiter.future.done():
                await asyncio.wait((waiter.future,), timeout=None if give_up is None else poll)
                if not waiter.future.done() and give_up is not None and give_up():
                    return not self._withdraw(waiter)
        except asyncio.CancelledError:
            self._withdraw(waiter)
            raise
        if not waiter.future.result():
            raise QueueClosed
        return True

    def _try_append(self, unrolls: Unrolls) -> bool:
        """Under the lock: append at once if open, nobody waits and there is room."""
        if self._closed:
            raise QueueClosed
        if self._waiters or self._size >= self.capacity:
            return False
        self._parts.append(unrolls)
        self._size += unrolls.size
        self._cond.notify_all()
        return True

    def _withdraw(self, waiter: _PutWaiter) -> bool:
        """Take a waiting put out of the line; False when it was admitted already."""
        with self._cond:
            if waiter.admitted or waiter not in self._waiters:
                return False
            self._waiters.remove(waiter)
            return True

    def _admit(self) -> None:
        """Under the lock, after room was freed: append the first waiting puts, in order,
        while there is room, and wake them (threads by the condition, async puts on their
        loops)."""
        while self._waiters and self._size < self.capacity:
            waiter = self._waiters.popleft()
            self._parts.append(waiter.unrolls)
            self._size += waiter.unrolls.size
            waiter.admitted = True
            if waiter.future is not None:
                _settle(waiter.future, True)
        self._cond.notify_all()

    def get(self, batch_size: int, current_version: int,
            timeout: float | None = None) -> Unrolls | None:
        """Take exactly ``batch_size`` fresh unrolls (None on timeout or when closed).

        ``timeout`` bounds the whole call, however many parts it takes: one deadline, so a
        replica's tick waits at most ``--replica-wait`` (learner/training/trainer.py) even
        while unrolls trickle in, never enough for a batch."""
        taken: list[Unrolls] = []
        need = batch_size
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while need > 0:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._cond.wait_for(lambda: self._closed or self._size > 0, left):
                    break
                if self._closed:
                    break
                part = self._parts.popleft()
                self._size -= part.size
                fresh = part.policy_versions.min(axis=0) >= current_version - self.max_policy_lag
                if not fresh.all():
                    self.dropped_stale += int((~fresh).sum())
                    part = part.select(np.flatnonzero(fresh))
                if part.size > need:
                    rest = part.select(slice(need, None))
                    self._parts.appendleft(rest)
                    self._size += rest.size
                    part = part.select(slice(0, need))
                if part.size:
                    taken.append(part)
                    need -= part.size
                self._admit()
            if need > 0:  # not enough: put back what we took, in order
                for part in reversed(taken):
                    self._parts.appendleft(part)
                    self._size += part.size
                return None
        return Unrolls.concatenate(taken)
