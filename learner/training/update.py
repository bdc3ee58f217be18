"""One update: B unrolls -> model -> IMPALA loss -> one optimizer step.

The trainer (learner/training/trainer.py) takes B unrolls from the queue and hands them to
:func:`train_step`. The update's maths (V-trace, the three losses) is one pure function,
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

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from learner.training.distributed import ReplicaGroup
from learner.training.models import ActorCritic, ModelOutput
from learner.training.store import Unrolls
from seed_rl.config import Config
from seed_rl.functional import impala


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
