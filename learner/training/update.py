"""One update: B unrolls -> E passes of M minibatches -> E x M optimizer steps.

The trainer (learner/training/trainer.py) takes B unrolls from the queue and hands them to
:func:`train_batch`; this module pairs the model's outputs with the stored slots, calls the
update's maths (one pure function, seed_rl/functional/impala.py; read it next to Espeholt
et al. 2018, IMPALA, section 4) and steps the optimizer. Shapes (T = unroll length,
B = batch size, P = policy parameters per step, learner/training/policies.py); every unroll
has T+1 slots (store.py states the slot convention):

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

Sample reuse (``--epochs E``, ``--minibatches M``; 1 and 1 is IMPALA's one step per batch).
Each of the E passes shuffles the batch's unrolls and splits them into M minibatches of
B/M whole unrolls (each keeps its stored initial core state, so recurrent models replay it
as it was acted); one optimizer step per minibatch. Every step runs the model with the
current weights, so V-trace's importance weights pi/mu correct for the drift of the policy
since acting, the earlier steps of this batch included. The shuffle is a pure function of
``(--seed, policy version)`` (:func:`minibatch_plan`): the same on every replica and after
a resume. With replicas the *group's* batch is shuffled as one (the ranks' unrolls in rank
order), each replica trains on its part of each minibatch (any number of unrolls, none
included: it then adds a zero gradient) and the gradients are summed: a group trains
exactly the minibatches one learner with the concatenated batch would.

PopArt (``--popart``): after each optimizer step that was made, the statistics move towards
the mean and mean square of that step's V-trace targets (the group's) and the value head is
rescaled (learner/training/popart.py).

Observation normalisation (``--normalize-observations``): once per batch, before its
optimizer steps, the statistics take in the batch's observations x_0 .. x_{T-1} of every
unroll (x_T is the next unroll's x_0), the group's with replicas
(learner/training/observation_norm.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from learner.training.distributed import ReplicaGroup
from learner.training.models import ActorCritic, ModelOutput, unpack_rows
from learner.training.store import Unrolls
from seed_rl.config import Config
from seed_rl.functional import impala

#: what one step's stats hold besides the counters (each a mean over the batch's steps)
LOGGED = ("loss_pg", "loss_baseline", "loss_entropy", "entropy")


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

    @property
    def size(self) -> int:
        """B, the number of unrolls."""
        return self.observations.shape[1]

    def select(self, index: Tensor) -> Batch:
        """The unrolls ``index`` (``[b]`` int64, on the batch's device), their initial core
        states with them."""
        return Batch(*(getattr(self, name).index_select(1, index) for name in Unrolls.FIELDS),
                     core_state=tuple(s.index_select(0, index) for s in self.core_state))


@dataclass
class TrainStats:
    """One batch's update: the losses and the norm are means over its optimizer steps (the
    losses over those that had unrolls of this replica; nan when none had)."""

    loss_total: float
    loss_pg: float
    loss_baseline: float
    loss_entropy: float
    entropy: float  # mean policy entropy per step, nats
    grad_norm: float  # before clipping
    grad_clipped: float  # the fraction of the optimizer steps whose norm --max-grad-norm cut
    learning_rate: float
    optimizer_steps: int  # steps made
    skipped_steps: int  # non-finite loss or gradient: no step was made

    @property
    def skipped(self) -> bool:
        """No step was made: the weights are those of before."""
        return self.optimizer_steps == 0


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


def compute_loss(model: ActorCritic, batch: Batch, config: Config, *, steps: int | None = None,
                 group_sum: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, dict]:
    """The IMPALA loss of one (mini)batch and its parts (as tensors, ``vs`` among them):
    the model's forward pass, aligned by the slot convention, into
    :func:`seed_rl.functional.impala.loss` (the maths, with the config's options; ``steps``
    and ``group_sum`` as there: the group's step count and its all-reduce).

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
    popart = getattr(model, "popart", None)
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
        lambda_=config.vtrace_lambda,
        ppo_clip=config.ppo_clip,
        value_scale=popart.sigma if popart is not None else 1.0,
        normalize_advantages=config.normalize_advantages,
        reduction=config.loss_reduction,
        steps=steps,
        group_sum=group_sum,
    )
    parts = {"loss_pg": out.loss_pg, "loss_baseline": out.loss_baseline,
             "loss_entropy": out.loss_entropy, "entropy": out.entropy, "vs": out.vs}
    return out.total, parts


def train_step(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: Batch | None,
               config: Config, learning_rate: float, group: ReplicaGroup | None = None,
               *, steps: int | None = None) -> TrainStats:
    """One optimizer step on ``batch`` (then PopArt's statistics, with ``--popart``). A
    non-finite loss or gradient norm skips it (the caller counts and warns).

    With a distributed ``group`` the gradients are summed over the replicas before the norm
    is clipped (learner/training/distributed.py), and so are the advantages' and the
    targets' moments; ``batch`` None is a replica without unrolls in this step: it joins
    every collective with zeros and steps with the others. ``steps``: the group's number of
    steps, for ``--loss-reduction mean``."""
    for param_group in optimizer.param_groups:
        param_group["lr"] = learning_rate
    optimizer.zero_grad(set_to_none=True)
    distributed = group is not None and group.distributed
    device = next(model.parameters()).device
    vs = None
    if batch is not None:
        total, parts = compute_loss(model, batch, config, steps=steps,
                                    group_sum=group.all_reduce_sum if distributed else None)
        vs = parts.pop("vs")
        logged = {name: float(value.detach()) for name, value in parts.items()}
        total.backward()
    else:
        total = torch.tensor(math.nan)
        logged = dict.fromkeys(LOGGED, math.nan)
        if distributed and config.normalize_advantages:  # the advantages' moments
            group.all_reduce_sum(torch.zeros(3, device=device))
    if distributed:
        if batch is not None and not torch.isfinite(total):
            # a non-finite local loss must make every replica skip: poison the sum
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(math.nan)
        group.all_reduce_gradients(model.parameters())
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    # the same on every replica: the norm is of the summed gradients, a local non-finite
    # loss poisoned them
    skipped = not bool(torch.isfinite(grad_norm)) or (batch is not None
                                                     and not bool(torch.isfinite(total)))
    if not skipped:
        optimizer.step()
        popart = getattr(model, "popart", None)
        if popart is not None:
            moments = impala.moments(vs) if vs is not None else torch.zeros(3, device=device)
            count, total_v, squares = group.all_reduce_sum(moments) if distributed else moments
            popart.update(model.value, total_v / count, squares / count)
    norm = float(grad_norm)
    return TrainStats(loss_total=float(total.detach()), **logged, grad_norm=norm,
                      grad_clipped=float(norm > max_norm),
                      learning_rate=learning_rate, optimizer_steps=int(not skipped),
                      skipped_steps=int(skipped))


def minibatch_plan(sizes: list[int], epochs: int, minibatches: int, seed: int,
                   version: int) -> list[np.ndarray]:
    """The unrolls of each of the ``epochs x minibatches`` optimizer steps of one batch, as
    sorted indices into the group's batch (the ranks' ``sizes[r]`` unrolls in rank order).

    One minibatch: the whole batch in order each pass (IMPALA's step, bit for bit). Else
    each pass is a permutation drawn from a generator seeded by ``(seed, version)``, split
    into ``minibatches`` parts of equal size (sizes differing by one when the group's batch
    is not a multiple: a replica without a batch this tick)."""
    total = sum(sizes)
    if minibatches == 1:
        return [np.arange(total) for _ in range(epochs)]
    rng = np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, version])
    return [np.sort(part) for _ in range(epochs)
            for part in np.array_split(rng.permutation(total), minibatches)]


def train_batch(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: Batch | None,
                config: Config, learning_rate: float, group: ReplicaGroup | None = None,
                *, sizes: list[int] | None = None, version: int = 0) -> TrainStats:
    """The update of one batch: :func:`train_step` on each minibatch of
    :func:`minibatch_plan` (``--epochs`` x ``--minibatches`` steps), each on this replica's
    part of it. ``sizes``: every replica's number of unrolls this tick (default: this batch
    alone); ``version``: the policy version the update starts from (seeds the shuffle)."""
    update_observation_norm(model, batch, group)
    rank = group.rank if group is not None else 0
    sizes = sizes if sizes is not None else [batch.size if batch is not None else 0]
    offset, local = sum(sizes[:rank]), sizes[rank]
    steps: list[TrainStats] = []
    for indices in minibatch_plan(sizes, config.epochs, config.minibatches, config.seed,
                                  version):
        mine = indices[(indices >= offset) & (indices < offset + local)] - offset
        part = None
        if batch is not None and len(mine) == batch.size:
            part = batch  # the whole batch: no copy
        elif batch is not None and len(mine):
            part = batch.select(torch.as_tensor(mine, device=batch.observations.device))
        unroll_length = batch.observations.shape[0] - 1 if batch is not None else 0
        steps.append(train_step(model, optimizer, part, config, learning_rate, group,
                                steps=unroll_length * len(indices) or None))
    return _combined(steps, learning_rate)


def update_observation_norm(model: ActorCritic, batch: Batch | None,
                            group: ReplicaGroup | None = None) -> None:
    """With ``--normalize-observations``: merge the moments of ``batch``'s observations
    ``[:T]`` (summed over a distributed ``group``; ``batch`` None adds none) into the model's
    statistics. Nothing without it."""
    norm = getattr(model, "observation_norm", None)
    if norm is None:
        return
    if batch is not None:
        rows = batch.observations[:-1]  # [T, B, *row]
        moments = norm.moments(unpack_rows(rows.reshape(-1, *rows.shape[2:]),
                                           model.observation_layout))
    else:
        moments = torch.zeros(norm.moments_size, dtype=torch.float64,
                              device=next(model.parameters()).device)
    if group is not None and group.distributed:
        moments = group.all_reduce_sum(moments)
    norm.update(moments)


def _combined(steps: list[TrainStats], learning_rate: float) -> TrainStats:
    def mean(name: str) -> float:
        values = [getattr(s, name) for s in steps if not math.isnan(getattr(s, name))]
        return sum(values) / len(values) if values else math.nan

    return TrainStats(**{name: mean(name) for name in ("loss_total", *LOGGED, "grad_norm",
                                                       "grad_clipped")},
                      learning_rate=learning_rate,
                      optimizer_steps=sum(s.optimizer_steps for s in steps),
                      skipped_steps=sum(s.skipped_steps for s in steps))
