"""What the learner keeps of each served step for training: the unroll recorder.

A training learner (``seed-rl learner``, ``seed-rl train``) gives the servicer
(learner/serving/service.py) an :class:`UnrollRecorder`: each session gets an
:class:`~learner.training.store.UnrollBuilder` at its handshake, every answered step is
written into it (slot convention, docs/architecture.md), and each complete unroll of T+1
slots goes to the trainer's :class:`~learner.training.store.UnrollQueue`, the stream
waiting its turn while the queue is full (backpressure). ``seed-rl serve``
(learner/deploying/) gives it none: the sessions then keep no builder and nothing of a step
outlives its answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from learner.serving.lockstep import FixedActorSet
from learner.serving.requests import InferenceRequest
from learner.serving.session import Session
from learner.serving.validation import CheckedStep
from learner.training.store import QueueClosed, UnrollBuilder, UnrollQueue, Unrolls
from seed_rl.config import Config
from seed_rl.spaces import ActionLayout, ObservationLayout


class UnrollRecorder:
    """Builds each session's unrolls and hands the complete ones to the trainer's queue."""

    def __init__(self, config: Config, queue: UnrollQueue, observations: ObservationLayout,
                 actions: ActionLayout, num_policy_params: int,
                 order: FixedActorSet | None, give_up: Callable[[Session], bool]):
        """``order`` (``--deterministic``): unrolls completed at one tick go to the queue in
        the set's order; ``give_up(session)``: whether a stream waiting for room should stop
        waiting (the learner stops, or ended that stream)."""
        self.config = config
        self.queue = queue
        self._observations = observations
        self._actions = actions
        self._num_policy_params = num_policy_params
        self._give_up = give_up
        self._order = order

    def builder(self, num_envs: int, core_state: tuple[torch.Tensor, ...]) -> UnrollBuilder:
        """A new session's builder for its ``num_envs`` environments; ``core_state`` gives
        the recurrent state's shapes (per layer ``[K, H]``; none without a core)."""
        return UnrollBuilder.for_layouts(
            self.config.unroll_length, num_envs, self._observations, self._actions,
            self._num_policy_params, tuple(tuple(s.shape) for s in core_state))

    def add(self, session: Session, step: CheckedStep,
            inference: InferenceRequest) -> Unrolls | None:
        """Write one answered step into the session's unrolls, with the recurrent state
        *before* it (call before the session's core state moves on); the unrolls it
        completed, if any."""
        truncation_values = np.zeros(session.num_envs, np.float32)
        truncation_values[step.final_envs] = inference.final_values
        return session.builder.add_step(
            step.observations, step.rewards, step.terminated, step.truncated,
            truncation_values, inference.actions, inference.policy_params,
            inference.policy_version, tuple(s.numpy() for s in session.core_state))

    async def put(self, unrolls: Unrolls, session: Session) -> None:
        """Hand complete unrolls to the trainer. While it is behind (the queue is full) this
        stream waits its turn on an asyncio future (no thread held; streams get in in the
        order they came), the loop serving the others, until training stops or the learner
        ends the stream. In deterministic mode it first waits for its turn at this tick."""
        async with (self._order.turn(session.actor_id) if self._order is not None
                    else contextlib.nullcontext()):
            with contextlib.suppress(QueueClosed):
                await self.queue.put_async(unrolls, give_up=lambda: self._give_up(session))

    @staticmethod
    def partial(session: Session) -> int:
        """Unfinished unrolls a closing session drops (never trained on nor resumed)."""
        return session.num_envs if session.builder is not None and session.builder.row > 0 \
            else 0
