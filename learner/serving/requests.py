"""What a stream asks inference for, one forward pass over many of them, and the answer.

A stream handler (learner/serving/service.py) submits one :class:`InferenceRequest` per
actor message to a batcher (learner/serving/batcher.py, or learner/serving/lockstep.py in
deterministic mode) and awaits its ``waiter``. A batcher stacks the requests it gathered
into one forward pass (:class:`BatchInputs`: rows [0, N) the K_i observations of each
request in order, rows [N, N + F) their final observations), chooses the actions its own
way, hands each request its slice and wakes their callers (:func:`answer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class InferenceRequest:
    """One actor message. Arrays are numpy; ``core_state`` is the env's state before x_t."""

    observations: np.ndarray  # [K, *row_shape]
    episode_start: np.ndarray  # [K] bool: x_t starts an episode (reset the core state)
    core_state: tuple[torch.Tensor, ...]  # per layer [K, H] (CPU tensors); () without a core
    final_env_indices: np.ndarray  # [F] int: envs whose final observation follows
    final_observations: np.ndarray  # [F, *row_shape]
    greedy: bool = False  # the most likely actions (argmax, Gaussian mean), not samples
    session: str | None = None  # the stream's session id (batcher.py: who is due)
    actor_id: str = ""  # the session's actor (lockstep.py: its place in a tick's batch)
    # Filled by the batcher:
    previous_start: float | None = None  # when the batch of the session's last request began
    actions: np.ndarray | None = None  # [K, *action_shape]: int64 0-based, or float32
    policy_params: np.ndarray | None = None  # [K, P] float32: mu(.|x_t)
    final_values: np.ndarray | None = None  # [F] float32
    next_core_state: tuple[torch.Tensor, ...] = ()
    policy_version: int = -1
    error: BaseException | None = None
    waiter: asyncio.Future | None = None  # done once the fields above are filled

    @property
    def num_envs(self) -> int:
        return len(self.observations)


class BatcherStopped(Exception):
    """The batcher was stopped before it answered this request."""


@dataclass
class BatchInputs:
    """The model inputs of one batch of requests, on ``device``: ``observations [N + F,
    *row_shape]`` (the requests' observations, then their final observations),
    ``episode_start [N + F]`` (a final observation is never an episode start) and the
    recurrent state per layer ``[N + F, H]`` (a final observation's: its environment's state
    before the reset); ``num_regular`` is N."""

    observations: torch.Tensor
    episode_start: torch.Tensor
    core_state: tuple[torch.Tensor, ...]
    num_regular: int

    @staticmethod
    def of(batch: list[InferenceRequest], device: torch.device) -> BatchInputs:
        observations = np.concatenate(
            [r.observations for r in batch] + [r.final_observations for r in batch])
        starts = np.concatenate(
            [r.episode_start for r in batch] + [np.zeros(len(r.final_env_indices), bool)
                                                for r in batch])
        core_state: tuple[torch.Tensor, ...] = ()
        if batch[0].core_state:
            core_state = tuple(
                torch.cat([r.core_state[i] for r in batch]
                          + [r.core_state[i][torch.from_numpy(r.final_env_indices)]
                             for r in batch]).to(device, non_blocking=True)
                for i in range(len(batch[0].core_state)))
        return BatchInputs(torch.from_numpy(observations).to(device, non_blocking=True),
                           torch.from_numpy(starts).to(device, non_blocking=True),
                           core_state, sum(r.num_envs for r in batch))

    def forward(self, model: torch.nn.Module):
        """The model's output for these inputs, as one time step ``[1, N + F, ...]``."""
        return model(self.observations.unsqueeze(0), self.episode_start.unsqueeze(0),
                     self.core_state)

    def hand_out(self, batch: list[InferenceRequest], output, actions: torch.Tensor,
                 version: int) -> None:
        """Give each request its slice: ``actions [N, *action_shape]``, the policy
        parameters and next recurrent state of its rows, the values of its final
        observations, and the policy ``version`` that chose them."""
        num_regular = self.num_regular
        actions_np = actions.cpu().numpy()
        params_np = output.policy_params[0, :num_regular].float().cpu().numpy()
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


def answer(requests: list[InferenceRequest]) -> None:
    """Wake the callers of ``requests``: directly when called on their loop, else with one
    hand-over per loop for the whole batch (from the inference thread)."""
    waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for request in requests:
        waiters.setdefault(request.waiter.get_loop(), []).append(request.waiter)
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop, futures in waiters.items():
        if loop is here:
            _resolve(futures)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures)


# Streams woken per turn of the serving loop. Between turns the loop polls for I/O, and the
# gRPC server accepts at most one new RPC per turn or two: waking a batch of thousands in
# one turn would make new actors' streams wait seconds to be accepted.
WAKE_CHUNK = 32


def _resolve(futures: list[asyncio.Future]) -> None:
    """Wake the streams waiting on ``futures``, WAKE_CHUNK per turn of their loop."""
    for future in futures[:WAKE_CHUNK]:
        if not future.done():  # a cancelled stream no longer waits
            future.set_result(None)
    if len(futures) > WAKE_CHUNK:
        futures[0].get_loop().call_soon(_resolve, futures[WAKE_CHUNK:])
