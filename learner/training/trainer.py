"""The trainer: B unrolls -> model -> IMPALA loss -> one optimizer step -> new weights.

:class:`Trainer` owns everything an update changes: the model and its optimizer, and the
published weights (learner/training/weights.py: the inference copy the batcher and the
evaluator read, and the policy version). Its thread loops: take B unrolls from the queue,
update, publish the new weights with the next version. Checkpoints read a
:meth:`Trainer.snapshot`, taken between two updates.

The update's maths (V-trace, the three losses) is one pure function,
seed_rl/functional/impala.py; read it next to Espeholt et al. 2018 (IMPALA), section 4.
This module pairs the model's outputs with the stored slots for it. Shapes (T = unroll length,
B = batch size, P = policy parameters per step, learner/training/policies.py); every unroll
has T+1
slots (store.py states the slot convention):

    observations      [T+1, B, *obs]      x_0 .. x_T
    behaviour_params  [T+1, B, P]         mu(.|x_t); slot T's belongs to the next unroll
    actions           [T+1, B, *action]   a_t
    rewards, flags    [T+1, B]            slot t+1 holds the outcome of (x_t, a_t)

The loss at time t in [0, T) pairs pi(.|x_t), mu(.|x_t) and a_t with the reward and the
episode-end flags of slot t+1, and V(x_T) bootstraps the end of the unroll:

    discounts_t = gamma * (1 - ended_{t+1})          ended = terminated or truncated
    rewards_t   = r_{t+1} + gamma * (truncated and not terminated)_{t+1} * V(final obs)

A terminated episode does not bootstrap; a time-limit truncation bootstraps from the value
of its true final observation (computed at inference time, stored in the slot), never from
the next episode's first observation.

Any action distribution (``model.distribution``): V-trace needs only the log-probabilities
of the taken actions, ``log_rhos = log pi(a_t|x_t) - log mu(a_t|x_t)``, and the entropy loss
only the entropies; for Discrete actions this is the softmax IMPALA of the paper.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from learner.training.distributed import ReplicaGroup
from learner.training.models import ActorCritic, ModelOutput
from learner.training.store import UnrollQueue, Unrolls
from learner.training.weights import PublishedWeights
from learner.watching.metrics import Metrics
from seed_rl.config import Config
from seed_rl.functional import impala

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A training batch as tensors on the learner's device (see the module docstring)."""

    observations: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    truncation_values: Tensor
    actions: Tensor
    behaviour_params: Tensor
    policy_versions: Tensor
    core_state: tuple[Tensor, ...]

    @staticmethod
    def from_unrolls(unrolls: Unrolls, device: torch.device) -> Batch:
        pin = device.type == "cuda"

        def move(array) -> Tensor:
            tensor = torch.from_numpy(array)
            if pin:
                tensor = tensor.pin_memory()
            return tensor.to(device, non_blocking=True)

        return Batch(*(move(getattr(unrolls, name)) for name in Unrolls.FIELDS),
                     core_state=tuple(move(s) for s in unrolls.core_state))


@dataclass
class TrainStats:
    loss_total: float
    loss_pg: float
    loss_baseline: float
    loss_entropy: float
    entropy: float  # mean policy entropy per step, nats
    grad_norm: float
    learning_rate: float
    skipped: bool  # non-finite loss or gradient: no update was made


def build_optimizer(model: ActorCritic, config: Config) -> torch.optim.Optimizer:
    """RMSprop (IMPALA's, eps 0.01) or Adam (eps 1e-8): each with its own epsilon knob."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                eps=config.adam_eps)
    return torch.optim.RMSprop(model.parameters(), lr=config.learning_rate,
                               alpha=config.rmsprop_alpha, momentum=config.rmsprop_momentum,
                               eps=config.rmsprop_eps)


def learning_rate_at(env_steps: int, config: Config) -> float:
    """The learning rate after ``env_steps``: constant, or decayed linearly to 0 at
    ``total_steps`` when ``lr_decay`` is set. A pure function of the counters, so a resumed
    run continues the schedule exactly."""
    if config.lr_decay and config.total_steps > 0:
        return config.learning_rate * max(0.0, 1.0 - env_steps / config.total_steps)
    return config.learning_rate


class VTraceInputs(NamedTuple):
    """The V-trace inputs, aligned by the slot convention. [T, B(, P or *action)]."""

    behaviour_params: Tensor  # mu(.|x_t)   [T, B, P]
    target_params: Tensor  # pi(.|x_t)   [T, B, P]
    values: Tensor  # V(x_t)
    bootstrap_value: Tensor  # V(x_T)   [B]
    actions: Tensor  # a_t   [T, B, *action]
    discounts: Tensor  # gamma, or 0 where (x_t, a_t) ended the episode
    rewards: Tensor  # r_{t+1}, plus gamma * V(final obs) where a time limit cut the episode


def vtrace_inputs(batch: Batch, output: ModelOutput, config: Config) -> VTraceInputs:
    """Pair the model's outputs at x_t with the outcome stored in slot t + 1."""
    rewards = batch.rewards[1:]  # outcome of (x_t, a_t)
    if config.reward_scale != 1.0:
        rewards = rewards * config.reward_scale
    if config.reward_clip > 0:
        rewards = rewards.clamp(-config.reward_clip, config.reward_clip)
    # A step both terminated and truncated (gymnasium allows it) is a termination: no value
    # beyond it, whatever final observation a client sent.
    truncated = (batch.truncated[1:] & ~batch.terminated[1:]).to(rewards.dtype)
    ended = (batch.terminated[1:] | batch.truncated[1:]).to(rewards.dtype)
    return VTraceInputs(
        behaviour_params=batch.behaviour_params[:-1],
        target_params=output.policy_params[:-1],
        values=output.values[:-1],
        bootstrap_value=output.values[-1],
        actions=batch.actions[:-1],
        discounts=config.discount * (1.0 - ended),
        rewards=rewards + config.discount * truncated * batch.truncation_values[1:],
    )


def compute_loss(model: ActorCritic, batch: Batch, config: Config) -> tuple[Tensor, dict]:
    """The IMPALA loss of one batch and its parts (as tensors): the model's forward pass,
    aligned by the slot convention, into :func:`seed_rl.functional.impala.loss` (the maths).

    The target policy is normalised once (one log-softmax of the logits for Discrete
    actions): its log-probabilities feed V-trace's importance weights and the policy
    gradient, its entropies the entropy loss."""
    episode_start = batch.terminated | batch.truncated  # [T+1, B]: x_t starts an episode
    output = model(batch.observations, episode_start, batch.core_state)
    inputs = vtrace_inputs(batch, output, config)
    distribution = model.distribution
    # log pi(a_t|x_t) and the entropy of pi(.|x_t)   [T, B]
    action_log_probs, entropies = distribution.log_prob_and_entropy(inputs.target_params,
                                                                    inputs.actions)
    behaviour_log_probs = distribution.log_prob(inputs.behaviour_params, inputs.actions)
    out = impala.loss(
        target_log_probs=action_log_probs,
        behaviour_log_probs=behaviour_log_probs,
        entropies=entropies,
        values=inputs.values,
        bootstrap_value=inputs.bootstrap_value,
        rewards=inputs.rewards,
        discounts=inputs.discounts,
        baseline_cost=config.baseline_cost,
        entropy_cost=config.entropy_cost,
        clip_rho_threshold=config.clip_rho_threshold,
        clip_pg_rho_threshold=config.clip_pg_rho_threshold,
    )
    parts = {"loss_pg": out.loss_pg, "loss_baseline": out.loss_baseline,
             "loss_entropy": out.loss_entropy, "entropy": out.entropy}
    return out.total, parts


def train_step(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: Batch | None,
               config: Config, learning_rate: float,
               group: ReplicaGroup | None = None) -> TrainStats:
    """One update. A non-finite loss or gradient norm skips it (the caller counts and warns).

    With a distributed ``group`` the gradients are summed over the replicas before the norm
    is clipped (learner/training/distributed.py); ``batch`` None is a replica without a batch this
    tick: it contributes a zero gradient and steps with the others."""
    for param_group in optimizer.param_groups:
        param_group["lr"] = learning_rate
    optimizer.zero_grad(set_to_none=True)
    if batch is not None:
        total, parts = compute_loss(model, batch, config)
        logged = {name: float(value.detach()) for name, value in parts.items()}
        total.backward()
    else:
        total = torch.tensor(math.nan)
        logged = dict.fromkeys(("loss_pg", "loss_baseline", "loss_entropy", "entropy"),
                               math.nan)
    if group is not None and group.distributed:
        if batch is not None and not torch.isfinite(total):
            # a non-finite local loss must make every replica skip: poison the sum
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(math.nan)
        group.all_reduce_gradients(model.parameters())
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    skipped = not bool(torch.isfinite(grad_norm)) or (batch is not None
                                                     and not bool(torch.isfinite(total)))
    if not skipped:
        optimizer.step()
    return TrainStats(
        loss_total=float(total.detach()),
        loss_pg=logged["loss_pg"],
        loss_baseline=logged["loss_baseline"],
        loss_entropy=logged["loss_entropy"],
        entropy=logged["entropy"],
        grad_norm=float(grad_norm),
        learning_rate=learning_rate,
        skipped=skipped,
    )


class Trainer:
    """Owns the model being trained, its optimizer and the published weights.

    :meth:`run` is the trainer thread: B unrolls -> :func:`train_step` -> the new weights
    published to ``weights`` (a :class:`~learner.training.weights.PublishedWeights`) with
    policy version + 1. The batcher, the evaluator and the digest read them through
    ``weights`` only: its lock, and on CUDA its events, keep a reader from ever seeing
    half-copied weights or a version that did not produce them.
    """

    def __init__(self, model: ActorCritic, config: Config, device: torch.device,
                 queue: UnrollQueue, metrics: Metrics, group: ReplicaGroup | None = None,
                 local_envs: Callable[[], int] = lambda: 0):
        self.group = group if group is not None else ReplicaGroup()
        if config.batch_size % self.group.world_size:
            raise SystemExit(f"--batch-size {config.batch_size} must be a multiple of the "
                             f"{self.group.world_size} replicas (each takes an equal share)")
        self.local_batch = config.batch_size // self.group.world_size
        self.local_envs = local_envs  # environments streaming to this replica
        self.replica_envs = [0] * self.group.world_size  # every replica's, from the last tick
        self.ticks = 0
        self.config = config
        self.device = device
        self.queue = queue
        self.metrics = metrics
        self.model = model.to(device)
        self.optimizer = build_optimizer(self.model, config)
        self.group_env_steps = metrics.env_steps  # the group's, agreed at each tick
        metrics.shared = self.group.distributed
        self.weights = PublishedWeights(self.model, version=0)  # the inference copy
        self._update_lock = threading.Lock()  # an update, or a snapshot between two

    def load(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's model, optimizer and policy version (before serving)."""
        with self._update_lock:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.weights.publish(self.model, int(state["counters"]["policy_version"]))

    @property
    def policy_version(self) -> int:
        """The version of the published weights (updates published so far, resumed ones
        included); it changes only with a publication."""
        return self.weights.version

    def run(self, stop: threading.Event) -> None:
        """Update on every B fresh unrolls until ``stop`` is set (a replica: until any
        replica's ``stop`` is set, see :meth:`tick`)."""
        if self.group.distributed:
            while not self.tick(stop.is_set()):
                pass
            return
        while not stop.is_set():
            unrolls = self.queue.get(self.config.batch_size, self.policy_version, timeout=0.5)
            if unrolls is not None:
                self.update(unrolls)

    def tick(self, stop: bool) -> bool:
        """One lock-step tick of a replica (learner/training/distributed.py): wait at most
        ``replica_wait`` s for a full local batch (no wait without environments: one cannot
        come), exchange the tick records, update together if any replica had a batch.
        Returns True when any replica asked to stop (all see it in the same tick)."""
        wait = self.config.replica_wait if self.local_envs() > 0 else 0.05
        unrolls = None
        if not stop:
            unrolls = self.queue.get(self.local_batch, self.policy_version, timeout=wait)
        steps, episodes, returns, lengths = self.metrics.take_unshared()
        records = self.group.all_gather({
            "batch": unrolls is not None, "stop": stop, "envs": self.local_envs(),
            "steps": steps, "episodes": episodes, "returns": returns, "lengths": lengths})
        self.ticks += 1
        self.replica_envs = [int(r["envs"]) for r in records]
        others = [r for i, r in enumerate(records) if i != self.group.rank]
        self.metrics.add_shared(sum(r["steps"] for r in others),
                                sum(r["episodes"] for r in others),
                                [x for r in others for x in r["returns"]],
                                [x for r in others for x in r["lengths"]])
        self.group_env_steps += sum(r["steps"] for r in records)
        if any(r["batch"] for r in records):
            self.update(unrolls, env_steps=self.group_env_steps)
        return any(r["stop"] for r in records)

    def update(self, unrolls: Unrolls | None, env_steps: int | None = None) -> TrainStats:
        """One IMPALA update on ``unrolls`` [T+1, B]; publishes the new weights. A replica
        passes None when it had no batch this tick, and the group's ``env_steps``."""
        started = time.perf_counter()
        batch = Batch.from_unrolls(unrolls, self.device) if unrolls is not None else None
        with self._update_lock:
            learning_rate = learning_rate_at(
                self.metrics.env_steps if env_steps is None else env_steps, self.config)
            stats = train_step(self.model, self.optimizer, batch, self.config, learning_rate,
                               self.group)
            if stats.skipped:
                self.metrics.skipped_updates += 1
                log.warning("skipped an update: non-finite loss %.3g or gradient norm %.3g "
                            "(%d skipped so far)", stats.loss_total, stats.grad_norm,
                            self.metrics.skipped_updates)
            else:
                self.weights.publish(self.model, self.policy_version + 1)
                if unrolls is None:
                    self.metrics.add_train_step()
                    self.metrics.add_time("train", time.perf_counter() - started)
                    return stats
                acted = unrolls.policy_versions[:-1]  # the versions that chose a_0..a_{T-1}
                trained = self.policy_version - 1
                self.metrics.add_train({k: v for k, v in vars(stats).items() if k != "skipped"},
                                       trained - float(acted.mean()), trained - int(acted.min()))
        self.metrics.add_time("train", time.perf_counter() - started)
        return stats

    def snapshot(self, timeout: float | None = None,
                 give_up: threading.Event | None = None) -> dict[str, Any] | None:
        """CPU copies of the model and optimizer state and the train steps and policy version,
        all of one and the same update (taken between two updates); None when ``timeout``
        seconds pass while an update is in flight, or once ``give_up`` is set (an update
        stuck in a collective of a broken replica group must not hold a stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._update_lock.acquire(timeout=0.2 if deadline is None else max(
                0.0, min(0.2, deadline - time.monotonic()))):
            if (give_up is not None and give_up.is_set()) or (
                    deadline is not None and time.monotonic() >= deadline):
                return None
        try:
            return {
                "model": {k: v.detach().to("cpu", copy=True)
                          for k, v in self.model.state_dict().items()},
                "optimizer": _cpu_copy(self.optimizer.state_dict()),
                "train_steps": self.metrics.train_steps,
                "policy_version": self.policy_version,
            }
        finally:
            self._update_lock.release()


def _cpu_copy(value: Any) -> Any:
    """``value`` (nested dicts, lists, tuples) with every tensor copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value
