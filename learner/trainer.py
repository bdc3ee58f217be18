"""The IMPALA update: B unrolls -> model -> V-trace -> losses -> one optimizer step.

Read it next to Espeholt et al. 2018 (IMPALA), section 4. Shapes (T = unroll length,
B = batch size, A = actions); every unroll has T+1 slots (store.py states the slot
convention):

    observations      [T+1, B, *obs]   x_0 .. x_T
    behaviour_logits  [T+1, B, A]      mu(.|x_t); slot T's belongs to the next unroll
    actions           [T+1, B]         a_t
    rewards, flags    [T+1, B]         slot t+1 holds the outcome of (x_t, a_t)

The loss at time t in [0, T) pairs pi(.|x_t), mu(.|x_t) and a_t with the reward and the
episode-end flags of slot t+1, and V(x_T) bootstraps the end of the unroll:

    discounts_t = gamma * (1 - ended_{t+1})          ended = terminated or truncated
    rewards_t   = r_{t+1} + gamma * truncated_{t+1} * V(final observation)

A terminated episode does not bootstrap; a time-limit truncation bootstraps from the value
of its true final observation (computed at inference time, stored in the slot), never from
the next episode's first observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from learner.models import ActorCritic, ModelOutput
from learner.store import Unrolls
from seed_rl.config import Config
from seed_rl.functional import loss as losses
from seed_rl.functional import vtrace


@dataclass
class Batch:
    """A training batch as tensors on the learner's device (see the module docstring)."""

    observations: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    truncation_values: Tensor
    actions: Tensor
    behaviour_logits: Tensor
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
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                eps=config.optimizer_eps)
    return torch.optim.RMSprop(model.parameters(), lr=config.learning_rate,
                               alpha=config.rmsprop_alpha, momentum=config.rmsprop_momentum,
                               eps=config.optimizer_eps)


def learning_rate_at(env_steps: int, config: Config) -> float:
    """The learning rate after ``env_steps``: constant, or decayed linearly to 0 at
    ``total_steps`` when ``lr_decay`` is set. A pure function of the counters, so a resumed
    run continues the schedule exactly."""
    if config.lr_decay and config.total_steps > 0:
        return config.learning_rate * max(0.0, 1.0 - env_steps / config.total_steps)
    return config.learning_rate


class VTraceInputs(NamedTuple):
    """What ``vtrace.from_logits`` receives, aligned by the slot convention. [T, B(, A)]."""

    behaviour_logits: Tensor  # mu(.|x_t)
    target_logits: Tensor  # pi(.|x_t)
    values: Tensor  # V(x_t)
    bootstrap_value: Tensor  # V(x_T)   [B]
    actions: Tensor  # a_t
    discounts: Tensor  # gamma, or 0 where (x_t, a_t) ended the episode
    rewards: Tensor  # r_{t+1}, plus gamma * V(final obs) where a time limit cut the episode


def vtrace_inputs(batch: Batch, output: ModelOutput, config: Config) -> VTraceInputs:
    """Pair the model's outputs at x_t with the outcome stored in slot t + 1."""
    rewards = batch.rewards[1:]  # outcome of (x_t, a_t)
    if config.reward_clip > 0:
        rewards = rewards.clamp(-config.reward_clip, config.reward_clip)
    truncated = batch.truncated[1:].to(rewards.dtype)
    ended = (batch.terminated[1:] | batch.truncated[1:]).to(rewards.dtype)
    return VTraceInputs(
        behaviour_logits=batch.behaviour_logits[:-1],
        target_logits=output.logits[:-1],
        values=output.values[:-1],
        bootstrap_value=output.values[-1],
        actions=batch.actions[:-1],
        discounts=config.discount * (1.0 - ended),
        rewards=rewards + config.discount * truncated * batch.truncation_values[1:],
    )


def compute_loss(model: ActorCritic, batch: Batch, config: Config) -> tuple[Tensor, dict]:
    """The IMPALA loss of one batch and its parts (as tensors)."""
    episode_start = batch.terminated | batch.truncated  # [T+1, B]: x_t starts an episode
    output = model(batch.observations, episode_start, batch.core_state)
    inputs = vtrace_inputs(batch, output, config)
    returns = vtrace.from_logits(
        behavior_policy_logits=inputs.behaviour_logits,
        target_policy_logits=inputs.target_logits,
        values=inputs.values,
        bootstrap_value=inputs.bootstrap_value,
        actions=inputs.actions,
        discounts=inputs.discounts,
        rewards=inputs.rewards,
        clip_rho_threshold=config.clip_rho_threshold,
        clip_pg_rho_threshold=config.clip_pg_rho_threshold,
    )
    loss_pg = losses.policy_gradient(inputs.target_logits, inputs.actions,
                                     returns.pg_advantages)
    loss_baseline = losses.baseline(returns.vs - inputs.values)
    loss_entropy = losses.entropy(inputs.target_logits)
    total = loss_pg + config.baseline_cost * loss_baseline + config.entropy_cost * loss_entropy
    parts = {"loss_pg": loss_pg, "loss_baseline": loss_baseline, "loss_entropy": loss_entropy,
             "entropy": -loss_entropy / inputs.actions.numel()}
    return total, parts


def train_step(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: Batch,
               config: Config, learning_rate: float) -> TrainStats:
    """One update. A non-finite loss or gradient norm skips it (the caller counts and warns)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    total, parts = compute_loss(model, batch, config)
    logged = {name: float(value.detach()) for name, value in parts.items()}
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    skipped = not (torch.isfinite(total) and torch.isfinite(grad_norm))
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
